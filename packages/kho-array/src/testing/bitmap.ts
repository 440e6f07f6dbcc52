import { bareAllocator } from '@kho/physmem/testing';
import { KernelLog, LifecycleBus } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Memmap, PAGE_SIZE, PhysicalMemory, type RamRange } from '@kho/physmem';
import { BitmapArrayTracker } from '../bitmap-array';
import { BitmapChunksTracker } from '../bitmap-chunks';
import type { BitmapTracker } from '../bitmap-tracker';

/** The serialised form of a bitmap tracker: 'chunks' (kho-v1) or 'array' (kho-v1-karr). */
export type BitmapForm = 'chunks' | 'array';

/** A bare memory system with a bitmap tracker over it (no kernel, no KHO), for tests and benchmarks. */
export interface BitmapTestMachine {
  readonly ram: PhysicalMemory;
  readonly memmap: Memmap;
  readonly buddy: BuddyAllocator;
  readonly faults: FaultInjector;
  readonly log: KernelLog;
  readonly tracker: BitmapTracker;
}

/** RAM ranges (node 0) covering the pfn intervals [start, end), sorted and merged. */
export function ramForPfns(intervals: ReadonlyArray<readonly [number, number]>): RamRange[] {
  const sorted = intervals.slice().sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out.map(([s, e]) => ({ start: s * PAGE_SIZE, size: (e - s) * PAGE_SIZE, node: 0 }));
}

/**
 * A tracker of `form` whose pages come from `allocBytes` (default 64 MiB) of RAM at 0, all free in the buddy
 * allocator; 16 MiB at 1 TiB are RAM too but never allocated (for hand-written maps), and so is every block of
 * `blocks` ([pfn, order]), so that the next kernel's reader, which checks each block against RAM, accepts them.
 */
export function bitmapTestMachine(form: BitmapForm, blocks: ReadonlyArray<readonly [number, number]> = [], allocBytes = 64 * 2 ** 20): BitmapTestMachine {
  const allocPages = allocBytes / PAGE_SIZE;
  const tib = 2 ** 40 / PAGE_SIZE;
  const ranges = ramForPfns([[0, allocPages], [tib, tib + 4096], ...blocks.map(([p, o]) => [p, p + 2 ** o] as const)]);
  const { ram, memmap, faults, buddy } = bareAllocator(ranges, [[0, allocPages]]);
  const log = new KernelLog(new LifecycleBus(), 1);
  const tracker = form === 'chunks' ? new BitmapChunksTracker(ram, memmap, buddy, log) : new BitmapArrayTracker(ram, memmap, buddy, log);
  return { ram, memmap, buddy, faults, log, tracker };
}
