import fc from 'fast-check';
import { Errno, KernelError, isKernelError } from '@kho/kernel';
import { MAX_PAGE_ORDER, PAGE_SIZE, pfn, toOrder, type Pfn } from './abi';
import { BuddyAllocator, Folio } from './buddy';
import { FaultInjector } from './faults';
import { Memmap, PageFlag } from './memmap';
import { PhysicalMemory, type RamRange } from './memory';

const MiB = 2 ** 20;
const PAGES_PER_MiB = MiB / PAGE_SIZE;

interface Rig {
  ram: PhysicalMemory;
  memmap: Memmap;
  faults: FaultInjector;
  buddy: BuddyAllocator;
}

/** A small machine; `scratch` lists pfn ranges to flag Scratch before all RAM is handed over. */
function rig(ranges: RamRange[] = [{ start: 0, size: 64 * MiB, node: 0 }], scratch: Array<[number, number]> = [], handOff = true): Rig {
  const ram = new PhysicalMemory({ ranges });
  const memmap = new Memmap(ram);
  const faults = new FaultInjector();
  const buddy = new BuddyAllocator(ram, memmap, faults);
  for (const [start, n] of scratch) for (let p = start; p < start + n; p++) memmap.setFlags(p, PageFlag.Scratch);
  if (handOff) for (const r of ram.ranges) buddy.freeRange(r.start / PAGE_SIZE, r.size / PAGE_SIZE);
  return { ram, memmap, faults, buddy };
}

function errorOf(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return e;
    throw e;
  }
  throw new Error('expected a KernelError, nothing was thrown');
}

/** Everything observable about the free lists. */
function snapshot(b: BuddyAllocator): unknown {
  return { free: b.nrFreePages, info: b.buddyinfo() };
}

describe('BuddyAllocator hand-off', () => {
  it('takes all RAM of a 64 MiB machine as order-10 blocks', () => {
    const { buddy } = rig();
    expect(buddy.nrFreePages).toBe(64 * PAGES_PER_MiB);
    expect(buddy.freeBlocks(MAX_PAGE_ORDER)).toBe(16);
    expect(buddy.freePagesOf(0)).toBe(64 * PAGES_PER_MiB);
    expect(buddy.freePagesOf(7)).toBe(0);
    expect(buddy.fullyMerged()).toBe(true);
    buddy.checkInvariants();
  });

  it('splits a range into the largest naturally aligned blocks', () => {
    const { buddy } = rig(undefined, [], false);
    buddy.freeRange(3, 13); // 3 | 4..7 | 8..15
    expect([0, 1, 2, 3].map((k) => buddy.freeBlocks(k))).toEqual([1, 0, 1, 1]);
    buddy.freeRange(0, 3); // 0..1 | 2, then everything merges into 0..15
    expect([0, 1, 2, 3, 4].map((k) => buddy.freeBlocks(k))).toEqual([0, 0, 0, 0, 1]);
    expect(buddy.fullyMerged()).toBe(true);
    buddy.checkInvariants();
  });

  it('never merges across a RAM range boundary, a node, or a change of the Scratch flag', () => {
    const ranges = [
      { start: 0, size: 2 * MiB, node: 0 },
      { start: 2 * MiB, size: 4 * MiB, node: 1 },
    ];
    const { buddy, memmap } = rig(ranges, [[1024, 8]]);
    // Node 0: [0, 512) is order 9. Node 1: [512, 1024) order 9, [1024, 1032) scratch order 3, the rest normal.
    expect(buddy.freeBlocks(MAX_PAGE_ORDER)).toBe(0);
    expect(buddy.freePagesOf(0)).toBe(512);
    expect(buddy.freePagesOf(1)).toBe(1024);
    expect(buddy.freeScratchPages).toBe(8);
    expect(buddy.fullyMerged()).toBe(true);
    buddy.checkInvariants();
    const p = buddy.allocPages(3, { movable: true });
    expect(p).toBe(1024);
    expect(memmap.testFlag(p, PageFlag.Scratch)).toBe(true);
  });

  it.each([
    [10, 1, 'EINVAL: freeRange [0xa-0xa]: pfn 0xa is already free (in the free block at 0x0)'],
    [16384, 1, 'EINVAL: freeRange [0x4000-0x4000]: pfn 0x4000 is not a page of RAM'],
    [0, 0, 'EINVAL: freeRange: start pfn 0x0 and 0 pages is not a non-empty range'],
  ])('freeRange(%d, %d) throws EINVAL and changes nothing', (start, n, message) => {
    const { buddy } = rig();
    const before = snapshot(buddy);
    expect(errorOf(() => buddy.freeRange(start, n)).message).toBe(message);
    expect(snapshot(buddy)).toEqual(before);
    buddy.checkInvariants();
  });

  it('rejects a range whose later page is already free, before changing anything', () => {
    const { buddy } = rig(undefined, [], false);
    buddy.freeRange(8, 1);
    expect(errorOf(() => buddy.freeRange(0, 16)).message).toBe('EINVAL: freeRange [0x0-0xf]: pfn 0x8 is already free');
    expect(buddy.nrFreePages).toBe(1);
    buddy.checkInvariants();
  });
});

