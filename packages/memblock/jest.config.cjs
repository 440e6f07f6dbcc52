module.exports = { displayName: '@kho/memblock', preset: '../../jest.preset.js' };
