/**
 * Shared by the LUO specs of this package (not part of the build): kernels with LUO and the memfd-v2 handler, and
 * upstream's selftest helpers (luo_test_utils.c) written against the simulated uAPI.
 */
import type { Kernel, KernelModule, Machine } from '@kho/kernel';
import { BuddyAllocator, PhysicalMemory, createMachine, physmemModule } from '@kho/physmem';
import { Kho, Tracker, khoModule } from '@kho/kho-core';
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { vmallocModule } from '@kho/vmalloc';
import { Liveupdate, Vfs, liveupdateModule, luoPreserveFd, luoRetrieveFd, type Process } from '@kho/liveupdate';
import { MemfdFs } from './memfd-file';
import { memfdLuoModule } from './memfd-luo';

export const image = (extra: readonly KernelModule[] = []): KernelModule[] => [
  physmemModule({ handOffAllRam: false }),
  memblockModule(),
  radixTrackerModule(),
  khoModule(),
  vmallocModule(),
  liveupdateModule(),
  memfdLuoModule(),
  ...extra,
];

export interface Booted {
  readonly machine: Machine;
  readonly k: Kernel;
  readonly luo: Liveupdate;
  readonly fs: MemfdFs;
  readonly vfs: Vfs;
  readonly ram: PhysicalMemory;
  readonly kho: Kho;
  readonly proc: Process;
}

export function viewOf(machine: Machine, k: Kernel): Booted {
  const vfs = k.get(Vfs);
  return { machine, k, luo: k.get(Liveupdate), fs: k.get(MemfdFs), vfs, ram: k.get(PhysicalMemory), kho: k.get(Kho), proc: vfs.spawn('selftest') };
}

export function boot(cmdline = 'liveupdate=on', mem = '512M'): Booted {
  const machine = createMachine({ mem });
  return viewOf(machine, machine.boot({ image: image(), cmdline }));
}

/** kexec to the next kernel (same image and command line); a new process there. */
export function kexec(b: Booted): Booted {
  return viewOf(b.machine, b.k.liveUpdate());
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** create_and_preserve_memfd: a one-page memfd holding `data`, preserved with `token`; the memfd fd is closed. */
export function createAndPreserveMemfd(b: Booted, sessionFd: number, token: number | bigint, data: string): void {
  const fd = b.fs.memfdCreate(b.proc, 'test-memfd');
  b.proc.ftruncate(fd, 4096);
  const page = b.proc.mmap(fd);
  page.page(0).set(enc(data));
  page.unmap();
  luoPreserveFd(b.proc, sessionFd, fd, token);
  b.proc.close(fd);
}

/** restore_and_verify_memfd: retrieves `token` and checks that its first bytes are `data`. Returns the fd. */
export function restoreAndVerifyMemfd(b: Booted, sessionFd: number, token: number | bigint, data: string): number {
  const fd = luoRetrieveFd(b.proc, sessionFd, token);
  const got = dec(b.proc.pread(fd, 0, data.length));
  if (got !== data) throw new Error(`token ${token}: '${got}' (wanted '${data}')`);
  return fd;
}

/** Free pages plus the tracker's metadata pages: what a kernel that leaked nothing has idle. */
export function idlePages(k: Kernel): number {
  return k.get(BuddyAllocator).nrFreePages + k.get<Tracker>(Tracker).stats().metadataPages;
}

/** Idle pages of a cold boot of this machine's RAM with `cmdline`. */
export function coldFree(machine: Machine, cmdline: string): number {
  const m = createMachine({ ranges: [...machine.device(PhysicalMemory).ranges] });
  const n = idlePages(m.boot({ image: image(), cmdline }));
  m.shutdown();
  return n;
}
