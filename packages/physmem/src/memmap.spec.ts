import fc from 'fast-check';
import { Errno, KernelError } from '@kho/kernel';
import { PAGE_SIZE } from './abi';
import { Memmap, PageFlag } from './memmap';
import { PhysicalMemory } from './memory';

const MiB = 2 ** 20;
const TiB = 2 ** 40;

/** 8 MiB at 0 and 4 MiB at 1 TiB: two ranges and a hole. */
function memmap(): Memmap {
  return new Memmap(
    new PhysicalMemory({
      ranges: [
        { start: 0, size: 8 * MiB, node: 0 },
        { start: TiB, size: 4 * MiB, node: 1 },
      ],
    }),
  );
}

const highPfn = TiB / PAGE_SIZE;

describe('Memmap', () => {
  it('spends at most 24 bytes per page frame, and nothing until a descriptor is written', () => {
    const m = memmap();
    expect(m.bytesPerPage).toBeLessThanOrEqual(24);
    expect(m.nrPages).toBe((12 * MiB) / PAGE_SIZE);
    expect([m.totalBytes, m.presentSections, m.splitPageblocks]).toEqual([0, 0, 0]);
    expect(m.refcount(highPfn + 5)).toBe(0); // reads create nothing
    expect(m.totalBytes).toBe(0);
  });

  it('creates a section on first write, and per-page descriptors only for a pageblock whose pages differ', () => {
    const m = memmap();
    m.setPrivate(highPfn, 1, 2); // the first page of a pageblock lives in its section
    expect([m.presentSections, m.splitPageblocks]).toEqual([1, 0]);
    const section = m.totalBytes;
    m.setRefcount(highPfn + 3, 0); // what it already is: nothing to store
    m.clearFlags(highPfn + 4, PageFlag.Buddy);
    expect(m.splitPageblocks).toBe(0);
    m.setRefcount(highPfn + 3, 1);
    expect([m.presentSections, m.splitPageblocks]).toEqual([1, 1]);
    expect(m.totalBytes - section).toBeLessThanOrEqual(24 * 512);
    expect([m.refcount(highPfn + 3), m.refcount(highPfn + 4), m.getPrivate(highPfn)]).toEqual([1, 0, (2n << 32n) | 1n]);
  });

  it('keeps a 2 MiB compound page and a reserved range in one descriptor per pageblock', () => {
    const m = memmap();
    m.updateFlagsRange(0, 2048, 0, PageFlag.Reserved);
    m.markCompound(1024, 10);
    expect(m.splitPageblocks).toBe(0);
    expect([m.flags(0), m.flags(777), m.flags(1023)]).toEqual([PageFlag.Reserved, PageFlag.Reserved, PageFlag.Reserved]);
    expect(m.flags(1024)).toBe(PageFlag.Reserved | PageFlag.Head);
    for (const p of [1025, 1535, 1536, 1537, 2047]) {
      expect([m.flags(p), m.compoundHead(p), m.headOffset(p)]).toEqual([PageFlag.Reserved | PageFlag.Tail, 1024, p - 1024]);
    }
    m.clearCompound(1024, 10);
    m.updateFlagsRange(0, 2048, PageFlag.Reserved, 0);
    expect(m.splitPageblocks).toBe(0);
    for (const p of [0, 1024, 1500, 1536, 2047]) expect([m.flags(p), m.compoundHead(p), m.headOffset(p)]).toEqual([0, p, 0]);
  });

  it('sets and clears flags on ranges, refusing one that leaves RAM without changing anything', () => {
    const m = memmap();
    m.setFlagsRange(0, 2048, PageFlag.Reserved | PageFlag.Scratch);
    m.clearFlagsRange(512, 10, PageFlag.Reserved);
    expect([m.flags(0), m.flags(511), m.flags(515), m.flags(522), m.splitPageblocks]).toEqual([40, 40, 32, 40, 1]);
    expect(() => m.setFlagsRange(2000, 49, PageFlag.Slab)).toThrow('EFAULT: memmap: pfn 0x800 is not a page of RAM');
    expect(m.flags(2000) & PageFlag.Slab).toBe(0);
    expect(() => m.clearFlagsRange(0, -1, 1)).toThrow('EINVAL: memmap: page count -1 is not a non-negative integer');
  });

  it('splits a pageblock when a range covers part of it, and keeps what the other pages had', () => {
    const m = memmap();
    m.markCompound(0, 9);
    m.updateFlagsRange(100, 10, 0, PageFlag.Scratch);
    expect(m.splitPageblocks).toBe(1);
    expect([m.flags(99), m.flags(100), m.flags(109), m.flags(110)]).toEqual([PageFlag.Tail, PageFlag.Tail | PageFlag.Scratch, PageFlag.Tail | PageFlag.Scratch, PageFlag.Tail]);
    expect([m.compoundHead(300), m.headOffset(300)]).toEqual([0, 300]);
    expect(m.flagRunEnd(1, 512, PageFlag.Scratch)).toBe(100);
    expect(m.flagRunEnd(100, 512, PageFlag.Scratch)).toBe(110);
    expect(m.findFlag(0, 2048, PageFlag.Scratch)).toBe(100);
    expect(m.findFlag(200, 1848, PageFlag.Scratch)).toBe(-1);
    m.setRefcount(400, 2);
    expect([m.findReferenced(0, 512, 0), m.findReferenced(401, 100, 0)]).toEqual([400, -1]);
    m.setFlags(400, PageFlag.Reserved);
    expect(m.findReferenced(0, 512, PageFlag.Reserved)).toBe(-1);
  });

  it('finds flags in sections never written, and across sections', () => {
    const m = memmap();
    expect(m.findFlag(0, 2048, PageFlag.Buddy)).toBe(-1);
    expect(m.flagRunEnd(highPfn, highPfn + 1024, PageFlag.Scratch)).toBe(highPfn + 1024);
    m.setFlags(highPfn + 1000, PageFlag.Scratch);
    expect(m.flagRunEnd(highPfn, highPfn + 1024, PageFlag.Scratch)).toBe(highPfn + 1000);
    expect(m.findFlag(highPfn, 1024, PageFlag.Scratch)).toBe(highPfn + 1000);
  });

  it('starts every descriptor at zero', () => {
    const m = memmap();
    for (const p of [0, 2047, highPfn, highPfn + 1023]) {
      expect([m.refcount(p), m.flags(p), m.order(p), m.getPrivate(p), m.compoundHead(p)]).toEqual([0, 0, 0, 0n, p]);
    }
  });

  it.each([0, 1, 2047, highPfn, highPfn + 1023])('round-trips every field of pfn %d', (p) => {
    const m = memmap();
    m.setRefcount(p, -3);
    m.setFlags(p, PageFlag.Reserved | PageFlag.Scratch);
    m.clearFlags(p, PageFlag.Reserved);
    m.setOrder(p, 10);
    m.setPrivate(p, 0xdeadbeef, 0x12345678);
    expect(m.refcount(p)).toBe(-3);
    expect(m.flags(p)).toBe(PageFlag.Scratch);
    expect(m.testFlag(p, PageFlag.Scratch | PageFlag.Slab)).toBe(true);
    expect(m.testFlag(p, PageFlag.Reserved)).toBe(false);
    expect(m.order(p)).toBe(10);
    expect([m.privateLo(p), m.privateHi(p)]).toEqual([0xdeadbeef, 0x12345678]);
    expect(m.getPrivate(p)).toBe(0x12345678deadbeefn);
  });

  it('keeps pages independent (property)', () => {
    const m = memmap();
    const anyPfn = fc.oneof(fc.integer({ min: 0, max: 2047 }), fc.integer({ min: highPfn, max: highPfn + 1023 }));
    fc.assert(
      fc.property(fc.uniqueArray(anyPfn, { minLength: 2, maxLength: 20 }), (pfns) => {
        pfns.forEach((p, i) => m.setPrivate(p, i, i * 3));
        return pfns.every((p, i) => m.getPrivate(p) === (BigInt(i * 3) << 32n) + BigInt(i));
      }),
    );
  });

  it('finds the compound head of tail pages', () => {
    const m = memmap();
    const head = highPfn + 8;
    m.setFlags(head + 3, PageFlag.Tail);
    m.setHeadOffset(head + 3, 3);
    expect(m.compoundHead(head + 3)).toBe(head);
    expect(m.compoundHead(head)).toBe(head);
  });

  it.each([
    ['past the first range', 2048, 'EFAULT: memmap: pfn 0x800 is not a page of RAM'],
    ['in the hole', highPfn - 1, 'EFAULT: memmap: pfn 0xfffffff is not a page of RAM'],
    ['past the end', highPfn + 1024, 'EFAULT: memmap: pfn 0x10000400 is not a page of RAM'],
    ['negative', -1, 'EFAULT: memmap: pfn -1 is not a page of RAM'],
    ['fractional', 1.5, 'EFAULT: memmap: pfn 1.5 is not a page of RAM'],
  ])('throws EFAULT for a pfn %s', (_what, p, message) => {
    const m = memmap();
    expect(m.hasPage(p)).toBe(false);
    expect(() => m.refcount(p)).toThrow(new KernelError(Errno.EFAULT, message.replace('EFAULT: ', '')));
    expect(() => m.setFlags(p, 1)).toThrow(message);
  });

  it('knows which pfns are RAM and in which range', () => {
    const m = memmap();
    expect([m.rangeOfPfn(0), m.rangeOfPfn(2047), m.rangeOfPfn(2048), m.rangeOfPfn(highPfn), m.rangeOfPfn(highPfn + 1024)]).toEqual([0, 0, -1, 1, -1]);
    expect([m.rangeStartPfn(1), m.rangeEndPfn(1)]).toEqual([highPfn, highPfn + 1024]);
  });

  it('marks and clears compound pages of small orders inside a pageblock', () => {
    const m = memmap();
    m.markCompound(40, 3);
    expect([40, 41, 47, 48].map((p) => [m.flags(p), m.compoundHead(p)])).toEqual([
      [PageFlag.Head, 40],
      [PageFlag.Tail, 40],
      [PageFlag.Tail, 40],
      [0, 48],
    ]);
    m.clearCompound(40, 3);
    expect([40, 41, 47].map((p) => [m.flags(p), m.compoundHead(p), m.headOffset(p)])).toEqual([
      [0, 40, 0],
      [0, 41, 0],
      [0, 47, 0],
    ]);
  });

  it('agrees with a page-by-page model under any sequence of writes and range operations (property)', () => {
    // 2048 pages at 0 (four pageblocks) and 1024 at 1 TiB: pieces of pageblocks, whole ones, and two sections.
    const pfns = [...Array.from({ length: 2048 }, (_, i) => i), ...Array.from({ length: 1024 }, (_, i) => highPfn + i)];
    const anyIndex = fc.integer({ min: 0, max: pfns.length - 1 });
    const flagBits = fc.integer({ min: 0, max: 255 });
    const op = fc.oneof(
      fc.record({ k: fc.constant('flags' as const), i: anyIndex, set: flagBits, clear: flagBits }),
      fc.record({ k: fc.constant('field' as const), i: anyIndex, v: fc.integer({ min: 0, max: 3 }), which: fc.integer({ min: 0, max: 3 }) }),
      fc.record({ k: fc.constant('range' as const), i: anyIndex, n: fc.integer({ min: 1, max: 1500 }), set: flagBits, clear: flagBits, refs: fc.boolean() }),
      fc.record({ k: fc.constant('compound' as const), i: anyIndex, order: fc.integer({ min: 1, max: 10 }), clear: fc.boolean() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
        const m = memmap();
        const model = new Map<number, { ref: number; flags: number; order: number; lo: number; hi: number; off: number }>();
        const get = (p: number) => model.get(p) ?? { ref: 0, flags: 0, order: 0, lo: 0, hi: 0, off: 0 };
        const put = (p: number, d: Partial<ReturnType<typeof get>>) => model.set(p, { ...get(p), ...d });
        /** The pfns of [i, i + n) that are RAM, as one run within a range. */
        const run = (i: number, n: number): number[] => {
          const out = [pfns[i]];
          for (let j = i + 1; j < pfns.length && out.length < n && pfns[j] === pfns[j - 1] + 1; j++) out.push(pfns[j]);
          return out;
        };
        for (const o of ops) {
          const p = pfns[o.i];
          if (o.k === 'flags') {
            m.setFlags(p, o.set);
            m.clearFlags(p, o.clear);
            put(p, { flags: (get(p).flags | o.set) & ~o.clear });
          } else if (o.k === 'field') {
            if (o.which === 0) m.setRefcount(p, o.v);
            if (o.which === 1) m.setOrder(p, o.v);
            if (o.which === 2) m.setPrivate(p, o.v, o.v * 7);
            if (o.which === 3) m.setHeadOffset(p, o.v);
            put(p, [{ ref: o.v }, { order: o.v }, { lo: o.v, hi: o.v * 7 }, { off: o.v }][o.which]);
          } else if (o.k === 'range') {
            const r = run(o.i, o.n);
            m.updateFlagsRange(r[0], r.length, o.clear, o.set);
            for (const q of r) put(q, { flags: (get(q).flags & ~o.clear) | o.set });
            if (o.refs) {
              m.clearRefcountsRange(r[0], r.length);
              for (const q of r) put(q, { ref: 0 });
            }
            expect(m.findFlag(r[0], r.length, PageFlag.Slab)).toBe(r.find((q) => get(q).flags & PageFlag.Slab) ?? -1);
            expect(m.findReferenced(r[0], r.length, PageFlag.Reserved)).toBe(r.find((q) => get(q).ref > 0 && !(get(q).flags & PageFlag.Reserved)) ?? -1);
            const want = get(r[0]).flags & PageFlag.Scratch;
            expect(m.flagRunEnd(r[0], r[0] + r.length, PageFlag.Scratch)).toBe(r.find((q) => (get(q).flags & PageFlag.Scratch) !== want) ?? r[0] + r.length);
          } else {
            const n = 2 ** o.order;
            const head = p - (p % n);
            const r = run(pfns.indexOf(head), n);
            if (r.length !== n) continue; // the block is not all RAM
            if (o.clear) {
              m.clearCompound(head, o.order);
              for (const q of r) put(q, q === head ? { flags: get(q).flags & ~PageFlag.Head } : { flags: get(q).flags & ~PageFlag.Tail, off: 0 });
            } else {
              m.markCompound(head, o.order);
              for (const q of r) put(q, q === head ? { flags: (get(q).flags & ~PageFlag.Tail) | PageFlag.Head } : { flags: (get(q).flags & ~PageFlag.Head) | PageFlag.Tail, off: q - head });
            }
          }
        }
        for (const p of pfns) {
          const d = get(p);
          if (m.refcount(p) !== d.ref || m.flags(p) !== d.flags || m.order(p) !== d.order || m.privateLo(p) !== d.lo || m.privateHi(p) !== d.hi || m.headOffset(p) !== d.off) {
            const got = { ref: m.refcount(p), flags: m.flags(p), order: m.order(p), lo: m.privateLo(p), hi: m.privateHi(p), off: m.headOffset(p) };
            throw new Error(`pfn ${p}: ${JSON.stringify(got)}, model ${JSON.stringify(d)}`);
          }
        }
        return true;
      }),
      { numRuns: 100 },
    );
  });
});