describe('BuddyAllocator allocation', () => {
  it('hands out naturally aligned blocks with refcount 1 and the order recorded', () => {
    const { buddy, memmap } = rig();
    for (let k = 0; k <= MAX_PAGE_ORDER; k++) {
      const p = buddy.allocPages(k);
      expect(p % 2 ** k).toBe(0);
      expect([memmap.refcount(p), memmap.order(p), memmap.testFlag(p, PageFlag.Buddy)]).toEqual([1, k, false]);
      expect(buddy.isFree(p)).toBe(false);
    }
    expect(buddy.allocsByOrder).toEqual(new Array(11).fill(1));
    expect(buddy.allocCalls).toBe(11);
    buddy.checkInvariants();
  });

  it('throws ENOMEM when memory is exhausted, naming order and node', () => {
    const { buddy } = rig();
    const blocks: Pfn[] = [];
    for (let i = 0; i < 16; i++) blocks.push(buddy.allocPages(10));
    expect(buddy.nrFreePages).toBe(0);
    const e = errorOf(() => buddy.allocPages(0));
    expect(e.errno).toBe(Errno.ENOMEM);
    expect(e.message).toBe('ENOMEM: allocPages: no free normal block of order 0 on any node (0 pages free in all)');
    expect(errorOf(() => buddy.allocPages(2, { node: 0 })).message).toBe(
      'ENOMEM: allocPages: no free normal block of order 2 on node 0 (0 pages free in all)',
    );
    for (const p of blocks) buddy.freePages(p, toOrder(10));
    expect(buddy.nrFreePages).toBe(64 * PAGES_PER_MiB);
  });

  it('serves scratch memory only to movable allocations, and movable ones from scratch first', () => {
    // 64 MiB; the first 16 MiB are scratch.
    const { buddy, memmap } = rig(undefined, [[0, 16 * PAGES_PER_MiB]]);
    expect(buddy.freeScratchPages).toBe(16 * PAGES_PER_MiB);
    const movable = buddy.allocPages(10, { movable: true });
    expect(memmap.testFlag(movable, PageFlag.Scratch)).toBe(true);
    const normal: Pfn[] = [];
    for (let i = 0; i < 12; i++) normal.push(buddy.allocPages(10));
    expect(normal.every((p) => !memmap.testFlag(p, PageFlag.Scratch))).toBe(true);
    // Normal memory is gone; scratch still has 12 MiB, but not for unmovable allocations.
    expect(errorOf(() => buddy.allocPages(0)).errno).toBe(Errno.ENOMEM);
    expect(buddy.freeScratchPages).toBe(12 * PAGES_PER_MiB);
    expect(memmap.testFlag(buddy.allocPages(0, { movable: true }), PageFlag.Scratch)).toBe(true);
    // Freed normal memory goes back to the normal pool, and movable allocations fall back to it.
    buddy.freePages(normal[0], toOrder(10));
    for (let i = 0; i < 3 * 1024 - 1; i++) buddy.allocPages(0, { movable: true });
    expect(buddy.freeScratchPages).toBe(0);
    expect(buddy.nrFreePages).toBe(1024);
    expect(memmap.testFlag(buddy.allocPages(3, { movable: true }), PageFlag.Scratch)).toBe(false);
    buddy.checkInvariants();
  });

  it('allocates from the requested node only', () => {
    const ranges = [
      { start: 0, size: 4 * MiB, node: 0 },
      { start: 4 * MiB, size: 4 * MiB, node: 1 },
    ];
    const { buddy, ram } = rig(ranges);
    const p = buddy.allocPages(10, { node: 1 });
    expect(ram.nodeOf(p * PAGE_SIZE)).toBe(1);
    expect(errorOf(() => buddy.allocPages(0, { node: 1 })).message).toBe(
      'ENOMEM: allocPages: no free normal block of order 0 on node 1 (1024 pages free in all)',
    );
    expect(ram.nodeOf(buddy.allocPages(0) * PAGE_SIZE)).toBe(0);
  });

  it.each([
    [11, undefined, 'EINVAL: allocPages: order 11 is not an integer in 0..10'],
    [-1, undefined, 'EINVAL: allocPages: order -1 is not an integer in 0..10'],
    [1.5, undefined, 'EINVAL: allocPages: order 1.5 is not an integer in 0..10'],
    [0, { node: 3 }, 'EINVAL: allocPages: node 3 is not a node of this machine (nodes: 0)'],
  ])('allocPages(%p, %j) throws EINVAL', (order, opts, message) => {
    const { buddy } = rig();
    expect(errorOf(() => buddy.allocPages(order, opts)).message).toBe(message);
    expect(buddy.nrFreePages).toBe(64 * PAGES_PER_MiB);
  });
});

