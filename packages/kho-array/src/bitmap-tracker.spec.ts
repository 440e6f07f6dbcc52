import fc from 'fast-check';
import { PAGE_SIZE, pfn as toPfn, toOrder, type Order, type Pfn } from '@kho/physmem';
import type { BitmapTracker } from './bitmap-tracker';
import { trackerContract } from '@kho/kho-core/testing';
import { bitmapTestMachine, type BitmapForm } from './testing';

const GiB = 2 ** 30;

type Kind = BitmapForm;
const KINDS: Kind[] = ['chunks', 'array'];

/** A tracker of `kind` over 64 MiB of allocatable RAM, with `blocks` ([pfn, order]) in RAM too. */
function setup(kind: Kind, blocks: ReadonlyArray<readonly [number, number]> = []) {
  return bitmapTestMachine(kind, blocks);
}

function collect(t: BitmapTracker): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  t.walk((pfn, order) => void out.push([pfn, order]));
  return out;
}

function incoming(t: BitmapTracker, map: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  t.walkIncoming(map, (pfn, order) => void out.push([pfn, order]));
  return out;
}

/** Every block the property below can name: k = 0..3 blocks from regions 0, 32766 and 65534, of every order. */
const ALL_BLOCKS: Array<[number, number]> = [];
for (let order = 0; order <= 10; order++) for (const region of [0, 32766, 65534]) ALL_BLOCKS.push([region * 2 ** order, order + 2]);

/** Blocks for the Tracker contract: orders 0..10 in several bitmaps. */
const CONTRACT_BLOCKS: Array<[Pfn, Order]> = (
  [
    [0x10, 0],
    [0x11, 0],
    [0x2000, 1],
    [0x400, 10],
    [0x3000, 3],
    [40000, 0],
  ] as Array<[number, number]>
).map(([p, o]) => [toPfn(p), toOrder(o)]);

describe.each(KINDS)('the bitmap tracker (%s form): the Tracker contract', (kind) => {
  const make = () => {
    const { tracker, buddy, faults } = setup(kind, CONTRACT_BLOCKS);
    return { tracker, buddy, faults, blocks: CONTRACT_BLOCKS };
  };
  it.each(trackerContract())('%s', (_name, check) => check(make));
});

