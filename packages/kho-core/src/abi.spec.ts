import fc from 'fast-check';
import { KHO_DATA_SIZE, decodeKhoData, decodeScratchArray, encodeKhoData, encodeScratchArray } from './abi';
import { scratchSizes, splitBlocks, splitOrder } from './kho';

const MiB = 2 ** 20;

describe('struct kho_data (golden bytes)', () => {
  it('is 32 little-endian bytes: fdt_addr, fdt_size, scratch_addr, scratch_size', () => {
    const bytes = encodeKhoData({ fdtAddr: 0x1234_5000, fdtSize: 4096, scratchAddr: 0xf200_0000, scratchSize: 48 });
    expect(bytes.length).toBe(KHO_DATA_SIZE);
    expect(Buffer.from(bytes).toString('hex')).toBe(
      '0050341200000000' + '0010000000000000' + '000000f200000000' + '3000000000000000',
    );
    expect(decodeKhoData(bytes)).toEqual({ fdtAddr: 0x1234_5000, fdtSize: 4096, scratchAddr: 0xf200_0000, scratchSize: 48 });
  });

  it('refuses a blob of the wrong size and maps values at or above 2^53 to Infinity', () => {
    expect(decodeKhoData(new Uint8Array(31))).toBe('kho_data is 31 bytes (wanted 32)');
    const b = new Uint8Array(32).fill(0xff);
    expect(decodeKhoData(b)).toEqual({ fdtAddr: Infinity, fdtSize: Infinity, scratchAddr: Infinity, scratchSize: Infinity });
  });

  it('scratch arrays round-trip (16 bytes an entry)', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ addr: fc.nat({ max: 2 ** 40 }), size: fc.nat({ max: 2 ** 36 }) }), { maxLength: 8 }), (areas) => {
        const bytes = encodeScratchArray(areas);
        expect(bytes.length).toBe(areas.length * 16);
        expect(decodeScratchArray(bytes)).toEqual(areas);
      }),
    );
  });
});

describe('preserve_pages split', () => {
  it.each([
    [0, 1, [[0, 0]]],
    [0, 3, [[0, 1], [2, 0]]],
    [1, 15, [[1, 0], [2, 1], [4, 2], [8, 3]]],
    [0, 4096, [[0, 10], [1024, 10], [2048, 10], [3072, 10]]],
    [6, 10, [[6, 1], [8, 3]]],
  ])('pfn %d, %d pages', (pfn, n, blocks) => {
    expect(splitBlocks(pfn, n)).toEqual(blocks);
  });

  it('covers the range exactly with naturally aligned blocks of order <= 10', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 30 }), fc.integer({ min: 1, max: 5000 }), (pfn, n) => {
        let next = pfn;
        for (const [p, o] of splitBlocks(pfn, n)) {
          expect(p).toBe(next);
          expect(o).toBeLessThanOrEqual(10);
          expect(p % 2 ** o).toBe(0);
          expect(o).toBe(splitOrder(p, pfn + n - p));
          next += 2 ** o;
        }
        expect(next).toBe(pfn + n);
      }),
    );
  });
});

describe('kho_scratch=', () => {
  const reserved = (f: { max?: number; node?: number }): number => (f.node === 1 ? 10 * MiB : f.max !== undefined ? 30 * MiB : 50 * MiB);

  it.each<[string, { lowmem: number; global: number; pernode: number[] }]>([
    ['200%', { lowmem: 60 * MiB, global: 100 * MiB, pernode: [100 * MiB, 20 * MiB] }],
    ['50%', { lowmem: 16 * MiB, global: 26 * MiB, pernode: [26 * MiB, 6 * MiB] }],
    ['16M,512M,3M', { lowmem: 16 * MiB, global: 512 * MiB, pernode: [4 * MiB, 4 * MiB] }],
    ['1K,1K,1K', { lowmem: 2 * MiB, global: 2 * MiB, pernode: [2 * MiB, 2 * MiB] }],
  ])('%s', (spec, want) => {
    expect(scratchSizes(spec, [0, 1], reserved)).toEqual(want);
  });

  it.each([
    ['0%', 'EINVAL: kho_scratch=0%: the percentage must be above 0'],
    ['16M,512M', 'EINVAL: kho_scratch=16M,512M (wanted N% or <lowmem>,<global>,<pernode> with K/M/G suffixes)'],
    ['16M,lots,3M', "EINVAL: kho_scratch global: 'lots' is not a size (wanted a number with an optional K, M, G, T or P suffix)"],
  ])('refuses %s', (spec, message) => {
    expect(() => scratchSizes(spec, [0], reserved)).toThrow(message);
  });
});
