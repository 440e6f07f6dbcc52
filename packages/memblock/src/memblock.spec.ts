import { bareAllocator } from '@kho/physmem/testing';
import fc from 'fast-check';
import { Errno, KernelError, KernelLog, LifecycleBus, seededRandom } from '@kho/kernel';
import { BuddyAllocator, Memmap, PAGE_SIZE, PageFlag, type RamRange, pfn } from '@kho/physmem';
import { Memblock, type MemblockRegion } from './memblock';

const KiB = 2 ** 10;
const MiB = 2 ** 20;

const ONE_NODE: RamRange[] = [{ start: 0, size: 64 * MiB, node: 0 }];
const TWO_NODES: RamRange[] = [
  { start: 0, size: 64 * MiB, node: 0 },
  { start: 64 * MiB, size: 64 * MiB, node: 1 },
];

/** A fresh boot's worth of memory objects, built directly. */
function setup(ranges: readonly RamRange[] = ONE_NODE) {
  const { ram, memmap, buddy } = bareAllocator(ranges, []);
  const log = new KernelLog(new LifecycleBus(), 1);
  const mb = new Memblock(ram, log);
  return { ram, memmap, buddy, log, mb };
}

/** The KernelError `fn` throws (errno and full message), or a failure when it throws nothing or something else. */
function errorOf(fn: () => unknown): [Errno, string] {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return [e.errno, e.message];
    throw e;
  }
  throw new Error('expected a KernelError, nothing was thrown');
}

