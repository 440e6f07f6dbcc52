import fc from 'fast-check';
import { Errno, KernelError, seededBytes, type Kernel } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Memmap, PAGE_SIZE, PageFlag, PhysicalMemory, createMachine, physmemModule } from '@kho/physmem';
import { Kho, khoModule } from '@kho/kho-core';
// Test-only dependencies (package.json devDependencies): a full KHO kernel needs an early allocator and a tracker.
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import {
  KHO_VMALLOC_ALLOC,
  KHO_VMALLOC_HUGE_VMAP,
  KhoVmallocChunkStruct,
  decodeKhoVmalloc,
  encodeKhoVmalloc,
  encodeKhoVmallocChunk,
  type KhoVmallocDesc,
} from './abi';
import { vmallocModule } from './module';
import { KhoVmalloc } from './preserve';
import { VM_ALLOC, VM_HUGE_VMAP, VM_IOREMAP, VM_MAP, Vmalloc } from './vmalloc';

const SUBTREE = 'vmalloc_test';

const image = () => [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), vmallocModule()];

function bootCold(): Kernel {
  return createMachine({ mem: '512M' }).boot({ image: image() });
}

let coldFree: number | undefined;
/** Free pages of a freshly booted kernel: what a next kernel must come back to once everything is restored and freed. */
function coldBootFreePages(): number {
  coldFree ??= bootCold().get(BuddyAllocator).nrFreePages;
  return coldFree;
}

interface Svc {
  vm: Vmalloc;
  kv: KhoVmalloc;
  kho: Kho;
  ram: PhysicalMemory;
  buddy: BuddyAllocator;
  memmap: Memmap;
}

function svc(k: Kernel): Svc {
  return { vm: k.get(Vmalloc), kv: k.get(KhoVmalloc), kho: k.get(Kho), ram: k.get(PhysicalMemory), buddy: k.get(BuddyAllocator), memmap: k.get(Memmap) };
}

/** Deterministic bytes: the workspace's seeded stream. */
function randomBytes(n: number, seed: number): Uint8Array {
  return seededBytes(seed >>> 0, n);
}

/** Stores descriptors in a preserved blob, adds it as subtree SUBTREE, and kexecs. Returns the next kernel. */
function handOver(k1: Kernel, ...descs: Uint8Array[]): Kernel {
  const { kho, ram } = svc(k1);
  const blob = kho.allocPreserve(PAGE_SIZE);
  descs.forEach((d, i) => ram.write(blob + 16 * i, d));
  kho.addSubtree(SUBTREE, blob, 16 * descs.length);
  return k1.liveUpdate();
}

/** In the next kernel: the descriptors stored by handOver (the blob page is restored and freed). */
function takeOver(k2: Kernel, count = 1): Uint8Array[] {
  const { kho, ram } = svc(k2);
  const blob = kho.retrieveSubtree(SUBTREE).phys;
  const out = Array.from({ length: count }, (_, i) => ram.read(blob + 16 * i, 16));
  kho.restoreFree(blob);
  return out;
}

/** Phys of every chunk of a descriptor, following `next` (for a descriptor this boot wrote). */
function chunksOf(ram: PhysicalMemory, desc: Uint8Array): number[] {
  const out: number[] = [];
  for (let c = decodeKhoVmalloc(desc).first; c !== 0; c = ram.readU64(c + KhoVmallocChunkStruct.offsetOf('next'))) out.push(c);
  return out;
}

