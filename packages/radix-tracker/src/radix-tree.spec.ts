import fc from 'fast-check';
import { Errno, KernelError, KernelLog, LifecycleBus } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Memmap, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { RadixTracker, readIncomingTree } from './radix-tree';

const GiB = 2 ** 30;

function setup(ranges = [{ start: 0, size: 64 * 2 ** 20, node: 0 }, { start: 2 ** 40, size: 16 * 2 ** 20, node: 0 }]) {
  const ram = new PhysicalMemory({ ranges });
  const memmap = new Memmap(ram);
  const faults = new FaultInjector();
  const buddy = new BuddyAllocator(ram, memmap, faults);
  buddy.freeRange(ranges[0].start / PAGE_SIZE, ranges[0].size / PAGE_SIZE);
  const log = new KernelLog(new LifecycleBus(), 1);
  const tree = new RadixTracker(ram, buddy, log);
  return { ram, memmap, faults, buddy, log, tree };
}

function collect(tree: RadixTracker): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  tree.walk((pfn, order) => void out.push([pfn, order]));
  return out;
}

describe('RadixTracker', () => {
  it('records, finds and forgets blocks; add is idempotent', () => {
    const { tree } = setup();
    tree.init();
    tree.add(0x100, 0);
    tree.add(0x100, 0);
    tree.add(0x400, 10);
    expect(tree.stats().blocks).toBe(2);
    expect(tree.has(0x100, 0)).toBe(true);
    expect(tree.has(0x100, 1)).toBe(false);
    expect(tree.del(0x100, 0)).toBe(true);
    expect(tree.del(0x100, 0)).toBe(false);
    expect(collect(tree)).toEqual([[0x400, 10]]);
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
    for (const [p, o] of blocks) tree.add(p, o);
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
    for (let i = 0; i < 10; i++) tree.add(i, 0);
    let seen = 0;
    tree.walk(() => ++seen === 3);
    expect(seen).toBe(3);
  });

  it('keeps its nodes in RAM pages from the buddy allocator: the first block on a new path costs 5 pages plus the root', () => {
    const { tree, buddy } = setup();
    const free0 = buddy.nrFreePages;
    tree.init();
    tree.add(0, 0);
    expect(tree.stats().metadataPages).toBe(6);
    expect(buddy.nrFreePages).toBe(free0 - 6);
    tree.add(1, 0); // same leaf
    expect(tree.stats().metadataPages).toBe(6);
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
            tree.add(pfn, order);
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
      tree.add(0x10, 0);
      const free0 = buddy.nrFreePages;
      const rootBytes = ram.read(tree.rootPhys, PAGE_SIZE);
      faults.configure({ failNth: k });
      let err: unknown;
      try {
        tree.add(2 ** 30, 3); // a new path: 5 fresh pages
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KernelError);
      expect((err as KernelError).errno).toBe(Errno.ENOMEM);
      expect(buddy.nrFreePages).toBe(free0);
      expect(ram.read(tree.rootPhys, PAGE_SIZE)).toEqual(rootBytes);
      expect(collect(tree)).toEqual([[0x10, 0]]);
      faults.reset();
      tree.add(2 ** 30, 3);
      expect(collect(tree)).toEqual([
        [2 ** 30, 3],
        [0x10, 0],
      ]);
    }
  });

  it.each([
    [-1, 0, 'EINVAL: radix tree: pfn -1 is not aligned to order 0'],
    [3, 1, 'EINVAL: radix tree: pfn 0x3 is not aligned to order 1'],
    [0, 11, 'EINVAL: radix tree: order 11 is out of range (wanted 0..10)'],
  ])('refuses pfn %d order %d', (pfn, order, message) => {
    const { tree } = setup();
    expect(() => tree.add(pfn, order)).toThrow(message);
  });

  it('del of a block on a missing path warns and returns false', () => {
    const { tree, log } = setup();
    tree.init();
    expect(tree.del(0x12345, 0)).toBe(false);
    expect(log.filter('warn')[0].message).toBe('radix tree: no path for block 0x12345000 order 0; was it preserved?');
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
    s.tree.add(0x100, 0);
    s.tree.add(0x200, 9);
    return s;
  }
  const entry = (ram: PhysicalMemory, table: number, i: number) => ram.readU64n(table + i * 8);

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

  it('refuses a block outside RAM and a bit that would be order 11 or more', () => {
    const { ram, tree } = built();
    // Find the leaf of order-0 blocks and set a bit for a pfn in the hole between the two RAM ranges.
    let leaf = tree.rootPhys;
    for (const idx of [2, 0, 0, 0, 0]) leaf = ram.readU64n(leaf + idx * 8);
    ram.writeU32(leaf + 1024 * 4 - 4, 0x8000_0000); // pfn 32767: 128 MiB - 4 KiB, beyond the 64 MiB range
    expect(() => tree.walkIncoming(tree.rootPhys, () => undefined)).toThrow(/block 0x7fff000 order 0 \(leaf 0x[0-9a-f]+\) is outside RAM/);
  });
});
