import 'reflect-metadata';

export {
  KHO_SLAB_SUBTREE,
  KHO_SLAB_COMPATIBLE,
  KHO_SLAB_TABLE_VERSION,
  KHO_SLAB_MAX_OBJECTS,
  KHO_SLAB_MAX_SLABS,
  decodeSlabTablePage,
  encodeSlabTablePage,
  type KhoSlabEntry,
  type KhoSlabTablePage,
} from './abi';
export { KhoSlab, type KhoSlabStats } from './kho-slab';
export { khoSlabModule } from './module';
