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
