// StrykerJS settings for `npm run mutate -- <project>` (tools/scripts/mutate.js sets KHO_MUTATE_PROJECT).
const project = process.env.KHO_MUTATE_PROJECT;
if (!project) throw new Error('run through `npm run mutate -- <project>`');
const dir = `packages/${project}`;

// Specs of other packages that also judge a package's mutants. kho-core's own tests cannot kexec: a tracker the
// next kernel can read and an early allocator that keeps scratch live in packages above it. kho-array's
// live-update spec boots, kexecs and restores through kho-core with the radix tree and both bitmap trackers
// (about 2 s), so it judges kho-core's lifecycle and incoming paths too. Sibling sources are imported through the
// @kho/source condition, so these specs run against the mutated code.
const integrationSpecs = {
  'kho-core': ['kho-array/src/bitmap-live-update.spec.ts'],
};
const extra = integrationSpecs[project] ?? [];
const jestConfig =
  extra.length === 0
    ? undefined
    : {
        roots: ['<rootDir>', ...extra.map((f) => `<rootDir>/../${f.slice(0, f.lastIndexOf('/'))}`)],
        testMatch: ['<rootDir>/src/**/?(*.)+(spec|test).ts', ...extra.map((f) => `<rootDir>/../${f}`)],
        // node_modules/@kho/* link to the original packages, outside the sandbox: every import of this package (the
        // integration specs' and their siblings') must load the sandbox's mutated sources, and one copy of them
        moduleNameMapper: {
          [`^@kho/${project}$`]: '<rootDir>/src/index.ts',
          [`^@kho/${project}/([a-z-]+)$`]: '<rootDir>/src/$1/index.ts',
        },
      };

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
module.exports = {
  testRunner: 'jest',
  // jest's related-test search does not follow imports into another package's specs: with integration specs it is
  // off (per-test coverage still runs only the tests that cover each mutant)
  jest: { projectType: 'custom', configFile: `${dir}/jest.config.cjs`, enableFindRelatedTests: !jestConfig, ...(jestConfig && { config: jestConfig }) },
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
