// StrykerJS settings for `npm run mutate -- <project>` (tools/scripts/mutate.js sets KHO_MUTATE_PROJECT).
const project = process.env.KHO_MUTATE_PROJECT;
if (!project) throw new Error('run through `npm run mutate -- <project>`');
const dir = `packages/${project}`;

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
module.exports = {
  testRunner: 'jest',
  jest: { projectType: 'custom', configFile: `${dir}/jest.config.cjs`, enableFindRelatedTests: true },
  coverageAnalysis: 'perTest',
  mutate: [`${dir}/src/**/*.ts`, `!${dir}/src/**/*.spec.ts`, `!${dir}/src/testing/**`, `!${dir}/src/**/index.ts`],
  // the sandbox needs the package, its siblings (tests import them through the @kho/source condition) and the
  // root configuration; node_modules is linked, not copied
  ignorePatterns: ['/reports', '/.nx', '/coverage', '**/dist', '**/out-tsc', '/tools/workspace-plugin/dist'],
  concurrency: 2,
  timeoutMS: 20000,
  reporters: ['html', 'clear-text', 'progress', 'json'],
  htmlReporter: { fileName: `reports/mutation/${project}.html` },
  jsonReporter: { fileName: `reports/mutation/${project}.json` },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