function withDesc(desc: Uint8Array, change: Partial<KhoVmallocDesc>): Uint8Array {
  return encodeKhoVmalloc({ ...decodeKhoVmalloc(desc), ...change });
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function trackerBlocks(k: Kernel): number {
  return k.get(Kho).stats().trackerBlocks;
}

describe('preserveVmalloc', () => {
  it('writes the descriptor and a chunk page listing every block (golden chunk), and preserves blocks and chunk', () => {
    const k1 = bootCold();
    const { vm, kv, ram } = svc(k1);
    const addr = vm.vmalloc(3 * PAGE_SIZE);
    const blocks0 = trackerBlocks(k1);
    const desc = kv.preserveVmalloc(addr);
    const d = decodeKhoVmalloc(desc);
    expect(desc).toHaveLength(16);
    expect(d).toEqual({ first: d.first, totalPages: 3, flags: KHO_VMALLOC_ALLOC, order: 0 });
    const phys = vm.findVmArea(addr)!.blocks.map((p) => p * PAGE_SIZE);
    expect(same(ram.read(d.first, PAGE_SIZE), encodeKhoVmallocChunk({ next: 0, phys }))).toBe(true);
    expect(trackerBlocks(k1)).toBe(blocks0 + 3 + 1);
    expect(vm.findVmArea(addr)).toBeDefined(); // the area stays allocated and mapped
  });

  it('a huge area is described by its head pages and order, with KHO_VMALLOC_HUGE_VMAP', () => {
    const k1 = bootCold();
    const { vm, kv, ram } = svc(k1);
    const addr = vm.vmalloc(3 * 2 * 2 ** 20, { huge: true });
    const d = decodeKhoVmalloc(kv.preserveVmalloc(addr));
    expect(d).toMatchObject({ totalPages: 3 * 512, flags: KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP, order: 9 });
    const phys = vm.findVmArea(addr)!.blocks.map((p) => p * PAGE_SIZE);
    expect(same(ram.read(d.first, PAGE_SIZE), encodeKhoVmallocChunk({ next: 0, phys }))).toBe(true);
  });

  it.each([
    ['inside an area', (a: number) => a + PAGE_SIZE, (a: number) => `EINVAL: preserveVmalloc: ${hexOf(a + PAGE_SIZE)} is not the start of a vmalloc area (it is inside the area at ${hexOf(a)})`],
    ['outside every area', () => 0x1000, () => 'EINVAL: preserveVmalloc: 0x1000 is not the start of a vmalloc area'],
  ])('refuses an address %s, preserving nothing', (_, at, message) => {
    const k1 = bootCold();
    const { vm, kv, buddy } = svc(k1);
    const a = vm.vmalloc(2 * PAGE_SIZE);
    const [blocks0, free0] = [trackerBlocks(k1), buddy.nrFreePages];
    expect(() => kv.preserveVmalloc(at(a))).toThrow(message(a));
    expect([trackerBlocks(k1), buddy.nrFreePages]).toEqual([blocks0, free0]);
  });

  it.each([
    ['VM_IOREMAP', VM_IOREMAP],
    ['VM_MAP', VM_MAP],
  ])('refuses an area with %s (EOPNOTSUPP), preserving nothing', (_, flag) => {
    const k1 = bootCold();
    const { vm, kv, buddy } = svc(k1);
    const a = vm.vmalloc(PAGE_SIZE, { flags: flag });
    const [blocks0, free0] = [trackerBlocks(k1), buddy.nrFreePages];
    expect(() => kv.preserveVmalloc(a)).toThrow(
      new KernelError(Errno.EOPNOTSUPP, `preserveVmalloc(${hexOf(a)}): area flags ${hexOf(VM_ALLOC | flag)} include ${hexOf(flag)} (only VM_ALLOC and VM_HUGE_VMAP areas can be preserved)`),
    );
    expect([trackerBlocks(k1), buddy.nrFreePages]).toEqual([blocks0, free0]);
  });

  it('fails at every allocation it makes (chunks and tracker nodes) and each time undoes everything', () => {
    const k1 = bootCold();
    const { vm, kv, buddy, kho } = svc(k1);
    const faults = k1.get(FaultInjector);
    const addr = vm.vmalloc(1023 * PAGE_SIZE); // three chunks
    // Tracker nodes are not reclaimed when blocks go (as upstream), so free pages + tracker pages is the invariant.
    const before = (): number[] => [kho.stats().trackerBlocks, buddy.nrFreePages + kho.stats().trackerPages];
    const expected = before();
    let failures = 0;
    for (let k = 1; ; k++) {
      faults.configure({ failNth: k });
      try {
        const desc = kv.preserveVmalloc(addr);
        expect(chunksOf(k1.get(PhysicalMemory), desc)).toHaveLength(3);
        break;
      } catch (e) {
        expect((e as KernelError).errno).toBe(Errno.ENOMEM);
        expect(before()).toEqual(expected);
        failures++;
      }
      expect(k).toBeLessThan(100);
    }
    expect(failures).toBeGreaterThanOrEqual(3); // at least the three chunk pages
    expect(kho.stats().trackerBlocks).toBe(expected[0] + 1023 + 3);
    buddy.checkInvariants();
  });
});

describe('unpreserveVmalloc', () => {
  it('undoes preserveVmalloc exactly: nothing stays preserved and the chunk pages are freed', () => {
    const k1 = bootCold();
    const { vm, kv, buddy } = svc(k1);
    const addr = vm.vmalloc(1022 * PAGE_SIZE);
    kv.preserveVmalloc(addr); // builds the tracker's nodes for these pages once
    const desc0 = kv.preserveVmalloc(vm.vmalloc(PAGE_SIZE));
    kv.unpreserveVmalloc(desc0);
    const before = [trackerBlocks(k1), buddy.nrFreePages];
    const addr2 = vm.vmalloc(600 * PAGE_SIZE);
    const freeAfterAlloc = buddy.nrFreePages;
    const desc = kv.preserveVmalloc(addr2);
    expect(buddy.nrFreePages).toBeLessThan(freeAfterAlloc);
    kv.unpreserveVmalloc(desc);
    expect(trackerBlocks(k1)).toBe(before[0]);
    expect(buddy.nrFreePages).toBe(freeAfterAlloc);
    expect(() => kv.unpreserveVmalloc(desc)).toThrow(
      `ENOENT: unpreserveVmalloc: no area preserved in this boot has its first chunk at ${hexOf(decodeKhoVmalloc(desc).first)}`,
    );
    vm.vfree(addr2);
    expect([trackerBlocks(k1), buddy.nrFreePages]).toEqual(before);
  });

  it('preserve then unpreserve leaves nothing, for any size and order (property)', () => {
    const k1 = bootCold();
    const { vm, kv, buddy, kho } = svc(k1);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1100 }), fc.constantFrom(0, 0, 1, 3), (pages, order) => {
        const addr = vm.vmalloc(pages * PAGE_SIZE, { order });
        const before = [kho.stats().trackerBlocks, buddy.nrFreePages + kho.stats().trackerPages];
        kv.unpreserveVmalloc(kv.preserveVmalloc(addr));
        expect([kho.stats().trackerBlocks, buddy.nrFreePages + kho.stats().trackerPages]).toEqual(before);
        vm.vfree(addr);
      }),
      { numRuns: 25 },
    );
  });

  it('refuses a descriptor that differs from the one it returned, changing nothing', () => {
    const k1 = bootCold();
    const { vm, kv } = svc(k1);
    const desc = kv.preserveVmalloc(vm.vmalloc(2 * PAGE_SIZE));
    const bad = withDesc(desc, { totalPages: 1 });
    const blocks0 = trackerBlocks(k1);
    expect(() => kv.unpreserveVmalloc(bad)).toThrow(
      `EINVAL: unpreserveVmalloc: descriptor ${Buffer.from(bad).toString('hex')} differs from the one preserveVmalloc returned (${Buffer.from(desc).toString('hex')})`,
    );
    expect(trackerBlocks(k1)).toBe(blocks0);
    kv.unpreserveVmalloc(desc);
    expect(trackerBlocks(k1)).toBe(blocks0 - 3);
  });

  it('after unpreserve the next kernel finds nothing of the area', () => {
    const k1 = bootCold();
    const { vm, kv } = svc(k1);
    kv.unpreserveVmalloc(kv.preserveVmalloc(vm.vmalloc(5 * PAGE_SIZE)));
    const k2 = k1.liveUpdate();
    expect(k2.get(Kho).incomingHandover!.pfns).toHaveLength(2); // KHO's own: the root FDT and the kexec-metadata blob
  });
});

