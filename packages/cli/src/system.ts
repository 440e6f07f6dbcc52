import type { KernelModule, Machine } from '@kho/kernel';
import { createMachine, physmemModule, type RamRange } from '@kho/physmem';
import { khoModule, khoSlabModule } from '@kho/kho-core';
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { vmallocModule } from '@kho/vmalloc';
import { memfdModule } from '@kho/memfd';
import { khoTestModule, type KhoTestConfig } from './demo/kho-test';

/**
 * The kernel image the command runs: physmem, memblock, the radix tracker, KHO, slab preservation, vmalloc and
 * memfd, plus the self-test plugin when a demo configuration is given.
 */
export function kernelImage(demo?: KhoTestConfig): KernelModule[] {
  const modules = [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), khoSlabModule(), vmallocModule()];
  modules.push(memfdModule());
  if (demo) modules.push(khoTestModule(demo));
  return modules;
}

/** A machine with `ram` bytes on `nodes` NUMA nodes, or with explicit ranges. */
export function machineFor(opts: { ram?: number; nodes?: number; ranges?: readonly RamRange[] }): Machine {
  return opts.ranges ? createMachine({ ranges: [...opts.ranges] }) : createMachine({ mem: opts.ram ?? 4 * 2 ** 30, nodes: opts.nodes ?? 1 });
}
