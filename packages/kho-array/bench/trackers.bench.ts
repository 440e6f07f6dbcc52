import { bareAllocator } from '@kho/physmem/testing';
import { KernelLog, LifecycleBus } from '@kho/kernel';
import { defineBench, timeNs, type BenchResult } from '@kho/kernel/bench';
import { BuddyAllocator, Memmap, PAGE_SIZE, PhysicalMemory, pfn, toOrder } from '@kho/physmem';
import { RadixTracker } from '@kho/radix-tracker';
import { radixWorkload } from '@kho/radix-tracker/testing';
import { BitmapArrayTracker } from '../src/bitmap-array';
import { BitmapChunksTracker } from '../src/bitmap-chunks';
import type { BitmapTracker } from '../src/bitmap-tracker';
import { ramForPfns } from '../src/testing';

/**
 * `trackers/<workload>-<tracker>`: the three preserved-memory trackers on the radix benchmark's workloads
 * (packages/radix-tracker/bench/radix.bench.ts: the same sizes and seeds). Per block:
 * - `bytesPerBlock`: the tracker's metadata after serialize (radix: its nodes; bitmaps: the bitmap pages plus
 *   the serialised map) × 4096 / blocks;
 * - `recordNsPerBlock`: building the tracker from nothing (every round frees the previous one first);
 * - `serializeNsPerBlock`: serialize, then cancel (which frees the map); 0 for radix, which has nothing to do;
 * - `walkNsPerBlock`: the next kernel's validating walk, `walkIncoming` (check everything, then visit).
 * Blocks are RAM of the machine (so that the walk accepts them) but never allocated: the trackers' pages come
 * from 256 MiB at 0.
 */

const MiB = 2 ** 20;
const NODE_RAM = 256 * MiB;

type TrackerName = 'radix' | 'bitmap-chunks' | 'bitmap-array';
type WorkloadName = 'dense' | 'sparse' | 'mixed';

interface Workload {
  readonly pfns: number[];
  readonly orders: number[];
}

const WORKLOADS: Record<WorkloadName, (quick: boolean) => Workload> = {
  dense: (q) => radixWorkload('dense', q),
  sparse: (q) => radixWorkload('sparse', q),
  mixed: (q) => radixWorkload('mixed', q),
};

interface Setup {
  readonly ram: PhysicalMemory;
  readonly memmap: Memmap;
  readonly buddy: BuddyAllocator;
  readonly log: KernelLog;
  readonly work: Workload;
}

/** One machine per workload, shared by its three benches (machines of gigabytes are not made three times). */
let cached: { key: string; setup: Setup } | undefined;

function setupFor(name: WorkloadName, quick: boolean): Setup {
  const key = `${name}/${quick}`;
  if (cached?.key === key) return cached.setup;
  cached = undefined;
  const work = WORKLOADS[name](quick);
  // RAM: the trackers' 256 MiB at 0, and exactly the blocks (merged where they touch).
  const intervals: Array<[number, number]> = [[0, NODE_RAM / PAGE_SIZE]];
  for (let i = 0; i < work.pfns.length; i++) intervals.push([work.pfns[i], work.pfns[i] + 2 ** work.orders[i]]);
  const { ram, memmap, buddy } = bareAllocator(ramForPfns(intervals), [[0, NODE_RAM / PAGE_SIZE]]);
  const setup = { ram, memmap, buddy, log: new KernelLog(new LifecycleBus(), 1), work };
  cached = { key, setup };
  return setup;
}

/** The fastest of five timeNs runs after an untimed warm-up: the machine is shared, the best run is the least disturbed. */
function measure(fn: () => number, quick: boolean): number {
  timeNs(fn, quick ? 30 : 150);
  let best = Infinity;
  for (let i = 0; i < 5; i++) best = Math.min(best, timeNs(fn, quick ? 20 : 150).nsPerOp);
  return best;
}

function round(v: number): number {
  return +v.toFixed(2);
}

function run(workload: WorkloadName, tracker: TrackerName, quick: boolean): BenchResult {
  const { ram, memmap, buddy, log, work } = setupFor(workload, quick);
  const { pfns, orders } = work;
  const n = pfns.length;
  const free0 = buddy.nrFreePages;
  let seen = 0;
  const visit = (): void => void seen++;
  let record: number;
  let serialize = 0;
  let walk: number;
  let pages: number;
  if (tracker === 'radix') {
    const t = new RadixTracker(ram, buddy, log);
    record = measure(() => {
      t.destroy();
      t.init();
      for (let i = 0; i < n; i++) t.add(pfn(pfns[i]), toOrder(orders[i]));
      return n;
    }, quick);
    const root = t.serialize();
    pages = t.stats().metadataPages;
    walk = measure(() => {
      t.walkIncoming(root, visit);
      return n;
    }, quick);
    t.destroy();
  } else {
    const t: BitmapTracker = tracker === 'bitmap-chunks' ? new BitmapChunksTracker(ram, memmap, buddy, log) : new BitmapArrayTracker(ram, memmap, buddy, log);
    record = measure(() => {
      t.destroy();
      for (let i = 0; i < n; i++) t.add(pfn(pfns[i]), toOrder(orders[i]));
      return n;
    }, quick);
    serialize = measure(() => {
      t.serialize();
      t.cancelSerialize();
      return n;
    }, quick);
    const map = t.serialize();
    pages = t.stats().metadataPages;
    walk = measure(() => {
      t.walkIncoming(map, visit);
      return n;
    }, quick);
    t.destroy();
  }
  if (seen === 0 || seen % n !== 0) throw new Error(`trackers bench: the incoming walk saw ${seen} blocks, wanted a multiple of ${n}`);
  if (buddy.nrFreePages !== free0) throw new Error(`trackers bench: ${free0 - buddy.nrFreePages} pages leaked`);
  return {
    value: round((pages * PAGE_SIZE) / n),
    unit: 'bytes/block',
    bytesPerBlock: round((pages * PAGE_SIZE) / n),
    recordNsPerBlock: round(record),
    serializeNsPerBlock: round(serialize),
    walkNsPerBlock: round(walk),
    blocks: n,
    metadataPages: pages,
  };
}

for (const workload of ['dense', 'sparse', 'mixed'] as const) {
  for (const tracker of ['radix', 'bitmap-chunks', 'bitmap-array'] as const) {
    defineBench({ name: `trackers/${workload}-${tracker}`, run: (ctx) => run(workload, tracker, ctx.quick) });
  }
}
