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

/** radix_ref.c's seed for its xorshift64 workloads. */
const W2_SEED = 0x9e3779b97f4a7c15n;

/**
 * The exact sequence of workload W2 of tools/native/radix_ref.c: 100,000 order-0 adds at pfn = xorshift64() >> 36
 * (Marsaglia 13/7/17 from the seed 0x9E3779B97F4A7C15), so phys below 1 TiB; 99,978 distinct. A benchmark that
 * reports a ratio to radix_ref must time these adds, duplicates included, as it does. This xorshift64 stays apart
 * from @kho/kernel's seeded generators on purpose: it must match the C reference's sequence exactly.
 */
export function radixW2Sequence(): Float64Array {
  const out = new Float64Array(100_000);
  const mask = (1n << 64n) - 1n;
  let x = W2_SEED;
  for (let i = 0; i < out.length; i++) {
    x ^= (x << 13n) & mask;
    x ^= x >> 7n;
    x ^= (x << 17n) & mask;
    out[i] = Number(x >> 36n);
  }
  return out;
}

/**
 * The blocks of a workload:
 * - dense: 1,048,576 contiguous order-0 pages from 4 GiB up (2^17 in quick mode);
 * - sparse: the 99,978 distinct order-0 pages of radix_ref's W2 (see radixW2Sequence), below 1 TiB (quick: those
 *   of its first 12,500 adds, in 1/8 of the space, so the density per leaf stays about the same);
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
    // W2 of tools/native/radix_ref.c, duplicates dropped (quick: the first eighth, in an eighth of the space).
    const seq = radixW2Sequence();
    const distinct = [...new Set(quick ? Array.from(seq.subarray(0, 12_500), (p) => Math.floor(p / 8)) : seq)];
    return { pfns: distinct, orders: new Array<number>(distinct.length).fill(0) };
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
