import type { Order, Pfn } from '@kho/physmem';

/**
 * The block split of preserve_pages / unpreserve_pages / restore_pages: a range of pages becomes naturally aligned
 * blocks of order min(ctz(pfn), floor(log2(pages left))) — with no cap at MAX_PAGE_ORDER, as upstream — and, from
 * kho-v3 on, each block's order is lowered while the block would span two NUMA nodes. The same function serves
 * all three calls, so unpreserve and restore visit exactly the blocks preserve made.
 */

/** The NUMA node of page frame `pfn` (any value for a hole: a block reaching into one is clamped until it does not). */
export type NodeOfPfn = (pfn: number) => number;

/** The largest order a block may have: keys of the kho-v2 radix tree are below 2^53, so orders stop at 52. */
export const KHO_MAX_BLOCK_ORDER = 52;

/**
 * The order of the block at `pfn` in a split of `[pfn, pfn + nrPages)`: min(ctz(pfn), floor(log2(nrPages))), ctz(0)
 * counting as unbounded; lowered while the block's first and last pages lie on different nodes when `nodeOf` is
 * given.
 */
export function splitOrder(pfn: number, nrPages: number, nodeOf?: NodeOfPfn): number {
  let order = Math.min(KHO_MAX_BLOCK_ORDER, Math.floor(Math.log2(nrPages)));
  // Math.log2 of a power of two is exact; of a number just below one it may round up: check.
  while (order > 0 && 2 ** order > nrPages) order--;
  while (order > 0 && pfn % 2 ** order !== 0) order--;
  if (nodeOf) {
    const node = nodeOf(pfn);
    while (order > 0 && nodeOf(pfn + 2 ** order - 1) !== node) order--;
  }
  return order;
}

/** The blocks `[pfn, order]` of the split of `[pfn, pfn + nrPages)`, in ascending order. */
export function splitBlocks(pfn: Pfn, nrPages: number, nodeOf?: NodeOfPfn): Array<[Pfn, Order]> {
  const out: Array<[Pfn, Order]> = [];
  for (let p = pfn, left = nrPages; left > 0; ) {
    // splitOrder yields a non-negative integer and p only moves by whole blocks from a Pfn: both casts are free.
    const order = splitOrder(p, left, nodeOf) as Order;
    out.push([p, order]);
    p = (p + 2 ** order) as Pfn;
    left -= 2 ** order;
  }
  return out;
}