describe('Memblock.alloc', () => {
  it.each<[string, readonly RamRange[], Array<[number, number, { min?: number; max?: number; node?: number }]>, number[]]>([
    ['top-down, each below the last', ONE_NODE, [[4 * KiB, 4 * KiB, {}], [4 * KiB, 4 * KiB, {}], [8 * KiB, 4 * KiB, {}]], [64 * MiB - 4 * KiB, 64 * MiB - 8 * KiB, 64 * MiB - 16 * KiB]],
    ['aligned below what is taken', ONE_NODE, [[4 * KiB, 4 * KiB, {}], [1 * MiB, 2 * MiB, {}]], [64 * MiB - 4 * KiB, 62 * MiB]],
    ['address 0 when the alignment is that large', ONE_NODE, [[4 * KiB, 128 * MiB, {}]], [0]],
    ['alignments above 2^32', ONE_NODE, [[4 * KiB, 2 ** 33, {}]], [0]],
    ['byte-sized and byte-aligned', ONE_NODE, [[10, 1, {}], [6, 8, {}]], [64 * MiB - 10, 64 * MiB - 16]],
    ['below max', ONE_NODE, [[4 * KiB, 4 * KiB, { max: 16 * MiB }]], [16 * MiB - 4 * KiB]],
    ['within [min, max)', ONE_NODE, [[1 * MiB, 4 * KiB, { min: 60 * MiB, max: 62 * MiB }]], [61 * MiB]],
    ['at min exactly when only that fits', ONE_NODE, [[4 * MiB, 4 * KiB, { min: 60 * MiB }]], [60 * MiB]],
    ['on the highest node by default', TWO_NODES, [[4 * KiB, 4 * KiB, {}]], [128 * MiB - 4 * KiB]],
    ['on the node asked for', TWO_NODES, [[4 * KiB, 4 * KiB, { node: 0 }], [4 * KiB, 4 * KiB, { node: 1 }]], [64 * MiB - 4 * KiB, 128 * MiB - 4 * KiB]],
    ['never across a range boundary', TWO_NODES, [[64 * MiB, 4 * KiB, { min: 32 * MiB, max: 96 * MiB }]], []],
  ])('%s', (_what, ranges, calls, expected) => {
    const { mb } = setup(ranges);
    const got: number[] = [];
    for (const [size, align, opts] of calls) {
      try {
        got.push(mb.alloc(size, align, opts));
      } catch (e) {
        if (!(e instanceof KernelError && e.errno === Errno.ENOMEM)) throw e;
      }
    }
    expect(got).toEqual(expected);
  });

  it('takes the highest gap that fits, skipping gaps too small', () => {
    const { mb } = setup();
    mb.reserve(60 * MiB, 3 * MiB, 'test');
    // [63, 64) MiB is too small for 2 MiB, [0, 60) MiB is not.
    expect(mb.alloc(2 * MiB, 4 * KiB)).toBe(58 * MiB);
    expect(mb.alloc(512 * KiB, 4 * KiB)).toBe(64 * MiB - 512 * KiB);
    // The gap [63, 63.5) MiB holds no 2 MiB-aligned address; the next one down, [0, 58) MiB, does.
    expect(mb.alloc(4 * KiB, 2 * MiB)).toBe(56 * MiB);
  });

  it('reserves what it returns and records it', () => {
    const { mb } = setup();
    const base = mb.alloc(3 * MiB, 1 * MiB, { owner: 'kernel' });
    expect(base).toBe(61 * MiB);
    expect([mb.isReserved(base, 3 * MiB), mb.isReserved(base - 1, 1), mb.reservedBytes()]).toEqual([true, false, 3 * MiB]);
    expect(mb.records).toEqual([{ base: 61 * MiB, size: 3 * MiB, owner: 'kernel', scratchOnly: false }]);
    expect([...mb.reservedByOwner()]).toEqual([['kernel', 3 * MiB]]);
    expect(mb.alloc(1 * MiB, 1 * MiB)).toBe(60 * MiB);
    expect(mb.records.map((r) => r.owner)).toEqual(['kernel', 'memblock']);
  });

  it('can reuse what was freed', () => {
    const { mb } = setup();
    const a = mb.alloc(4 * KiB, 4 * KiB);
    mb.free(a, 4 * KiB);
    expect([mb.isReserved(a, 4 * KiB), mb.alloc(4 * KiB, 4 * KiB)]).toEqual([false, a]);
  });

  it.each<[string, readonly RamRange[], number, number, { min?: number; max?: number; node?: number; owner?: string }, [Errno, string]]>([
    ['size 0', ONE_NODE, 0, 4 * KiB, {}, [Errno.EINVAL, 'EINVAL: memblock_alloc: size 0 for memblock']],
    ['a fractional size', ONE_NODE, 1.5, 4 * KiB, { owner: 'x' }, [Errno.EINVAL, 'EINVAL: memblock_alloc: size 1.5 for x']],
    ['alignment 0', ONE_NODE, 4 * KiB, 0, {}, [Errno.EINVAL, 'EINVAL: memblock_alloc: alignment 0 is not a power of two']],
    ['alignment 3', ONE_NODE, 4 * KiB, 3, {}, [Errno.EINVAL, 'EINVAL: memblock_alloc: alignment 3 is not a power of two']],
    ['alignment 3 × 2^31', ONE_NODE, 4 * KiB, 3 * 2 ** 31, {}, [Errno.EINVAL, 'EINVAL: memblock_alloc: alignment 6442450944 is not a power of two']],
    ['alignment 1.5', ONE_NODE, 4 * KiB, 1.5, {}, [Errno.EINVAL, 'EINVAL: memblock_alloc: alignment 1.5 is not a power of two']],
    ['more than RAM', ONE_NODE, 128 * MiB, 4 * KiB, {}, [Errno.ENOMEM, 'ENOMEM: memblock_alloc: no room for 128.00 MiB for memblock']],
    ['a node without memory', ONE_NODE, 4 * KiB, 4 * KiB, { node: 1, owner: 'memmap-node1' }, [Errno.ENOMEM, 'ENOMEM: memblock_alloc: no room for 4.00 KiB for memmap-node1 node 1']],
    ['more than a node holds', TWO_NODES, 65 * MiB, 4 * KiB, { node: 0 }, [Errno.ENOMEM, 'ENOMEM: memblock_alloc: no room for 65.00 MiB for memblock node 0']],
    ['more than fits below max', ONE_NODE, 2 * MiB, 4 * KiB, { max: 1 * MiB }, [Errno.ENOMEM, 'ENOMEM: memblock_alloc: no room for 2.00 MiB for memblock below 0x100000']],
    ['node and max', TWO_NODES, 4 * KiB, 4 * KiB, { node: 1, max: 64 * MiB, owner: 'kernel' }, [Errno.ENOMEM, 'ENOMEM: memblock_alloc: no room for 4.00 KiB for kernel node 1, below 0x4000000']],
    ['an alignment nothing on the node meets', TWO_NODES, 4 * KiB, 128 * MiB, { node: 1 }, [Errno.ENOMEM, 'ENOMEM: memblock_alloc: no room for 4.00 KiB for memblock node 1']],
  ])('fails for %s', (_what, ranges, size, align, opts, expected) => {
    const { mb } = setup(ranges);
    expect(errorOf(() => mb.alloc(size, align, opts))).toEqual(expected);
    expect(mb.reservedBytes()).toBe(0);
  });

  it('fails with ENOMEM once memory is full, reserving nothing more', () => {
    const { mb } = setup();
    mb.reserve(0, 64 * MiB - 8 * KiB, 'test');
    expect(mb.alloc(8 * KiB, 4 * KiB)).toBe(64 * MiB - 8 * KiB);
    expect(errorOf(() => mb.alloc(1, 1, { owner: 'late' }))).toEqual([Errno.ENOMEM, 'ENOMEM: memblock_alloc: no room for 1 B for late']);
    expect(mb.reservedBytes()).toBe(64 * MiB);
  });
});