describe.each(KINDS)('the bitmap tracker (%s form), in this kernel', (kind) => {
  it('has the compatible string of its form, and no map before serialize', () => {
    const { tracker } = setup(kind);
    expect(tracker.compatible).toBe(kind === 'chunks' ? 'kho-v1' : 'kho-v1-karr');
    expect(tracker.init()).toBe(0);
  });

  it('walks lower orders first, ascending addresses within an order, and stops when a visitor returns true', () => {
    const { tracker } = setup(kind);
    const blocks: Array<[number, number]> = [
      [0x10, 0],
      [0x3, 0],
      [0x800, 9],
      [0x200, 9],
      [GiB / PAGE_SIZE, 0],
      [0x40, 2],
    ];
    for (const [p, o] of blocks) tracker.add(toPfn(p), toOrder(o));
    expect(collect(tracker)).toEqual([
      [0x3, 0],
      [0x10, 0],
      [GiB / PAGE_SIZE, 0],
      [0x40, 2],
      [0x200, 9],
      [0x800, 9],
    ]);
    let seen = 0;
    tracker.walk(() => ++seen === 3);
    expect(seen).toBe(3);
  });

  it('keeps one page per (order, 32768 blocks) from the buddy allocator and frees a bitmap when it empties', () => {
    const { tracker, buddy } = setup(kind);
    const free0 = buddy.nrFreePages;
    tracker.add(toPfn(0), toOrder(0));
    tracker.add(toPfn(32767), toOrder(0)); // the same bitmap: 32768 order-0 pages, 128 MiB
    expect(tracker.stats()).toEqual({ blocks: 2, metadataPages: 1 });
    tracker.add(toPfn(32768), toOrder(0)); // the next bitmap
    tracker.add(toPfn(0), toOrder(1)); // another order
    expect(tracker.stats()).toEqual({ blocks: 4, metadataPages: 3 });
    expect(buddy.nrFreePages).toBe(free0 - 3);
    const pfns = tracker.metadataPfns();
    expect(pfns).toHaveLength(3);
    for (const p of pfns) expect(buddy.isFree(toPfn(p))).toBe(false);
    expect(tracker.del(toPfn(0), toOrder(0))).toBe(true);
    expect(tracker.stats().metadataPages).toBe(3); // 32767 is still there
    expect(tracker.del(toPfn(32767), toOrder(0))).toBe(true);
    expect(tracker.stats().metadataPages).toBe(2);
    expect(tracker.del(toPfn(32768), toOrder(0))).toBe(true);
    expect(tracker.del(toPfn(0), toOrder(1))).toBe(true);
    expect(tracker.stats()).toEqual({ blocks: 0, metadataPages: 0 });
    expect(buddy.nrFreePages).toBe(free0);
    tracker.add(toPfn(5), toOrder(0)); // and it still works
    expect(collect(tracker)).toEqual([[5, 0]]);
  });

  it('zeroes a bitmap page it takes from the allocator (the page may hold an old kernel\'s bytes)', () => {
    const { tracker, buddy, ram } = setup(kind);
    const pfn = buddy.allocPages(0);
    ram.fill(pfn * PAGE_SIZE, PAGE_SIZE, 0xff);
    buddy.freePages(pfn, toOrder(0));
    tracker.add(toPfn(7), toOrder(0));
    expect(tracker.metadataPfns()).toEqual([pfn]);
    expect(collect(tracker)).toEqual([[7, 0]]);
  });

  it('an add that cannot get a page throws ENOMEM and changes nothing', () => {
    const { tracker, buddy, faults } = setup(kind);
    tracker.add(toPfn(0x10), toOrder(0));
    const free0 = buddy.nrFreePages;
    faults.configure({ failNth: 1 });
    expect(() => tracker.add(toPfn(0x10), toOrder(3))).toThrow(/^ENOMEM: /);
    faults.reset();
    expect(buddy.nrFreePages).toBe(free0);
    expect(tracker.stats()).toEqual({ blocks: 1, metadataPages: 1 });
    expect(tracker.has(toPfn(0x10), toOrder(3))).toBe(false);
    tracker.add(toPfn(0x10), toOrder(3));
    expect(collect(tracker)).toEqual([
      [0x10, 0],
      [0x10, 3],
    ]);
  });

  it.each([
    [-1, 0, 'EINVAL: bitmap tracker: pfn -1 is not aligned to order 0'],
    [3, 1, 'EINVAL: bitmap tracker: pfn 0x3 is not aligned to order 1'],
    [NaN, 0, 'EINVAL: bitmap tracker: pfn NaN is not aligned to order 0'],
    [1.5, 0, 'EINVAL: bitmap tracker: pfn 1.5 is not aligned to order 0'],
    [2 ** 52, 0, 'EINVAL: bitmap tracker: pfn 0x10000000000000 is beyond the 64-bit physical address space'],
    [0, 11, 'EINVAL: bitmap tracker: order 11 is out of range (wanted 0..10)'],
    [0, -1, 'EINVAL: bitmap tracker: order -1 is out of range (wanted 0..10)'],
    [0, 0.5, 'EINVAL: bitmap tracker: order 0.5 is out of range (wanted 0..10)'],
  ])('add, del and has refuse pfn %d order %d', (pfn, order, message) => {
    const { tracker } = setup(kind);
    // Unchecked on purpose: the tracker's own refusal of what the brands would stop at compile time.
    const [p, o] = [pfn as Pfn, order as Order];
    expect(() => tracker.add(p, o)).toThrow(message);
    expect(() => tracker.del(p, o)).toThrow(message);
    expect(() => tracker.has(p, o)).toThrow(message);
    expect(tracker.stats()).toEqual({ blocks: 0, metadataPages: 0 });
  });

  it('records the highest blocks (phys just below 2^64)', () => {
    const { tracker } = setup(kind);
    tracker.add(toPfn(2 ** 52 - 1), toOrder(0));
    tracker.add(toPfn(2 ** 52 - 1024), toOrder(10));
    expect(collect(tracker)).toEqual([
      [2 ** 52 - 1, 0],
      [2 ** 52 - 1024, 10],
    ]);
    expect(tracker.del(toPfn(2 ** 52 - 1), toOrder(0))).toBe(true);
  });

  it('del of a block no bitmap covers warns and returns false', () => {
    const { tracker, log } = setup(kind);
    tracker.add(toPfn(0), toOrder(0));
    expect(tracker.del(toPfn(2 ** 20), toOrder(0))).toBe(false);
    expect(log.filter('warn').map((l) => l.message)).toEqual(['bitmap tracker: no bitmap covers block 0x100000000 order 0; was it preserved?']);
  });

  it('matches a set of blocks under any sequence of adds, dels and lookups, and the next kernel reads the same (property)', () => {
    // Blocks near the first bitmap boundaries of each order, so runs cross bitmaps and orders interleave.
    const block = fc.tuple(fc.integer({ min: 0, max: 10 }), fc.constantFrom(0, 32766, 65534), fc.integer({ min: 0, max: 3 }));
    const op = fc.tuple(fc.constantFrom('add', 'del', 'has'), block);
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const { tracker, buddy } = setup(kind, ALL_BLOCKS);
        const free0 = buddy.nrFreePages;
        const model = new Map<string, [number, number]>();
        for (const [what, [order, region, k]] of ops) {
          const pfn = (region + k) * 2 ** order;
          const id = `${pfn}/${order}`;
          if (what === 'add') {
            tracker.add(toPfn(pfn), toOrder(order));
            model.set(id, [pfn, order]);
          } else if (what === 'del') {
            expect(tracker.del(toPfn(pfn), toOrder(order))).toBe(model.delete(id));
          } else {
            expect(tracker.has(toPfn(pfn), toOrder(order))).toBe(model.has(id));
          }
        }
        const want = [...model.values()].sort((a, b) => a[1] - b[1] || a[0] - b[0]);
        expect(tracker.stats().blocks).toBe(model.size);
        expect(collect(tracker)).toEqual(want);
        const bitmaps = tracker.stats().metadataPages;
        const map = tracker.serialize();
        expect(incoming(tracker, map)).toEqual(want);
        const pfns = tracker.metadataPfns();
        expect(pfns).toHaveLength(tracker.stats().metadataPages);
        expect(tracker.incomingMetadataPfns(map)).toEqual(pfns);
        expect(new Set(pfns).size).toBe(pfns.length);
        tracker.cancelSerialize();
        expect(tracker.stats().metadataPages).toBe(bitmaps);
        tracker.destroy();
        expect(buddy.nrFreePages).toBe(free0);
      }),
      { numRuns: 60 },
    );
  });
});

