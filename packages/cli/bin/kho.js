#!/usr/bin/env node
// The `kho` command. Inside the workspace it runs from the TypeScript sources (compiled on the fly by
// @swc-node/register, with every @kho package resolved to its src/ through the "@kho/source" condition), so
// `npx kho` works right after `npm ci`; an installed package runs its built dist/.
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const src = path.join(__dirname, '..', 'src', 'main.ts');
const dist = path.join(__dirname, '..', 'dist', 'main.js');
let fromSource = fs.existsSync(src);
if (fromSource) {
  try {
    require.resolve('@swc-node/register', { paths: [path.join(__dirname, '..')] });
  } catch {
    fromSource = false;
  }
}

if (!fromSource) {
  require(dist).main(process.argv.slice(2));
} else if (process.env.KHO_FROM_SOURCE === '1') {
  require(src).main(process.argv.slice(2));
} else {
  const { spawnSync } = require('node:child_process');
  const root = path.join(__dirname, '..', '..', '..');
  const r = spawnSync(process.execPath, ['--conditions=@kho/source', '-r', '@swc-node/register', __filename, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, KHO_FROM_SOURCE: '1', SWC_NODE_PROJECT: path.join(root, 'tsconfig.base.json') },
  });
  if (r.signal) process.kill(process.pid, r.signal);
  process.exit(r.status ?? 1);
}
