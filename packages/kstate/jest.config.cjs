module.exports = { displayName: '@kho/kstate', preset: '../../jest.preset.js' };
