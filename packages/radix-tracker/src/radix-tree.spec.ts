import { bareAllocator } from '@kho/physmem/testing';
import fc from 'fast-check';
import { Errno, KernelError, KernelLog, LifecycleBus } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory, pfn as toPfn, toOrder, type Order, type Pfn } from '@kho/physmem';
import { pagesCrc } from '@kho/kho-core';
import { RadixTracker, incomingTreeNodePfns, readIncomingTree, validateIncomingTree } from './radix-tree';
import { trackerContract } from '@kho/kho-core/testing';

const GiB = 2 ** 30;

function setup(ranges = [{ start: 0, size: 64 * 2 ** 20, node: 0 }, { start: 2 ** 40, size: 16 * 2 ** 20, node: 0 }]) {
  const { ram, memmap, faults, buddy } = bareAllocator(ranges, [[ranges[0].start / PAGE_SIZE, ranges[0].size / PAGE_SIZE]]);
  const log = new KernelLog(new LifecycleBus(), 1);
  const tree = new RadixTracker(ram, buddy, log);
  return { ram, memmap, faults, buddy, log, tree };
}

/** Blocks for the contract: several orders (11 and 18 too), several leaves, RAM at 0 and at 1 TiB. */
const CONTRACT_BLOCKS: Array<[Pfn, Order]> = (
  [
    [0x10, 0],
    [0x11, 0],
    [0x2000, 1],
    [0x800, 11],
    [2 ** 28, 0],
    [2 ** 28 + 0x40, 6],
    [0, 13],
  ] as Array<[number, number]>
).map(([p, o]) => [toPfn(p), toOrder(o)]);

function collect(tree: RadixTracker): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  tree.walk((pfn, order) => void out.push([pfn, order]));
  return out;
}

describe('RadixTracker: the Tracker contract', () => {
  const make = () => {
    const { tree, buddy, faults } = setup();
    return { tracker: tree, buddy, faults, blocks: CONTRACT_BLOCKS };
  };
  it.each(trackerContract())('%s', (_name, check) => check(make));
});