describe('BuddyAllocator misuse', () => {
  type Misuse = [string, (r: Rig, held: { p: Pfn; f: Folio }) => void, string];
  const cases: Misuse[] = [
    ['a double free', ({ buddy }, { p }) => (buddy.freePages(p, toOrder(2)), buddy.freePages(p, toOrder(2))), 'EINVAL: freePages: pfn 0x4 is free (in the free block at 0x4)'],
    ['a wrong order', ({ buddy }, { p }) => buddy.freePages(p, toOrder(1)), 'EINVAL: freePages: pfn 0x4 was allocated with order 2, not 1'],
    ['an unaligned pfn', ({ buddy }, { p }) => buddy.freePages(pfn(p + 1), toOrder(2)), 'EINVAL: freePages: pfn 0x5 is not aligned to order 2'],
    ['a page inside a block', ({ buddy }, { p }) => buddy.freePages(pfn(p + 1), toOrder(0)), 'EINVAL: freePages: pfn 0x5 is not allocated (refcount 0)'],
    ['a tail page', ({ buddy }, { f }) => buddy.freePages(pfn(f.pfn + 1), toOrder(0)), 'EINVAL: freePages: pfn 0x9 is a tail page of the folio at 0x8'],
    ['a page never handed over', ({ buddy }) => buddy.freePages(pfn(100), toOrder(0)), 'EINVAL: freePages: pfn 0x64 is not allocated (refcount 0)'],
    ['a page outside RAM', ({ buddy }) => buddy.freePages(pfn(1 << 20), toOrder(0)), 'EINVAL: freePages: pfn 0x100000 is not a page of RAM'],
    ['a bad order', ({ buddy }, { p }) => buddy.freePages(p, toOrder(12)), 'EINVAL: freePages: order 12 is not an integer in 0..10'],
    ['folioPut of a plain block', ({ buddy }, { p }) => buddy.folioPut(new Folio(p, toOrder(2))), 'EINVAL: folioPut: pfn 0x4 is an order-2 block, not a folio (no Head mark)'],
    ['folioPut twice', ({ buddy }, { f }) => (buddy.folioPut(f), buddy.folioPut(f)), 'EINVAL: folioPut: pfn 0x8 is free (in the free block at 0x8)'],
    ['folioGet of a freed folio', ({ buddy }, { f }) => (buddy.folioPut(f), buddy.folioGet(f)), 'EINVAL: folioGet: pfn 0x8 is free (in the free block at 0x8)'],
  ];
  it.each(cases)('rejects %s with EINVAL and stays consistent', (_what, misuse, message) => {
    const r = rig(undefined, [], false);
    r.buddy.freeRange(0, 16);
    r.buddy.allocPages(2); // 0..3
    const held = { p: r.buddy.allocPages(2), f: r.buddy.folioAlloc(3) };
    expect([held.p, held.f.pfn]).toEqual([4, 8]);
    const e = errorOf(() => misuse(r, held));
    expect(e.errno).toBe(Errno.EINVAL);
    expect(e.message).toBe(message);
    r.buddy.checkInvariants();
  });
});

