import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { readIncomingTree } from './radix-tree';
import { randomUpstreamBlocks, upstreamPreserve, walkOrder, writeUpstreamTree } from './testing';

const GiB = 2 ** 30;

/** 8 GiB of RAM on two nodes (4 GiB each); tree pages come from a bump allocator at 7 GiB. */
function fixture() {
  const ram = new PhysicalMemory({
    ranges: [
      { start: 0, size: 4 * GiB, node: 0 },
      { start: 4 * GiB, size: 4 * GiB, node: 1 },
    ],
  });
  let next = 7 * GiB;
  const alloc = (): number => {
    const p = next;
    next += PAGE_SIZE;
    return p;
  };
  return { ram, alloc, nodeOf: (pfn: number): number => (pfn < (4 * GiB) / PAGE_SIZE ? 0 : 1) };
}

describe('reading trees written the way upstream writes them', () => {
  it('returns exactly the blocks of upstream preserve_pages calls, orders 11 and 18 and NUMA-clamped splits included', () => {
    const { ram, alloc, nodeOf } = fixture();
    const blocks = upstreamPreserve(
      [
        [2048, 2048], // 8 MiB at 8 MiB: one order-11 block
        [(1 * GiB) / PAGE_SIZE, GiB / PAGE_SIZE], // 1 GiB at 1 GiB: one order-18 block
        [(3 * GiB) / PAGE_SIZE, (2 * GiB) / PAGE_SIZE], // 2 GiB across the node boundary: two order-18 blocks
        [0x12345, 100], // the spec's golden example 3
      ],
      nodeOf,
    );
    expect(blocks).toContainEqual([2048, 11]);
    expect(blocks).toContainEqual([(1 * GiB) / PAGE_SIZE, 18]);
    expect(blocks).toContainEqual([(3 * GiB) / PAGE_SIZE, 18]);
    expect(blocks).toContainEqual([(4 * GiB) / PAGE_SIZE, 18]);
    const root = writeUpstreamTree(ram, alloc, blocks);
    const got = readIncomingTree(ram, root);
    expect(got.pfns.map((p, i) => [p, got.orders[i]])).toEqual(walkOrder(blocks));
  });

  it('returns exactly 4,000 random blocks of orders 0..18 spread over every usable root entry', () => {
    const { ram, alloc } = fixture();
    const blocks = randomUpstreamBlocks(4000, 4000, 1, (7 * GiB) / PAGE_SIZE);
    const orders = new Set(blocks.map(([, o]) => o));
    expect(orders.has(0) && orders.has(1) && orders.has(18)).toBe(true); // root entries 2, 1 and 0
    const root = writeUpstreamTree(ram, alloc, blocks);
    for (const entry of [0, 1, 2]) expect(ram.readU64n(root + entry * 8)).not.toBe(0n);
    const got = readIncomingTree(ram, root);
    expect(got.count).toBe(4000);
    expect(got.pfns.map((p, i) => [p, got.orders[i]])).toEqual(walkOrder(blocks));
  });
});