describe('RadixTracker', () => {
  it('before init it has no tree: no metadata pages, a walk visits nothing, destroy frees nothing', () => {
    const { tree, buddy } = setup();
    const free = buddy.nrFreePages;
    expect(tree.metadataPfns()).toEqual([]);
    expect(collect(tree)).toEqual([]);
    tree.destroy();
    expect(buddy.nrFreePages).toBe(free);
    expect(tree.stats()).toEqual({ blocks: 0, metadataPages: 0 });
    // the tree starts at the first add, with its root
    tree.add(toPfn(0x10), toOrder(0));
    expect(tree.metadataPfns()[0]).toBe(tree.rootPhys / PAGE_SIZE);
  });

  it('walks higher orders first and ascending addresses within an order', () => {
    const { tree } = setup();
    tree.init();
    const blocks: Array<[number, number]> = [
      [0x10, 0],
      [0x3, 0],
      [0x800, 9],
      [0x200, 9],
      [GiB / PAGE_SIZE, 0],
      [0x40, 2],
    ];
    for (const [p, o] of blocks) tree.add(toPfn(p), toOrder(o));
    expect(collect(tree)).toEqual([
      [0x200, 9],
      [0x800, 9],
      [0x40, 2],
      [0x3, 0],
      [0x10, 0],
      [GiB / PAGE_SIZE, 0],
    ]);
  });

  it('a walk stops at the first visitor that returns true', () => {
    const { tree } = setup();
    for (let i = 0; i < 10; i++) tree.add(toPfn(i), toOrder(0));
    let seen = 0;
    tree.walk(() => ++seen === 3);
    expect(seen).toBe(3);
  });

  it('keeps its nodes in RAM pages from the buddy allocator: the first block on a new path costs 5 pages plus the root', () => {
    const { tree, buddy } = setup();
    const free0 = buddy.nrFreePages;
    tree.init();
    tree.add(toPfn(0), toOrder(0));
    expect(tree.stats().metadataPages).toBe(6);
    expect(buddy.nrFreePages).toBe(free0 - 6);
    tree.add(toPfn(1), toOrder(0)); // same leaf
    expect(tree.stats().metadataPages).toBe(6);
    const pfns = tree.metadataPfns();
    expect(pfns).toHaveLength(6);
    expect(pfns[0]).toBe(tree.rootPhys / PAGE_SIZE);
    for (const p of pfns) expect(buddy.isFree(toPfn(p))).toBe(false);
    tree.destroy();
    expect(buddy.nrFreePages).toBe(free0);
  });

  it('the tree another reader sees in RAM is the same set of blocks (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 10 }), fc.oneof(fc.integer({ min: 0, max: 16383 }), fc.integer({ min: 2 ** 28, max: 2 ** 28 + 4095 }))), { maxLength: 60 }),
        (raw) => {
          const { tree, ram } = setup();
          const want = new Map<string, [number, number]>();
          for (const [order, n] of raw) {
            const pfn = (n >> order) << order;
            tree.add(toPfn(pfn), toOrder(order));
            want.set(`${pfn}/${order}`, [pfn, order]);
          }
          const root = tree.init();
          const inc = readIncomingTreeFrom(ram, root);
          expect(new Set(inc.map(([p, o]) => `${p}/${o}`))).toEqual(new Set(want.keys()));
          expect(inc).toEqual(collect(tree));
        },
      ),
      { numRuns: 40 },
    );
  });

  it('unwinds exactly on ENOMEM: the tree and the allocator are as before', () => {
    for (let k = 1; k <= 5; k++) {
      const { tree, buddy, faults, ram } = setup();
      tree.init();
      tree.add(toPfn(0x10), toOrder(0));
      const free0 = buddy.nrFreePages;
      const rootBytes = ram.read(tree.rootPhys, PAGE_SIZE);
      faults.configure({ failNth: k });
      let err: unknown;
      try {
        tree.add(toPfn(2 ** 30), toOrder(3)); // a new path: 5 fresh pages
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KernelError);
      expect((err as KernelError).errno).toBe(Errno.ENOMEM);
      expect(buddy.nrFreePages).toBe(free0);
      expect(ram.read(tree.rootPhys, PAGE_SIZE)).toEqual(rootBytes);
      expect(collect(tree)).toEqual([[0x10, 0]]);
      faults.reset();
      tree.add(toPfn(2 ** 30), toOrder(3));
      expect(collect(tree)).toEqual([
        [2 ** 30, 3],
        [0x10, 0],
      ]);
    }
  });

  it.each([
    [-1, 0, 'EINVAL: radix tree: pfn -1 is not aligned to order 0'],
    [3, 1, 'EINVAL: radix tree: pfn 0x3 is not aligned to order 1'],
    [0, 52, 'EINVAL: radix tree: order 52 is out of range (wanted 0..51)'],
  ])('refuses pfn %d order %d', (pfn, order, message) => {
    const { tree } = setup();
    // Unchecked on purpose: the tracker's own refusal of what the brands would stop at compile time.
    const [p, o] = [pfn as Pfn, order as Order];
    expect(() => tree.add(p, o)).toThrow(message);
  });

  it('del of a block on a missing path warns and returns false', () => {
    const { tree, log } = setup();
    tree.init();
    expect(tree.del(toPfn(0x12345), toOrder(0))).toBe(false);
    expect(log.filter('warn')[0].message).toBe('radix tree: no path for block 0x12345000 order 0; was it preserved?');
  });
});

/**
 * The spec's layout read literally (section 3), with BigInt and byte reads, independent of the tracker's code:
 * [pfn, order, leaf phys] for every set bit, in walk order. Trusts the tree (test trees only).
 */
function referenceDecode(ram: PhysicalMemory, root: number): Array<[number, number, number]> {
  const out: Array<[number, number, number]> = [];
  const table = (node: number, level: number, prefix: bigint): void => {
    for (let i = 0; i < 512; i++) {
      const child = ram.readU64n(node + i * 8);
      if (child === 0n) continue;
      const p = (prefix << 9n) | BigInt(i);
      if (level > 1) {
        table(Number(child), level - 1, p);
        continue;
      }
      const bytes = ram.read(Number(child), PAGE_SIZE);
      for (let byte = 0; byte < PAGE_SIZE; byte++) {
        for (let b = 0; b < 8; b++) {
          if ((bytes[byte] & (1 << b)) === 0) continue;
          const key = (p << 15n) | BigInt(byte * 8 + b);
          const order = 53 - key.toString(2).length;
          const phys = (key << BigInt(12 + order)) & (2n ** 64n - 1n);
          out.push([Number(phys / 4096n), order, Number(child)]);
        }
      }
    }
  };
  table(root, 5, 0n);
  return out;
}

const pairs = (blocks: Array<[number, number, number]>): Array<[number, number]> => blocks.map(([p, o]) => [p, o]);