describe('scratch-only mode', () => {
  // Scratch: [8, 12) MiB on node 0 and [96, 98) MiB on node 1.
  function scratchMachine() {
    const s = setup(TWO_NODES);
    s.mb.markScratch(8 * MiB, 4 * MiB);
    s.mb.markScratch(96 * MiB, 2 * MiB);
    s.mb.setScratchOnly(true);
    return s;
  }

  it('allocates only inside scratch and fails rather than use other memory', () => {
    const { mb } = scratchMachine();
    expect(mb.isScratchOnly).toBe(true);
    expect(mb.alloc(4 * KiB, 4 * KiB)).toBe(98 * MiB - 4 * KiB);
    // Only node 0's area is big enough.
    expect(mb.alloc(4 * MiB, 4 * KiB)).toBe(8 * MiB);
    expect(errorOf(() => mb.alloc(2 * MiB, 4 * KiB, { owner: 'kernel' }))).toEqual([
      Errno.ENOMEM,
      'ENOMEM: memblock_alloc: no room for 2.00 MiB for kernel in scratch (scratch-only mode)',
    ]);
    expect(errorOf(() => mb.alloc(4 * KiB, 4 * KiB, { node: 0 }))).toEqual([
      Errno.ENOMEM,
      'ENOMEM: memblock_alloc: no room for 4.00 KiB for memblock node 0, in scratch (scratch-only mode)',
    ]);
    expect(mb.reservedBytes()).toBe(4 * MiB + 4 * KiB);
    expect(mb.records.map((r) => [r.base, r.scratchOnly])).toEqual([
      [98 * MiB - 4 * KiB, true],
      [8 * MiB, true],
    ]);
  });

  it('uses all memory again once it is left', () => {
    const { mb } = scratchMachine();
    mb.alloc(4 * MiB, 4 * KiB);
    mb.setScratchOnly(false);
    expect(mb.isScratchOnly).toBe(false);
    expect([mb.alloc(2 * MiB, 4 * KiB), mb.alloc(4 * KiB, 4 * KiB, { node: 0 })]).toEqual([126 * MiB, 64 * MiB - 4 * KiB]);
    expect(mb.records.map((r) => r.scratchOnly)).toEqual([true, false, false]);
  });

  it.each<[string, number, number, { min?: number; max?: number; node?: number }, number]>([
    ['node 0', 4 * KiB, 4 * KiB, { node: 0 }, 12 * MiB - 4 * KiB],
    ['node 1 below max', 4 * KiB, 4 * KiB, { node: 1, max: 97 * MiB }, 97 * MiB - 4 * KiB],
    ['within [min, max)', 1 * MiB, 4 * KiB, { min: 9 * MiB, max: 10 * MiB }, 9 * MiB],
    ['2 MiB-aligned', 4 * KiB, 2 * MiB, { max: 64 * MiB }, 10 * MiB],
  ])('honours %s inside scratch', (_what, size, align, opts, expected) => {
    const { mb } = scratchMachine();
    expect(mb.alloc(size, align, opts)).toBe(expected);
  });

  it('skips reserved scratch (such as the scratch array)', () => {
    const { mb } = scratchMachine();
    mb.reserve(98 * MiB - 4 * KiB, 64, 'kho-scratch-array');
    expect(mb.alloc(4 * KiB, 4 * KiB)).toBe(98 * MiB - 8 * KiB);
  });

  // A page model of a two-node machine (256 pages per node) against which every allocation is checked: it must
  // return the highest aligned base whose pages are all free, in one range (and node), and scratch when in
  // scratch-only mode; and fail with ENOMEM exactly when there is none.
  it('returns the highest fitting block of the page model, or ENOMEM when there is none', () => {
    const NODE_PAGES = 256;
    const ranges: RamRange[] = [
      { start: 0, size: NODE_PAGES * PAGE_SIZE, node: 0 },
      { start: NODE_PAGES * PAGE_SIZE, size: NODE_PAGES * PAGE_SIZE, node: 1 },
    ];
    const area = fc.record({ node: fc.integer({ min: 0, max: 1 }), page: fc.integer({ min: 0, max: NODE_PAGES - 1 }), pages: fc.integer({ min: 1, max: 48 }) });
    const step = fc.oneof(
      fc.record({ kind: fc.constant('alloc' as const), pages: fc.integer({ min: 1, max: 24 }), alignLog: fc.integer({ min: 0, max: 6 }), node: fc.constantFrom(undefined, 0, 1) }),
      fc.record({ kind: fc.constant('reserve' as const), at: area }),
      fc.record({ kind: fc.constant('mode' as const), on: fc.boolean() }),
    );
    fc.assert(
      fc.property(fc.array(area, { maxLength: 4 }), fc.array(step, { minLength: 1, maxLength: 30 }), (areas, steps) => {
        const { mb } = setup(ranges);
        const scratch = new Uint8Array(2 * NODE_PAGES);
        const reserved = new Uint8Array(2 * NODE_PAGES);
        const span = (a: { node: number; page: number; pages: number }): [number, number] => {
          const first = a.node * NODE_PAGES + a.page;
          return [first, Math.min(first + a.pages, (a.node + 1) * NODE_PAGES)];
        };
        for (const a of areas) {
          const [p, e] = span(a);
          mb.markScratch(p * PAGE_SIZE, (e - p) * PAGE_SIZE);
          scratch.fill(1, p, e);
        }
        mb.setScratchOnly(true);
        let scratchOnly = true;
        for (const s of steps) {
          if (s.kind === 'mode') {
            mb.setScratchOnly(s.on);
            scratchOnly = s.on;
          } else if (s.kind === 'reserve') {
            const [p, e] = span(s.at);
            mb.reserve(p * PAGE_SIZE, (e - p) * PAGE_SIZE, 'test');
            reserved.fill(1, p, e);
          } else {
            const align = 2 ** s.alignLog;
            let want = -1;
            for (let b = Math.floor((2 * NODE_PAGES - s.pages) / align) * align; b >= 0 && want < 0; b -= align) {
              const node = Math.floor(b / NODE_PAGES);
              if (Math.floor((b + s.pages - 1) / NODE_PAGES) !== node || (s.node !== undefined && s.node !== node)) continue;
              let ok = true;
              // scratch-only: scratch pages only; otherwise: never scratch (it serves movable allocations only)
              for (let p = b; p < b + s.pages && ok; p++) ok = reserved[p] === 0 && (scratchOnly ? scratch[p] === 1 : scratch[p] === 0);
              if (ok) want = b;
            }
            let got: number;
            try {
              got = mb.alloc(s.pages * PAGE_SIZE, align * PAGE_SIZE, { node: s.node }) / PAGE_SIZE;
            } catch (e) {
              if (!(e instanceof KernelError) || e.errno !== Errno.ENOMEM) throw e;
              expect(e.message.endsWith(scratchOnly ? 'in scratch (scratch-only mode)' : s.node === undefined ? 'for memblock' : `node ${s.node}`)).toBe(true);
              got = -1;
            }
            expect(got).toBe(want);
            if (got >= 0) reserved.fill(1, got, got + s.pages);
          }
          expect(mb.reservedBytes()).toBe(reserved.reduce((n, r) => n + r, 0) * PAGE_SIZE);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('Memblock.reserve and reservedBytes', () => {
  it.each<[string, readonly RamRange[], (mb: Memblock) => void, string]>([
    ['reserve past the end of RAM', ONE_NODE, (mb) => mb.reserve(64 * MiB - 4 * KiB, 8 * KiB, 'test'), 'memblock_reserve(0x3fff000, 8.00 KiB) for test: not inside memory'],
    ['reserve beyond RAM', ONE_NODE, (mb) => mb.reserve(2 ** 30, 4 * KiB, 'kho'), 'memblock_reserve(0x40000000, 4.00 KiB) for kho: not inside memory'],
    // Every byte must lie inside one RAM range, even where two ranges touch.
    ['reserve across two RAM ranges', TWO_NODES, (mb) => mb.reserve(64 * MiB - 4 * KiB, 8 * KiB, 'test'), 'memblock_reserve(0x3fff000, 8.00 KiB) for test: not inside memory'],
    ['mark scratch outside RAM', ONE_NODE, (mb) => mb.markScratch(64 * MiB, 4 * KiB), 'memblock_mark_scratch(0x4000000, 4.00 KiB): not inside memory'],
  ])('%s is EINVAL', (_what, ranges, run, message) => {
    const { mb } = setup(ranges);
    expect(errorOf(() => run(mb))).toEqual([Errno.EINVAL, `EINVAL: ${message}`]);
  });

  it('records nothing for a refused reservation', () => {
    const { mb } = setup();
    expect(() => mb.reserve(64 * MiB, 4 * KiB, 'test')).toThrow(KernelError);
    expect([mb.reservedBytes(), mb.records.length, mb.reservedByOwner().size]).toEqual([0, 0, 0]);
  });

  describe('filters on a two-node machine', () => {
    // node 0: [1, 2) MiB and [60, 64) MiB; node 1: [64, 66) MiB and [100, 101) MiB: 8 MiB in all.
    function twoNodes() {
      const { mb } = setup(TWO_NODES);
      mb.reserve(60 * MiB, 4 * MiB, 'a');
      mb.reserve(1 * MiB, 1 * MiB, 'b');
      mb.reserve(100 * MiB, 1 * MiB, 'a');
      mb.reserve(64 * MiB, 2 * MiB, 'kho');
      return mb;
    }

    it.each<[{ min?: number; max?: number; node?: number }, number]>([
      [{}, 8 * MiB],
      [{ node: 0 }, 5 * MiB],
      [{ node: 1 }, 3 * MiB],
      [{ node: 2 }, 0],
      [{ max: 64 * MiB }, 5 * MiB],
      [{ max: 61 * MiB }, 2 * MiB],
      [{ min: 62 * MiB }, 5 * MiB],
      [{ min: 62 * MiB, max: 65 * MiB }, 3 * MiB],
      [{ node: 1, max: 65 * MiB }, 1 * MiB],
      [{ node: 0, min: 63 * MiB }, 1 * MiB],
      [{ node: 1, min: 65 * MiB, max: 100 * MiB + 512 * KiB }, 1 * MiB + 512 * KiB],
    ])('reservedBytes(%j)', (filter, expected) => {
      expect(twoNodes().reservedBytes(filter)).toBe(expected);
    });

    it('keeps bytes per owner, and records only named (non-kho) reservations', () => {
      const mb = twoNodes();
      expect([...mb.reservedByOwner()].sort()).toEqual([
        ['a', 5 * MiB],
        ['b', 1 * MiB],
        ['kho', 2 * MiB],
      ]);
      expect(mb.records.map((r) => [r.owner, r.base])).toEqual([
        ['a', 60 * MiB],
        ['b', 1 * MiB],
        ['a', 100 * MiB],
      ]);
    });

    it('counts overlapping reservations once', () => {
      const mb = twoNodes();
      mb.reserve(59 * MiB, 2 * MiB, 'c');
      expect([mb.reservedBytes(), mb.reservedBytes({ node: 0 })]).toEqual([9 * MiB, 6 * MiB]);
    });

    it('forgets a freed range', () => {
      const mb = twoNodes();
      mb.free(61 * MiB, 40 * MiB);
      expect([mb.reservedBytes(), mb.isReserved(61 * MiB, 40 * MiB), mb.isReserved(60 * MiB, 1 * MiB)]).toEqual([2 * MiB, false, true]);
    });
  });
});

describe('Memblock.handOff', () => {
  const { Reserved, Scratch } = PageFlag;
  const pfnOf = (addr: number) => addr / PAGE_SIZE;

  // A boot's worth of early state on two nodes: the kernel image, a memmap, scratch on both nodes with the
  // scratch array reserved inside it, and three preserved (reserved, no-init) pages.
  function booted() {
    const s = setup(TWO_NODES);
    const { mb } = s;
    mb.reserve(16 * MiB, 16 * MiB, 'kernel');
    mb.markScratch(8 * MiB, 4 * MiB);
    mb.markScratch(96 * MiB, 2 * MiB);
    mb.reserve(8 * MiB, 64, 'kho-scratch-array');
    for (const [base, size] of [
      [40 * MiB, 8 * KiB],
      [70 * MiB, 4 * KiB],
    ]) {
      mb.reserve(base, size, 'kho');
      mb.markNoInit(base, size);
    }
    expect(mb.alloc(64 * KiB, 4 * KiB, { node: 1, owner: 'memmap-node1' })).toBe(128 * MiB - 64 * KiB);
    return s;
  }
  // 4096 kernel + 1 scratch array + 3 preserved + 16 memmap.
  const RESERVED_PAGES = 4096 + 1 + 3 + 16;
  const TOTAL_PAGES = (128 * MiB) / PAGE_SIZE;

  it('gives every page that is not reserved to the buddy allocator', () => {
    const { mb, buddy, memmap, log } = booted();
    const freed = mb.handOff(buddy, memmap);
    expect([freed, buddy.nrFreePages]).toEqual([TOTAL_PAGES - RESERVED_PAGES, TOTAL_PAGES - RESERVED_PAGES]);
    expect([buddy.freePagesOf(0), buddy.freePagesOf(1)]).toEqual([16384 - 4096 - 1 - 2, 16384 - 1 - 16]);
    expect(() => buddy.checkInvariants()).not.toThrow();
    expect(log.lines.map((l) => l.message)).toEqual([`handed ${TOTAL_PAGES - RESERVED_PAGES} free pages (111.92 MiB) to the buddy allocator`]);
  });

  it.each<[string, number, boolean, number]>([
    ['the first page', 0, true, 0],
    ['the kernel image', 16 * MiB, false, Reserved],
    ['the last page of the kernel image', 32 * MiB - 4 * KiB, false, Reserved],
    ['the page after it', 32 * MiB, true, 0],
    ['the scratch array (reserved scratch)', 8 * MiB, false, Reserved | Scratch],
    ['free scratch', 8 * MiB + 4 * KiB, true, Scratch],
    ['the last page of scratch', 12 * MiB - 4 * KiB, true, Scratch],
    ['the page after scratch', 12 * MiB, true, 0],
    ['a preserved page (no-init)', 40 * MiB, false, 0],
    ['the second preserved page', 40 * MiB + 4 * KiB, false, 0],
    ['a preserved page on node 1', 70 * MiB, false, 0],
    ['node 1 scratch', 97 * MiB, true, Scratch],
    ['the memmap', 128 * MiB - 64 * KiB, false, Reserved],
    ['the page below the memmap', 128 * MiB - 68 * KiB, true, 0],
  ])('%s (%d): free %p, flags %d', (_what, addr, free, flags) => {
    const { mb, buddy, memmap } = booted();
    mb.handOff(buddy, memmap);
    expect([buddy.isFree(pfn(pfnOf(addr))), memmap.flags(pfnOf(addr)) & (Reserved | Scratch | PageFlag.NoInit)]).toEqual([free, flags]);
  });

  it('serves scratch pages to movable allocations only', () => {
    const { mb, buddy, memmap } = booted();
    mb.handOff(buddy, memmap);
    const scratchFree = 1024 - 1 + 512;
    expect(buddy.freeScratchPages).toBe(scratchFree);
    const normal = TOTAL_PAGES - RESERVED_PAGES - scratchFree;
    let inScratch = 0;
    for (let i = 0; i < normal; i++) if (memmap.flags(buddy.allocPages(0)) & Scratch) inScratch++;
    expect([inScratch, buddy.nrFreePages, buddy.freeScratchPages]).toEqual([0, scratchFree, scratchFree]);
    expect(errorOf(() => buddy.allocPages(0))[0]).toBe(Errno.ENOMEM);
    const movable = buddy.allocPages(0, { movable: true });
    expect([memmap.flags(movable) & Scratch, buddy.freeScratchPages]).toEqual([Scratch, scratchFree - 1]);
  });

  it('refuses while still in scratch-only mode, handing nothing over', () => {
    const { mb, buddy, memmap } = booted();
    mb.setScratchOnly(true);
    expect(errorOf(() => mb.handOff(buddy, memmap))).toEqual([Errno.EBUSY, 'EBUSY: memblock hand-off while still in scratch-only mode']);
    expect([buddy.nrFreePages, memmap.flags(pfnOf(16 * MiB))]).toEqual([0, 0]);
    mb.setScratchOnly(false);
    expect(mb.handOff(buddy, memmap)).toBe(TOTAL_PAGES - RESERVED_PAGES);
  });

  it.each<[string, (mb: Memblock, buddy: BuddyAllocator, memmap: Memmap) => unknown]>([
    ['reserve', (mb) => mb.reserve(0, 4 * KiB, 'late')],
    ['free', (mb) => mb.free(16 * MiB, 4 * KiB)],
    ['alloc', (mb) => mb.alloc(4 * KiB, 4 * KiB)],
    ['markScratch', (mb) => mb.markScratch(0, 4 * KiB)],
    ['markNoInit', (mb) => mb.markNoInit(0, 4 * KiB)],
    ['handOff', (mb, buddy, memmap) => mb.handOff(buddy, memmap)],
  ])('refuses %s after the hand-off', (what, run) => {
    const { mb, buddy, memmap } = booted();
    mb.handOff(buddy, memmap);
    expect(errorOf(() => run(mb, buddy, memmap))).toEqual([Errno.EPERM, `EPERM: memblock ${what} after the hand-off to the buddy allocator`]);
    expect(buddy.nrFreePages).toBe(TOTAL_PAGES - RESERVED_PAGES);
  });

  it.each([true, false])('keeps exactly 10,000 scattered single-page reservations out (no-init %p)', (noinit) => {
    const { mb, buddy, memmap } = setup(TWO_NODES);
    const random = seededRandom(0x6b686f);
    const picked = new Uint8Array(TOTAL_PAGES);
    let n = 0;
    while (n < 10_000) {
      const pfn = Math.floor(random() * TOTAL_PAGES);
      if (picked[pfn]) continue;
      picked[pfn] = 1;
      n++;
      mb.reserve(pfn * PAGE_SIZE, PAGE_SIZE, 'kho');
      if (noinit) mb.markNoInit(pfn * PAGE_SIZE, PAGE_SIZE);
    }
    expect([mb.records.length, mb.reservedByOwner().get('kho'), mb.reservedBytes()]).toEqual([0, 10_000 * PAGE_SIZE, 10_000 * PAGE_SIZE]);
    expect(mb.handOff(buddy, memmap)).toBe(TOTAL_PAGES - 10_000);
    expect(buddy.nrFreePages).toBe(TOTAL_PAGES - 10_000);
    const wrong: number[] = [];
    for (let p = 0; p < TOTAL_PAGES; p++) {
      const reservedFlag = (memmap.flags(p) & Reserved) !== 0;
      if (buddy.isFree(pfn(p)) === (picked[p] === 1) || reservedFlag !== (picked[p] === 1 && !noinit)) wrong.push(p);
    }
    expect(wrong).toEqual([]);
    expect(() => buddy.checkInvariants()).not.toThrow();
  });

  it('withholds and flags every page a reservation touches, aligned or not', () => {
    const { mb, buddy, memmap } = setup();
    // [0x1800, 0x2800) touches pages 1 and 2; [0x5000, 0x5001) touches page 5.
    mb.reserve(0x1800, 0x1000, 'odd');
    mb.reserve(0x5000, 1, 'byte');
    expect(mb.handOff(buddy, memmap)).toBe((64 * MiB) / PAGE_SIZE - 3);
    expect([0, 1, 2, 3, 4, 5, 6].map((p) => [buddy.isFree(pfn(p)), memmap.flags(p) & Reserved])).toEqual([
      [true, 0],
      [false, Reserved],
      [false, Reserved],
      [true, 0],
      [true, 0],
      [false, Reserved],
      [true, 0],
    ]);
  });
});

describe('Memblock.regions', () => {
  it('describes the map as free, reserved, no-init and scratch regions', () => {
    const { mb } = setup();
    mb.reserve(16 * MiB, 16 * MiB, 'kernel');
    mb.markScratch(8 * MiB, 4 * MiB);
    mb.reserve(8 * MiB, 4 * KiB, 'kho-scratch-array');
    mb.reserve(40 * MiB, 8 * KiB, 'kho');
    mb.markNoInit(40 * MiB, 8 * KiB);
    mb.reserve(40 * MiB + 8 * KiB, 4 * KiB, 'x');
    expect(mb.regions().map((r) => [r.kind, r.base / KiB, r.size / KiB])).toEqual([
      ['free', 0, 8192],
      ['reserved', 8192, 4],
      ['scratch', 8196, 4092],
      ['free', 12288, 4096],
      ['reserved', 16384, 16384],
      ['free', 32768, 8192],
      ['noinit', 40960, 8],
      ['reserved', 40968, 4],
      ['free', 40972, 24564],
    ]);
  });

  // Page model of a machine with a hole: 128 pages on node 0, a 128-page hole, 128 pages on node 1. Random
  // reservations, preserved (reserved + no-init) blocks and scratch areas; regions() must cover RAM exactly with
  // the model's kind for every page, and the hand-off must free exactly the unreserved pages and flag the rest.
  it('covers RAM exactly, page by page, and the hand-off agrees with it', () => {
    const N = 128;
    const ranges: RamRange[] = [
      { start: 0, size: N * PAGE_SIZE, node: 0 },
      { start: 2 * N * PAGE_SIZE, size: N * PAGE_SIZE, node: 1 },
    ];
    const ramPages = [...Array(N).keys(), ...Array.from({ length: N }, (_, i) => 2 * N + i)];
    const op = fc.record({
      kind: fc.constantFrom('reserve', 'kho', 'scratch'),
      range: fc.integer({ min: 0, max: 1 }),
      page: fc.integer({ min: 0, max: N - 1 }),
      pages: fc.integer({ min: 1, max: 32 }),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
        const { mb, buddy, memmap } = setup(ranges);
        const reserved = new Uint8Array(3 * N);
        const noinit = new Uint8Array(3 * N);
        const scratch = new Uint8Array(3 * N);
        for (const o of ops) {
          const first = o.range * 2 * N + o.page;
          const end = Math.min(first + o.pages, o.range * 2 * N + N);
          const [base, size] = [first * PAGE_SIZE, (end - first) * PAGE_SIZE];
          if (o.kind === 'scratch') {
            mb.markScratch(base, size);
            scratch.fill(1, first, end);
          } else {
            mb.reserve(base, size, o.kind);
            reserved.fill(1, first, end);
            if (o.kind === 'kho') {
              mb.markNoInit(base, size);
              noinit.fill(1, first, end);
            }
          }
        }
        const kindOf = (p: number): MemblockRegion['kind'] =>
          reserved[p] ? (noinit[p] ? 'noinit' : 'reserved') : scratch[p] ? 'scratch' : 'free';

        const seen = new Array<string | undefined>(3 * N);
        const clash: number[] = [];
        for (const r of mb.regions()) {
          expect([r.base % PAGE_SIZE, r.size % PAGE_SIZE, r.size > 0]).toEqual([0, 0, true]);
          for (let p = r.base / PAGE_SIZE; p < (r.base + r.size) / PAGE_SIZE; p++) {
            if (seen[p] !== undefined) clash.push(p);
            seen[p] = r.kind;
          }
        }
        expect(clash).toEqual([]);
        expect(seen.slice(N, 2 * N).every((k) => k === undefined)).toBe(true);
        expect(ramPages.map((p) => seen[p])).toEqual(ramPages.map(kindOf));

        const unreserved = ramPages.filter((p) => !reserved[p]);
        expect(mb.handOff(buddy, memmap)).toBe(unreserved.length);
        expect(buddy.freeScratchPages).toBe(unreserved.filter((p) => scratch[p]).length);
        const flags = ramPages.map((p) => [buddy.isFree(pfn(p)), memmap.flags(p) & (PageFlag.Reserved | PageFlag.Scratch)]);
        const want = ramPages.map((p) => [!reserved[p], (reserved[p] && !noinit[p] ? PageFlag.Reserved : 0) | (scratch[p] ? PageFlag.Scratch : 0)]);
        expect(flags).toEqual(want);
        buddy.checkInvariants();
      }),
      { numRuns: 150 },
    );
  });
});

describe('free keeps the named records true', () => {
  it('trims or drops the records and the per-owner totals a freed span covers', () => {
    const { mb } = setup([{ start: 0, size: 64 * MiB, node: 0 }]);
    mb.reserve(8 * MiB, 4 * MiB, 'a');
    mb.reserve(16 * MiB, MiB, 'b');
    mb.free(9 * MiB, MiB); // a hole in the middle of a
    mb.free(16 * MiB, MiB); // all of b
    expect(mb.records.map((r) => [r.owner, r.base / MiB, r.size / MiB])).toEqual([
      ['a', 8, 1],
      ['a', 10, 2],
    ]);
    expect(mb.reservedByOwner().get('a')).toBe(3 * MiB);
    expect(mb.reservedByOwner().get('b')).toBe(0);
    expect(mb.reservedBytes()).toBe(3 * MiB);
  });
});