describe('preserve, kexec, restore', () => {
  it.each([
    ['3 pages', 3, 0],
    ['511 pages (one full chunk)', 511, 0],
    ['512 pages (a second chunk)', 512, 0],
    ['1022 pages (two full chunks)', 1022, 0],
    ['1023 pages (a third chunk)', 1023, 0],
    ['order 9, 3 blocks', 3, 9],
    ['order 10, 2 blocks', 2, 10],
    ['order 1, 512 blocks', 512, 1],
  ])('%s: same pages, same bytes; vfree then frees every page', (_, nrBlocks, order) => {
    const k1 = bootCold();
    const s1 = svc(k1);
    const kept = Array.from({ length: 64 }, () => s1.buddy.allocPages(0)).filter((_, i) => i % 2 === 0);
    const size = nrBlocks * PAGE_SIZE * 2 ** order;
    const addr = s1.vm.vmalloc(size, order > 0 ? { order } : {});
    const bytes = randomBytes(size, nrBlocks * 31 + order);
    s1.vm.write(addr, bytes);
    const area1 = s1.vm.findVmArea(addr)!;
    const blocks0 = trackerBlocks(k1);
    const desc = s1.kv.preserveVmalloc(addr);
    const chunks = Math.ceil(nrBlocks / 511);
    expect(chunksOf(s1.ram, desc)).toHaveLength(chunks);
    expect(trackerBlocks(k1)).toBe(blocks0 + nrBlocks + chunks);
    void kept;

    const k2 = handOver(k1, desc);
    const s2 = svc(k2);
    const [got] = takeOver(k2);
    expect(same(got, desc)).toBe(true);
    const free0 = s2.buddy.nrFreePages;
    const addr2 = s2.kv.restoreVmalloc(got);
    const area2 = s2.vm.findVmArea(addr2)!;
    expect(area2).toMatchObject({ addr: addr2, size, nrPages: area1.nrPages, order, flags: area1.flags });
    expect(area2.blocks).toEqual(area1.blocks);
    expect(same(s2.vm.read(addr2, size), bytes)).toBe(true);
    for (const p of area2.blocks) expect(s2.memmap.testFlag(p + 2 ** order - 1, PageFlag.Vmalloc)).toBe(true);
    expect(s2.buddy.nrFreePages).toBe(free0 + chunks); // the chunk pages were restored and freed

    s2.vm.vfree(addr2);
    expect(s2.buddy.nrFreePages).toBe(free0 + chunks + area1.nrPages);
    const fin = k2.finish();
    expect(fin.plugins.kho.report).toEqual({ unrestoredBlocks: 0, unrestoredBytes: 0, unrestored: [] });
    expect(s2.buddy.nrFreePages).toBe(coldBootFreePages());
    s2.buddy.checkInvariants();
  });

  it('a restored area can be written, preserved again and restored by a third kernel', () => {
    const k1 = bootCold();
    const s1 = svc(k1);
    const size = 700 * PAGE_SIZE;
    const addr = s1.vm.vmalloc(size);
    s1.vm.write(addr, randomBytes(size, 5));
    const k2 = handOver(k1, s1.kv.preserveVmalloc(addr));
    const s2 = svc(k2);
    const addr2 = s2.kv.restoreVmalloc(takeOver(k2)[0]);
    const bytes = randomBytes(size, 6);
    s2.vm.write(addr2, bytes);
    k2.finish();
    const k3 = handOver(k2, s2.kv.preserveVmalloc(addr2));
    const s3 = svc(k3);
    const addr3 = s3.kv.restoreVmalloc(takeOver(k3)[0]);
    expect(same(s3.vm.read(addr3, size), bytes)).toBe(true);
    s3.vm.vfree(addr3);
    k3.finish();
    expect(s3.buddy.nrFreePages).toBe(coldBootFreePages());
  });

  it('when mapping the restored pages fails, every page this call restored is freed', () => {
    const k1 = bootCold();
    const s1 = svc(k1);
    const addr = s1.vm.vmalloc(600 * PAGE_SIZE);
    const k2 = handOver(k1, s1.kv.preserveVmalloc(addr));
    const s2 = svc(k2);
    const [desc] = takeOver(k2);
    jest.spyOn(s2.vm, 'adoptPages').mockImplementation(() => {
      throw new KernelError(Errno.ENOMEM, 'vmalloc adoptPages: no room (injected by the test)');
    });
    const free0 = s2.buddy.nrFreePages;
    expect(() => s2.kv.restoreVmalloc(desc)).toThrow('ENOMEM: vmalloc adoptPages: no room (injected by the test)');
    expect(s2.buddy.nrFreePages).toBe(free0 + 600 + 2);
    expect(s2.vm.areas()).toEqual([]);
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    expect(s2.buddy.nrFreePages).toBe(coldBootFreePages());
  });
});