describe('RadixTracker caches (the last leaf per order, the tables of the last descent)', () => {
  it('relies on PhysicalMemory keeping a page\'s bytes in one buffer through fills, writes and reads', () => {
    const { ram } = setup();
    const bytes = ram.page(5);
    ram.fill(5 * PAGE_SIZE, PAGE_SIZE, 0);
    ram.writeU64(5 * PAGE_SIZE + 8, 0x1234);
    ram.write(5 * PAGE_SIZE, new Uint8Array(PAGE_SIZE).fill(7));
    expect(ram.readU8(5 * PAGE_SIZE + 9)).toBe(7);
    // Every view of the page is a view of the same bytes: same buffer, same offset.
    for (const view of [ram.page(5), ram.pageIfPresent(5)!]) {
      expect(view.buffer).toBe(bytes.buffer);
      expect([view.byteOffset, view.length]).toEqual([bytes.byteOffset, PAGE_SIZE]);
    }
    expect(bytes[9]).toBe(7);
  });

  it('destroy() drops it: an add after destroy builds a new tree instead of writing into a freed page', () => {
    const { tree, ram, buddy } = setup();
    const free0 = buddy.nrFreePages;
    tree.add(toPfn(0x100), toOrder(0));
    tree.destroy();
    tree.add(toPfn(0x101), toOrder(0)); // the same leaf range as the cached leaf of the old tree
    expect(tree.stats()).toEqual({ blocks: 1, metadataPages: 6 });
    expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([[0x101, 0]]);
    expect(tree.has(toPfn(0x100), toOrder(0))).toBe(false);
    tree.destroy();
    expect(buddy.nrFreePages).toBe(free0);
  });

  it('destroy() drops it when the old leaf page comes back as another kind of node', () => {
    const { tree, ram, buddy } = setup();
    tree.add(toPfn(0x100), toOrder(0));
    tree.add(toPfn(0x200), toOrder(9));
    const oldLeaves = referenceDecode(ram, tree.rootPhys).map(([, , leaf]) => leaf);
    tree.destroy();
    // Take pages until the allocator has handed the old leaves out again, as tables of a new tree would be.
    const taken: number[] = [];
    while (!oldLeaves.every((l) => taken.includes(l))) taken.push(buddy.allocPages(0) * PAGE_SIZE);
    for (const p of taken) buddy.freePages(toPfn(p / PAGE_SIZE), toOrder(0));
    tree.add(toPfn(0x5000), toOrder(3));
    tree.add(toPfn(0x100), toOrder(0));
    tree.add(toPfn(0x400), toOrder(9));
    expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([
      [0x400, 9],
      [0x5000, 3],
      [0x100, 0],
    ]);
  });

  it('the leaf cache forgets a leaf that a delete frees, even after the per-order cache moved on', () => {
    const { tree, ram, buddy } = setup();
    tree.add(toPfn(0x100), toOrder(0));
    tree.add(toPfn(0x900000), toOrder(0)); // another leaf: the per-order cache now names it, the leaf cache both
    const [first] = referenceDecode(ram, tree.rootPhys).map(([, , leaf]) => leaf);
    expect(tree.del(toPfn(0x100), toOrder(0))).toBe(true); // empties the first leaf: reclaimed, its page freed
    // The freed page comes back as someone else's, with bytes of its own.
    const taken: number[] = [];
    while (!taken.includes(first)) taken.push(buddy.allocPages(0) * PAGE_SIZE);
    ram.fill(first, PAGE_SIZE, 0xa5);
    tree.add(toPfn(0x101), toOrder(0)); // the freed leaf's range: a new path, never the freed page
    expect(ram.read(first, PAGE_SIZE).every((b) => b === 0xa5)).toBe(true);
    expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([
      [0x101, 0],
      [0x900000, 0],
    ]);
    expect([tree.has(toPfn(0x100), toOrder(0)), tree.has(toPfn(0x101), toOrder(0))]).toEqual([false, true]);
  });

  it('adds, lookups and deletes that cross leaf boundaries land in the right leaf', () => {
    const { tree, ram } = setup();
    const seq = [32767, 32768, 32766, 65536, 32769, 0, 65535];
    for (const p of seq) tree.add(toPfn(p), toOrder(0));
    expect(tree.stats()).toEqual({ blocks: 7, metadataPages: 5 + 3 });
    expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([...seq].sort((a, b) => a - b).map((p) => [p, 0]));
    for (const p of seq) expect(tree.has(toPfn(p), toOrder(0))).toBe(true);
    for (const p of [1, 32765, 32770, 65534, 65537]) expect(tree.has(toPfn(p), toOrder(0))).toBe(false);
    expect(tree.del(toPfn(32768), toOrder(0))).toBe(true);
    expect(tree.del(toPfn(32767), toOrder(0))).toBe(true);
    expect(tree.has(toPfn(32768), toOrder(0))).toBe(false);
    expect(tree.has(toPfn(32766), toOrder(0))).toBe(true);
    expect(collect(tree)).toEqual([0, 32766, 32769, 65535, 65536].map((p) => [p, 0]));
  });

  it('each order keeps its own leaf: interleaved orders set bits in their own leaves', () => {
    const { tree, ram } = setup();
    tree.add(toPfn(0x10), toOrder(0));
    tree.add(toPfn(0x18), toOrder(3));
    tree.add(toPfn(0x11), toOrder(0));
    tree.add(toPfn(0x20), toOrder(3));
    tree.add(toPfn(0x400), toOrder(10));
    tree.add(toPfn(0x12), toOrder(0));
    expect(tree.del(toPfn(0x18), toOrder(3))).toBe(true);
    expect(tree.has(toPfn(0x11), toOrder(0))).toBe(true);
    expect(tree.has(toPfn(0x10), toOrder(3))).toBe(false);
    expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([
      [0x400, 10],
      [0x20, 3],
      [0x10, 0],
      [0x11, 0],
      [0x12, 0],
    ]);
  });

  it('a del on a missing path warns even while another leaf of that order is cached', () => {
    const { tree, log } = setup();
    tree.add(toPfn(0), toOrder(0));
    expect(tree.del(toPfn(2 ** 20), toOrder(0))).toBe(false);
    expect(tree.has(toPfn(2 ** 20), toOrder(0))).toBe(false);
    expect(log.filter('warn').map((l) => l.message)).toEqual(['radix tree: no path for block 0x100000000 order 0; was it preserved?']);
    expect(tree.has(toPfn(0), toOrder(0))).toBe(true);
  });

  it('a failed add leaves the cache on a live leaf', () => {
    const { tree, faults, ram, buddy } = setup();
    tree.add(toPfn(0x10), toOrder(0));
    const free0 = buddy.nrFreePages;
    faults.configure({ failNth: 1 });
    expect(() => tree.add(toPfn(0x8000), toOrder(0))).toThrow(/ENOMEM/); // the next leaf: one new page
    faults.reset();
    expect(buddy.nrFreePages).toBe(free0);
    tree.add(toPfn(0x11), toOrder(0));
    tree.add(toPfn(0x8000), toOrder(0));
    expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([
      [0x10, 0],
      [0x11, 0],
      [0x8000, 0],
    ]);
  });

  it('a failed descent forgets the tables it reached: the next add does not build on a freed page', () => {
    for (let k = 2; k <= 5; k++) {
      const { tree, faults, ram, buddy } = setup();
      tree.add(toPfn(0x10), toOrder(0));
      const free0 = buddy.nrFreePages;
      faults.configure({ failNth: k });
      expect(() => tree.add(toPfn(2 ** 30), toOrder(3))).toThrow(/ENOMEM/); // a new path: tables at levels 4..1, then a leaf
      faults.reset();
      expect(buddy.nrFreePages).toBe(free0);
      tree.add(toPfn(2 ** 30 + 8), toOrder(3)); // the same tables
      expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([
        [2 ** 30 + 8, 3],
        [0x10, 0],
      ]);
    }
  });

  it('matches a set of blocks and the spec layout under any sequence of adds, dels and lookups (property)', () => {
    // Blocks near the first leaf boundaries of each order, so runs cross leaves and orders interleave.
    const block = fc.tuple(fc.integer({ min: 0, max: 10 }), fc.constantFrom(0, 32766, 65534), fc.integer({ min: 0, max: 3 }));
    const op = fc.tuple(fc.constantFrom('add', 'del', 'has'), block);
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const { tree, ram } = setup();
        const model = new Set<string>();
        for (const [kind, [order, region, k]] of ops) {
          const pfn = (region + k) * 2 ** order;
          const id = `${pfn}/${order}`;
          if (kind === 'add') {
            tree.add(toPfn(pfn), toOrder(order));
            model.add(id);
          } else if (kind === 'del') {
            expect(tree.del(toPfn(pfn), toOrder(order))).toBe(model.delete(id));
          } else {
            expect(tree.has(toPfn(pfn), toOrder(order))).toBe(model.has(id));
          }
        }
        expect(tree.stats().blocks).toBe(model.size);
        const want = tree.rootPhys === 0 ? [] : pairs(referenceDecode(ram, tree.rootPhys));
        expect(new Set(want.map(([p, o]) => `${p}/${o}`))).toEqual(model);
        expect(collect(tree)).toEqual(want);
      }),
      { numRuns: 60 },
    );
  });
});

