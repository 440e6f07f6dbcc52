module.exports = { displayName: '@kho/kernel', preset: '../../jest.preset.js' };
