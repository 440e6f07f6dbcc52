import fc from 'fast-check';
import { Errno, KernelError, hex } from '@kho/kernel';
import { encodeFdt, type FdtNode } from '@kho/fdt';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { PROP_PRESERVED_MEMORY_MAP_CRC, encodeKhoData, encodeScratchArray, type ScratchArea } from './abi';
import { khoV1, khoV2, khoV3, khoV4 } from './generations';
import { KHO_MAX_INCOMING_BLOCKS, checkOutsideScratch, containingBlock, indexBlocks, pagesCrc, validateHandover } from './incoming';
import type { IncomingWalkOptions, Tracker } from './ports';
import { buildRootFdt, readableGenerations } from './root-fdt';

const MiB = 2 ** 20;
const FDT = 16 * MiB;
const SCRATCH_ARRAY = 64 * MiB;
const MAP = 20 * MiB;
const SCRATCH: ScratchArea[] = [
  { addr: 64 * MiB, size: 8 * MiB },
  { addr: 96 * MiB, size: 8 * MiB },
];

/** A tracker whose incoming map is the given blocks (its one metadata page is the map page). */
function listTracker(blocks: ReadonlyArray<readonly [number, number]>, fail?: string): Tracker {
  return {
    kind: 'radix',
    walkIncoming(_map: number, visit: (pfn: number, order: number) => void) {
      if (fail) throw new KernelError(Errno.EINVAL, fail);
      for (const [p, o] of blocks) visit(p, o);
      visit(FDT / PAGE_SIZE, 0); // the root FDT is a preserved page itself
    },
    incomingMetadataPfns: () => [MAP / PAGE_SIZE],
  } as unknown as Tracker;
}

/** RAM with a root FDT (generation v3 unless given), a scratch array and kho_data pointing at them. */
function handover(opts: { root?: FdtNode; khoData?: Partial<Record<'fdtAddr' | 'fdtSize' | 'scratchAddr' | 'scratchSize', number>>; scratch?: ScratchArea[] } = {}) {
  const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 256 * MiB, node: 0 }] });
  const root = opts.root ?? buildRootFdt(khoV3, MAP);
  ram.write(FDT, encodeFdt(root, { totalSize: PAGE_SIZE }));
  const scratch = opts.scratch ?? SCRATCH;
  ram.write(SCRATCH_ARRAY, encodeScratchArray(scratch));
  ram.writeU64(MAP, 0x1234);
  const kd = encodeKhoData({ fdtAddr: FDT, fdtSize: PAGE_SIZE, scratchAddr: SCRATCH_ARRAY, scratchSize: 16 * scratch.length, ...opts.khoData });
  return { ram, kd, root };
}

const radix = readableGenerations('radix');