describe('restoreVmalloc refuses a hostile handover and restores nothing', () => {
  /**
   * A 600-page area (two chunks: 511 + 89 entries) preserved in k1; `damage` may rewrite its chunks in RAM and
   * returns the descriptor to hand over. The genuine descriptor is handed over too.
   */
  function attempt(damage: (ram: PhysicalMemory, desc: Uint8Array, chunks: number[], spare: () => number) => Uint8Array, pages = 600) {
    const k1 = bootCold();
    const s1 = svc(k1);
    const addr = s1.vm.vmalloc(pages * PAGE_SIZE);
    const bytes = randomBytes(pages * PAGE_SIZE, 9);
    s1.vm.write(addr, bytes);
    const desc = s1.kv.preserveVmalloc(addr);
    const chunks = chunksOf(s1.ram, desc);
    const spare = (): number => s1.kho.allocPreserve(PAGE_SIZE); // a zeroed preserved page
    const bad = damage(s1.ram, desc, chunks, spare);
    const k2 = handOver(k1, bad, desc);
    const s2 = svc(k2);
    const [badDesc, goodDesc] = takeOver(k2, 2);
    const free0 = s2.buddy.nrFreePages;
    const incoming = k2.get(Kho).incomingHandover!.pfns.length;
    let error: unknown;
    try {
      s2.kv.restoreVmalloc(badDesc);
    } catch (e) {
      error = e;
    }
    expect(s2.buddy.nrFreePages).toBe(free0);
    expect(s2.vm.areas()).toEqual([]);
    return { k2, s2, error, goodDesc, bytes, chunks, pages, incoming };
  }

  const first = (d: Uint8Array): number => decodeKhoVmalloc(d).first;

  type Damage = (ram: PhysicalMemory, desc: Uint8Array, chunks: number[], spare: () => number) => Uint8Array;

  /** Runs `attempt` and checks the refusal's exact message (built from the chunks and RAM of the first kernel). */
  function refused(damage: Damage, message: (chunks: number[], ram: PhysicalMemory) => string) {
    let chunks: number[] = [];
    let ram: PhysicalMemory | undefined;
    const r = attempt((rm, d, c, spare) => {
      chunks = c;
      ram = rm;
      return damage(rm, d, c, spare);
    });
    expect(r.error).toBeInstanceOf(KernelError);
    expect((r.error as Error).message).toBe(message(chunks, ram!));
    return r;
  }

  it.each([
    ['flags with an unknown bit (EOPNOTSUPP)', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { flags: 0x5 }),
      () => 'EOPNOTSUPP: restoreVmalloc: flags 0x5 hold unknown bits 0x4 (wanted only KHO_VMALLOC_ALLOC 0x1 and KHO_VMALLOC_HUGE_VMAP 0x2)'],
    ['flags without KHO_VMALLOC_ALLOC', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { flags: 0 }), () => 'EINVAL: restoreVmalloc: flags 0x0 lack KHO_VMALLOC_ALLOC'],
    ['order above MAX_PAGE_ORDER', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { order: 11, flags: 3 }), () => 'EINVAL: restoreVmalloc: order 11 (wanted 0..10)'],
    ['an order without KHO_VMALLOC_HUGE_VMAP', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { order: 1 }),
      () => 'EINVAL: restoreVmalloc: order 1 with flags 0x1 (KHO_VMALLOC_HUGE_VMAP goes with an order above 0, and only with one)'],
    ['total_pages 0', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { totalPages: 0 }),
      () => 'EINVAL: restoreVmalloc: total_pages 0 (wanted a positive multiple of 1, the pages of a block of order 0)'],
    ['first chunk 0', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { first: 0 }),
      () => 'EINVAL: restoreVmalloc: first chunk is 0 with total_pages 600 (wanted the phys of a chunk page)'],
    ['first chunk outside RAM', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { first: 2 ** 40 }), () => 'EINVAL: restoreVmalloc: chunk 0 at 0x10000000000 is outside RAM'],
    ['first chunk not page-aligned', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { first: first(d) + 8 }),
      (c: number[]) => `EINVAL: restoreVmalloc: chunk 0 at ${hexOf(c[0] + 8)} is not page-aligned`],
    ['more pages than total_pages', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { totalPages: 599 }),
      (c: number[], r: PhysicalMemory) => `EINVAL: restoreVmalloc: entry 88 of chunk 1 at ${hexOf(c[1])} (${hexOf(r.readU64(c[1] + 8 + 88 * 8))}) is past total_pages 599`],
    ['fewer pages than total_pages', (_r: PhysicalMemory, d: Uint8Array) => withDesc(d, { totalPages: 601 }),
      () => 'EINVAL: restoreVmalloc: the chunks hold 600 pages (wanted total_pages 601)'],
  ])('a descriptor with %s; the genuine one then restores every byte', (_, damage, message) => {
    const r = refused(damage, message);
    const addr = r.s2.kv.restoreVmalloc(r.goodDesc);
    expect(same(r.s2.vm.read(addr, r.pages * PAGE_SIZE), r.bytes)).toBe(true);
    r.s2.vm.vfree(addr);
    expect(r.k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    expect(r.s2.buddy.nrFreePages).toBe(coldBootFreePages());
  });

  it.each([
    ['a chunk pointer outside RAM', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[0], 2 ** 40), d),
      () => 'EINVAL: restoreVmalloc: chunk 1 at 0x10000000000 is outside RAM'],
    ['a chunk pointer at or above 2^53', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[0], 0xffff_ffff_ffff_f000n), d),
      () => 'EINVAL: restoreVmalloc: chunk 1 at >= 2^53 is outside RAM'],
    ['a cycle', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[1], c[0]), d),
      (c: number[]) => `EINVAL: restoreVmalloc: chunk 2 at ${hexOf(c[0])} is reached twice (a cycle)`],
    ['a chunk that is not preserved', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[0], 0x10_0000), d),
      () => 'EINVAL: restoreVmalloc: chunk 1 at 0x100000 is not a preserved page (no KHO stamp of order 0)'],
    ['a list cut short by a 0 entry', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[1] + 8 + 8 * 10, 0), d),
      () => 'EINVAL: restoreVmalloc: the chunks hold 521 pages (wanted total_pages 600)'],
    ['an entry listed twice', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[1] + 16, r.readU64(c[1] + 8)), d),
      (c: number[], r: PhysicalMemory) => `EINVAL: restoreVmalloc: entry 1 of chunk 1 at ${hexOf(c[1])} (${hexOf(r.readU64(c[1] + 8))}) is listed twice`],
    ['an entry that is not preserved', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[0] + 8, 0x10_0000), d),
      (c: number[]) => `EINVAL: restoreVmalloc: entry 0 of chunk 0 at ${hexOf(c[0])} (0x100000) is not a preserved block (no KHO stamp of order 0)`],
    ['an entry outside RAM', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[0] + 8, 2 ** 40), d),
      (c: number[]) => `EINVAL: restoreVmalloc: entry 0 of chunk 0 at ${hexOf(c[0])} (0x10000000000): its 1 pages are not RAM`],
    ['an entry that is a chunk page', (r: PhysicalMemory, d: Uint8Array, c: number[]) => (r.writeU64(c[0] + 8, c[1]), d),
      (c: number[]) => `EINVAL: restoreVmalloc: chunk ${hexOf(c[1])} lies inside one of the area's blocks`],
  ])('chunks with %s; every block and chunk is still preserved, unrestored', (_, damage, message) => {
    const r = refused(damage, message);
    // finish names every preserved block nobody restored: all 600 pages and both chunks, so no stamp was consumed.
    expect(r.k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 600 + 2 });
    expect(r.incoming).toBe(2 + 1 + 600 + 2); // root FDT and kexec-metadata, blob, pages, chunks
  });

  it('more chunks than the blocks can need', () => {
    let chunks: number[] = [];
    let extra = 0;
    const r = attempt((ram, d, c, spare) => {
      chunks = c;
      extra = spare(); // a zeroed preserved page: a valid, empty chunk
      ram.writeU64(c[0], extra);
      return d;
    }, 10);
    expect((r.error as Error).message).toBe(`EINVAL: restoreVmalloc: chunk 1 at ${hexOf(extra)} is one too many (10 blocks need at most 1 chunks)`);
    expect(chunks).toHaveLength(1);
    expect(r.k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 10 + 1 + 1 });
  });

  it('a huge block entry that is not aligned to its order', () => {
    const k1 = bootCold();
    const s1 = svc(k1);
    const desc = s1.kv.preserveVmalloc(s1.vm.vmalloc(4 * 4 * PAGE_SIZE, { order: 2 }));
    const [chunk] = chunksOf(s1.ram, desc);
    const e1 = s1.ram.readU64(chunk + 16);
    s1.ram.writeU64(chunk + 16, e1 + PAGE_SIZE);
    const k2 = handOver(k1, desc);
    const s2 = svc(k2);
    const free0 = s2.buddy.nrFreePages;
    expect(() => s2.kv.restoreVmalloc(takeOver(k2)[0])).toThrow(
      `EINVAL: restoreVmalloc: entry 1 of chunk 0 at ${hexOf(chunk)} (${hexOf(e1 + PAGE_SIZE)}) is not aligned to order 2`,
    );
    expect(s2.buddy.nrFreePages).toBe(free0 + 1); // only the blob page, restored and freed by takeOver
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 4 + 1 });
  });

  it('a corrupted descriptor length is refused', () => {
    const k = bootCold();
    expect(() => k.get(KhoVmalloc).restoreVmalloc(new Uint8Array(15))).toThrow('EINVAL: kho_vmalloc is 15 bytes (wanted 16)');
  });

  it('a cold boot has nothing to restore', () => {
    const k = bootCold();
    const d = encodeKhoVmalloc({ first: 0x10_0000, totalPages: 1, flags: KHO_VMALLOC_ALLOC, order: 0 });
    expect(() => k.get(KhoVmalloc).restoreVmalloc(d)).toThrow(
      'EINVAL: restoreVmalloc: chunk 0 at 0x100000 is not a preserved page (no KHO stamp of order 0)',
    );
  });

  it('huge flags with order 0 are refused', () => {
    const k = bootCold();
    const d = encodeKhoVmalloc({ first: 0x10_0000, totalPages: 1, flags: KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP, order: 0 });
    expect(() => k.get(KhoVmalloc).restoreVmalloc(d)).toThrow(
      'EINVAL: restoreVmalloc: order 0 with flags 0x3 (KHO_VMALLOC_HUGE_VMAP goes with an order above 0, and only with one)',
    );
    expect(VM_HUGE_VMAP).toBe(KHO_VMALLOC_HUGE_VMAP);
  });
});

function hexOf(n: number): string {
  return `0x${n.toString(16)}`;
}
