module.exports = { displayName: '@kho/image', preset: '../../jest.preset.js' };