describe.each(KINDS)('serialize and cancel (%s form)', (kind) => {
  // 600 bitmaps of order 0 (more than two chunks, more than three pages of records), and one of each other order
  const BLOCKS: Array<[number, number]> = [];
  for (let i = 0; i < 600; i++) BLOCKS.push([i * 32768 + (i % 7), 0]);
  for (let o = 1; o <= 10; o++) BLOCKS.push([2 ** 10 * o, o]);

  function filled() {
    const s = setup(kind, BLOCKS);
    for (const [p, o] of BLOCKS) s.tracker.add(toPfn(p), toOrder(o));
    return s;
  }

  it('builds the map once; the tracker is final (EBUSY) until cancelSerialize frees the map', () => {
    const { tracker, buddy } = filled();
    const blocks = collect(tracker);
    const before = tracker.stats();
    const free0 = buddy.nrFreePages;
    const map = tracker.serialize();
    expect(map).not.toBe(0);
    expect(tracker.serialized).toBe(true);
    expect(tracker.init()).toBe(map);
    expect(tracker.serialize()).toBe(map);
    const built = tracker.stats().metadataPages - before.metadataPages;
    // chunks: 3 for order 0 (255 + 255 + 90), one per other order; array: a descriptor page, 4 pages of
    // records (170 each), and the array's own pages (508 entries each)
    expect(built).toBe(kind === 'chunks' ? 3 + 10 : 1 + 4 + 2);
    expect(buddy.nrFreePages).toBe(free0 - built);
    expect(() => tracker.add(toPfn(0x3000), toOrder(0))).toThrow(`EBUSY: bitmap tracker: add of block 0x3000000 order 0 after serialize (the ${tracker.compatible} map is final until the update is cancelled)`);
    expect(() => tracker.del(toPfn(0), toOrder(0))).toThrow(/^EBUSY: bitmap tracker: del of block 0x0 order 0 after serialize/);
    expect(tracker.has(toPfn(0), toOrder(0))).toBe(true);
    expect(incoming(tracker, map)).toEqual(blocks);
    tracker.cancelSerialize();
    expect(tracker.serialized).toBe(false);
    expect(tracker.init()).toBe(0);
    expect(tracker.stats()).toEqual(before);
    expect(buddy.nrFreePages).toBe(free0);
    tracker.cancelSerialize(); // nothing to do
    tracker.add(toPfn(0x3000), toOrder(0));
    expect(tracker.has(toPfn(0x3000), toOrder(0))).toBe(true);
    const again = tracker.serialize();
    expect(incoming(tracker, again)).toEqual(collect(tracker));
  });

  it('lists the map\'s pages after serialize (bitmaps included), the bitmaps alone before', () => {
    const { tracker } = filled();
    const bitmaps = tracker.metadataPfns();
    expect(bitmaps).toHaveLength(610);
    const map = tracker.serialize();
    const pages = tracker.metadataPfns();
    expect(pages).toHaveLength(tracker.stats().metadataPages);
    expect(pages[0]).toBe(map / PAGE_SIZE);
    expect(pages.filter((p) => bitmaps.includes(p))).toEqual(bitmaps); // the bitmaps, in walk order
  });

  it('an empty tracker serialises to a map that holds nothing', () => {
    const { tracker } = setup(kind);
    const map = tracker.serialize();
    expect(map).not.toBe(0);
    expect(incoming(tracker, map)).toEqual([]);
    expect(tracker.stats().metadataPages).toBe(1); // one empty chunk, or the descriptor page of an empty array
    expect(tracker.incomingMetadataPfns(map)).toEqual([map / PAGE_SIZE]);
  });

  it('unwinds exactly when a page of the map cannot be allocated, at every allocation', () => {
    const { tracker, buddy, faults, ram } = filled();
    const free0 = buddy.nrFreePages;
    const blocks = collect(tracker);
    const pages = kind === 'chunks' ? 13 : 7;
    for (let k = 1; k <= pages; k++) {
      faults.configure({ failNth: k });
      expect(() => tracker.serialize()).toThrow(/^ENOMEM: /);
      faults.reset();
      expect(tracker.serialized).toBe(false);
      expect(buddy.nrFreePages).toBe(free0);
      expect(collect(tracker)).toEqual(blocks);
    }
    faults.configure({ failNth: pages + 1 });
    const map = tracker.serialize(); // needs exactly `pages` pages
    faults.reset();
    expect(incoming(tracker, map)).toEqual(blocks);
    expect(ram.isRam(map)).toBe(true);
  });
});
