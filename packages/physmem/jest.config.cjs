module.exports = { displayName: '@kho/physmem', preset: '../../jest.preset.js' };
