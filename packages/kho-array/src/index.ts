import 'reflect-metadata';

export * from './abi';
export { type U64 } from './u64';
export {
  KhoArray,
  createKhoArray,
  openKhoArray,
  type KhoArrayContext,
  type KhoArrayEntry,
  type KhoArrayMode,
  type KhoArrayPreserver,
  type KhoArrayVersion,
} from './array';
export { KhoArrays } from './arrays';
export { khoArrayModule } from './module';
export {
  BitmapTracker,
  BitmapMapChecker,
  checkBitmapBlocks,
  visitBitmapBlocks,
  readIncomingBitmaps,
  type BitmapRef,
  type IncomingBitmapBlocks,
  type ParsedBitmapMap,
  type SerialisedForm,
} from './bitmap-tracker';
export { BitmapChunksTracker, writeBitmapChunks, parseBitmapChunks, readIncomingBitmapChunks } from './bitmap-chunks';
export { BitmapArrayTracker, writeBitmapArray, parseBitmapArray, readIncomingBitmapArray } from './bitmap-array';
export { bitmapChunksTrackerModule, bitmapArrayTrackerModule, bitmapChunksTracker, bitmapArrayTracker } from './module';
