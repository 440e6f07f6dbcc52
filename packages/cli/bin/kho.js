#!/usr/bin/env node
// The `kho` command. It runs the command in a child process and waits for it, so that an interrupted command
// (Ctrl-C while a progress bar has hidden the cursor) leaves the terminal as it found it and exits 130: the
// command itself is synchronous and cannot handle a signal while it works.
//
// Inside the workspace the child runs the TypeScript sources (compiled on the fly by @swc-node/register, every
// @kho package resolved to its src/ through the "@kho/source" condition), so `npx kho` works right after
// `npm ci`; an installed package runs its built dist/. Everything is resolved from this file, never from the
// current directory, so the command works from anywhere.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const { spawn } = require('node:child_process');

const pkg = path.join(__dirname, '..');
const src = path.join(pkg, 'src', 'main.ts');
const dist = path.join(pkg, 'dist', 'main.js');

if (process.env.KHO_CHILD === '1') {
  // the markers are this process's alone: a `kho` the command itself starts (benchmarks do) supervises again
  const entry = process.env.KHO_ENTRY === 'src' ? src : dist;
  delete process.env.KHO_CHILD;
  delete process.env.KHO_ENTRY;
  require(entry).main(process.argv.slice(2));
} else {
  supervise();
}

/** The module `id` as this package resolves it, or undefined. */
function resolveHere(id) {
  try {
    return require.resolve(id, { paths: [pkg] });
  } catch {
    return undefined;
  }
}

/** Runs the command in a child process and mirrors its end: its exit code, or 130 after Ctrl-C. */
function supervise() {
  const register = fs.existsSync(src) ? resolveHere('@swc-node/register') : undefined;
  const env = { ...process.env, KHO_CHILD: '1', KHO_ENTRY: register ? 'src' : 'dist' };
  let args;
  if (register) {
    const tsconfig = path.join(pkg, '..', '..', 'tsconfig.base.json');
    if (fs.existsSync(tsconfig)) env.SWC_NODE_PROJECT = tsconfig;
    args = ['--conditions=@kho/source', '-r', register, __filename, ...process.argv.slice(2)];
  } else if (fs.existsSync(dist)) {
    args = [__filename, ...process.argv.slice(2)];
  } else {
    process.stderr.write(`kho: ${pkg} has neither its built dist/ nor its sources with @swc-node/register (wanted \`npm run build\`, or \`npm ci\` in the workspace)\n`);
    process.exit(1);
  }
  const child = spawn(process.execPath, args, { stdio: 'inherit', env });
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      if (sig === 'SIGINT') interrupted = true;
      // from a terminal the child has the signal already; from `kill` only this process has it
      try {
        child.kill(sig);
      } catch {
        // already gone
      }
    });
  }
  child.on('error', (e) => {
    process.stderr.write(`kho: cannot start ${process.execPath}: ${e.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal || interrupted) {
      // show the cursor a progress bar hid, and end the line it was drawing
      if (process.stderr.isTTY) process.stderr.write('\x1b[?25h\n');
      process.exit(signal === 'SIGINT' || interrupted ? 130 : 128 + (require('node:os').constants.signals[signal] ?? 0));
    }
    process.exit(code ?? 1);
  });
}