describe('RadixTracker block checks', () => {
  it.each([
    [NaN, 0, 'EINVAL: radix tree: pfn NaN is not aligned to order 0'],
    [1.5, 0, 'EINVAL: radix tree: pfn 1.5 is not aligned to order 0'],
    [Infinity, 0, 'EINVAL: radix tree: pfn Infinity is not aligned to order 0'],
    [2 ** 52, 0, 'EINVAL: radix tree: pfn 0x10000000000000 is beyond the 64-bit physical address space'],
    [2 ** 52, 10, 'EINVAL: radix tree: pfn 0x10000000000000 is beyond the 64-bit physical address space'],
    [0, 1.5, 'EINVAL: radix tree: order 1.5 is out of range (wanted 0..51)'],
    [0, NaN, 'EINVAL: radix tree: order NaN is out of range (wanted 0..51)'],
    [0, -1, 'EINVAL: radix tree: order -1 is out of range (wanted 0..51)'],
  ])('add, del and has refuse pfn %d order %d', (pfn, order, message) => {
    const { tree } = setup();
    // Unchecked on purpose: the tracker's own refusal of what the brands would stop at compile time.
    const [p, o] = [pfn as Pfn, order as Order];
    expect(() => tree.add(p, o)).toThrow(message);
    expect(() => tree.del(p, o)).toThrow(message);
    expect(() => tree.has(p, o)).toThrow(message);
    expect(tree.stats()).toEqual({ blocks: 0, metadataPages: 0 });
  });

  it('records the highest blocks (phys just below 2^64) under root entry 3', () => {
    const { tree, ram } = setup();
    tree.add(toPfn(2 ** 52 - 1), toOrder(0));
    tree.add(toPfn(2 ** 52 - 1024), toOrder(10));
    expect(ram.readU64(tree.rootPhys + 3 * 8)).not.toBe(0);
    expect(pairs(referenceDecode(ram, tree.rootPhys))).toEqual([
      [2 ** 52 - 1024, 10],
      [2 ** 52 - 1, 0],
    ]);
    expect(collect(tree)).toEqual(pairs(referenceDecode(ram, tree.rootPhys)));
  });
});

