import type { Kernel, KernelModule, Machine } from '@kho/kernel';
import { BuddyAllocator, createMachine, physmemModule, type RamRange } from '@kho/physmem';
import { Tracker, khoModule } from '@kho/kho-core';
import { khoSlabModule } from '@kho/kho-slab';
import { memblockFdtHandoverModule, memblockModule } from '@kho/memblock';
import { kstateModule, kstateReserveMemModule } from '@kho/kstate';
import { vmallocModule } from '@kho/vmalloc';
import { memfdLuoModule, memfdModule } from '@kho/memfd';
import { liveupdateModule } from '@kho/liveupdate';
import { khoTestModule, type KhoTestConfig } from './demo/kho-test';
import { trackerDescriptor, type TrackerKind } from './registry';
import { memoryPictureModule } from './report/snapshot';

export { TRACKER_KINDS, isTrackerKind, type TrackerKind } from './registry';

/**
 * The kernel image the command runs: physmem, memblock, the radix tracker, KHO, slab preservation, vmalloc,
 * kstate (with both reserve_mem handover formats), memfd, LUO with its memfd-v2 handler (inert unless the command
 * line has `liveupdate=on`) and the memory-picture provider, plus the self-test plugin when a demo configuration is
 * given. `opts.tracker` picks the tracker (default 'radix').
 */
export function kernelImage(demo?: KhoTestConfig, opts: { tracker?: TrackerKind } = {}): KernelModule[] {
  const modules = [physmemModule({ handOffAllRam: false }), memblockModule(), trackerDescriptor(opts.tracker ?? 'radix').module(), khoModule(), khoSlabModule(), vmallocModule()];
  // reserve_mem regions can be handed over in either format; upstream's memblock-v1 is the default
  modules.push(memblockFdtHandoverModule(), kstateModule(), kstateReserveMemModule(), memfdModule(), liveupdateModule(), memfdLuoModule());
  // the memory pictures reports ask for on the bus (taken only when someone listens)
  modules.push(memoryPictureModule());
  if (demo) modules.push(khoTestModule(demo));
  return modules;
}

/** A machine with `ram` bytes on `nodes` NUMA nodes, or with explicit ranges. */
export function machineFor(opts: { ram?: number; nodes?: number; ranges?: readonly RamRange[] }): Machine {
  return opts.ranges ? createMachine({ ranges: [...opts.ranges] }) : createMachine({ mem: opts.ram ?? 4 * 2 ** 30, nodes: opts.nodes ?? 1 });
}

/**
 * The pages of a kernel that hold nothing: free pages plus the pages of the tracker's own metadata. The leak
 * baseline compares this with a cold boot's: every other page must be free again after finish. Tracker pages are
 * counted with the free ones because their number depends on where KHO's own blocks happen to lie (two blocks
 * 128 MiB apart need two radix leaves), not on what was handed over.
 */
export function idlePages(kernel: Kernel): number {
  return kernel.get(BuddyAllocator).nrFreePages + kernel.get<Tracker>(Tracker).stats().metadataPages;
}
