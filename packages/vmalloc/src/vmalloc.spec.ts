import fc from 'fast-check';
import { Errno, KernelError, type Kernel } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Memmap, PAGE_SIZE, PageFlag, PhysicalMemory, createMachine, physmemModule, pfn, toOrder } from '@kho/physmem';
import { vmallocModule } from './module';
import {
  VMALLOC_END,
  VMALLOC_GUARD_SIZE,
  VMALLOC_SIZE,
  VMALLOC_START,
  VM_ALLOC,
  VM_HUGE_VMAP,
  VM_IOREMAP,
  VM_MAP,
  VM_USERMAP,
  Vmalloc,
} from './vmalloc';

const MiB = 2 ** 20;

function boot(mem = '64M'): { k: Kernel; vm: Vmalloc; buddy: BuddyAllocator; memmap: Memmap; ram: PhysicalMemory; faults: FaultInjector } {
  const k = createMachine({ mem }).boot({ image: [physmemModule(), vmallocModule()] });
  return { k, vm: k.get(Vmalloc), buddy: k.get(BuddyAllocator), memmap: k.get(Memmap), ram: k.get(PhysicalMemory), faults: k.get(FaultInjector) };
}

/** Pfns of every page flagged Vmalloc. */
function vmallocPages(memmap: Memmap): number[] {
  const out: number[] = [];
  for (let p = 0; p < memmap.nrPages; p++) if (memmap.testFlag(p, PageFlag.Vmalloc)) out.push(p);
  return out;
}

/**
 * Leaves the order-0 free list holding every other page of a run, so that the next order-0 allocations are
 * physically scattered. Returns the pages it keeps allocated (the caller frees them).
 */
function fragment(buddy: BuddyAllocator, n: number): number[] {
  const pages = Array.from({ length: 2 * n }, () => buddy.allocPages(0));
  const kept: number[] = [];
  pages.forEach((p, i) => (i % 2 === 0 ? buddy.freePages(p, toOrder(0)) : kept.push(p)));
  return kept;
}

