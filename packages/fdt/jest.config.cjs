module.exports = { displayName: '@kho/fdt', preset: '../../jest.preset.js' };
