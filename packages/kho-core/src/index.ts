import 'reflect-metadata';

export {
  SETUP_KHO,
  KHO_DATA_SIZE,
  KHO_FDT_COMPATIBLE,
  KHO_PAGE_MAGIC,
  KHO_SCRATCH_ENTRY_SIZE,
  KHO_SCRATCH_ALIGN,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_PRESERVED_MEMORY_MAP_CRC,
  PROP_SUB_FDT,
  encodeKhoData,
  decodeKhoData,
  encodeScratchArray,
  decodeScratchArray,
  type KhoData,
  type ScratchArea,
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
export { EarlyAllocator, Tracker, type BlockVisitor, type TrackerStats } from './ports';
export { Kho, splitOrder, splitBlocks, scratchSizes, type IncomingHandover, type KhoStats } from './kho';
export { khoModule, khoSlabModule } from './module';
export { KhoSlab, type KhoSlabStats } from './slab';