describe('vmalloc and vfree', () => {
  it('maps an area of whole pages, flags its pages Vmalloc, and vfree gives every page back', () => {
    const { vm, buddy, memmap } = boot();
    const free0 = buddy.nrFreePages;
    const addr = vm.vmalloc(3 * PAGE_SIZE + 1);
    expect(addr).toBe(VMALLOC_START);
    const a = vm.findVmArea(addr)!;
    expect(a).toMatchObject({ addr, size: 4 * PAGE_SIZE, nrPages: 4, order: 0, flags: VM_ALLOC });
    expect(a.blocks).toHaveLength(4);
    expect(vm.nrPages).toBe(4);
    expect(buddy.nrFreePages).toBe(free0 - 4);
    expect(vmallocPages(memmap).sort((x, y) => x - y)).toEqual([...a.blocks].sort((x, y) => x - y));
    expect(vm.findVmArea(addr + a.size - 1)).toBe(a);
    expect(vm.findVmArea(addr + a.size)).toBeUndefined(); // the guard page
    expect(vm.findVmArea(addr - 1)).toBeUndefined();
    vm.vfree(addr);
    expect(buddy.nrFreePages).toBe(free0);
    expect(vmallocPages(memmap)).toEqual([]);
    expect(vm.areas()).toEqual([]);
    expect(vm.nrPages).toBe(0);
    buddy.checkInvariants();
  });

  it('places areas first fit with a guard page between them and reuses a freed hole', () => {
    const { vm } = boot();
    const a = vm.vmalloc(2 * PAGE_SIZE);
    const b = vm.vmalloc(PAGE_SIZE);
    const c = vm.vmalloc(PAGE_SIZE);
    expect([b - a, c - b]).toEqual([2 * PAGE_SIZE + VMALLOC_GUARD_SIZE, PAGE_SIZE + VMALLOC_GUARD_SIZE]);
    vm.vfree(b);
    expect(vm.vmalloc(PAGE_SIZE)).toBe(b);
    expect(vm.vmalloc(2 * PAGE_SIZE)).toBe(c + PAGE_SIZE + VMALLOC_GUARD_SIZE); // b's hole is too small now
    expect(vm.areas().map((x) => x.addr)).toEqual([a, b, c, c + PAGE_SIZE + VMALLOC_GUARD_SIZE]);
  });

  it.each([
    ['huge: true', { huge: true }, 9],
    ['order 3', { order: 3 }, 3],
    ['flags VM_HUGE_VMAP', { flags: VM_HUGE_VMAP }, 9],
    ['huge with order 10', { huge: true, order: 10 }, 10],
  ])('%s maps blocks of that order, aligned to the block size, with VM_HUGE_VMAP', (_, opts, order) => {
    const { vm, buddy, memmap } = boot();
    const free0 = buddy.nrFreePages;
    vm.vmalloc(PAGE_SIZE); // so that the huge area is not at the (aligned) start by chance
    const block = PAGE_SIZE * 2 ** order;
    const addr = vm.vmalloc(block + 1, opts);
    const a = vm.findVmArea(addr)!;
    expect(addr % block).toBe(0);
    expect(a).toMatchObject({ size: 2 * block, nrPages: 2 * 2 ** order, order, flags: VM_ALLOC | VM_HUGE_VMAP });
    for (const pfn of a.blocks) expect(pfn % 2 ** order).toBe(0);
    expect(vm.virtToPhys(addr + block + 5)).toBe(a.blocks[1] * PAGE_SIZE + 5);
    expect(vmallocPages(memmap)).toHaveLength(1 + a.nrPages);
    vm.vfree(addr);
    vm.vfree(VMALLOC_START);
    expect(buddy.nrFreePages).toBe(free0);
    buddy.checkInvariants();
  });

  it('keeps extra flags on the area', () => {
    const { vm } = boot();
    const addr = vm.vmalloc(PAGE_SIZE, { flags: VM_IOREMAP | VM_USERMAP });
    expect(vm.findVmArea(addr)!.flags).toBe(VM_ALLOC | VM_IOREMAP | VM_USERMAP);
    expect(vm.findVmArea(vm.vmalloc(PAGE_SIZE, { flags: VM_MAP }))!.flags).toBe(VM_ALLOC | VM_MAP);
  });

  it('vzalloc zeroes pages that held data', () => {
    const { vm } = boot();
    const a = vm.vmalloc(8 * PAGE_SIZE);
    vm.fill(a, 8 * PAGE_SIZE, 0xa5);
    vm.vfree(a);
    const b = vm.vmalloc(8 * PAGE_SIZE);
    expect(vm.readU8(b + 100)).toBe(0xa5); // vmalloc does not clear: the same pages came back
    vm.vfree(b);
    const z = vm.vzalloc(8 * PAGE_SIZE);
    expect(vm.read(z, 8 * PAGE_SIZE).every((x) => x === 0)).toBe(true);
  });

  it.each([
    [0, {}, 'EINVAL: vmalloc: size 0 (wanted a positive integer number of bytes)'],
    [-4096, {}, 'EINVAL: vmalloc: size -4096 (wanted a positive integer number of bytes)'],
    [1.5, {}, 'EINVAL: vmalloc: size 1.5 (wanted a positive integer number of bytes)'],
    [NaN, {}, 'EINVAL: vmalloc: size NaN (wanted a positive integer number of bytes)'],
    [4096, { order: 11 }, 'EINVAL: vmalloc: order 11 (wanted an integer in 0..10)'],
    [4096, { order: -1 }, 'EINVAL: vmalloc: order -1 (wanted an integer in 0..10)'],
    [4096, { huge: true, order: 0 }, 'EINVAL: vmalloc: a huge mapping with order 0 (wanted an order in 1..10)'],
    [4096, { flags: 0x100 }, 'EINVAL: vmalloc: flags 0x100 (wanted a subset of 0x1f)'],
    [4096, { flags: -1 }, 'EINVAL: vmalloc: flags -1 (wanted a subset of 0x1f)'],
  ])('vmalloc(%p, %o) is refused', (size, opts, message) => {
    const { vm, buddy } = boot();
    const free0 = buddy.nrFreePages;
    expect(() => vm.vmalloc(size, opts)).toThrow(new KernelError(Errno.EINVAL, message.replace(/^EINVAL: /, '')));
    expect(buddy.nrFreePages).toBe(free0);
    expect(vm.areas()).toEqual([]);
  });

  it.each([
    ['inside an area', (a: number) => a + PAGE_SIZE, (a: number) => `EINVAL: vfree: ${hexOf(a + PAGE_SIZE)} is not the start of a vmalloc area (it is inside the area at ${hexOf(a)})`],
    ['in the guard page', (a: number) => a + 2 * PAGE_SIZE, (a: number) => `EINVAL: vfree: ${hexOf(a + 2 * PAGE_SIZE)} is not the start of a vmalloc area`],
    ['not an address', () => -1, () => 'EINVAL: vfree: -1 is not the start of a vmalloc area'],
  ])('vfree of an address %s is refused and changes nothing', (_, at, message) => {
    const { vm, buddy } = boot();
    const a = vm.vmalloc(2 * PAGE_SIZE);
    const free0 = buddy.nrFreePages;
    expect(() => vm.vfree(at(a))).toThrow(message(a));
    expect(buddy.nrFreePages).toBe(free0);
    expect(vm.areas()).toHaveLength(1);
  });

  it('vfree twice is refused the second time', () => {
    const { vm } = boot();
    const a = vm.vmalloc(PAGE_SIZE);
    vm.vfree(a);
    expect(() => vm.vfree(a)).toThrow(`EINVAL: vfree: ${hexOf(a)} is not the start of a vmalloc area`);
  });
});

