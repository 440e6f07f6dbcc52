// StrykerJS settings for `npm run mutate -- <project>` (tools/scripts/mutate.js sets KHO_MUTATE_PROJECT).
const project = process.env.KHO_MUTATE_PROJECT;
if (!project) throw new Error('run through `npm run mutate -- <project>`');
const dir = `packages/${project}`;

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
module.exports = {
  testRunner: 'jest',
  jest: { projectType: 'custom', configFile: `${dir}/jest.config.cjs`, enableFindRelatedTests: true },
  coverageAnalysis: 'perTest',
  // every source file, abi/index.ts and bench/index.ts included (they hold code); a barrel index.ts of bare
  // re-exports yields no mutants, so it needs no exclusion
  mutate: [`${dir}/src/**/*.ts`, `!${dir}/src/**/*.spec.ts`, `!${dir}/src/testing/**`],
  // the sandbox needs the package, its siblings (tests import them through the @kho/source condition) and the
  // root configuration; node_modules is linked, not copied
  ignorePatterns: ['/reports', '/.nx', '/coverage', '**/dist', '**/out-tsc', '/tools/workspace-plugin/dist'],
  concurrency: 2,
  timeoutMS: 20000,
  reporters: ['html', 'clear-text', 'progress', 'json'],
  htmlReporter: { fileName: `reports/mutation/${project}.html` },
  jsonReporter: { fileName: `reports/mutation/${project}.json` },
  // one incremental file per package (`--incremental`): the default single file would be overwritten by the
  // next package's run and every rerun would start from scratch
  incrementalFile: `reports/mutation/${project}.incremental.json`,
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
