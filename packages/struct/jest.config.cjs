module.exports = { displayName: '@kho/struct', preset: '../../jest.preset.js' };
