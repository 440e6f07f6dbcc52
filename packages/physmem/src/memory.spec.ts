import fc from 'fast-check';
import { Errno, KernelBug, KernelError } from '@kho/kernel';
import { ORDER_0, PAGE_SIZE, pfn, pfnAdd, pfnToPhys, phys, physToPfn, toOrder } from './abi';
import { bootHostBytes } from './host-cost';
import { LITTLE_ENDIAN_HOST, PAGE_WORDS, PhysicalMemory, type RamRange } from './memory';

const GiB = 2 ** 30;
const TiB = 2 ** 40;

/** 2 GiB at 0 on node 0, a hole, and 2 GiB at 1 TiB on node 1. */
function holeyRam(): PhysicalMemory {
  return new PhysicalMemory({
    ranges: [
      { start: TiB, size: 2 * GiB, node: 1 },
      { start: 0, size: 2 * GiB, node: 0 },
    ],
  });
}

function expectKernelError(fn: () => unknown, errno: Errno, message: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(KernelError);
  expect((thrown as KernelError).errno).toBe(errno);
  expect((thrown as KernelError).message).toBe(message);
}

describe('abi helpers', () => {
  it('converts between pfns and addresses, rounding addresses down', () => {
    expect(pfnToPhys(pfn(3))).toBe(3 * PAGE_SIZE);
    expect(physToPfn(phys(3 * PAGE_SIZE + 4095))).toBe(3);
    expect(physToPfn(phys(TiB))).toBe(TiB / PAGE_SIZE);
  });

  it('brands orders that are non-negative integers and calls anything else a simulator bug', () => {
    expect(toOrder(0)).toBe(ORDER_0);
    expect(toOrder(18)).toBe(18);
    for (const bad of [-1, 1.5, NaN, Infinity]) expect(() => toOrder(bad)).toThrow(KernelBug);
    expect(() => toOrder(-1)).toThrow('order -1 is not a non-negative integer');
    expect(pfnAdd(pfn(7), 3)).toBe(10);
  });
});

describe('PhysicalMemory layout', () => {
  it('sorts ranges and reports nodes, total size and end', () => {
    const ram = holeyRam();
    expect(ram.ranges.map((r) => r.start)).toEqual([0, TiB]);
    expect(ram.nodes).toEqual([0, 1]);
    expect(ram.totalBytes).toBe(4 * GiB);
    expect(ram.endAddr).toBe(TiB + 2 * GiB);
  });

  it.each<[string, RamRange[], string]>([
    ['unaligned start', [{ start: 100, size: PAGE_SIZE, node: 0 }], 'EINVAL: RAM range [0x64-0x1063] node 0: start is not a page-aligned address'],
    ['unaligned size', [{ start: 0, size: 100, node: 0 }], 'EINVAL: RAM range [0x0-0x63] node 0: size 100 is not a positive multiple of 4096'],
    ['empty', [{ start: 0, size: 0, node: 0 }], 'EINVAL: RAM range {start 0, size 0} node 0: size 0 is not a positive multiple of 4096'],
    ['above 2^50', [{ start: 2 ** 50 - PAGE_SIZE, size: 2 * PAGE_SIZE, node: 0 }], 'EINVAL: RAM range [0x3fffffffff000-0x4000000000fff] node 0: ends above 2^50 (0x4000000000000)'],
    ['bad node', [{ start: 0, size: PAGE_SIZE, node: -1 }], 'EINVAL: RAM range [0x0-0xfff] node -1: node -1 is not an integer in 0..1023'],
    [
      'overlap',
      [
        { start: 0, size: 2 * PAGE_SIZE, node: 0 },
        { start: PAGE_SIZE, size: PAGE_SIZE, node: 1 },
      ],
      'EINVAL: RAM range [0x1000-0x1fff] node 1 overlaps RAM range [0x0-0x1fff] node 0',
    ],
    ['no ranges', [], 'EINVAL: RAM layout has no ranges'],
  ])('rejects a layout with %s', (_what, ranges, message) => {
    expectKernelError(() => new PhysicalMemory({ ranges }), Errno.EINVAL, message);
  });

  it.each([
    [0, 1, true],
    [2 * GiB - 8, 8, true],
    [2 * GiB - 4, 8, false],
    [2 * GiB, 1, false],
    [TiB - 1, 2, false],
    [TiB, 2 * GiB, true],
    [TiB + 2 * GiB, 0, true],
    [-1, 1, false],
    [0.5, 1, false],
  ])('isRam(%d, %d) is %s', (addr, size, want) => {
    expect(holeyRam().isRam(addr, size)).toBe(want);
  });

  it('finds the node and range of an address, EFAULT in a hole', () => {
    const ram = holeyRam();
    expect(ram.nodeOf(TiB + 5)).toBe(1);
    expect(ram.rangeOf(100).start).toBe(0);
    expect(ram.findRange(3 * GiB)).toBeUndefined();
    expectKernelError(() => ram.nodeOf(3 * GiB), Errno.EFAULT, 'EFAULT: physical address 0xc0000000 is not RAM');
  });
});

