import { seededRandom } from '@kho/kernel/bench';
import { splitBlocks, type NodeOfPfn } from '@kho/kho-core';
import { PAGE_SIZE, pfn } from '@kho/physmem';

/**
 * Trees written the way upstream's preserve path writes them, for tests of the project's reader: blocks come from
 * upstream's split of page ranges (any order, NUMA clamp) and go into a radix tree by a writer of its own, in
 * BigInt arithmetic straight from the ABI document (spec section 3), so that the reader is checked against
 * something other than the project's RadixTracker.
 */

/** Where the fixture writer may put pages: RAM writes plus a source of zeroed pages for tree nodes. */
export interface FixtureRam {
  writeU64(addr: number, v: bigint | number): void;
  readU64n(addr: number): bigint;
  writeU8(addr: number, v: number): void;
  readU8(addr: number): number;
}

/** The kho-v2 key of a block: (1 << (52 - order)) | (phys >> (12 + order)). */
export function upstreamKey(pfn: number, order: number): bigint {
  return (1n << BigInt(52 - order)) | (BigInt(pfn) >> BigInt(order));
}

/**
 * Writes `blocks` into a radix tree rooted at a fresh page from `allocPage` and returns the root's phys. The
 * descent is upstream's kho_radix_add_page: levels 5..1 index `(key >> ((L - 1) * 9 + 15)) & 511`, a missing
 * table is a zeroed page, and the leaf bit is `key & 32767`. Idempotent per block, like upstream.
 */
export function writeUpstreamTree(ram: FixtureRam, allocPage: () => number, blocks: ReadonlyArray<readonly [number, number]>): number {
  const root = allocPage();
  for (const [pfn, order] of blocks) {
    const key = upstreamKey(pfn, order);
    let table = root;
    for (let level = 5; level >= 1; level--) {
      const index = Number((key >> BigInt((level - 1) * 9 + 15)) & 511n);
      let child = ram.readU64n(table + index * 8);
      if (child === 0n) {
        child = BigInt(allocPage());
        ram.writeU64(table + index * 8, child);
      }
      table = Number(child);
    }
    const bit = Number(key & 32767n);
    ram.writeU8(table + (bit >> 3), ram.readU8(table + (bit >> 3)) | (1 << (bit & 7)));
  }
  return root;
}

/** The blocks upstream's preserve_pages makes of each `[pfn, nrPages]` range (kho-v3 and later with `nodeOf`). */
export function upstreamPreserve(ranges: ReadonlyArray<readonly [number, number]>, nodeOf?: NodeOfPfn): Array<[number, number]> {
  return ranges.flatMap(([p, n]) => splitBlocks(pfn(p), n, nodeOf));
}

/** `blocks` in the order a depth-first walk in ascending index order visits them: ascending key. */
export function walkOrder(blocks: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  return blocks
    .map(([p, o]) => [p, o, upstreamKey(p, o)] as const)
    .sort((a, b) => (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0))
    .map(([p, o]) => [p, o]);
}

/**
 * `count` distinct, non-overlapping blocks at seeded random places in `[firstPfn, endPfn)`, of orders 0..maxOrder
 * (each naturally aligned, at least one of every order from 2 to `maxOrder`), so that they land in every usable root entry (0: order 2
 * and up, 1: order 1, 2: order 0) and in many leaves. Same seed, same blocks.
 */
export function randomUpstreamBlocks(seed: number, count: number, firstPfn: number, endPfn: number, maxOrder = 18): Array<[number, number]> {
  const rand = seededRandom(seed);
  // Small orders far more often, as real preservations are mostly pages and folios (order 2 + k with probability
  // 2^-(k+1) past the first two); one of each order from 2 to maxOrder at least.
  const orders = Array.from({ length: count }, (_, i) => {
    if (i <= maxOrder - 2) return maxOrder - i;
    const r = rand();
    return r < 0.5 ? 0 : r < 0.7 ? 1 : Math.min(maxOrder, 2 + Math.floor(-Math.log2(1 - rand())));
  });
  // The largest first, so that scattered small blocks do not leave no room for them.
  const byOrder = orders.map((o, i) => [o, i] as const).sort((a, b) => b[0] - a[0]);
  const taken = new Map<number, number>(); // pfn -> order, for the overlap test below
  const out: Array<[number, number]> = new Array(count);
  for (const [order, i] of byOrder) {
    const size = 2 ** order;
    const first = Math.ceil(firstPfn / size) * size;
    const slots = Math.floor((endPfn - first) / size);
    let placed = false;
    for (let tries = 0; tries < 200 && slots > 0 && !placed; tries++) {
      const pfn = first + Math.floor(rand() * slots) * size;
      if (!overlaps(taken, pfn, size)) {
        taken.set(pfn, order);
        out[i] = [pfn, order];
        placed = true;
      }
    }
    if (!placed) throw new Error(`randomUpstreamBlocks: no room for an order-${order} block in [${firstPfn}, ${endPfn})`);
  }
  return out;
}

/** Whether [pfn, pfn + size) overlaps a taken block (all blocks are naturally aligned: check the enclosing ones). */
function overlaps(taken: ReadonlyMap<number, number>, pfn: number, size: number): boolean {
  // a taken block that contains pfn starts at pfn rounded down to its own size
  for (let o = 0; o <= 52; o++) {
    const head = Math.floor(pfn / 2 ** o) * 2 ** o;
    const t = taken.get(head);
    if (t !== undefined && head + 2 ** t > pfn) return true;
  }
  // a taken block inside [pfn, pfn + size): only possible for smaller ones; scan when the range is small
  if (size <= 4096) {
    for (let p = pfn; p < pfn + size; p++) if (taken.has(p)) return true;
    return false;
  }
  for (const [q] of taken) if (q >= pfn && q < pfn + size) return true;
  return false;
}

/** Bytes of RAM a block covers. */
export function blockBytes(order: number): number {
  return PAGE_SIZE * 2 ** order;
}
