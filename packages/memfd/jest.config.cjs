module.exports = { displayName: '@kho/memfd', preset: '../../jest.preset.js' };
