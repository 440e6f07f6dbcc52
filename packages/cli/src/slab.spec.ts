import { Errno, KernelError, type Kernel, type Machine } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, PAGE_SIZE, PhysicalMemory, Slab } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KhoSlab } from '@kho/kho-slab';
import { KHO_SLAB_ENTRY_SIZE, KHO_SLAB_HEADER_SIZE } from '@kho/kho-slab/abi';
import { DEFAULT_DEMO, coldBootFreePages } from './demo/run';
import { kernelImage, machineFor, idlePages } from './system';

const MiB = 2 ** 20;
const h = (n: number): string => `0x${n.toString(16)}`;

/** Distinct bytes for object `tag`, `len` long. */
function pattern(tag: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let j = 0; j < len; j++) out[j] = (tag * 37 + j * 11 + 5) & 0xff;
  return out;
}

interface Obj {
  readonly ptr: number;
  readonly size: number;
  readonly tag: number;
}

function boot(): { machine: Machine; k1: Kernel } {
  const machine = machineFor({ ram: 512 * MiB });
  return { machine, k1: machine.boot({ image: kernelImage() }) };
}

function coldFree(machine: Machine): number {
  return coldBootFreePages(machine.device(PhysicalMemory).ranges, { ...DEFAULT_DEMO, ram: 512 * MiB, cmdline: '' });
}

/** Allocates `perSize` objects of each size (so small ones share slabs), fills each with its pattern. */
function allocate(k: Kernel, sizes: readonly number[], perSize: number): Obj[] {
  const slab = k.get(Slab);
  const ram = k.get(PhysicalMemory);
  const objs: Obj[] = [];
  for (const size of sizes) {
    for (let i = 0; i < perSize; i++) {
      const ptr = slab.kmalloc(size);
      const tag = objs.length;
      ram.write(ptr, pattern(tag, size));
      objs.push({ ptr, size, tag });
    }
  }
  return objs;
}