describe('folios', () => {
  it('marks head and tails, counts references, and clears the marks when freed', () => {
    const { buddy, memmap } = rig();
    const f = buddy.folioAlloc(4);
    expect([f.nrPages, f.size, f.phys]).toEqual([16, 16 * PAGE_SIZE, f.pfn * PAGE_SIZE]);
    expect(memmap.testFlag(f.pfn, PageFlag.Head)).toBe(true);
    for (let i = 1; i < 16; i++) {
      expect(memmap.testFlag(f.pfn + i, PageFlag.Tail)).toBe(true);
      expect(memmap.compoundHead(f.pfn + i)).toBe(f.pfn);
    }
    buddy.folioGet(f);
    buddy.folioPut(f);
    expect(buddy.isFree(f.pfn)).toBe(false);
    buddy.folioPut(f);
    expect(buddy.isFree(f.pfn)).toBe(true);
    for (let i = 0; i < 16; i++) expect(memmap.flags(f.pfn + i) & (PageFlag.Head | PageFlag.Tail)).toBe(0);
    expect(buddy.fullyMerged()).toBe(true);
    buddy.checkInvariants();
  });

  it('an order-0 folio is a plain page', () => {
    const { buddy, memmap } = rig();
    const f = buddy.folioAlloc(0);
    expect(memmap.flags(f.pfn)).toBe(0);
    buddy.folioPut(f);
    expect(buddy.nrFreePages).toBe(64 * PAGES_PER_MiB);
  });

  it('adopts pages it never handed out, and takes them back when they are freed', () => {
    const { buddy, memmap } = rig(undefined, [], false);
    buddy.freeRange(0, 32);
    memmap.setFlags(32, PageFlag.Reserved);
    memmap.setRefcount(32, 1);
    const f = buddy.adoptFolio(pfn(32), toOrder(3));
    expect([memmap.refcount(32), memmap.testFlag(32, PageFlag.Reserved), memmap.compoundHead(39)]).toEqual([1, false, 32]);
    expect(buddy.adoptPages(pfn(40), toOrder(2))).toBe(40);
    expect(errorOf(() => buddy.adoptPages(pfn(8), toOrder(0))).message).toBe('EBUSY: adoptPages: pfn 0x8 is free (in the free block at 0x0)');
    expect(errorOf(() => buddy.adoptPages(pfn(40), toOrder(0))).message).toBe('EBUSY: adoptPages: pfn 0x28 is in use (refcount 1)');
    expect(errorOf(() => buddy.adoptPages(pfn(44), toOrder(3))).message).toBe('EINVAL: adoptPages: pfn 0x2c is not aligned to order 3');
    buddy.folioPut(f);
    buddy.freePages(pfn(40), toOrder(2));
    expect(buddy.nrFreePages).toBe(44);
    buddy.checkInvariants();
  });
});

describe('fault injection', () => {
  it.each([
    ['failNth', { failNth: 3 }, [false, false, true, false, false, false]],
    ['everyNth', { everyNth: 2 }, [false, true, false, true, false, true]],
  ])('%s makes allocPages throw ENOMEM on exactly those calls', (_what, config, want) => {
    const { buddy, faults } = rig();
    faults.configure(config);
    const got = want.map(() => {
      const before = snapshot(buddy);
      try {
        buddy.allocPages(1);
        return false;
      } catch (e) {
        expect(isKernelError(e, Errno.ENOMEM)).toBe(true);
        expect((e as Error).message).toBe('ENOMEM: allocPages: injected failure of an order-1 allocation on any node (fault injection)');
        expect(snapshot(buddy)).toEqual(before);
        return true;
      }
    });
    expect(got).toEqual(want);
    buddy.checkInvariants();
  });

  it('onCall sees every allocation before the decision; what it throws leaves the allocator untouched', () => {
    const { buddy, faults } = rig();
    const seen: number[] = [];
    faults.onCall = (n) => {
      seen.push(n);
      if (n === 2) throw new Error('stopped at allocation 2');
    };
    buddy.allocPages(0);
    const before = snapshot(buddy);
    expect(() => buddy.allocPages(3)).toThrow('stopped at allocation 2');
    expect(snapshot(buddy)).toEqual(before);
    faults.reset();
    buddy.allocPages(0);
    expect(seen).toEqual([1, 2, 1]);
    buddy.checkInvariants();
  });

  it('fails the same calls for the same seed, with the allocator unchanged by each failure', () => {
    const run = (): boolean[] => {
      const { buddy, faults } = rig();
      faults.configure({ probability: 0.3, seed: 7 });
      const out: boolean[] = [];
      for (let i = 0; i < 200; i++) {
        const free = buddy.nrFreePages;
        try {
          buddy.folioAlloc(i % 4, { node: 0 });
          out.push(false);
        } catch (e) {
          expect(isKernelError(e, Errno.ENOMEM)).toBe(true);
          expect(buddy.nrFreePages).toBe(free);
          out.push(true);
        }
      }
      buddy.checkInvariants();
      expect(faults.injected).toBe(out.filter(Boolean).length);
      return out;
    };
    const a = run();
    expect(run()).toEqual(a);
    expect(a.filter(Boolean).length).toBeGreaterThan(30);
  });
});

