#!/usr/bin/env node
// Sums the per-project files written by jest-summary-reporter.js and prints the plain closing line
// "N passed, M failed[, K skipped]". Exits 1 when any test failed or no test ran.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dir = process.argv[2];
if (!dir || !fs.existsSync(dir)) {
  process.stdout.write('0 passed, 1 failed\n');
  process.stderr.write(`test-summary: no results in '${dir}'\n`);
  process.exit(1);
}
let passed = 0;
let failed = 0;
let skipped = 0;
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
  const r = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
  passed += r.passed;
  failed += r.failed;
  skipped += r.skipped;
  for (const s of r.failedSuites) process.stderr.write(`test-summary: suite failed to run: ${s}\n`);
}
process.stdout.write(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
