import 'reflect-metadata';

export {
  SETUP_KHO,
  KHO_DATA_SIZE,
  KHO_FDT_COMPATIBLE,
  KHO_PAGE_MAGIC,
  KHO_SCRATCH_ENTRY_SIZE,
  KHO_SCRATCH_ALIGN,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_SUB_FDT,
  encodeKhoData,
  decodeKhoData,
  encodeScratchArray,
  decodeScratchArray,
  type KhoData,
  type ScratchArea,
} from './abi';
export { EarlyAllocator, Tracker, type BlockVisitor, type TrackerStats } from './ports';
export { Kho, splitOrder, splitBlocks, scratchSizes, type IncomingHandover, type KhoStats } from './kho';
export { khoModule } from './module';
export * from './fdt';
export * from './image';
