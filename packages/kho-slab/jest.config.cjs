module.exports = { displayName: '@kho/kho-slab', preset: '../../jest.preset.js' };
