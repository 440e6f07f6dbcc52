import { Errno, KernelError, hex, type Kernel } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Folio, Memmap, PAGE_SIZE, PhysicalMemory, createMachine, physmemModule, ORDER_0, pfn, toOrder, type Pfn, type PhysAddr } from '@kho/physmem';
import { Kho, hasStamp, khoModule } from '@kho/kho-core';
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { createKhoArray, type KhoArray, type KhoArrayPreserver } from './array';
import { KhoArrays } from './arrays';
import { khoArrayModule } from './module';
import { HOSTILE_CASES, HOSTILE_POSITIONS, arrayTestMachine, writeHostileBase } from './testing';
import type { U64 } from './u64';

// memblock and radix-tracker are test-only dependencies (devDependencies): a full kernel needs an early
// allocator and a tracker, and this package must not depend on them.
const image = () => [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), khoArrayModule()];
const boot = (): Kernel => createMachine({ mem: '512M' }).boot({ image: image() });

/** A mix: a dense run across pages, clusters, isolated entries, 50-bit and larger jumps, 62-bit positions, and the top. */
function sampleEntries(version: 0 | 1): Array<[U64, U64]> {
  const out: Array<[U64, U64]> = [];
  for (let i = 0; i < 1200; i++) out.push([i, 2 * i + 1]);
  for (let c = 0; c < 5; c++) for (let i = 0; i < 40; i++) out.push([100_000 * (c + 1) + i, 8 * (c * 40 + i + 1)]);
  out.push([2 ** 40, 0x7], [2 ** 40 + 2 ** 50, 0x9], [2 ** 40 + 2 ** 51 + 1, 0xb]);
  for (let i = 0n; i < 20n; i++) out.push([2n ** 61n + i * 2n ** 55n + i, 2n ** 63n + 2n * i + 1n]);
  out.push([version === 0 ? 2n ** 64n - 1000n : 2n ** 64n - 1n, 2n ** 64n - 8n]);
  return out;
}

function readWithIterator(a: KhoArray): Array<[U64, U64]> {
  const out: Array<[U64, U64]> = [];
  while (a.next()) out.push([a.pos, a.get()]);
  return out;
}

function isStamped(memmap: Memmap, phys: number): boolean {
  return hasStamp(memmap, pfn(phys / PAGE_SIZE), ORDER_0);
}

