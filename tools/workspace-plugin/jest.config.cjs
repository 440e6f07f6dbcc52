module.exports = { displayName: '@kho/workspace-plugin', preset: '../../jest.preset.js' };