describe('BuddyAllocator properties', () => {
  // Two nodes, a hole, a range starting off a 4 MiB boundary, and some scratch memory on node 0.
  const ranges = [
    { start: 0, size: 32 * MiB, node: 0 },
    { start: 64 * MiB + 12 * 1024, size: 32 * MiB - 12 * 1024, node: 1 },
  ];
  const scratch: Array<[number, number]> = [[8 * PAGES_PER_MiB, 4 * PAGES_PER_MiB + 5]];
  type Op = { kind: 'alloc'; order: number; movable: boolean; node: number | undefined; folio: boolean } | { kind: 'free'; pick: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({
      kind: fc.constant('alloc' as const),
      order: fc.integer({ min: 0, max: MAX_PAGE_ORDER }),
      movable: fc.boolean(),
      node: fc.constantFrom(undefined, 0, 1),
      folio: fc.boolean(),
    }),
    fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }),
  );

  it('never hands out overlapping or misaligned blocks, and freeing everything restores a fully merged state', () => {
    const pfnEnd = (ranges[1].start + ranges[1].size) / PAGE_SIZE;
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const r = rig(ranges, scratch);
        const { buddy, memmap } = r;
        const initial = buddy.nrFreePages;
        const owner = new Uint8Array(pfnEnd);
        const live: Array<{ p: number; order: number; folio: Folio | undefined }> = [];
        for (const o of ops) {
          if (o.kind === 'alloc') {
            let p: number;
            let folio: Folio | undefined;
            try {
              const opts = { movable: o.movable, ...(o.node === undefined ? {} : { node: o.node }) };
              if (o.folio) {
                folio = buddy.folioAlloc(o.order, opts);
                p = folio.pfn;
              } else {
                p = buddy.allocPages(o.order, opts);
              }
            } catch (e) {
              if (isKernelError(e, Errno.ENOMEM)) continue;
              throw e;
            }
            expect(p % 2 ** o.order).toBe(0);
            for (let q = p; q < p + 2 ** o.order; q++) {
              if (owner[q]) throw new Error(`pfn ${q} handed out twice`);
              if (!o.movable && memmap.testFlag(q, PageFlag.Scratch)) throw new Error(`scratch pfn ${q} given to an unmovable allocation`);
              owner[q] = 1;
            }
            if (o.node !== undefined) expect(r.ram.nodeOf(p * PAGE_SIZE)).toBe(o.node);
            live.push({ p, order: o.order, folio });
          } else if (live.length > 0) {
            const [b] = live.splice(o.pick % live.length, 1);
            if (b.folio) buddy.folioPut(b.folio);
            else buddy.freePages(pfn(b.p), toOrder(b.order));
            owner.fill(0, b.p, b.p + 2 ** b.order);
          }
        }
        buddy.checkInvariants();
        for (const b of live) {
          if (b.folio) buddy.folioPut(b.folio);
          else buddy.freePages(pfn(b.p), toOrder(b.order));
        }
        expect(buddy.nrFreePages).toBe(initial);
        expect(buddy.fullyMerged()).toBe(true);
        buddy.checkInvariants();
      }),
      { numRuns: 200 },
    );
  });
});