describe('ENOMEM', () => {
  it.each([
    ['order 0, 6 pages', 6 * PAGE_SIZE, {}, 6, 0],
    ['order 2, 3 blocks', 10 * PAGE_SIZE, { order: 2 }, 3, 2],
  ])('%s: failing allocation k of every k frees every page taken before it', (_, size, opts, blocks, order) => {
    const { vm, buddy, memmap, faults } = boot();
    const kept = fragment(buddy, 8);
    const free0 = buddy.nrFreePages;
    for (let k = 1; k <= blocks; k++) {
      faults.configure({ failNth: k });
      expect(() => vm.vmalloc(size, opts)).toThrow(
        `ENOMEM: vmalloc: size ${size}: block ${k} of ${blocks} (order ${order}) failed: allocPages: injected failure of an order-${order} allocation on any node (fault injection)`,
      );
      expect(buddy.nrFreePages).toBe(free0);
      expect(vm.areas()).toEqual([]);
      expect(vmallocPages(memmap)).toEqual([]);
      buddy.checkInvariants();
    }
    faults.configure({ failNth: blocks + 1 });
    const addr = vm.vmalloc(size, opts);
    expect(vm.findVmArea(addr)!.blocks).toHaveLength(blocks);
    expect(faults.injected).toBe(blocks);
    vm.vfree(addr);
    for (const p of kept) buddy.freePages(pfn(p), toOrder(0));
    expect(buddy.fullyMerged()).toBe(true);
  });

  it('refuses an area larger than free memory before taking any page', () => {
    const { vm, buddy } = boot();
    const free0 = buddy.nrFreePages;
    expect(() => vm.vmalloc(128 * MiB)).toThrow(`ENOMEM: vmalloc: size ${128 * MiB}: needs 32768 pages, ${free0} are free`);
    expect(buddy.allocCalls).toBe(0);
  });

  it('refuses an area the vmalloc range cannot hold', () => {
    const { vm } = boot();
    expect(() => vm.vmalloc(VMALLOC_SIZE)).toThrow(
      `ENOMEM: vmalloc: size ${VMALLOC_SIZE}: no free range of ${VMALLOC_SIZE} bytes (+ guard page) in the vmalloc space [0x10000000000000-0x10200000000000)`,
    );
    expect(VMALLOC_END).toBe(0x10200000000000);
  });
});

