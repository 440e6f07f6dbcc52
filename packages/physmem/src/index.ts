import 'reflect-metadata';

export {
  PAGE_SHIFT,
  PAGE_SIZE,
  MAX_PAGE_ORDER,
  NR_PAGE_ORDERS,
  pfn,
  phys,
  pfnToPhys,
  physToPfn,
  toPhysAddr,
  isPhysAddr,
  pfnAdd,
  toOrder,
  ORDER_0,
  type Pfn,
  type PhysAddr,
  type Order,
} from './abi';
export {
  PhysicalMemory,
  MAX_PHYS_ADDR,
  RAM_CHUNK_SIZE,
  RAM_CHUNK_PAGES,
  PAGE_WORDS,
  LITTLE_ENDIAN_HOST,
  describeRange,
  type RamRange,
  type MemoryLayout,
} from './memory';
export { bootHostBytes } from './host-cost';
export { Memmap, PageFlag, describePfn } from './memmap';
export { BuddyAllocator, Folio, type AllocOptions, type BuddyInfo } from './buddy';
export {
  Slab,
  KMALLOC_SIZES,
  KMALLOC_SLAB_ORDERS,
  KMALLOC_MAX_CACHE_SIZE,
  KMALLOC_MAX_SIZE,
  SLAB_MAX_OBJECTS,
  SLAB_PAGE_MAGIC,
  LARGE_KMALLOC_MAGIC,
  kmallocCacheName,
  type ObjectState,
  type SlabObject,
  type LargeKmallocObject,
  type KmallocObject,
  type KmallocCacheInfo,
  type SlabInfo,
} from './slab';
export { FaultInjector, parseFailPageAlloc, type FaultConfig } from './faults';
export { PhysmemPlugin, PhysmemOptions, physmemModule, createMachine, type MachineOptions } from './plugin';
export { describeMemory } from './format';
