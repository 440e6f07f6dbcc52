import { bareAllocator } from './testing';
import fc from 'fast-check';
import { Errno, KernelError } from '@kho/kernel';
import { PAGE_SIZE, pfn, toOrder } from './abi';
import { BuddyAllocator } from './buddy';
import { Memmap, PageFlag } from './memmap';
import { createMachine, physmemModule } from './plugin';
import { KMALLOC_SIZES, LARGE_KMALLOC_MAGIC, SLAB_PAGE_MAGIC, Slab, kmallocCacheName } from './slab';

const MiB = 2 ** 20;

function rig(mem = 64 * MiB) {
  const { ram, memmap, faults, buddy } = bareAllocator(mem);
  const slab = new Slab(ram, memmap, buddy);
  return { ram, memmap, faults, buddy, slab, free0: buddy.nrFreePages };
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

const cacheOf = (size: number): number => KMALLOC_SIZES.indexOf(size);

describe('kmalloc size classes', () => {
  it.each([
    [1, 'kmalloc-8', 0],
    [8, 'kmalloc-8', 0],
    [9, 'kmalloc-16', 0],
    [33, 'kmalloc-64', 0],
    [65, 'kmalloc-96', 0],
    [97, 'kmalloc-128', 0],
    [129, 'kmalloc-192', 0],
    [193, 'kmalloc-256', 0],
    [257, 'kmalloc-512', 1],
    [1000, 'kmalloc-1k', 2],
    [1025, 'kmalloc-2k', 3],
    [4096, 'kmalloc-4k', 3],
    [4097, 'kmalloc-8k', 3],
    [8192, 'kmalloc-8k', 3],
  ])('kmalloc(%d) comes from %s on order-%d slabs', (size, name, order) => {
    const { slab, memmap } = rig();
    const ptr = slab.kmalloc(size);
    const o = slab.objectAt(ptr);
    if (o.kind !== 'slab') throw new Error('not a slab object');
    expect(o.cacheName).toBe(name);
    expect(o.order).toBe(order);
    expect(o.index).toBe(0);
    expect(o.state).toBe('allocated');
    expect(ptr).toBe(o.headPfn * PAGE_SIZE);
    expect(slab.ksize(ptr)).toBe(o.objectSize);
    expect(o.objectSize).toBeGreaterThanOrEqual(size);
    // the memmap says what the page is: Slab on the head, the cache in the private word
    expect(memmap.testFlag(o.headPfn, PageFlag.Slab)).toBe(true);
    expect(memmap.getPrivate(o.headPfn)).toBe((BigInt(SLAB_PAGE_MAGIC) << 32n) | BigInt(o.cache));
    if (order > 0) {
      expect(memmap.testFlag(o.headPfn + 1, PageFlag.Tail)).toBe(true);
      expect(memmap.testFlag(o.headPfn + 1, PageFlag.Slab)).toBe(false);
    }
  });

  it('hands out the objects of a slab in ascending order, back to back, then starts a new slab', () => {
    const { slab } = rig();
    const ptrs = Array.from({ length: 43 }, () => slab.kmalloc(96));
    const head = ptrs[0];
    expect(ptrs.slice(0, 42)).toEqual(Array.from({ length: 42 }, (_, i) => head + i * 96));
    expect(Math.floor(ptrs[42] / PAGE_SIZE)).not.toBe(Math.floor(head / PAGE_SIZE));
    const info = slab.slabInfo().caches[cacheOf(96)];
    expect(info).toEqual({
      name: 'kmalloc-96',
      objectSize: 96,
      order: 0,
      objectsPerSlab: 42,
      slabs: 2,
      activeObjects: 43,
      awaitingObjects: 0,
      totalObjects: 84,
      bytes: 2 * PAGE_SIZE,
    });
    slab.checkInvariants();
  });

  it('names every cache as Linux does', () => {
    expect(KMALLOC_SIZES.map(kmallocCacheName)).toEqual([
      'kmalloc-8', 'kmalloc-16', 'kmalloc-32', 'kmalloc-64', 'kmalloc-96', 'kmalloc-128', 'kmalloc-192',
      'kmalloc-256', 'kmalloc-512', 'kmalloc-1k', 'kmalloc-2k', 'kmalloc-4k', 'kmalloc-8k',
    ]);
  });

  it.each([
    [8193, 2],
    [16384, 2],
    [16385, 3],
    [4 * MiB, 10],
  ])('a large kmalloc of %d bytes is a compound page of order %d, and kfree frees it', (size, order) => {
    const { slab, buddy, memmap, free0 } = rig();
    const ptr = slab.kmalloc(size);
    expect(ptr % (PAGE_SIZE * 2 ** order)).toBe(0);
    expect(slab.objectAt(ptr)).toEqual({ kind: 'large', headPfn: ptr / PAGE_SIZE, order, size: PAGE_SIZE * 2 ** order, state: 'allocated' });
    expect(slab.ksize(ptr)).toBe(PAGE_SIZE * 2 ** order);
    expect(memmap.getPrivate(ptr / PAGE_SIZE)).toBe((BigInt(LARGE_KMALLOC_MAGIC) << 32n) | BigInt(order));
    expect(buddy.nrFreePages).toBe(free0 - 2 ** order);
    expect(slab.slabInfo().large).toEqual({ objects: 1, pages: 2 ** order, bytes: PAGE_SIZE * 2 ** order });
    slab.kfree(ptr);
    expect(buddy.nrFreePages).toBe(free0);
    expect(memmap.privateHi(ptr / PAGE_SIZE)).toBe(0); // the low half is the buddy allocator's again
    expect(slab.slabInfo().totalBytes).toBe(0);
  });

  it('kzalloc zeroes the whole object', () => {
    const { slab, ram } = rig();
    const p = slab.kmalloc(100);
    ram.fill(p, 128, 0xaa);
    slab.kfree(p);
    const q = slab.kzalloc(100);
    expect(q).toBe(p);
    expect([...ram.read(q, 128)].every((b) => b === 0)).toBe(true);
  });

  it('an emptied slab goes back to the buddy allocator at once', () => {
    const { slab, buddy, free0 } = rig();
    const a = slab.kmalloc(2048);
    const b = slab.kmalloc(2000);
    expect(buddy.nrFreePages).toBe(free0 - 8);
    slab.kfree(a);
    expect(buddy.nrFreePages).toBe(free0 - 8);
    slab.kfree(b);
    expect(buddy.nrFreePages).toBe(free0);
    expect(slab.slabInfo().totalBytes).toBe(0);
    buddy.checkInvariants();
    expect(buddy.fullyMerged()).toBe(true);
  });
});

describe('kmalloc refuses misuse, changing nothing', () => {
  it.each([
    [0, 'EINVAL: kmalloc: size 0 (wanted an integer in 1..4194304; size 0 is refused)'],
    [-8, 'EINVAL: kmalloc: size -8 (wanted an integer in 1..4194304; size 0 is refused)'],
    [1.5, 'EINVAL: kmalloc: size 1.5 (wanted an integer in 1..4194304; size 0 is refused)'],
    [NaN, 'EINVAL: kmalloc: size NaN (wanted an integer in 1..4194304; size 0 is refused)'],
    [4 * MiB + 1, 'E2BIG: kmalloc: size 4194305 is above KMALLOC_MAX_SIZE (4194304 bytes, order 10)'],
  ])('kmalloc(%d)', (size, message) => {
    const { slab, buddy, free0 } = rig();
    expect(() => slab.kmalloc(size)).toThrow(message);
    expect(buddy.nrFreePages).toBe(free0);
  });

  it('propagates ENOMEM from the buddy allocator and allocates nothing', () => {
    const { slab, buddy, faults, free0 } = rig();
    faults.configure({ failNth: 1 });
    const e = errorOf(() => slab.kmalloc(64));
    expect(e.errno).toBe(Errno.ENOMEM);
    expect(e.message).toBe('ENOMEM: allocPages: injected failure of an order-0 allocation on any node (fault injection)');
    expect(slab.slabInfo().caches[cacheOf(64)].slabs).toBe(0);
    expect(buddy.nrFreePages).toBe(free0);
    expect(() => slab.kmalloc(70_000)).not.toThrow(); // the next call succeeds
    slab.checkInvariants();
  });

  // A 64 MiB machine: kmalloc-96 slab A (objects 0 and 1 allocated), a large kmalloc L of order 2 and a folio F.
  it.each<[string, (s: { a: number; l: number; f: number }) => number, string]>([
    ['a freed object', (s) => s.a + 96 * 2, 'EINVAL: kfree(A+0xc0): object 2 of the kmalloc-96 slab at A is already free'],
    ['the middle of an object', (s) => s.a + 100, 'EINVAL: kfree(A+0x64): 4 bytes into object 1 of the kmalloc-96 slab at A (not the start of an object)'],
    ['the unused tail of a slab', (s) => s.a + 42 * 96, 'EINVAL: kfree(A+0xfc0): in the unused tail of the kmalloc-96 slab at A (42 objects)'],
    ['a folio', (s) => s.f, 'EINVAL: kfree(F): not a kmalloc object (the page is neither a slab nor a large kmalloc)'],
    ['a free page', () => 0x2000, 'EINVAL: kfree(0x2000): not a kmalloc object (the page is neither a slab nor a large kmalloc)'],
    ['a tail page of a large kmalloc', (s) => s.l + PAGE_SIZE, 'EINVAL: kfree(L+0x1000): inside the large kmalloc at L (not its start)'],
    ['an address outside RAM', () => 64 * MiB, 'EINVAL: kfree(0x4000000): not an address of RAM'],
    ['a negative address', () => -8, 'EINVAL: kfree(-8): not an address'],
    ['a fraction', () => 0.5, 'EINVAL: kfree(0.5): not an address'],
  ])('kfree of %s', (_, at, message) => {
    const { slab, buddy } = rig();
    const f = buddy.folioAlloc(2);
    const a = slab.kmalloc(96);
    slab.kmalloc(96);
    slab.kfree(slab.kmalloc(96));
    const l = slab.kmalloc(10_000);
    const before = { free: buddy.nrFreePages, info: slab.slabInfo() };
    const ptr = at({ a, l, f: f.phys });
    // addresses in messages are named after the block they fall in
    const name = (p: number): string => {
      const blocks = [[a, PAGE_SIZE, 'A'], [l, 4 * PAGE_SIZE, 'L'], [f.phys, 4 * PAGE_SIZE, 'F']] as const;
      for (const [base, size, label] of blocks) {
        if (p === base) return label;
        if (p > base && p < base + size) return `${label}+0x${(p - base).toString(16)}`;
      }
      return `0x${p.toString(16)}`;
    };
    const e = errorOf(() => slab.kfree(ptr));
    const text = e.message.replace(/0x[0-9a-f]+/g, (h) => name(Number(h)));
    expect(text).toBe(message);
    expect(() => slab.ksize(ptr)).toThrow(KernelError);
    expect({ free: buddy.nrFreePages, info: slab.slabInfo() }).toEqual(before);
    slab.checkInvariants();
  });
});

describe('kmalloc and kfree, random sequences', () => {
  const sizeArb = fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: 1, max: 8192 }) },
    { weight: 4, arbitrary: fc.constantFrom(...KMALLOC_SIZES) },
    { weight: 1, arbitrary: fc.integer({ min: 8193, max: 100_000 }) },
  );
  const opArb = fc.oneof(
    { weight: 3, arbitrary: sizeArb.map((size) => ({ op: 'alloc' as const, size })) },
    { weight: 2, arbitrary: fc.nat().map((pick) => ({ op: 'free' as const, pick })) },
  );

  it('objects never overlap, stay inside their slab, keep their bytes; freeing all returns every page', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 150 }), (ops) => {
        const { slab, buddy, ram, free0 } = rig();
        const live: Array<{ ptr: number; len: number; tag: number }> = [];
        let tag = 1;
        const check = (o: { ptr: number; len: number; tag: number }): void => {
          expect(ram.readU32(o.ptr)).toBe(o.tag);
          expect(ram.readU32(o.ptr + o.len - 4)).toBe(o.tag);
        };
        for (const op of ops) {
          if (op.op === 'alloc') {
            const ptr = slab.kmalloc(op.size);
            const len = slab.ksize(ptr);
            expect(len).toBeGreaterThanOrEqual(op.size);
            const o = slab.objectAt(ptr);
            const blockStart = o.headPfn * PAGE_SIZE;
            expect(ptr).toBeGreaterThanOrEqual(blockStart);
            expect(ptr + len).toBeLessThanOrEqual(blockStart + PAGE_SIZE * 2 ** o.order);
            for (const other of live) expect(ptr + len <= other.ptr || other.ptr + other.len <= ptr).toBe(true);
            const obj = { ptr, len, tag: tag++ };
            ram.writeU32(ptr, obj.tag);
            ram.writeU32(ptr + len - 4, obj.tag);
            live.push(obj);
          } else if (live.length > 0) {
            const [o] = live.splice(op.pick % live.length, 1);
            check(o);
            slab.kfree(o.ptr);
          }
        }
        for (const o of live) check(o);
        slab.checkInvariants();
        for (const o of live) slab.kfree(o.ptr);
        expect(buddy.nrFreePages).toBe(free0);
        expect(slab.slabInfo().totalBytes).toBe(0);
        slab.checkInvariants();
        buddy.checkInvariants();
      }),
      { numRuns: 60 },
    );
  });
});

