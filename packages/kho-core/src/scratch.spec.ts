import { Errno, KernelError, hex } from '@kho/kernel';
import { PhysicalMemory } from '@kho/physmem';
import type { EarlyAllocator } from './ports';
import { describeScratch, overlappingScratch, placeScratch, scratchSizes } from './scratch';

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

  it.each([
    ['x50%', 'EINVAL: kho_scratch=x50% (wanted N% or <lowmem>,<global>,<pernode> with K/M/G suffixes)'],
    ['50%x', 'EINVAL: kho_scratch=50%x (wanted N% or <lowmem>,<global>,<pernode> with K/M/G suffixes)'],
  ])('takes N%% only as the whole text, not %s', (spec, message) => {
    expect(() => scratchSizes(spec, [0], reserved)).toThrow(message);
  });

  it.each([
    ['x,1M,1M', "EINVAL: kho_scratch lowmem: 'x' is not a size"],
    ['1M,1M,x', "EINVAL: kho_scratch pernode: 'x' is not a size"],
  ])('names the bad part of %s', (spec, message) => {
    expect(() => scratchSizes(spec, [0], reserved)).toThrow(message);
  });
});

type AllocOpts = { min?: number; max?: number; node?: number; owner?: string };

/** An early allocator that hands out addresses from a counter and records every call, failing on `failAt`. */
class RecordingEarly implements EarlyAllocator {
  readonly calls: string[] = [];
  readonly allocs: Array<[number, number, AllocOpts | undefined]> = [];
  private next = 0x1000_0000;
  constructor(private readonly failAt = -1) {}
  reserve(base: number, size: number): void {
    this.calls.push(`reserve ${hex(base)} ${size}`);
  }
  free(base: number, size: number): void {
    this.calls.push(`free ${hex(base)} ${size / MiB}M`);
  }
  alloc(size: number, align: number, opts?: AllocOpts): number {
    if (this.allocs.length === this.failAt) throw new KernelError(Errno.ENOMEM, `no room for ${size}`);
    this.allocs.push([size, align, opts]);
    const base = this.next;
    this.next += size;
    return base;
  }
  markScratch(base: number, size: number): void {
    this.calls.push(`scratch ${hex(base)} ${size / MiB}M`);
  }
  markNoInit(): void {
    this.calls.push('noinit');
  }
  setScratchOnly(): void {
    this.calls.push('scratch-only');
  }
  reservedBytes(): number {
    return 0;
  }
}

describe('placeScratch', () => {
  // 1 GiB of RAM on node 0 and 1 GiB on node 1: everything ends below 4 GiB.
  const ram = new PhysicalMemory({
    ranges: [
      { start: 0, size: 1024 * MiB, node: 0 },
      { start: 1024 * MiB, size: 1024 * MiB, node: 1 },
    ],
  });
  const sizes = { lowmem: 4 * MiB, global: 8 * MiB, pernode: [2 * MiB, 6 * MiB] };

  it('places lowmem below the end of RAM (under 4 GiB), then global, then one per node, and frees them as scratch', () => {
    const early = new RecordingEarly();
    const areas = placeScratch(early, ram, sizes);
    expect(early.allocs).toEqual([
      [4 * MiB, 2 * MiB, { max: 2048 * MiB, owner: 'kho-scratch' }],
      [8 * MiB, 2 * MiB, { owner: 'kho-scratch' }],
      [2 * MiB, 2 * MiB, { node: 0, owner: 'kho-scratch' }],
      [6 * MiB, 2 * MiB, { node: 1, owner: 'kho-scratch' }],
    ]);
    expect(areas).toEqual([
      { addr: 0x1000_0000, size: 4 * MiB },
      { addr: 0x1040_0000, size: 8 * MiB },
      { addr: 0x10c0_0000, size: 2 * MiB },
      { addr: 0x10e0_0000, size: 6 * MiB },
    ]);
    expect(early.calls).toEqual([
      'free 0x10000000 4M',
      'scratch 0x10000000 4M',
      'free 0x10400000 8M',
      'scratch 0x10400000 8M',
      'free 0x10c00000 2M',
      'scratch 0x10c00000 2M',
      'free 0x10e00000 6M',
      'scratch 0x10e00000 6M',
    ]);
  });

  it('frees the areas it placed and marks none scratch when a later one does not fit (ENOMEM passes through)', () => {
    const early = new RecordingEarly(3);
    expect(() => placeScratch(early, ram, sizes)).toThrow('ENOMEM: no room for 6291456');
    expect(early.calls).toEqual(['free 0x10000000 4M', 'free 0x10400000 8M', 'free 0x10c00000 2M']);
  });
});

describe('describeScratch / overlappingScratch', () => {
  const areas = [
    { addr: 0x20_0000, size: 2 * MiB },
    { addr: 0x1_0000_0000, size: 512 * MiB },
  ];

  it('lists each area as address+size, comma-separated', () => {
    expect(describeScratch(areas)).toBe('0x200000+2.00 MiB, 0x100000000+512.00 MiB');
    expect(describeScratch([])).toBe('');
  });

  it('finds the area a range overlaps; ranges that only touch an area do not overlap it', () => {
    expect(overlappingScratch(areas, 0x3f_f000, 0x1000)).toBe(areas[0]);
    expect(overlappingScratch(areas, 0x1f_f000, 0x2000)).toBe(areas[0]);
    expect(overlappingScratch(areas, 0x1f_f000, 0x1000)).toBeUndefined();
    expect(overlappingScratch(areas, 0x40_0000, 0x1000)).toBeUndefined();
    expect(overlappingScratch(areas, 0xffff_f000, 0x2000)).toBe(areas[1]);
  });
});