describe('a live update carries an array', () => {
  const coldFree = (() => {
    return boot().get(BuddyAllocator).nrFreePages;
  })();

  it.each([0, 1] as const)('v%d: preserve, kexec, restore, read the same entries; destroy frees every page', (version) => {
    const k1 = boot();
    const kho1 = k1.get(Kho);
    const entries = sampleEntries(version);
    const a = k1.get(KhoArrays).create(version);
    a.writeAll(entries.slice(0, 1000));
    a.preserve();
    a.writeAll(entries.slice(1000)); // pages allocated after preserve are preserved as they come
    const pages = a.pagePhys();
    const blob = kho1.allocPreserve(PAGE_SIZE);
    a.writeDescriptor(blob);
    const empty = k1.get(KhoArrays).create(version);
    empty.preserve();
    empty.writeDescriptor(blob + 16);
    kho1.addSubtree('kho-array-test', blob, 32);

    const k2 = k1.liveUpdate();
    const kho = k2.get(Kho);
    const buddy = k2.get(BuddyAllocator);
    const desc = kho.retrieveSubtree('kho-array-test').phys;
    expect(desc).toBe(blob);
    const free = buddy.nrFreePages;
    const r = k2.get(KhoArrays).restore(desc);
    expect([r.mode, r.version, r.nrPages]).toEqual(['restore', version, pages.length]);
    expect(r.pagePhys()).toEqual(pages);
    expect(readWithIterator(r)).toEqual(entries);
    expect(() => r.set(1)).toThrow(`EPERM: kho array: set at position ${String(r.pos)} in restore mode (wanted an array opened for write)`);
    expect(buddy.nrFreePages).toBe(free);

    r.destroy();
    expect(buddy.nrFreePages).toBe(free + pages.length);
    const e = k2.get(KhoArrays).restore(desc + 16);
    expect([e.nrPages, e.next(), e.readAll()]).toEqual([0, false, []]);
    kho.restoreFree(desc);
    const fin = k2.finish();
    expect(fin.plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    expect(buddy.nrFreePages).toBe(coldFree); // nothing leaked: the same as a cold boot
  });

  it('a restored array can be preserved again for the next update', () => {
    const k1 = boot();
    const a = k1.get(KhoArrays).create(1);
    const entries = sampleEntries(1);
    a.writeAll(entries);
    a.preserve();
    const blob = k1.get(Kho).allocPreserve(PAGE_SIZE);
    a.writeDescriptor(blob);
    k1.get(Kho).addSubtree('karr', blob, 16);

    const k2 = k1.liveUpdate();
    const r2 = k2.get(KhoArrays).restore(k2.get(Kho).retrieveSubtree('karr').phys);
    r2.preserve();
    const blob2 = k2.get(Kho).allocPreserve(PAGE_SIZE);
    r2.writeDescriptor(blob2);
    k2.get(Kho).addSubtree('karr', blob2, 16);
    k2.get(Kho).restoreFree(blob);

    const k3 = k2.liveUpdate();
    const r3 = k3.get(KhoArrays).restore(k3.get(Kho).retrieveSubtree('karr').phys);
    expect(r3.readAll()).toEqual(entries);
    r3.destroy();
  });
});

describe('restore refuses a hostile array before taking any page', () => {
  // One live update carries one valid copy of the base array per case; each case then corrupts its copy.
  const cases = [
    { name: 'v0: a valid array (control)', version: 0 as const, corrupt: () => undefined, message: () => '' },
    { name: 'v1: a valid array (control)', version: 1 as const, corrupt: () => undefined, message: () => '' },
    ...HOSTILE_CASES,
  ];
  let k2: Kernel;
  let blob: number;
  const pagesOf: number[][] = [];
  /** One more valid v1 array, after the cases' ones. */
  const spare = cases.length;

  beforeAll(() => {
    const k1 = boot();
    const kho = k1.get(Kho);
    blob = kho.allocPreserve(PAGE_SIZE);
    cases.forEach((c, i) => {
      const a = k1.get(KhoArrays).create(c.version);
      writeHostileBase(a);
      a.preserve();
      a.writeDescriptor(blob + 16 * i);
      pagesOf.push(a.pagePhys());
    });
    const a = k1.get(KhoArrays).create(1);
    writeHostileBase(a);
    a.preserve();
    a.writeDescriptor(blob + 16 * spare);
    pagesOf.push(a.pagePhys());
    kho.addSubtree('kho-array-hostile', blob as PhysAddr, PAGE_SIZE);
    k2 = k1.liveUpdate();
  });

  it.each(cases.map((c, i) => [c.name, i] as const))('%s', (_name, i) => {
    const c = cases[i];
    const pages = pagesOf[i];
    const desc = blob + 16 * i;
    const memmap = k2.get(Memmap);
    c.corrupt(k2.get(PhysicalMemory), pages, desc);
    const msg = c.message(pages);
    if (msg === '') {
      const r = k2.get(KhoArrays).restore(desc);
      expect(r.readAll()).toHaveLength(HOSTILE_POSITIONS[c.version].length);
      expect(pages.every((p) => !isStamped(memmap, p))).toBe(true); // restored: the stamps are consumed
      return;
    }
    let err: unknown;
    try {
      k2.get(KhoArrays).restore(desc);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).message).toBe(msg);
    expect(pages.every((p) => isStamped(memmap, p))).toBe(true); // nothing restored
  });

  it('a page without its KHO stamp is found before any page is restored', () => {
    const memmap = k2.get(Memmap);
    const pages = pagesOf[spare];
    const stolen = k2.get(Kho).restoreFolio((pages[1]) as PhysAddr); // restored behind the array's back
    expect(() => k2.get(KhoArrays).restore(blob + 16 * spare)).toThrow(
      `EINVAL: kho array: restore: page ${hex(pages[1])} has no KHO stamp of order 0 (it was not preserved as an array page, or is restored already)`,
    );
    expect(isStamped(memmap, pages[0])).toBe(true);
    k2.get(BuddyAllocator).folioPut(stolen);
  });
});

