/**
 * Shared by this package's specs (not exported): LUO kernels with the test file handler. Kept out of `testing/`
 * because it needs memblock and the radix tracker, which are only devDependencies here.
 */
import type { Kernel, KernelModule, Machine } from '@kho/kernel';
import { BuddyAllocator, PhysicalMemory, createMachine, physmemModule } from '@kho/physmem';
import { Kho, Tracker } from '@kho/kho-core';
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { Liveupdate } from './liveupdate';
import { TestFileHandler, luoTestImage } from './testing';
import { Vfs } from './vfs/vfs';

export const MiB = 2 ** 20;

export function luoImage(extra: readonly KernelModule[] = []): KernelModule[] {
  return luoTestImage([physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule()], extra);
}

export interface LuoKernel {
  readonly k: Kernel;
  readonly luo: Liveupdate;
  readonly vfs: Vfs;
  readonly handler: TestFileHandler;
  readonly ram: PhysicalMemory;
  readonly kho: Kho;
}

export function view(k: Kernel): LuoKernel {
  return { k, luo: k.get(Liveupdate), vfs: k.get(Vfs), handler: k.get(TestFileHandler), ram: k.get(PhysicalMemory), kho: k.get(Kho) };
}

export function bootLuo(opts: { cmdline?: string; mem?: string; extra?: readonly KernelModule[] } = {}): LuoKernel & { machine: Machine } {
  const machine = createMachine({ mem: opts.mem ?? '256M' });
  const k = machine.boot({ image: luoImage(opts.extra), cmdline: opts.cmdline ?? 'liveupdate=on' });
  return { machine, ...view(k) };
}

/** Free pages plus the tracker's metadata pages: what a kernel that leaked nothing has idle (the cli's baseline). */
export function idlePages(k: Kernel): number {
  return k.get(BuddyAllocator).nrFreePages + k.get<Tracker>(Tracker).stats().metadataPages;
}

/** Idle pages of a cold boot of the same machine and command line (the leak baseline). */
export function coldFree(machine: Machine, cmdline: string, extra: readonly KernelModule[] = []): number {
  const m = createMachine({ ranges: [...machine.device(PhysicalMemory).ranges] });
  const free = idlePages(m.boot({ image: luoImage(extra), cmdline }));
  m.shutdown();
  return free;
}