describe('validateHandover (pure: RAM in, a validated handover out)', () => {
  it('returns the generation, the scratch areas and every block in walk order', () => {
    const { ram, kd } = handover();
    const blocks = [
      [0x800, 11],
      [0x3000, 0],
      [0x3001, 0],
    ] as const;
    const inc = validateHandover(ram, kd, listTracker(blocks), radix);
    expect(inc.generation).toBe(khoV3);
    expect(inc.fdtPhys).toBe(FDT);
    expect(inc.mapPhys).toBe(MAP);
    expect(inc.scratch).toEqual(SCRATCH);
    expect(inc.pfns).toEqual([0x800, 0x3000, 0x3001, FDT / PAGE_SIZE]);
    expect(inc.orders).toEqual([11, 0, 0, 0]);
  });

  it.each([khoV2, khoV3, khoV4])('reads a %s root (every radix generation)', (g) => {
    const { ram, kd } = handover({ root: buildRootFdt(g, MAP) });
    expect(validateHandover(ram, kd, listTracker([]), radix).generation).toBe(g);
  });

  it('refuses a generation whose map its tracker cannot read, naming what it found and what it reads', () => {
    const { ram, kd } = handover({ root: buildRootFdt(khoV1, MAP) });
    expect(() => validateHandover(ram, kd, listTracker([]), radix)).toThrow(
      new KernelError(Errno.EINVAL, "root FDT compatible is 'kho-v1\\0', a bitmap-chunks handover (wanted one this kernel reads: 'kho-v2', 'kho-v3', 'kho-v4', 'kho-v4;radix-v1;vmalloc-v1')"),
    );
  });

  it.each<[string, (root: FdtNode) => void, string]>([
    ['an unknown compatible', (r) => r.setString('compatible', 'kho-v5'), "root FDT compatible is 'kho-v5\\0' (wanted one this kernel reads: "],
    ['a two-string compatible list', (r) => r.setProp('compatible', new TextEncoder().encode('kho-v3\0kho-v2\0')), "root FDT compatible is 'kho-v3\\0kho-v2\\0'"],
    ['no compatible', (r) => r.props.delete('compatible'), 'root FDT compatible is (missing)'],
    ['a 4-byte map property', (r) => r.setProp('preserved-memory-map', new Uint8Array(4)), "'preserved-memory-map' is 4 bytes (wanted 8)"],
    ['a zero map', (r) => r.setU64LE('preserved-memory-map', 0), "'preserved-memory-map' is 0 (wanted the phys of the map)"],
    ['a 3-byte checksum', (r) => r.setProp(PROP_PRESERVED_MEMORY_MAP_CRC, new Uint8Array(3)), "'preserved-memory-map-crc' is 3 bytes (wanted 4)"],
  ])('refuses %s', (_what, damage, message) => {
    const root = buildRootFdt(khoV3, MAP);
    damage(root);
    const { ram, kd } = handover({ root });
    expect(() => validateHandover(ram, kd, listTracker([]), radix)).toThrow(message);
  });

  it.each<[string, Parameters<typeof handover>[0], string]>([
    ['an FDT size other than a page', { khoData: { fdtSize: 8192 } }, 'kho_data.fdt_size is 8192 (wanted 4096)'],
    ['an FDT outside RAM', { khoData: { fdtAddr: 2 ** 40 } }, 'kho_data.fdt_addr 0x10000000000 is not a page of RAM'],
    ['an unaligned FDT', { khoData: { fdtAddr: FDT + 8 } }, `kho_data.fdt_addr ${hex(FDT + 8)} is not a page of RAM`],
    ['no scratch area', { khoData: { scratchSize: 0 } }, 'kho_data.scratch_size 0x0 (wanted 16 × 1..66 areas)'],
    ['a scratch array outside RAM', { khoData: { scratchAddr: 2 ** 40 } }, 'kho_data.scratch_addr 0x10000000000 (+32) is not RAM'],
    ['overlapping scratch areas', { scratch: [{ addr: 64 * MiB, size: 8 * MiB }, { addr: 70 * MiB, size: 8 * MiB }] }, 'scratch areas 0x4000000 and 0x4600000 overlap'],
    ['an unaligned scratch area', { scratch: [{ addr: 64 * MiB + 1, size: 8 * MiB }] }, 'scratch area 0x4000001+0x800000 is not page-aligned RAM'],
  ])('refuses %s', (_what, opts, message) => {
    const { ram, kd } = handover(opts);
    expect(() => validateHandover(ram, kd, listTracker([]), radix)).toThrow(new KernelError(Errno.EINVAL, message));
  });

  it('reads up to 66 scratch areas (lowmem, global, one per node of 64), in any order; touching areas do not overlap', () => {
    // 66 touching 1 MiB areas listed from the top down: sorted, they touch end to start and none overlaps
    const many = Array.from({ length: 66 }, (_, i) => ({ addr: (180 - i) * MiB, size: MiB }));
    const { ram, kd } = handover({ scratch: many });
    expect(validateHandover(ram, kd, listTracker([]), radix).scratch).toEqual(many);
    const more = [...many, { addr: 100 * MiB, size: MiB }];
    const h = handover({ scratch: more });
    expect(() => validateHandover(h.ram, h.kd, listTracker([]), radix)).toThrow(new KernelError(Errno.EINVAL, 'kho_data.scratch_size 0x430 (wanted 16 × 1..66 areas)'));
  });

  it.each<[string, ScratchArea[], string]>([
    // listed high first: only a check over the areas sorted by address sees that the second overlaps the first
    ['overlapping areas listed out of order', [{ addr: 96 * MiB, size: 8 * MiB }, { addr: 90 * MiB, size: 8 * MiB }], 'scratch areas 0x5a00000 and 0x6000000 overlap'],
    ['an empty area', [{ addr: 64 * MiB, size: 0 }], 'scratch area 0x4000000+0x0 is not page-aligned RAM'],
    ['an area of a partial page', [{ addr: 64 * MiB, size: 100 }], 'scratch area 0x4000000+0x64 is not page-aligned RAM'],
    ['an area leaving RAM', [{ addr: 252 * MiB, size: 8 * MiB }], 'scratch area 0xfc00000+0x800000 is not page-aligned RAM'],
  ])('refuses %s', (_what, scratch, message) => {
    const { ram, kd } = handover({ scratch });
    expect(() => validateHandover(ram, kd, listTracker([]), radix)).toThrow(new KernelError(Errno.EINVAL, message));
  });

  it('refuses a scratch area at 2^53 or above (its address reads as Infinity)', () => {
    const { ram, kd } = handover();
    const raw = new Uint8Array(8);
    new DataView(raw.buffer).setBigUint64(0, 2n ** 60n, true);
    ram.write(SCRATCH_ARRAY, raw); // the first area's addr
    expect(() => validateHandover(ram, kd, listTracker([]), radix)).toThrow(new KernelError(Errno.EINVAL, 'scratch area >= 2^53+0x800000 is not page-aligned RAM'));
  });

  it('refuses a preserved block that overlaps a scratch area (this boot would overwrite it)', () => {
    const { ram, kd } = handover();
    const inside = (64 * MiB) / PAGE_SIZE + 5;
    expect(() => validateHandover(ram, kd, listTracker([[0x3000, 0], [inside, 0]]), radix)).toThrow(
      new KernelError(Errno.EINVAL, `preserved block ${hex(inside * PAGE_SIZE)} order 0 overlaps scratch area ${hex(64 * MiB)}`),
    );
    // a large block that covers scratch from below is refused too (order 15 at 0: 128 MiB); one that ends where
    // scratch starts is not (order 14 at 0: 64 MiB)
    expect(() => checkOutsideScratch(SCRATCH, [0], [15])).toThrow(/order 15 overlaps scratch area 0x4000000/);
    expect(() => checkOutsideScratch(SCRATCH, [0], [14])).not.toThrow();
    // a block that starts where a scratch area ends is outside it; one on its last page is not
    const end = (SCRATCH[0].addr + SCRATCH[0].size) / PAGE_SIZE;
    expect(() => checkOutsideScratch(SCRATCH, [end], [0])).not.toThrow();
    expect(() => checkOutsideScratch(SCRATCH, [end - 1], [0])).toThrow(/overlaps scratch area 0x4000000/);
  });

  it("passes on the tracker walk's refusal", () => {
    const { ram, kd } = handover();
    expect(() => validateHandover(ram, kd, listTracker([], 'radix tree: root 0x0 is outside RAM'), radix)).toThrow('radix tree: root 0x0 is outside RAM');
  });

  it("checks the tracker's checksum when the root carries one, and ignores its absence (Linux writes none)", () => {
    const root = buildRootFdt(khoV3, MAP);
    const { ram, kd } = handover({ root });
    const crc = pagesCrc(ram, [MAP / PAGE_SIZE]);
    const prop = new Uint8Array(4);
    new DataView(prop.buffer).setUint32(0, crc, true);
    root.setProp(PROP_PRESERVED_MEMORY_MAP_CRC, prop);
    ram.write(FDT, encodeFdt(root, { totalSize: PAGE_SIZE }));
    expect(validateHandover(ram, kd, listTracker([[0x3000, 0]]), radix).pfns).toEqual([0x3000, FDT / PAGE_SIZE]);
    ram.writeU8(MAP + 100, 1);
    expect(() => validateHandover(ram, kd, listTracker([[0x3000, 0]]), radix)).toThrow(/the tracker's pages fail their checksum/);
  });

  it('checks the checksum before the walk: a damaged map is refused from its pages, its blocks never visited (issue 16, row 9)', () => {
    const root = buildRootFdt(khoV3, MAP);
    root.setProp(PROP_PRESERVED_MEMORY_MAP_CRC, new Uint8Array([1, 2, 3, 4]));
    const { ram, kd } = handover({ root });
    let walked = false;
    const tracker = { ...listTracker([]), walkIncoming: () => void (walked = true) } as unknown as Tracker;
    expect(() => validateHandover(ram, kd, tracker, radix)).toThrow(/^EINVAL: the tracker's pages fail their checksum \(crc32c 0x[0-9a-f]+, wanted 0x4030201\)/);
    expect(walked).toBe(false);
  });

  it(`asks the walk to refuse more than KHO_MAX_INCOMING_BLOCKS (${KHO_MAX_INCOMING_BLOCKS}) blocks before it visits any (issue 16, row 8)`, () => {
    const { ram, kd } = handover();
    let asked: IncomingWalkOptions | undefined;
    const tracker = { ...listTracker([]), walkIncoming: (_m: number, _v: unknown, opts: IncomingWalkOptions) => void (asked = opts) } as unknown as Tracker;
    expect(() => validateHandover(ram, kd, tracker, radix)).toThrow(/root FDT page .* is not a preserved order-0 block/);
    expect(asked).toEqual({ maxBlocks: KHO_MAX_INCOMING_BLOCKS });
    expect(KHO_MAX_INCOMING_BLOCKS).toBe(2 ** 23);
  });
});

describe('validateHandover: the map itself must make sense', () => {
  it.each<[string, Array<[number, number]>, string]>([
    ['two blocks on the same page at different orders', [[0x3000, 1], [0x3000, 0]], 'preserved blocks 0x3000000 order 0 and 0x3000000 order 1 overlap (the map is malformed)'],
    ['a block inside a larger one', [[0x3000, 4], [0x3003, 0]], 'preserved blocks 0x3000000 order 4 and 0x3003000 order 0 overlap (the map is malformed)'],
    ['an extra block over an aligned pair of order-0 neighbours', [[0x3000, 0], [0x3001, 0], [0x3000, 1]], 'preserved blocks 0x3000000 order 0 and 0x3000000 order 1 overlap (the map is malformed)'],
  ])('refuses %s', (_what, blocks, reason) => {
    const { ram, kd } = handover();
    expect(() => validateHandover(ram, kd, listTracker(blocks), radix)).toThrow(new KernelError(Errno.EINVAL, reason));
  });

  it('refuses a handover whose root FDT page is not a preserved block (nothing would keep it for the boot)', () => {
    const { ram, kd } = handover();
    const noFdt = { ...listTracker([[0x3000, 0]]), walkIncoming: (_m: number, visit: (p: number, o: number) => void) => visit(0x3000, 0) } as unknown as Tracker;
    expect(() => validateHandover(ram, kd, noFdt, radix)).toThrow(
      new KernelError(Errno.EINVAL, `the root FDT page ${hex(FDT)} is not a preserved order-0 block (nothing would keep it for this boot)`),
    );
  });

  it('indexes the blocks by address for lookups', () => {
    const index = indexBlocks([0x10, 0x800, 0x3], [0, 11, 0]);
    expect([...index.starts]).toEqual([0x3, 0x10, 0x800]);
    expect(containingBlock(index, 0x900)).toEqual([0x800, 11]);
    expect(containingBlock(index, 0x3000)).toBeUndefined();
    expect(containingBlock(index, 0x2)).toBeUndefined();
    expect(containingBlock(index, 0x10)).toEqual([0x10, 0]);
    // the last page of a block is in it, the page after it is not
    expect(containingBlock(index, 0x800 + 2047)).toEqual([0x800, 11]);
    expect(containingBlock(index, 0x800 + 2048)).toBeUndefined();
    expect(containingBlock(index, 0x11)).toBeUndefined();
    expect(containingBlock(indexBlocks([], []), 0)).toBeUndefined();
  });

  it('sorts blocks that arrive as ascending runs (one per order, as a radix walk yields them) and as random input alike', () => {
    // disjoint blocks of random orders at random aligned places, visited in runs of one order each, then shuffled
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { maxLength: 300 }), fc.integer({ min: 0, max: 3 }), fc.boolean(), (slots, spread, shuffle) => {
        const blocks = slots.map((slot, i) => [slot * 16, (i * 7 + spread) % 5] as [number, number]); // order <= 4 fits a 16-page slot
        const byOrder = [...blocks].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
        const input = shuffle ? fc.sample(fc.shuffledSubarray(byOrder, { minLength: byOrder.length }), { numRuns: 1, seed: slots.length })[0] : byOrder;
        const index = indexBlocks(input.map((b) => b[0]), input.map((b) => b[1]));
        const want = [...blocks].sort((a, b) => a[0] - b[0]);
        expect([...index.starts]).toEqual(want.map((b) => b[0]));
        expect([...index.orders]).toEqual(want.map((b) => b[1]));
      }),
      { numRuns: 200 },
    );
    // many short runs fall back to the native sort
    const pfns = Array.from({ length: 1000 }, (_, i) => (i % 2 ? 1000 - i : i) * 2);
    expect([...indexBlocks(pfns, pfns.map(() => 0)).starts]).toEqual([...pfns].sort((a, b) => a - b));
  });
});