describe('the hooks of the preservation side', () => {
  it('adoptSlab takes a block into its cache with the chosen objects awaiting; the others are handed out', () => {
    const { slab, buddy, free0 } = rig();
    const f = buddy.folioAlloc(0);
    const base = f.phys;
    slab.adoptSlab(f.pfn, toOrder(0), cacheOf(64), (i) => i % 2 === 0);
    expect(slab.objectAt(base)).toMatchObject({ kind: 'slab', cacheName: 'kmalloc-64', index: 0, nrObjects: 64, state: 'awaiting' });
    expect(slab.objectAt(base + 64)).toMatchObject({ index: 1, state: 'free' });
    expect(slab.slabInfo().caches[cacheOf(64)]).toMatchObject({ slabs: 1, activeObjects: 0, awaitingObjects: 32, totalObjects: 64 });
    // kmalloc hands out the free (odd) objects only, lowest first
    expect([slab.kmalloc(64), slab.kmalloc(50)]).toEqual([base + 64, base + 3 * 64]);
    expect(() => slab.kfree(base)).toThrow(`EINVAL: kfree(0x${base.toString(16)}): object 0 of the kmalloc-64 slab at 0x${base.toString(16)} is awaiting its restore (not allocated)`);
    slab.adoptObject(base);
    expect(slab.objectAt(base)).toMatchObject({ state: 'allocated' });
    expect(() => slab.adoptObject(base)).toThrow(`EINVAL: adoptObject(0x${base.toString(16)}): object 0 of the kmalloc-64 slab at 0x${base.toString(16)} is allocated (wanted awaiting)`);
    expect(() => slab.adoptObject(base + 64 * 5)).toThrow(/object 5 of the kmalloc-64 slab at 0x[0-9a-f]+ is free \(wanted awaiting\)$/);
    expect(slab.releaseAwaiting(f.pfn)).toBe(31);
    expect(slab.releaseAwaiting(f.pfn)).toBe(0);
    expect(slab.objectAt(base + 2 * 64)).toMatchObject({ state: 'free' });
    slab.checkInvariants();
    for (const p of [base, base + 64, base + 3 * 64]) slab.kfree(p);
    expect(buddy.nrFreePages).toBe(free0);
  });

  it('a slab whose awaiting objects are released with nothing allocated goes back to the buddy allocator', () => {
    const { slab, buddy, free0 } = rig();
    const f = buddy.folioAlloc(3);
    slab.adoptSlab(f.pfn, toOrder(3), cacheOf(8192), (i) => i === 2);
    expect(buddy.nrFreePages).toBe(free0 - 8);
    expect(slab.releaseAwaiting(f.pfn)).toBe(1);
    expect(buddy.nrFreePages).toBe(free0);
    expect(() => slab.releaseAwaiting(f.pfn)).toThrow(`EINVAL: releaseAwaiting(pfn 0x${f.pfn.toString(16)}): not the head pfn of a slab`);
  });

  it('a slab of another order than its cache uses holds what fits; nothing awaiting means it is freed at once', () => {
    const { slab, buddy, free0 } = rig();
    const f = buddy.folioAlloc(1);
    slab.adoptSlab(f.pfn, toOrder(1), cacheOf(8), (i) => i === 1000);
    expect(slab.objectAt(f.phys + 1000 * 8)).toMatchObject({ nrObjects: 1024, state: 'awaiting', order: 1 });
    const g = buddy.folioAlloc(0);
    slab.adoptSlab(g.pfn, toOrder(0), cacheOf(16), () => false);
    expect(buddy.nrFreePages).toBe(free0 - 2);
    slab.adoptObject(f.phys + 8000);
    slab.kfree(f.phys + 8000);
    expect(buddy.nrFreePages).toBe(free0);
  });

  it('adoptLargeKmalloc makes a block the caller owns a large kmalloc that kfree frees', () => {
    const { slab, buddy, free0 } = rig();
    const f = buddy.folioAlloc(2);
    expect(slab.adoptLargeKmalloc(f.pfn, toOrder(2))).toBe(f.phys);
    expect(slab.ksize(f.phys)).toBe(4 * PAGE_SIZE);
    slab.kfree(f.phys);
    expect(buddy.nrFreePages).toBe(free0);
  });

  // Each row prepares its block first, then returns the call that must fail.
  it.each<[string, (r: ReturnType<typeof rig>) => () => unknown, string]>([
    ['a bad cache', (r) => ((pfn) => () => r.slab.adoptSlab(pfn, toOrder(0), 13))(r.buddy.folioAlloc(0).pfn), 'cache 13 (wanted 0..12)'],
    ['a bad order', (r) => () => r.slab.adoptSlab(pfn(0), toOrder(11), 0), 'order 11 is not an integer in 0..10'],
    ['an object bigger than the block', (r) => ((pfn) => () => r.slab.adoptSlab(pfn, toOrder(0), cacheOf(8192)))(r.buddy.folioAlloc(0).pfn), 'holds 0 objects of 8192 bytes (wanted 1..65535)'],
    ['a free block', (r) => () => r.slab.adoptSlab(pfn(2), toOrder(0), 0), 'it is free (wanted an allocated block of order 0 nobody marked)'],
    ['a tail page', (r) => ((head) => () => r.slab.adoptSlab(pfn(head + 1), toOrder(0), 0))(r.buddy.folioAlloc(1).pfn), 'it is a tail page (wanted an allocated block of order 0 nobody marked)'],
    ['the wrong order', (r) => ((pfn) => () => r.slab.adoptSlab(pfn, toOrder(0), 0))(r.buddy.folioAlloc(1).pfn), 'it was allocated with order 1 (wanted an allocated block of order 0 nobody marked)'],
    ['an unaligned pfn', (r) => ((head) => () => r.slab.adoptSlab(pfn(head | 1), toOrder(1), 0))(r.buddy.folioAlloc(0).pfn), 'not aligned to its order'],
    ['pages that are not a folio', (r) => ((pfn) => () => r.slab.adoptSlab(pfn, toOrder(1), 0))(r.buddy.allocPages(1)), 'it is not a compound page (wanted an allocated block of order 1 nobody marked)'],
    ['a slab', (r) => ((ptr) => () => r.slab.adoptSlab(pfn(ptr / PAGE_SIZE), toOrder(0), 0))(r.slab.kmalloc(8)), 'it is a slab already (wanted an allocated block of order 0 nobody marked)'],
    ['a large kmalloc', (r) => ((ptr) => () => r.slab.adoptLargeKmalloc(pfn(ptr / PAGE_SIZE), toOrder(2)))(r.slab.kmalloc(9000)), 'its private word is in use (0x4b4d4c4700000002) (wanted an allocated block of order 2 nobody marked)'],
    ['no RAM', (r) => () => r.slab.adoptLargeKmalloc(pfn(r.free0), toOrder(0)), 'not a page of RAM'],
  ])('adopting %s is EINVAL and changes nothing', (_, make, tail) => {
    const r = rig();
    const fn = make(r);
    const before = { free: r.buddy.nrFreePages, info: r.slab.slabInfo() };
    const e = errorOf(fn);
    expect(e.errno).toBe(Errno.EINVAL);
    expect(e.message.slice(e.message.indexOf('): ') + 3)).toBe(tail);
    expect({ free: r.buddy.nrFreePages, info: r.slab.slabInfo() }).toEqual(before);
    r.slab.checkInvariants();
  });
});

describe('Slab in a kernel', () => {
  it('is one per boot, registered by physmemModule, and a new kernel starts with empty caches', () => {
    const machine = createMachine({ mem: '64M' });
    const k1 = machine.boot({ image: [physmemModule()] });
    const s1 = k1.get(Slab);
    expect(k1.get(Slab)).toBe(s1);
    const p = s1.kmalloc(24);
    expect(k1.get(Memmap).testFlag(p / PAGE_SIZE, PageFlag.Slab)).toBe(true);
    const k2 = k1.kexec();
    const s2 = k2.get(Slab);
    expect(s2).not.toBe(s1);
    expect(s2.slabInfo().totalBytes).toBe(0);
    expect(() => s2.kfree(p)).toThrow(/not a kmalloc object/);
    expect(k2.get(BuddyAllocator).isFree(pfn(p / PAGE_SIZE))).toBe(true);
  });
});
