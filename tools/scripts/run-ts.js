#!/usr/bin/env node
// Runs a TypeScript entry point of the workspace straight from source: the "@kho/source" export condition
// makes every @kho package resolve to its src/, and @swc-node/register compiles on the fly (with the
// decorator metadata tsyringe needs). Usage: node tools/scripts/run-ts.js FILE.ts [args…]
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const [file, ...args] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node tools/scripts/run-ts.js FILE.ts [args...]\n');
  process.exit(2);
}
const root = path.resolve(__dirname, '../..');
// resolved from the workspace, not the current directory (node resolves `-r NAME` from where it runs)
const register = require.resolve('@swc-node/register', { paths: [root] });
const r = spawnSync(
  process.execPath,
  ['--conditions=@kho/source', '-r', register, path.resolve(file), ...args],
  { stdio: 'inherit', cwd: process.cwd(), env: { ...process.env, SWC_NODE_PROJECT: path.join(root, 'tsconfig.base.json') } },
);
process.exit(r.status ?? 1);
