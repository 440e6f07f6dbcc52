import { seededRandom } from '@kho/kernel/bench';
import { MAX_PAGE_ORDER, PAGE_SIZE } from '@kho/physmem';

/** The tracker benchmarks' workloads (the issue's radix workloads), shared by every tracker's bench. */
export type RadixWorkloadName = 'dense' | 'sparse' | 'mixed';

export interface RadixWorkload {
  readonly pfns: number[];
  readonly orders: number[];
}

/** Where dense and mixed blocks start: 4 GiB. */
export const RADIX_WORKLOAD_BASE_PFN = (4 * 2 ** 30) / PAGE_SIZE;

/**
 * The blocks of a workload:
 * - dense: 1,048,576 contiguous order-0 pages from 4 GiB up (2^17 in quick mode);
 * - sparse: 100,000 order-0 pages at seeded random page addresses below 1 TiB (quick: 1/8 of the blocks in 1/8
 *   of the space, so the density per leaf stays the same);
 * - mixed: blocks of random order 0..10, naturally aligned, tiling [4 GiB, 12 GiB) without gaps (1 GiB quick);
 *   a drawn order too large for the cursor's alignment is lowered until the block fits.
 */
export function radixWorkload(name: RadixWorkloadName, quick: boolean): RadixWorkload {
  const base = RADIX_WORKLOAD_BASE_PFN;
  if (name === 'dense') {
    const n = quick ? 2 ** 17 : 2 ** 20;
    return { pfns: Array.from({ length: n }, (_, i) => base + i), orders: new Array<number>(n).fill(0) };
  }
  if (name === 'sparse') {
    const n = quick ? 12_500 : 100_000;
    const span = (quick ? 2 ** 40 / 8 : 2 ** 40) / PAGE_SIZE;
    const rand = seededRandom(0x5ba25e);
    const distinct = new Set<number>();
    while (distinct.size < n) distinct.add(Math.floor(rand() * span));
    return { pfns: [...distinct], orders: new Array<number>(n).fill(0) };
  }
  const end = base + (quick ? 2 ** 30 : 8 * 2 ** 30) / PAGE_SIZE;
  const rand = seededRandom(0x3117ed);
  const pfns: number[] = [];
  const orders: number[] = [];
  for (let pfn = base; pfn < end; ) {
    let order = Math.floor(rand() * (MAX_PAGE_ORDER + 1));
    while (pfn % 2 ** order !== 0 || pfn + 2 ** order > end) order--;
    pfns.push(pfn);
    orders.push(order);
    pfn += 2 ** order;
  }
  return { pfns, orders };
}
export { writeUpstreamTree, upstreamPreserve, upstreamKey, walkOrder, randomUpstreamBlocks, blockBytes, type FixtureRam } from './upstream';
