module.exports = { displayName: '@kho/vmalloc', preset: '../../jest.preset.js' };
