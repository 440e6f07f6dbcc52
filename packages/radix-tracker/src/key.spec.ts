import fc from 'fast-check';
import { decodeKey, encodeKey, keyOrder, leafBit, tableIndex } from './key';

// docs/abi/kho.md section 3, golden vectors: phys, order -> key; table index at L5..L1; leaf bit.
const GOLDEN: Array<[number, number, bigint, number[], number]> = [
  [0x0, 0, 0x0010000000000000n, [2, 0, 0, 0, 0], 0],
  [0x1000, 0, 0x0010000000000001n, [2, 0, 0, 0, 0], 1],
  [0x1_0000_0000, 0, 0x0010000000100000n, [2, 0, 0, 0, 32], 0],
  [0x12_3456_7000, 0, 0x0010000001234567n, [2, 0, 0, 1, 70], 17767],
  [0x800_0000, 1, 0x0008000000004000n, [1, 0, 0, 0, 0], 16384],
  [0x1_0000_0000, 9, 0x0000080000000800n, [0, 2, 0, 0, 0], 2048],
  [0x4000_0000, 18, 0x0000000400000001n, [0, 0, 2, 0, 0], 1],
];

describe('kho-v2 keys (golden vectors)', () => {
  it.each(GOLDEN)('phys %#x order %d', (phys, order, key, indices, bit) => {
    const pfn = phys / 4096;
    const k = encodeKey(pfn, order);
    expect(BigInt(k)).toBe(key);
    expect([5, 4, 3, 2, 1].map((l) => tableIndex(k, l))).toEqual(indices);
    expect(leafBit(k)).toBe(bit);
    expect(keyOrder(k)).toBe(order);
    expect(decodeKey(k)).toEqual({ pfn, order });
  });

  it('key 0 decodes to nothing', () => {
    expect(decodeKey(0)).toBeUndefined();
    expect(keyOrder(0)).toBe(-1);
  });

  it('key 1 is the one key of order 52 (pfn 0), the largest order a key can name', () => {
    expect(keyOrder(1)).toBe(52);
    expect(decodeKey(1)).toEqual({ pfn: 0, order: 52 });
    expect(keyOrder(2)).toBe(51);
  });

  it('encode and decode are inverse for every aligned block below 2^52 bytes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 2 ** 30 }), (order, n) => {
        const pfn = n * 2 ** order;
        const k = encodeKey(pfn, order);
        expect(k).toBeLessThan(2 ** 53);
        expect(decodeKey(k)).toEqual({ pfn, order });
        // the same key computed with BigInt, as the spec writes it
        expect(BigInt(k)).toBe((1n << BigInt(52 - order)) | (BigInt(pfn * 4096) >> BigInt(12 + order)));
      }),
    );
  });
});