function readIncomingTreeFrom(ram: PhysicalMemory, root: number): Array<[number, number]> {
  const r = readIncomingTree(ram, root);
  return r.pfns.map((p, i) => [p, r.orders[i]]);
}

describe('readIncomingTree refuses hostile trees before visiting anything', () => {
  function built() {
    const s = setup();
    s.tree.init();
    s.tree.add(toPfn(0x100), toOrder(0));
    s.tree.add(toPfn(0x200), toOrder(9));
    return s;
  }
  const entry = (ram: PhysicalMemory, table: number, i: number) => ram.readU64(table + i * 8);

  it.each<[string, (ram: PhysicalMemory, root: number) => number, RegExp]>([
    ['root outside RAM', () => 2 ** 45, /^EINVAL: radix tree: root 0x200000000000 is outside RAM$/],
    ['root unaligned', (_r, root) => root + 8, /is not page-aligned$/],
    ['a root entry past 3', (ram, root) => (ram.writeU64(root + 9 * 8, 0x1000), root), /root entry 9 is not empty/],
    ['a child outside RAM', (ram, root) => (ram.writeU64(root + 2 * 8, 2 ** 44), root), /level-4 node \(entry 2 of 0x[0-9a-f]+\) 0x100000000000 is outside RAM/],
    ['a child unaligned', (ram, root) => (ram.writeU64(root + 2 * 8, entry(ram, root, 2) + 1), root), /is not page-aligned/],
    ['a cycle', (ram, root) => (ram.writeU64(root + 3 * 8, root), root), /is reached twice \(a cycle or shared node\)/],
    ['a pointer above 2^53', (ram, root) => (ram.writeU64(root + 2 * 8, 0xffff_ffff_ffff_f000n), root), /not page-aligned|outside RAM/],
  ])('%s', (_name, corrupt, message) => {
    const { ram, tree } = built();
    const root = corrupt(ram, tree.rootPhys);
    let visited = 0;
    expect(() => tree.walkIncoming(root, () => void visited++)).toThrow(message);
    expect(visited).toBe(0);
  });

  it('checks blocks against RAM by leaf, word and bit exactly as a block-by-block check would (property)', () => {
    // RAM for the blocks starts on a leaf boundary and ends anywhere, so leaves and words are whole, partly or
    // not RAM; blocks lie around both ends of it.
    const startPfn = 2 ** 18;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40_000 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: -64, max: 40_100 })), { minLength: 1, maxLength: 40 }),
        (pages, raw) => {
          const { tree, ram } = setup([
            { start: 0, size: 64 * 2 ** 20, node: 0 },
            { start: startPfn * PAGE_SIZE, size: pages * PAGE_SIZE, node: 0 },
          ]);
          for (const [order, n] of raw) tree.add(toPfn(Math.floor((startPfn + n) / 2 ** order) * 2 ** order), toOrder(order));
          const root = tree.rootPhys;
          const ref = referenceDecode(ram, root);
          const bad = ref.find(([p, o]) => !ram.isRam(p * PAGE_SIZE, PAGE_SIZE * 2 ** o));
          if (bad) {
            const [p, o, leaf] = bad;
            const message = `EINVAL: radix tree: block 0x${(p * PAGE_SIZE).toString(16)} order ${o} (leaf 0x${leaf.toString(16)}) is outside RAM`;
            expect(() => validateIncomingTree(ram, root)).toThrow(message);
            expect(() => readIncomingTree(ram, root)).toThrow(message);
          } else {
            expect(readIncomingTreeFrom(ram, root)).toEqual(pairs(ref));
            expect(validateIncomingTree(ram, root)).toEqual({ blocks: ref.length, nodes: tree.stats().metadataPages });
            const visited: Array<[number, number]> = [];
            tree.walkIncoming(root, (p, o) => void visited.push([p, o]));
            expect(visited).toEqual(pairs(ref));
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it.each<[string, number, Array<[number, number]>, string | undefined]>([
    ['the last block of a word ends past RAM', 31, [[0, 0], [31, 0]], '0x4001f000 order 0'],
    ['the last block of a word is the last page of RAM', 32, [[0, 0], [31, 0]], undefined],
    ['an order-2 block half in RAM', 31 * 4 + 2, [[0, 2], [124, 2]], '0x4007c000 order 2'],
    ['a block in the next word', 32, [[31, 0], [32, 0]], '0x40020000 order 0'],
  ])('where RAM ends inside a leaf: %s', (_name, pages, blocks, refused) => {
    const startPfn = 2 ** 18; // a leaf boundary for orders 0..3
    const { tree, ram } = setup([
      { start: 0, size: 64 * 2 ** 20, node: 0 },
      { start: startPfn * PAGE_SIZE, size: pages * PAGE_SIZE, node: 0 },
    ]);
    for (const [n, order] of blocks) tree.add(toPfn(startPfn + n), toOrder(order));
    if (refused) expect(() => validateIncomingTree(ram, tree.rootPhys)).toThrow(`EINVAL: radix tree: block ${refused} (leaf`);
    else expect(readIncomingTreeFrom(ram, tree.rootPhys)).toEqual(blocks.map(([n, o]) => [startPfn + n, o]));
  });

  it('counts the blocks of full and partial words', () => {
    const { ram, tree } = setup();
    for (let p = 0x100; p < 0x100 + 1000; p++) tree.add(toPfn(p), toOrder(0));
    for (let p = 0; p < 64 * 8; p += 8) tree.add(toPfn(p), toOrder(3));
    const r = readIncomingTree(ram, tree.rootPhys);
    expect(validateIncomingTree(ram, tree.rootPhys)).toEqual({ blocks: 1064, nodes: 11 }); // a root, then 4 tables and a leaf per order
    expect([r.count, r.pfns.length, r.orders.length, r.nodes]).toEqual([1064, 1064, 1064, 11]);
    expect(r.pfns.slice(62, 66)).toEqual([0x1f0, 0x1f8, 0x100, 0x101]);
  });

  it('refuses a tree of more than maxBlocks blocks (E2BIG) from its counts, before any visit or array (issue 16, row 8)', () => {
    // 16 GiB of RAM whose first 2 GiB are 16 all-ones order-0 leaves: 524,288 blocks, from 22 written pages
    const { ram } = setup([{ start: 0, size: 16 * GiB, node: 0 }]);
    const { root } = handTree(ram, 15 * GiB, 1n << 52n);
    let l1 = root;
    for (const idx of [2, 0, 0, 0]) l1 = ram.readU64(l1 + idx * 8);
    const ones = new Uint8Array(PAGE_SIZE).fill(0xff);
    for (let i = 0; i < 16; i++) {
      const leaf = 15 * GiB + (100 + i) * PAGE_SIZE;
      ram.writeU64(l1 + i * 8, leaf);
      ram.write(leaf, ones);
    }
    const tree = new RadixTracker(ram, setup().buddy, new KernelLog(new LifecycleBus(), 1));
    let visited = 0;
    const want = 'E2BIG: radix tree holds 524288 blocks, more than the 524287 a kernel of this lab reads (KHO_MAX_INCOMING_BLOCKS; wanted at most 524287)';
    expect(() => tree.walkIncoming(root, () => void visited++, { maxBlocks: 524_287 })).toThrow(want);
    expect(() => readIncomingTree(ram, root, { maxBlocks: 524_287 })).toThrow(want);
    expect(visited).toBe(0);
    tree.walkIncoming(root, () => void visited++, { maxBlocks: 524_288 });
    expect(visited).toBe(524_288);
    // exactly maxBlocks is read, by either reader
    expect(readIncomingTree(ram, root, { maxBlocks: 524_288 }).count).toBe(524_288);
  });

  it("incomingTreeNodePfns lists the node pages without reading the leaves' bits, checking every pointer (what KHO checksums first)", () => {
    const { ram } = setup();
    const { root, leaf } = handTree(ram, 2 ** 40, 0n); // a leaf whose one bit (key 0) the walk refuses
    expect(incomingTreeNodePfns(ram, root)).toEqual(Array.from({ length: 6 }, (_, i) => 2 ** 28 + i));
    expect(() => validateIncomingTree(ram, root)).toThrow(`leaf 0x${leaf.toString(16)} has bit 0 of key 0 set`);
    // with a checksum to check, a stale one is what is refused, before the leaf's bad bit; a matching one lets
    // the walk find the bit
    expect(() => readIncomingTree(ram, root, { crc: 1 })).toThrow(/^EINVAL: the tracker's pages fail their checksum \(crc32c 0x[0-9a-f]+, wanted 0x1\)/);
    const crc = pagesCrc(ram, incomingTreeNodePfns(ram, root));
    expect(() => readIncomingTree(ram, root, { crc })).toThrow('has bit 0 of key 0 set');
    // and a pointer it follows is checked: a cycle
    ram.writeU64(leaf - PAGE_SIZE + 8, root);
    expect(() => incomingTreeNodePfns(ram, root)).toThrow(/is reached twice \(a cycle or shared node\)/);
  });

  it('walkIncoming visits every block even when the visitor returns true', () => {
    const { ram, tree } = built();
    let visited = 0;
    tree.walkIncoming(tree.rootPhys, () => (visited++, true) as unknown as void);
    expect(visited).toBe(2);
    expect(readIncomingTree(ram, tree.rootPhys).count).toBe(2);
  });

  /** Writes a one-block tree for `key` by hand in the pages from `at` up (the 16 MiB at 2^40, not the allocator's). */
  function handTree(ram: PhysicalMemory, at: number, key: bigint): { root: number; leaf: number } {
    let node = at;
    for (let level = 5; level >= 1; level--) {
      const index = Number((key >> BigInt((level - 1) * 9 + 15)) & 511n);
      ram.writeU64(node + index * 8, node + PAGE_SIZE);
      node += PAGE_SIZE;
    }
    const bit = Number(key & 32767n);
    ram.writeU8(node + (bit >> 3), 1 << (bit & 7));
    return { root: at, leaf: node };
  }

  it.each<[string, bigint, string]>([
    ['key 0', 0n, 'has bit 0 of key 0 set (no block has key 0)'],
    ['key 5 (order 50)', 5n, 'holds key 5, a block of order 50: larger than any RAM'],
  ])('refuses a leaf bit for %s', (_name, key, message) => {
    const { ram } = setup();
    const { root, leaf } = handTree(ram, 2 ** 40, key);
    const want = `EINVAL: radix tree: leaf 0x${leaf.toString(16)} ${message}`;
    expect(() => validateIncomingTree(ram, root)).toThrow(want);
    expect(() => readIncomingTree(ram, root)).toThrow(want);
  });

  it('reads blocks above MAX_PAGE_ORDER inside RAM, as upstream preserve_pages writes them (orders 11 and 18)', () => {
    const { ram } = setup([{ start: 0, size: 2 ** 31, node: 0 }, { start: 2 ** 40, size: 16 * 2 ** 20, node: 0 }]);
    // An order-11 block at 8 MiB and an order-18 block at 1 GiB (keys (1 << 41) | 1 and (1 << 34) | 1).
    const a = handTree(ram, 2 ** 40, (1n << 41n) | 1n);
    expect(readIncomingTreeFrom(ram, a.root)).toEqual([[0x800, 11]]);
    const b = handTree(ram, 2 ** 40 + 2 ** 23, (1n << 34n) | 1n);
    expect(readIncomingTreeFrom(ram, b.root)).toEqual([[0x40000, 18]]);
  });

  it('refuses an order-11 block that runs past the end of RAM', () => {
    const { ram } = setup();
    const { root, leaf } = handTree(ram, 2 ** 40, (1n << 41n) | 0x123n);
    expect(() => validateIncomingTree(ram, root)).toThrow(`EINVAL: radix tree: block 0x91800000 order 11 (leaf 0x${leaf.toString(16)}) is outside RAM`);
  });

  it('accepts a hand-written one-block tree (the layout is the spec\'s, not the tracker\'s habit)', () => {
    const { ram } = setup();
    const { root } = handTree(ram, 2 ** 40, (1n << 52n) | 0x1234n); // phys 0x1234000, order 0
    expect(readIncomingTreeFrom(ram, root)).toEqual([[0x1234, 0]]);
    expect(validateIncomingTree(ram, root)).toEqual({ blocks: 1, nodes: 6 });
  });

  it('reads a leaf pointer to a page nobody wrote as a leaf of no blocks (it reads as zeros)', () => {
    const { ram } = setup();
    const { root, leaf } = handTree(ram, 2 ** 40, (1n << 52n) | 0x1234n);
    // point the level-1 table's entry at a page of RAM that was never written instead
    const l1 = leaf - PAGE_SIZE;
    const entry = ram.read(l1, PAGE_SIZE).findIndex((b) => b !== 0) & ~7;
    ram.writeU64(l1 + entry, 2 ** 40 + 64 * PAGE_SIZE);
    expect(ram.pageIfPresent((2 ** 40 + 64 * PAGE_SIZE) / PAGE_SIZE)).toBeUndefined();
    expect(validateIncomingTree(ram, root)).toEqual({ blocks: 0, nodes: 6 });
    expect(readIncomingTreeFrom(ram, root)).toEqual([]);
  });

  it('refuses a block outside RAM', () => {
    const { ram, tree } = built();
    // Find the leaf of order-0 blocks and set a bit for a pfn in the hole between the two RAM ranges.
    let leaf = tree.rootPhys;
    for (const idx of [2, 0, 0, 0, 0]) leaf = ram.readU64(leaf + idx * 8);
    ram.writeU32(leaf + 1024 * 4 - 4, 0x8000_0000); // pfn 32767: 128 MiB - 4 KiB, beyond the 64 MiB range
    expect(() => tree.walkIncoming(tree.rootPhys, () => undefined)).toThrow(/block 0x7fff000 order 0 \(leaf 0x[0-9a-f]+\) is outside RAM/);
  });
});

describe('reclaiming empty nodes', () => {
  it('a tree whose blocks are all forgotten is back to its root page, and the allocator to its count', () => {
    const { tree, buddy, ram } = setup();
    tree.init();
    const free0 = buddy.nrFreePages;
    const blocks: Array<[number, number]> = [];
    for (let i = 0; i < 3000; i++) blocks.push([i, 0]);
    for (let i = 0; i < 40; i++) blocks.push([2 ** 28 + i * 1024, 10]);
    blocks.push([0x2000, 3]);
    for (const [p, o] of blocks) tree.add(toPfn(p), toOrder(o));
    expect(tree.stats().metadataPages).toBeGreaterThan(6);
    // forget them in a scattered order; the caches must never point at a freed page
    const order = blocks.map((_, i) => (i * 7919) % blocks.length);
    for (const i of order) {
      expect(tree.del(toPfn(blocks[i][0]), toOrder(blocks[i][1]))).toBe(true);
      expect(tree.has(toPfn(blocks[i][0]), toOrder(blocks[i][1]))).toBe(false);
    }
    expect(tree.stats()).toEqual({ blocks: 0, metadataPages: 1 });
    expect(buddy.nrFreePages).toBe(free0);
    expect(ram.read(tree.rootPhys, PAGE_SIZE).every((b) => b === 0)).toBe(true);
    // the tree still works, and what remains in RAM is what the next kernel reads
    tree.add(toPfn(5), toOrder(0));
    tree.add(toPfn(0x400), toOrder(10));
    expect(readIncomingTreeFrom(ram, tree.rootPhys)).toEqual([
      [0x400, 10],
      [5, 0],
    ]);
  });

  it('keeps a table that still leads somewhere', () => {
    const { tree } = setup();
    tree.add(toPfn(0), toOrder(0));
    tree.add(toPfn(32768), toOrder(0)); // the next leaf under the same level-1 table
    const pages = tree.stats().metadataPages;
    tree.del(toPfn(0), toOrder(0));
    expect(tree.stats().metadataPages).toBe(pages - 1);
    expect(tree.has(toPfn(32768), toOrder(0))).toBe(true);
    expect(collect(tree)).toEqual([[32768, 0]]);
  });
});
