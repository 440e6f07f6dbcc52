// Two workers: the cli's suites are the longest of the workspace and mostly wait on child processes, so the
// default (cores - 1, one worker on these 2-core machines) leaves a core idle once the other packages are done.
module.exports = { displayName: '@kho/cli', preset: '../../jest.preset.js', maxWorkers: 2 };