describe('PhysicalMemory bytes', () => {
  it('reads never-written memory as zero without spending host memory', () => {
    const ram = holeyRam();
    expect(ram.readU8(12345)).toBe(0);
    expect(ram.readU32(TiB + 8)).toBe(0);
    expect(ram.readU64n(GiB)).toBe(0n);
    expect(ram.readU64(TiB + GiB)).toBe(0);
    expect(ram.read(TiB + 100, 16)).toEqual(new Uint8Array(16));
    expect(ram.pageIfPresent(pfn(7))).toBeUndefined();
    expect(ram.populatedBytes).toBe(0);
  });

  // Offsets near page ends make the multi-byte values cross a page boundary.
  const addrs = [0, 8, 4093, 4095, 2 * GiB - 16, TiB, TiB + 4092, TiB + 2 * GiB - 8];
  it.each(addrs)('round-trips u8, u16, u32 and u64 at 0x%s', (addr) => {
    const ram = holeyRam();
    ram.writeU8(addr, 0x1ab);
    expect(ram.readU8(addr)).toBe(0xab);
    ram.writeU16(addr, 0xbeef);
    expect(ram.readU16(addr)).toBe(0xbeef);
    ram.writeU32(addr, 0xdeadbeef);
    expect(ram.readU32(addr)).toBe(0xdeadbeef);
    ram.writeU64(addr, 0x0123456789abcdefn);
    expect(ram.readU64n(addr)).toBe(0x0123456789abcdefn);
    expect(ram.readU8(addr)).toBe(0xef);
    expect(ram.readU8(addr + 7)).toBe(0x01);
    ram.writeU64(addr, 2 ** 53 - 1);
    expect(ram.readU64(addr)).toBe(2 ** 53 - 1);
    ram.writeU64(addr, -1);
    expect(ram.readU64n(addr)).toBe(0xffffffffffffffffn);
    expect(ram.readU64(addr)).toBeGreaterThanOrEqual(2 ** 53);
  });

  it('stores multi-byte values little-endian', () => {
    const ram = holeyRam();
    ram.writeU32(4094, 0x11223344);
    expect([...ram.read(4094, 4)]).toEqual([0x44, 0x33, 0x22, 0x11]);
    ram.writeU64(TiB + 4, 0x0102030405060708n);
    expect([...ram.read(TiB + 4, 8)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
  });

  it('round-trips random u64 values at random addresses (property)', () => {
    const ram = holeyRam();
    const addr = fc.oneof(fc.integer({ min: 0, max: 2 * GiB - 8 }), fc.integer({ min: TiB, max: TiB + 2 * GiB - 8 }));
    fc.assert(
      fc.property(addr, fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (a, v) => {
        ram.writeU64(a, v);
        return ram.readU64n(a) === v && ram.readU32(a) === Number(v & 0xffffffffn);
      }),
      { numRuns: 300 },
    );
  });

  it('copies, writes and fills spans across pages', () => {
    const ram = holeyRam();
    const bytes = Uint8Array.from({ length: 10000 }, (_, i) => i & 0xff);
    ram.write(TiB + 1000, bytes);
    expect(ram.read(TiB + 1000, 10000)).toEqual(bytes);
    ram.fill(TiB + 4000, 200, 0xff);
    expect(ram.readU8(TiB + 3999)).toBe(2999 & 0xff);
    expect(ram.read(TiB + 4000, 200)).toEqual(new Uint8Array(200).fill(0xff));
    const view = ram.page(physToPfn(phys(TiB + 4096)));
    expect(view.length).toBe(PAGE_SIZE);
    view[0] = 0x5a;
    expect(ram.readU8(TiB + 4096)).toBe(0x5a);
    // 10000 bytes from offset 1000 touch exactly three pages.
    expect(ram.populatedPfns()).toEqual([TiB / PAGE_SIZE, TiB / PAGE_SIZE + 1, TiB / PAGE_SIZE + 2]);
  });

  it('keeps the cached page coherent when page() allocates it', () => {
    const ram = holeyRam();
    expect(ram.readU32(8192)).toBe(0);
    ram.page(pfn(2))[0] = 7;
    expect(ram.readU32(8192)).toBe(7);
    ram.writeU32(8192, 9);
    expect(ram.page(pfn(2))[0]).toBe(9);
  });

  it('zero-fills a never-written page without allocating it', () => {
    const ram = holeyRam();
    ram.fill(0, 3 * PAGE_SIZE, 0);
    expect(ram.populatedBytes).toBe(0);
  });

  it('spends host memory only for the pages written', () => {
    const ram = holeyRam();
    ram.writeU64(0, 1n);
    ram.writeU64(GiB + 123 * PAGE_SIZE, 2n);
    ram.writeU64(TiB + GiB, 3n);
    expect(ram.populatedBytes).toBe(3 * PAGE_SIZE);
    expect(ram.populatedPfns()).toEqual([0, GiB / PAGE_SIZE + 123, (TiB + GiB) / PAGE_SIZE]);
  });

  const outside: Array<[string, (ram: PhysicalMemory) => unknown, string]> = [
    ['readU8 in the hole', (r) => r.readU8(3 * GiB), 'EFAULT: physical access at 0xc0000000 (1 bytes) is outside RAM'],
    ['readU32 across the end of a range', (r) => r.readU32(2 * GiB - 2), 'EFAULT: physical access at 0x7ffffffe (4 bytes) is outside RAM'],
    ['readU64n past the end of RAM', (r) => r.readU64n(TiB + 2 * GiB), 'EFAULT: physical access at 0x10080000000 (8 bytes) is outside RAM'],
    ['readU64 just below a range', (r) => r.readU64(TiB - 4), 'EFAULT: physical access at 0xfffffffffc (8 bytes) is outside RAM'],
    ['writeU16 at a negative address', (r) => r.writeU16(-2, 1), 'EFAULT: physical access at -2 (2 bytes) is outside RAM'],
    ['writeU64 in the hole', (r) => r.writeU64(TiB - 8, 1n), 'EFAULT: physical access at 0xfffffffff8 (8 bytes) is outside RAM'],
    ['write across a range end', (r) => r.write(2 * GiB - 1, new Uint8Array(2)), 'EFAULT: physical access at 0x7fffffff (2 bytes) is outside RAM'],
    ['read of a fractional address', (r) => r.read(0.5, 1), 'EFAULT: physical access at 0.5 (1 bytes) is outside RAM'],
    ['page() of a hole page', (r) => r.page(pfn(3 * 2 ** 18)), 'EFAULT: physical access at 0xc0000000 (4096 bytes) is outside RAM'],
  ];
  it.each(outside)('throws EFAULT for %s', (_what, access, message) => {
    const ram = holeyRam();
    expectKernelError(() => access(ram), Errno.EFAULT, message);
    expect(ram.populatedBytes).toBe(0);
  });

  it('throws EFAULT outside RAM even right after a cached access to the neighbouring page', () => {
    const ram = holeyRam();
    ram.writeU32(2 * GiB - 4, 1);
    expectKernelError(() => ram.writeU32(2 * GiB - 2, 1), Errno.EFAULT, 'EFAULT: physical access at 0x7ffffffe (4 bytes) is outside RAM');
    expect(ram.readU32(2 * GiB - 4)).toBe(1);
  });

  it('lets an access run on into an adjacent range, though isRam says it is not in one range', () => {
    const ram = new PhysicalMemory({
      ranges: [
        { start: 0, size: 2 * PAGE_SIZE, node: 0 },
        { start: 2 * PAGE_SIZE, size: PAGE_SIZE, node: 1 },
      ],
    });
    ram.writeU64(2 * PAGE_SIZE - 4, 0x1122334455667788n);
    expect(ram.readU64n(2 * PAGE_SIZE - 4)).toBe(0x1122334455667788n);
    expect(ram.isRam(2 * PAGE_SIZE - 4, 8)).toBe(false);
    ram.write(0, new Uint8Array(3 * PAGE_SIZE).fill(1));
    expectKernelError(() => ram.read(0, 3 * PAGE_SIZE + 1), Errno.EFAULT, 'EFAULT: physical access at 0x0 (12289 bytes) is outside RAM');
  });

  it('rejects a u64 write of a fractional number', () => {
    expectKernelError(() => holeyRam().writeU64(0, 1.5), Errno.EINVAL, 'EINVAL: writeU64 at 0x0: 1.5 is not an integer');
  });
});

describe('PhysicalMemory host budget', () => {
  it('accepts 4 TiB and RAM above the 1 TiB line on an 8 GiB host, and refuses what it cannot hold', () => {
    const host = { hostMemory: 8 * GiB };
    expect(new PhysicalMemory({ ranges: [{ start: 0, size: 4 * TiB, node: 0 }] }, host).totalBytes).toBe(4 * TiB);
    expect(new PhysicalMemory({ ranges: [{ start: 3 * TiB, size: TiB, node: 0 }] }, host).endAddr).toBe(4 * TiB);
    expectKernelError(
      () => new PhysicalMemory({ ranges: [{ start: 0, size: 200 * TiB, node: 0 }] }, host),
      Errno.ENOMEM,
      'ENOMEM: 200.00 TiB of RAM needs about 3.03 GiB of host memory per boot for its page descriptors and free lists; this host allows 2.00 GiB (a quarter of its 8.00 GiB)',
    );
  });

  it('counts a section once when ranges share it, and a max-order block per 4 MiB', () => {
    const oneGiB = bootHostBytes([{ start: 0, size: GiB }]);
    expect(bootHostBytes([{ start: 0, size: GiB / 2 }, { start: GiB / 2, size: GiB / 2 }])).toBe(oneGiB);
    expect(bootHostBytes([{ start: 0, size: 2 * GiB }])).toBe(2 * oneGiB);
    expect(bootHostBytes([{ start: 0, size: TiB }]) / 2 ** 20).toBeLessThan(16); // about 15 MiB per TiB
  });
});

describe('PhysicalMemory.pageWords', () => {
  it('gives the chunk as words: reads see writes, a write populates only its page', () => {
    const ram = holeyRam();
    expect(ram.pageWords(10)[10 * PAGE_WORDS]).toBe(0);
    expect(ram.populatedBytes).toBe(0);
    ram.writeU32(10 * PAGE_SIZE + 4, 0xdeadbeef);
    const w = ram.pageWords(10);
    expect(w[10 * PAGE_WORDS + 1] >>> 0).toBe(0xdeadbeef);
    const ww = ram.pageWords(11, true);
    expect(ww).toBe(w); // one array for the whole chunk
    ww[11 * PAGE_WORDS] = 0x1234;
    expect(ram.readU32(11 * PAGE_SIZE)).toBe(0x1234);
    expect(ram.populatedPfns()).toEqual([10, 11]);
    expect(LITTLE_ENDIAN_HOST).toBe(true);
  });

  it('switches from the shared zeros to the chunk once the chunk is written', () => {
    const ram = holeyRam();
    const before = ram.pageWords(TiB / PAGE_SIZE + 3);
    ram.writeU8(TiB + 3 * PAGE_SIZE, 9);
    const after = ram.pageWords(TiB / PAGE_SIZE + 3);
    expect(after).not.toBe(before);
    expect(after[3 * PAGE_WORDS]).toBe(9);
    expect(before[3 * PAGE_WORDS]).toBe(0);
  });

  it('throws EFAULT for a page that is not RAM', () => {
    expectKernelError(() => holeyRam().pageWords(3 * 2 ** 18), Errno.EFAULT, 'EFAULT: physical access at 0xc0000000 (4096 bytes) is outside RAM');
  });
});
