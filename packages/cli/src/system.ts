import type { KernelModule, Machine } from '@kho/kernel';
import { createMachine, physmemModule, type RamRange } from '@kho/physmem';
import { khoModule, khoSlabModule } from '@kho/kho-core';
import { memblockFdtHandoverModule, memblockModule } from '@kho/memblock';
import { kstateModule, kstateReserveMemModule } from '@kho/kstate';
import { radixTrackerModule } from '@kho/radix-tracker';
import { bitmapArrayTrackerModule, bitmapChunksTrackerModule } from '@kho/kho-array';
import { vmallocModule } from '@kho/vmalloc';
import { memfdModule } from '@kho/memfd';
import { khoTestModule, type KhoTestConfig } from './demo/kho-test';
import { memoryPictureModule } from './report/snapshot';

/**
 * The preserved-memory trackers a kernel image can have: the kho-v2 radix tree (spec section 3, the default),
 * and the kho-v1 bitmaps serialised as a chunk list or through a KHO array (section 7). A kernel refuses a
 * handover written by another.
 */
export const TRACKER_KINDS = ['radix', 'bitmap-chunks', 'bitmap-array'] as const;
export type TrackerKind = (typeof TRACKER_KINDS)[number];

const TRACKER_MODULES: Record<TrackerKind, () => KernelModule> = {
  radix: radixTrackerModule,
  'bitmap-chunks': bitmapChunksTrackerModule,
  'bitmap-array': bitmapArrayTrackerModule,
};

/** True when `name` is one of {@link TRACKER_KINDS}. */
export function isTrackerKind(name: unknown): name is TrackerKind {
  return typeof name === 'string' && (TRACKER_KINDS as readonly string[]).includes(name);
}

/**
 * The kernel image the command runs: physmem, memblock, the radix tracker, KHO, slab preservation, vmalloc,
 * kstate (with both reserve_mem handover formats), memfd and the memory-picture provider, plus the self-test
 * plugin when a demo configuration is given. `opts.tracker` picks the tracker (default 'radix').
 */
export function kernelImage(demo?: KhoTestConfig, opts: { tracker?: TrackerKind } = {}): KernelModule[] {
  const modules = [physmemModule({ handOffAllRam: false }), memblockModule(), TRACKER_MODULES[opts.tracker ?? 'radix'](), khoModule(), khoSlabModule(), vmallocModule()];
  // reserve_mem regions can be handed over in either format; kstate's is the default
  modules.push(memblockFdtHandoverModule(), kstateModule(), kstateReserveMemModule(), memfdModule());
  // the memory pictures reports ask for on the bus (taken only when someone listens)
  modules.push(memoryPictureModule());
  if (demo) modules.push(khoTestModule(demo));
  return modules;
}

/** A machine with `ram` bytes on `nodes` NUMA nodes, or with explicit ranges. */
export function machineFor(opts: { ram?: number; nodes?: number; ranges?: readonly RamRange[] }): Machine {
  return opts.ranges ? createMachine({ ranges: [...opts.ranges] }) : createMachine({ mem: opts.ram ?? 4 * 2 ** 30, nodes: opts.nodes ?? 1 });
}
