module.exports = { displayName: '@kho/radix-tracker', preset: '../../jest.preset.js' };
