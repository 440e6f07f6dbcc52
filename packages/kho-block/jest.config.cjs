module.exports = { displayName: '@kho/kho-block', preset: '../../jest.preset.js' };
