module.exports = { displayName: '@kho/kho-array', preset: '../../jest.preset.js' };
