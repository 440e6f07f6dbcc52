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
  it('spends at most 24 bytes per page frame, and only on RAM', () => {
    const m = memmap();
    expect(m.bytesPerPage).toBeLessThanOrEqual(24);
    expect(m.nrPages).toBe((12 * MiB) / PAGE_SIZE);
    expect(m.totalBytes).toBe(m.nrPages * m.bytesPerPage);
    const columns = [m.refcounts, m.flagBits, m.orders, m.headOffsets, m.privLo, m.privHi];
    expect(columns.reduce((n, c) => n + c.byteLength, 0)).toBe(m.totalBytes);
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
    m.headOffsets[m.index(head + 3)] = 3;
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

  it('maps pfns to indices and back', () => {
    const m = memmap();
    expect(m.index(highPfn)).toBe(2048);
    expect(m.pfnAt(2048)).toBe(highPfn);
    expect(m.pfnAt(5)).toBe(5);
  });
});
