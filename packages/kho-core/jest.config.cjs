module.exports = { displayName: '@kho/kho-core', preset: '../../jest.preset.js' };