describe('access through virtual addresses', () => {
  function scattered(): { vm: Vmalloc; ram: PhysicalMemory; addr: number; blocks: readonly number[] } {
    const { vm, buddy, ram } = boot();
    fragment(buddy, 16);
    const addr = vm.vmalloc(8 * PAGE_SIZE);
    return { vm, ram, addr, blocks: vm.findVmArea(addr)!.blocks };
  }

  it('an area is contiguous in virtual space over pages that are not contiguous in RAM', () => {
    const { vm, addr, blocks } = scattered();
    expect(blocks.some((p, i) => i > 0 && p !== blocks[i - 1] + 1)).toBe(true);
    blocks.forEach((p, i) => expect(vm.virtToPhys(addr + i * PAGE_SIZE + 7)).toBe(p * PAGE_SIZE + 7));
  });

  it.each([
    ['u16', 2, (vm: Vmalloc, a: number) => vm.writeU16(a, 0xbeef), (vm: Vmalloc, a: number) => vm.readU16(a), 0xbeef],
    ['u32', 4, (vm: Vmalloc, a: number) => vm.writeU32(a, 0xdeadbeef), (vm: Vmalloc, a: number) => vm.readU32(a), 0xdeadbeef],
    ['u64 (bigint)', 8, (vm: Vmalloc, a: number) => vm.writeU64(a, 0x0123456789abcdefn), (vm: Vmalloc, a: number) => vm.readU64n(a), 0x0123456789abcdefn],
    ['u64 (number)', 8, (vm: Vmalloc, a: number) => vm.writeU64(a, 2 ** 53 - 3), (vm: Vmalloc, a: number) => vm.readU64(a), 2 ** 53 - 3],
  ])('%s values land little-endian in the right physical bytes at every offset across a page boundary', (_, width, write, read, value) => {
    const { vm, ram, addr, blocks } = scattered();
    const expected = Buffer.alloc(8);
    expected.writeBigUInt64LE(BigInt(value));
    for (let before = 1; before < width; before++) {
      const at = addr + 3 * PAGE_SIZE - before; // `before` bytes in page 2, the rest in page 3
      write(vm, at);
      expect(read(vm, at)).toBe(value);
      const physBytes = Array.from({ length: width }, (_, i) => {
        const v = at + i;
        const page = Math.floor((v - addr) / PAGE_SIZE);
        return ram.readU8(blocks[page] * PAGE_SIZE + ((v - addr) % PAGE_SIZE));
      });
      expect(physBytes).toEqual([...expected.subarray(0, width)]);
      expect(read(vm, at - 8)).not.toBe(value); // and not anywhere else
    }
  });

  it('writeU64 of a negative number stores its two’s complement; a fraction is refused', () => {
    const { vm, addr } = scattered();
    vm.writeU64(addr + PAGE_SIZE - 4, -2);
    expect(vm.readU64n(addr + PAGE_SIZE - 4)).toBe(0xfffffffffffffffen);
    expect(() => vm.writeU64(addr, 0.5)).toThrow(`EINVAL: writeU64 at ${hexOf(addr)}: 0.5 is not an integer`);
  });

  it('read, write and fill behave like one flat buffer (model check)', () => {
    const { vm, addr } = scattered();
    const size = 8 * PAGE_SIZE;
    const model = new Uint8Array(size);
    vm.write(addr, model);
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('write' as const), off: fc.nat({ max: size - 1 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 9000 }) }),
            fc.record({ kind: fc.constant('fill' as const), off: fc.nat({ max: size - 1 }), len: fc.nat({ max: 9000 }), byte: fc.nat({ max: 255 }) }),
          ),
          { maxLength: 8 },
        ),
        (ops) => {
          for (const op of ops) {
            if (op.kind === 'write') {
              const bytes = op.bytes.subarray(0, size - op.off);
              vm.write(addr + op.off, bytes);
              model.set(bytes, op.off);
            } else {
              const len = Math.min(op.len, size - op.off);
              vm.fill(addr + op.off, len, op.byte);
              model.fill(op.byte, op.off, op.off + len);
            }
          }
          expect(Buffer.from(vm.read(addr, size)).equals(Buffer.from(model))).toBe(true);
        },
      ),
      { numRuns: 50 },
    );
  });

  it.each([
    ['virtToPhys in the guard page', (vm: Vmalloc, a: number) => vm.virtToPhys(a + 8 * PAGE_SIZE), (a: number) => `EFAULT: virtToPhys(${hexOf(a + 8 * PAGE_SIZE)}): no vmalloc area maps it`],
    ['readU8 below the range', (vm: Vmalloc) => vm.readU8(VMALLOC_START - 1), () => `EFAULT: vmalloc readU8 at ${hexOf(VMALLOC_START - 1)}: no vmalloc area maps it`],
    ['readU32 across the end', (vm: Vmalloc, a: number) => vm.readU32(a + 8 * PAGE_SIZE - 2), (a: number) => `EFAULT: vmalloc readU32 at ${hexOf(a + 8 * PAGE_SIZE - 2)} (4 bytes) runs past the end of the area ${hexOf(a)}+32768`],
    ['writeU64 across the end', (vm: Vmalloc, a: number) => vm.writeU64(a + 8 * PAGE_SIZE - 1, 1n), (a: number) => `EFAULT: vmalloc writeU64 at ${hexOf(a + 8 * PAGE_SIZE - 1)} (8 bytes) runs past the end of the area ${hexOf(a)}+32768`],
    ['write across the end', (vm: Vmalloc, a: number) => vm.write(a + 1, new Uint8Array(8 * PAGE_SIZE)), (a: number) => `EFAULT: vmalloc write at ${hexOf(a + 1)} (32768 bytes) runs past the end of the area ${hexOf(a)}+32768`],
    ['read at a physical address', (vm: Vmalloc) => vm.read(0x1000, 4), () => 'EFAULT: vmalloc read at 0x1000: no vmalloc area maps it'],
    ['read of a bad length', (vm: Vmalloc, a: number) => vm.read(a, -1), () => 'EINVAL: vmalloc read: length -1 is not a non-negative integer'],
  ])('%s is refused', (_, access, message) => {
    const { vm, addr } = scattered();
    vm.writeU8(addr + 8 * PAGE_SIZE - 1, 0x11);
    expect(() => access(vm, addr)).toThrow(message(addr));
    expect(vm.readU8(addr + 8 * PAGE_SIZE - 1)).toBe(0x11); // a refused write wrote nothing
  });
});

function hexOf(n: number): string {
  return `0x${n.toString(16)}`;
}
