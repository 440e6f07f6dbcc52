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
  type Pfn,
  type PhysAddr,
  type Order,
} from './abi';
export { PhysicalMemory, MAX_PHYS_ADDR, describeRange, type RamRange, type MemoryLayout } from './memory';
export { Memmap, PageFlag, describePfn } from './memmap';
export { BuddyAllocator, Folio, type AllocOptions, type BuddyInfo } from './buddy';
export { FaultInjector, parseFailPageAlloc, type FaultConfig } from './faults';
export { PhysmemPlugin, PhysmemOptions, physmemModule, createMachine, type MachineOptions } from './plugin';
export { describeMemory } from './format';
