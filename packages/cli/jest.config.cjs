module.exports = { displayName: '@kho/cli', preset: '../../jest.preset.js' };
