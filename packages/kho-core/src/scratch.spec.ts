import { scratchSizes } from './scratch';

const MiB = 2 ** 20;

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