describe('preserve unwinds exactly', () => {
  /** A KHO stand-in that records preserved pages and fails the n-th preserve. */
  function fakeKho(failAt: number): KhoArrayPreserver & { preserved: Set<number>; calls: number } {
    const preserved = new Set<number>();
    const fake = {
      preserved,
      calls: 0,
      preserveFolio(f: Folio): void {
        if (++fake.calls === failAt) throw new KernelError(Errno.ENOMEM, 'fake: no memory for the tracker');
        preserved.add(f.phys);
      },
      unpreserveFolio(f: Folio): void {
        if (!preserved.delete(f.phys)) throw new Error(`unpreserve of ${hex(f.phys)} that was not preserved`);
      },
      restoreFolio(phys: number): Folio {
        return new Folio((phys / PAGE_SIZE) as Pfn, toOrder(0));
      },
      isPreservedIncoming(): boolean {
        return false;
      },
    };
    return fake;
  }

  it.each([1, 2, 5, 9])('a failure at page %d leaves nothing preserved', (failAt) => {
    const m = arrayTestMachine();
    const kho = fakeKho(failAt);
    const a = createKhoArray({ ...m.ctx, kho }, 0);
    for (let i = 0; i < 9; i++) {
      a.seek(i * 1000);
      a.setValue(i);
    }
    expect(a.nrPages).toBe(9);
    expect(() => a.preserve()).toThrow('ENOMEM: fake: no memory for the tracker');
    expect(kho.preserved.size).toBe(0);
    expect(a.preserved).toBe(false);
    a.preserve(); // the next attempt succeeds
    expect(kho.preserved).toEqual(new Set(a.pagePhys()));
    expect(() => a.preserve()).toThrow('EEXIST: kho array: preserve: the array is already preserved');
    a.unpreserve();
    expect(kho.preserved.size).toBe(0);
    expect(() => a.unpreserve()).toThrow('ENOENT: kho array: unpreserve: the array is not preserved');
  });

  it('a preserved array that cannot preserve a new page frees it and stays as it was', () => {
    for (const version of [0, 1]) {
      const m = arrayTestMachine();
      const kho = fakeKho(3);
      const a = createKhoArray({ ...m.ctx, kho }, version);
      a.writeAll(Array.from({ length: 1016 }, (_, i) => [i, 1] as const)); // two full pages in both versions
      a.preserve();
      const before = a.readAll();
      const free = m.buddy.nrFreePages;
      a.seek(5000);
      expect(() => a.setValue(2)).toThrow('ENOMEM: fake: no memory for the tracker');
      expect([a.nrPages, m.buddy.nrFreePages, kho.preserved.size]).toEqual([2, free, 2]);
      expect(a.readAll()).toEqual(before);
      a.setValue(2);
      expect(kho.preserved).toEqual(new Set(a.pagePhys()));
      a.destroy();
      expect(kho.preserved.size).toBe(0);
    }
  });

  it('with the real tracker: failed page allocations during preserve change nothing', () => {
    const k1 = boot();
    const kho = k1.get(Kho);
    const faults = k1.get(FaultInjector);
    // Take pages until they come from another 128 MiB region than the root FDT (the only preserved block so
    // far): the array's pages then need a new radix leaf, whose allocation is made to fail.
    const buddy = k1.get(BuddyAllocator);
    const region = (phys: number): number => Math.floor(phys / 2 ** 27);
    const hog: Folio[] = [];
    do hog.push(buddy.folioAlloc(0));
    while (region(hog[hog.length - 1].phys) === region(kho.rootFdtPhys));
    buddy.folioPut(hog.pop()!);
    const a = k1.get(KhoArrays).create(1);
    a.writeAll(Array.from({ length: 5000 }, (_, i) => [i, 1] as const));
    const blocks = kho.stats().trackerBlocks;
    let failures = 0;
    for (let n = 1; ; n++) {
      faults.configure({ failNth: n });
      try {
        a.preserve();
        break;
      } catch (e) {
        expect((e as KernelError).errno).toBe(Errno.ENOMEM);
        expect(kho.stats().trackerBlocks).toBe(blocks);
        expect(a.preserved).toBe(false);
        failures++;
      }
    }
    faults.reset();
    for (const f of hog) buddy.folioPut(f);
    expect(kho.stats().trackerBlocks).toBe(blocks + a.nrPages);
    expect(failures).toBeGreaterThanOrEqual(1); // the test did make preserve fail
  });
});