describe('kmalloc objects through a real kexec', () => {
  it('objects of several sizes on shared slabs, some preserved: each comes back with its bytes, kfree works, neighbours were free, nothing leaks', () => {
    const { machine, k1 } = boot();
    const objs = allocate(k1, [8, 24, 96, 200, 700, 3000, 8000, 20_000], 6);
    const preserved = objs.filter((o) => o.tag % 3 !== 1);
    const neighbours = objs.filter((o) => o.tag % 3 === 1 && o.size <= 8192);
    const ks1 = k1.get(KhoSlab);
    for (const o of preserved) ks1.preserveSlab(o.ptr);
    const sizesBefore = new Map(preserved.map((o) => [o.ptr, k1.get(Slab).ksize(o.ptr)]));
    const slabs = ks1.stats().preservedSlabs + ks1.stats().preservedLarge;

    const k2 = k1.liveUpdate();
    const ks2 = k2.get(KhoSlab);
    const slab2 = k2.get(Slab);
    const ram = k2.get(PhysicalMemory);
    expect(ks2.stats()).toMatchObject({ incomingSlabs: slabs, incomingObjects: preserved.length, restoredObjects: 0 });
    expect(k2.restore().ok).toBe(true);
    for (const o of preserved) {
      expect(ks2.restoreSlab(o.ptr)).toBe(o.ptr);
      expect(ram.read(o.ptr, o.size)).toEqual(pattern(o.tag, o.size));
      expect(slab2.ksize(o.ptr)).toBe(sizesBefore.get(o.ptr));
      expect(slab2.objectAt(o.ptr).state).toBe('allocated');
    }
    // the neighbours nobody preserved share the restored slabs and are free; kmalloc may hand them out
    for (const n of neighbours) expect(slab2.objectAt(n.ptr).state).toBe('free');
    slab2.checkInvariants();
    const fin = k2.finish();
    expect(fin.ok).toBe(true);
    expect(fin.plugins['kho-slab'].report).toEqual({
      slabs,
      restoredObjects: preserved.length,
      releasedObjects: 0,
      released: [],
      unrestoredSlabs: 0,
      unrestoredBytes: 0,
    });
    expect(fin.plugins.kho.report).toEqual({ unrestoredBlocks: 0, unrestoredBytes: 0, unrestored: [] });
    for (const o of preserved) slab2.kfree(o.ptr);
    expect(slab2.slabInfo().totalBytes).toBe(0);
    expect(idlePages(k2)).toBe(coldFree(machine));
  });

  it('chains: a restored object is preserved again with a new neighbour, and the next kernel gets both', () => {
    const { machine, k1 } = boot();
    const [a] = allocate(k1, [96], 1);
    k1.get(KhoSlab).preserveSlab(a.ptr);
    const k2 = k1.liveUpdate();
    const ks2 = k2.get(KhoSlab);
    ks2.restoreSlab(a.ptr);
    const b = k2.get(Slab).kmalloc(90); // the next free object of the restored slab
    expect(b).toBe(a.ptr + 96);
    k2.get(PhysicalMemory).write(b, pattern(99, 90));
    ks2.preserveSlab(a.ptr);
    ks2.preserveSlab(b);
    expect(k2.finish().ok).toBe(true);
    const k3 = k2.liveUpdate();
    const ks3 = k3.get(KhoSlab);
    const ram = k3.get(PhysicalMemory);
    expect(ks3.restoreSlab(b)).toBe(b);
    expect(ks3.restoreSlab(a.ptr)).toBe(a.ptr);
    expect(ram.read(a.ptr, 96)).toEqual(pattern(a.tag, 96));
    expect(ram.read(b, 90)).toEqual(pattern(99, 90));
    expect(k3.finish().ok).toBe(true);
    k3.get(Slab).kfree(a.ptr);
    k3.get(Slab).kfree(b);
    expect(idlePages(k3)).toBe(coldFree(machine));
  });

  it('preserved objects nobody restores are freed at finish on a restored slab; a slab nothing was restored from stays reserved', () => {
    const { k1 } = boot();
    const [a, b, c] = allocate(k1, [64, 64, 512], 1).map((o) => o.ptr);
    const ks1 = k1.get(KhoSlab);
    for (const p of [a, b, c]) ks1.preserveSlab(p);
    const k2 = k1.liveUpdate();
    const ks2 = k2.get(KhoSlab);
    const slab2 = k2.get(Slab);
    ks2.restoreSlab(a);
    expect(slab2.objectAt(b).state).toBe('awaiting');
    expect(() => slab2.kfree(b)).toThrow(/is awaiting its restore \(not allocated\)$/);
    const fin = k2.finish();
    expect(fin.plugins['kho-slab'].report).toEqual({
      slabs: 2,
      restoredObjects: 1,
      releasedObjects: 1,
      released: [h(b)],
      unrestoredSlabs: 1,
      unrestoredBytes: 8192,
    });
    expect(fin.plugins.kho.report).toEqual({ unrestoredBlocks: 1, unrestoredBytes: 8192, unrestored: [{ phys: h(c), order: 1 }] });
    expect(k2.log.filter('warn', 'kho-slab').map((l) => l.message)).toEqual([
      'finish: 1 preserved slab objects were never restored; they are free now',
      'finish: nothing was restored from 1 preserved slabs (8.00 KiB); they stay reserved',
    ]);
    expect(slab2.objectAt(b).state).toBe('free');
    expect(() => ks2.restoreSlab(b)).toThrow(`EINVAL: restoreSlab(${h(b)}): slab restore is over (finishSlabs has run)`);
    slab2.kfree(a);
    slab2.checkInvariants();
  });

  it('restoring twice, a neighbour, a misaligned address, the inside of a large kmalloc or memory outside any slab is EINVAL with a warning', () => {
    const { k1 } = boot();
    const [a, n, big] = allocate(k1, [100, 100, 30_000], 1).map((o) => o.ptr);
    const ks1 = k1.get(KhoSlab);
    ks1.preserveSlab(a);
    ks1.preserveSlab(big);
    const k2 = k1.liveUpdate();
    const ks2 = k2.get(KhoSlab);
    const slabAt = h(a - (a % PAGE_SIZE));
    ks2.restoreSlab(a);
    ks2.restoreSlab(big);
    const cases: Array<[number, string]> = [
      [a, `object 0 of the preserved kmalloc-128 slab at ${slabAt} was restored already`],
      [n, `object 1 of the preserved kmalloc-128 slab at ${slabAt} was not preserved`],
      [a + 8, `8 bytes into object 0 of the preserved kmalloc-128 slab at ${slabAt}`],
      [big, `the preserved large kmalloc at ${h(big)} was restored already`],
      [big + PAGE_SIZE, `inside the preserved large kmalloc at ${h(big)} (not its start)`],
      [0x1000, 'not inside any preserved slab'],
    ];
    for (const [ptr, why] of cases) {
      const e = (() => {
        try {
          ks2.restoreSlab(ptr);
        } catch (err) {
          return err as KernelError;
        }
        throw new Error(`restoreSlab(${h(ptr)}) did not fail`);
      })();
      expect(e.errno).toBe(Errno.EINVAL);
      expect(e.message).toBe(`EINVAL: restoreSlab(${h(ptr)}): ${why}`);
    }
    expect(k2.log.filter('warn', 'kho-slab').map((l) => l.message)).toEqual(cases.map(([ptr, why]) => `restoreSlab(${h(ptr)}): ${why}`));
    // the failures changed nothing: the restored objects are still live and free normally
    k2.get(Slab).kfree(a);
    k2.get(Slab).kfree(big);
  });

  it.each([
    ['the first object of a new slab', 100],
    ['a large kmalloc', 50_000],
  ])('a failure at any allocation while preserving %s unwinds exactly; then the kexec carries it', (_, size) => {
    const { k1 } = boot();
    const [o] = allocate(k1, [size], 1);
    const ks = k1.get(KhoSlab);
    const kho = k1.get(Kho);
    const buddy = k1.get(BuddyAllocator);
    const faults = k1.get(FaultInjector);
    const snapshot = () => ({ slab: ks.stats(), tracker: kho.stats().trackerBlocks, subtrees: kho.subtrees(), free: buddy.nrFreePages });
    const before = snapshot();
    let failures = 0;
    for (let n = 1; ; n++) {
      faults.configure({ failNth: n });
      try {
        ks.preserveSlab(o.ptr);
        break;
      } catch (e) {
        expect((e as KernelError).errno).toBe(Errno.ENOMEM);
        expect(snapshot()).toEqual(before);
        failures++;
      }
    }
    faults.reset();
    expect(failures).toBeGreaterThanOrEqual(2); // the table page and the subtree's FDT at least
    const k2 = k1.liveUpdate();
    expect(k2.get(KhoSlab).restoreSlab(o.ptr)).toBe(o.ptr);
    expect(k2.get(PhysicalMemory).read(o.ptr, o.size)).toEqual(pattern(o.tag, o.size));
  });
});

