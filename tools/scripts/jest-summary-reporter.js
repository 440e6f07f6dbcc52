// A jest reporter that writes each project's totals to $KHO_TEST_RESULTS_DIR/<project>.json, so .ci/run can
// print one "N passed, M failed" line for the whole workspace. Inactive when the variable is unset.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

class SummaryReporter {
  constructor(globalConfig) {
    this.dir = process.env.KHO_TEST_RESULTS_DIR;
    this.globalConfig = globalConfig;
  }
  onRunComplete(_contexts, results) {
    if (!this.dir) return;
    fs.mkdirSync(this.dir, { recursive: true });
    const name = path.basename(this.globalConfig.rootDir) || 'root';
    const failedSuites = results.testResults.filter((t) => t.testExecError).map((t) => t.testFilePath);
    const summary = {
      rootDir: this.globalConfig.rootDir,
      passed: results.numPassedTests,
      failed: results.numFailedTests + results.numRuntimeErrorTestSuites,
      skipped: results.numPendingTests + results.numTodoTests,
      suites: results.numTotalTestSuites,
      failedSuites,
    };
    fs.writeFileSync(path.join(this.dir, `${name}.json`), JSON.stringify(summary, null, 2));
  }
}
module.exports = SummaryReporter;
