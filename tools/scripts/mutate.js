#!/usr/bin/env node
// `npm run mutate -- <project>`: mutation testing of one package with StrykerJS and its jest runner. Mutants
// are made in the package's own sources (not its tests, testing/ helpers or benchmarks) and judged by the
// package's own tests. The HTML report goes to reports/mutation/<project>.html (ignored by git). Not part of CI:
// a run takes minutes to hours on two cores.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
const project = process.argv[2];
const extra = process.argv.slice(3);
if (!project || !existsSync(path.join(root, 'packages', project, 'jest.config.cjs'))) {
  process.stderr.write(`mutate: give a package with tests, e.g. npm run mutate -- kho-core (got ${project ?? 'nothing'})\n`);
  process.exit(2);
}
const r = spawnSync(
  process.execPath,
  [path.join(root, 'node_modules', '@stryker-mutator', 'core', 'bin', 'stryker.js'), 'run', path.join(root, 'stryker.config.cjs'), ...extra],
  { cwd: root, stdio: 'inherit', env: { ...process.env, KHO_MUTATE_PROJECT: project } },
);
process.exit(r.status ?? 1);
