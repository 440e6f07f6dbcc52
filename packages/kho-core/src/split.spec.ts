import fc from 'fast-check';
import { pfn } from '@kho/physmem';
import { splitBlocks, splitOrder } from './split';

/** Node 0 below pfn 0x60000, node 1 from there (the spec's golden example 4). */
const twoNodes = (pfn: number): number => (pfn < 0x60000 ? 0 : 1);

describe('preserve_pages split (upstream: min(ctz(pfn), log2(left)), no MAX_PAGE_ORDER cap)', () => {
  it.each([
    [0, 1, [[0, 0]]],
    [0, 3, [[0, 1], [2, 0]]],
    [1, 15, [[1, 0], [2, 1], [4, 2], [8, 3]]],
    [6, 10, [[6, 1], [8, 3]]],
    // the spec's golden examples 1-3 and 5
    [0x3, 10, [[0x3, 0], [0x4, 2], [0x8, 2], [0xc, 0]]],
    [0x0, 5, [[0x0, 2], [0x4, 0]]],
    [0x12345, 100, [[0x12345, 0], [0x12346, 1], [0x12348, 3], [0x12350, 4], [0x12360, 5], [0x12380, 5], [0x123a0, 3], [0x123a8, 0]]],
    [0x40000, 0x40000, [[0x40000, 18]]],
    // an 8 MiB-aligned 8 MiB range is one order-11 block; 16 MiB at 0 one order-12 block
    [2048, 2048, [[2048, 11]]],
    [0, 4096, [[0, 12]]],
  ])('pfn %d, %d pages', (first, n, blocks) => {
    expect(splitBlocks(pfn(first), n)).toEqual(blocks);
  });

  it('lowers the order while a block would span two NUMA nodes (kho-v3 and later; golden example 4)', () => {
    expect(splitBlocks(pfn(0x40000), 0x40000, twoNodes)).toEqual([
      [0x40000, 17],
      [0x60000, 17],
    ]);
    expect(splitBlocks(pfn(0x40000), 0x40000)).toEqual([[0x40000, 18]]);
    expect(splitOrder(0x5fffe, 4, twoNodes)).toBe(1);
  });

  it('covers the range exactly with naturally aligned blocks, each inside one node when clamped', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 30 }), fc.integer({ min: 1, max: 2 ** 20 }), fc.boolean(), (first, n, clamp) => {
        const nodeOf = clamp ? (p: number): number => Math.floor(p / 0x30000) : undefined;
        let next = first;
        for (const [p, o] of splitBlocks(pfn(first), n, nodeOf)) {
          expect(p).toBe(next);
          expect(p % 2 ** o).toBe(0);
          expect(o).toBe(splitOrder(p, first + n - p, nodeOf));
          if (nodeOf) expect(nodeOf(p + 2 ** o - 1)).toBe(nodeOf(p));
          next += 2 ** o;
        }
        expect(next).toBe(first + n);
      }),
    );
  });

  it('takes the largest order alignment and length allow (nothing smaller)', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 36 }), fc.integer({ min: 1, max: 2 ** 24 }), (pfn, n) => {
        const o = splitOrder(pfn, n);
        expect(2 ** o).toBeLessThanOrEqual(n);
        expect(pfn % 2 ** o).toBe(0);
        expect(2 ** (o + 1) > n || pfn % 2 ** (o + 1) !== 0).toBe(true);
      }),
    );
  });
  it('stops at order 52 however long the range (kho-v2 radix keys are below 2^53)', () => {
    expect(splitOrder(0, 2 ** 53)).toBe(52);
    expect(splitOrder(0, 2 ** 60)).toBe(52);
    expect(splitOrder(2 ** 52, 2 ** 53)).toBe(52);
  });

  it('corrects Math.log2 rounding up just below a power of two (2^50 - 1 pages is not an order-50 block)', () => {
    // Math.log2(2 ** 50 - 1) is exactly 50 in double precision: the length check must lower it.
    expect(Math.log2(2 ** 50 - 1)).toBe(50);
    expect(splitOrder(0, 2 ** 50 - 1)).toBe(49);
    expect(splitOrder(2 ** 50, 2 ** 50 - 1)).toBe(49);
  });
});
