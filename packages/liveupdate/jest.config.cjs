module.exports = { displayName: '@kho/liveupdate', preset: '../../jest.preset.js' };