describe('a hostile slab table is refused before anything is adopted', () => {
  interface Handover {
    table: number;
    blob: number;
    slab: number;
    a: number;
  }

  const u32 = (ram: PhysicalMemory, at: number, v: number) => ram.writeU32(at, v);
  const entry = (t: Handover, field: number): number => t.table + KHO_SLAB_HEADER_SIZE + field;

  it.each<[string, (ram: PhysicalMemory, t: Handover) => void, (t: Handover) => string]>([
    ['a bad magic', (ram, t) => u32(ram, t.table, 0), (t) => `table page ${h(t.table)}: magic 0x0 (wanted 0x4b534c42)`],
    ['a newer version', (ram, t) => ram.writeU16(t.table + 4, 2), (t) => `table page ${h(t.table)}: version 2 (wanted 1)`],
    ['a bit beyond the slab', (ram, t) => ram.writeU8(entry(t, 16 + 5), 0x04), (t) => `table page ${h(t.table)}: entry 0: bit 42 is set, beyond the slab's 32 objects`],
    ['an object size no cache has', (ram, t) => u32(ram, entry(t, 8), 40), (t) => `the kmalloc-40 entry at ${h(t.slab)}: object size 40 is not a kmalloc cache of this kernel`],
    ['a block that was not preserved', (ram, t) => ram.writeU64(entry(t, 0), t.slab + 16 * PAGE_SIZE), (t) => `the kmalloc-128 entry at ${h(t.slab + 16 * PAGE_SIZE)}: ${h(t.slab + 16 * PAGE_SIZE)} is not a preserved block of order 0`],
    ['a table that loops', (ram, t) => ram.writeU64(t.table + 8, t.table), (t) => `table page ${h(t.table)} is reached twice (a loop)`],
    ['a next page that was not preserved', (ram, t) => ram.writeU64(t.table + 8, t.table + 64 * PAGE_SIZE), (t) => `table page 1: ${h(t.table + 64 * PAGE_SIZE)} is not a preserved block of order 0`],
    ['two entries for one slab', (ram, t) => {
      ram.write(entry(t, KHO_SLAB_ENTRY_SIZE), ram.read(entry(t, 0), KHO_SLAB_ENTRY_SIZE));
      ram.writeU16(t.table + 6, 2);
    }, (t) => `blocks at ${h(t.slab)} and ${h(t.slab)} overlap`],
    ['another compatible string', (ram, t) => {
      const bytes = ram.read(t.blob, PAGE_SIZE);
      const at = Buffer.from(bytes).indexOf('kho-slab-v1');
      ram.writeU8(t.blob + at + 10, '9'.charCodeAt(0));
    }, () => "compatible is 'kho-slab-v9' (wanted 'kho-slab-v1')"],
  ])('%s', (_, corrupt, reason) => {
    const { machine, k1 } = boot();
    const [a] = allocate(k1, [100], 1);
    const ks1 = k1.get(KhoSlab);
    ks1.preserveSlab(a.ptr);
    const st = ks1.stats();
    const t: Handover = { table: st.tablePages[0], blob: st.blobPhys, slab: a.ptr - (a.ptr % PAGE_SIZE), a: a.ptr };
    const params = k1.jump();
    corrupt(machine.device(PhysicalMemory), t);
    const k2 = machine.bootFrom(params, { image: kernelImage() });
    const why = reason(t);
    expect(k2.get(Kho).isKhoBoot()).toBe(true);
    expect(k2.log.filter('error', 'kho-slab').map((l) => l.message)).toEqual([`refusing the incoming slab table: ${why}; its slabs stay reserved`]);
    const ks2 = k2.get(KhoSlab);
    expect(ks2.stats()).toMatchObject({ incomingSlabs: 0, refusal: why });
    expect(() => ks2.restoreSlab(a.ptr)).toThrow(`EINVAL: restoreSlab(${h(a.ptr)}): the incoming slab table was refused (${why})`);
    // nothing was adopted: the slab page is still reserved, not a slab of this kernel
    expect(() => k2.get(Slab).objectAt(a.ptr)).toThrow(/not a kmalloc object/);
    const fin = k2.finish();
    expect(fin.ok).toBe(true);
    expect(fin.plugins.kho.report?.unrestoredBlocks).toBe(3); // the slab, the table page, the subtree's FDT
  });
});
