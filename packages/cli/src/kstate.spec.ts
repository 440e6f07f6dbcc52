import { Errno, KernelError, type Kernel, type KernelModule } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Folio, PAGE_SIZE, PhysicalMemory, createMachine, physmemModule, pfn, toOrder } from '@kho/physmem';
import { Kho, khoModule } from '@kho/kho-core';
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { Vmalloc, vmallocModule } from '@kho/vmalloc';
import {
  KSTATE_SUBTREE,
  KState,
  array,
  describeState,
  dumpStream,
  folio,
  instanceIdOf,
  kstateModule,
  physRange,
  str,
  u32,
  u64,
  vmallocBuf,
  type FinishReport,
} from '@kho/kstate';

/** kstate across real kexecs: the full kernel image, memblock and the radix tracker included. */

function image(): KernelModule[] {
  return [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), vmallocModule(), kstateModule()];
}

interface Region {
  start: number;
  size: number;
}

interface Stats {
  hits: number;
}

interface Ring {
  name: string;
  seq: bigint;
  head: number;
  buf: Folio | null;
  log: number;
  region: Region | null;
  slots: Array<{ id: number }>;
  hits: number;
}

const Slot = describeState<{ id: number }>({ name: 'ring-slot', version: 1, fields: [u32('id')] });
const RingStats = describeState<Stats>({ name: 'ring-stats', version: 1, fields: [u32('hits')] });
const RingV1 = describeState<Ring>({
  name: 'ring',
  version: 1,
  fields: [str('name', 16), folio('buf'), vmallocBuf('log'), physRange('region'), array('slots', Slot)],
});
const RingV2 = describeState<Ring>({
  name: 'ring',
  version: 2,
  minVersion: 1,
  oldestReader: 1,
  fields: [str('name', 16), u64('seq', { since: 2 }), u32('head', { since: 2 }), folio('buf'), vmallocBuf('log'), physRange('region'), array('slots', Slot)],
  subsections: [{ desc: RingStats, needed: (r) => r.hits > 0 }],
});

function pattern(len: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 131 + seed * 7) & 0xff);
}

/** A ring with a folio, a vmalloc buffer and a phys range, each filled with a distinct pattern. */
function makeRing(k: Kernel, seed: number): Ring {
  const ram = k.get(PhysicalMemory);
  const buddy = k.get(BuddyAllocator);
  const vm = k.get(Vmalloc);
  const buf = buddy.folioAlloc(3);
  ram.write(buf.phys, pattern(buf.size, seed));
  const log = vm.vmalloc(64 * 1024);
  vm.write(log, pattern(64 * 1024, seed + 1));
  const pfn = buddy.allocPages(2);
  ram.write(pfn * PAGE_SIZE, pattern(4 * PAGE_SIZE, seed + 2));
  return { name: `ring${seed}`, seq: 2n ** 40n + BigInt(seed), head: seed, buf, log, region: { start: pfn * PAGE_SIZE, size: 4 * PAGE_SIZE }, slots: [{ id: seed }, { id: seed + 1 }], hits: seed };
}

function freeRing(k: Kernel, r: Ring): void {
  k.get(BuddyAllocator).folioPut(r.buf!);
  k.get(Vmalloc).vfree(r.log);
  for (let i = 0; i < r.region!.size / PAGE_SIZE; i++) k.get(BuddyAllocator).freePages(pfn(r.region!.start / PAGE_SIZE + i), toOrder(0));
}

function expectBytes(k: Kernel, r: Ring, seed: number): void {
  const ram = k.get(PhysicalMemory);
  expect(Buffer.compare(ram.read(r.buf!.phys, r.buf!.size), pattern(8 * PAGE_SIZE, seed))).toBe(0);
  expect(Buffer.compare(k.get(Vmalloc).read(r.log, 64 * 1024), pattern(64 * 1024, seed + 1))).toBe(0);
  expect(Buffer.compare(ram.read(r.region!.start, r.region!.size), pattern(4 * PAGE_SIZE, seed + 2))).toBe(0);
}

function coldBootFreePages(): number {
  const m = createMachine({ mem: '512M' });
  const free = m.boot({ image: image() }).get(BuddyAllocator).nrFreePages;
  m.shutdown();
  return free;
}

describe('kstate across a live update', () => {
  it('restores every field and the memory they point at; finish leaves nothing preserved and nothing leaked', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: image() });
    const rings = [makeRing(k1, 1), makeRing(k1, 2)];
    k1.get(KState).register(RingV2, instanceIdOf('ring-a'), rings[0]);
    k1.get(KState).register(RingV2, instanceIdOf('ring-b'), rings[1]);
    const k2 = k1.liveUpdate();
    const phase = k2.restore();
    expect(phase.ok).toBe(true);
    expect(phase.plugins.kstate.report).toMatchObject({ sections: 2, schemas: 3, segments: 1 });
    const ks = k2.get(KState);
    for (const [i, name] of ['ring-a', 'ring-b'].entries()) {
      const r = ks.restore(RingV2, instanceIdOf(name));
      expect(r.restored).toEqual(['name', 'seq', 'head', 'buf', 'log', 'region', 'slots', 'ring-stats/hits']);
      expect(r.object).toMatchObject({ name: rings[i].name, seq: rings[i].seq, head: rings[i].head, slots: rings[i].slots, hits: rings[i].hits, region: rings[i].region });
      expect(r.object.buf).toEqual(rings[i].buf);
      expectBytes(k2, r.object, i + 1);
      freeRing(k2, r.object);
    }
    const fin = k2.finish();
    expect(fin.ok).toBe(true);
    expect(fin.plugins.kstate.report).toEqual({ sections: 2, restored: 2, unrestored: [], strandedMemory: [], streamPagesFreed: 1 });
    expect(fin.plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldBootFreePages());
  });

  it('v1 data is read by v2 code in the next kernel, and v2 data by v1 code, with reports', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: image() });
    const r1 = makeRing(k1, 3);
    k1.get(KState).register(RingV1, 'old', r1);
    const k2 = k1.liveUpdate();
    const up = k2.get(KState).restore(RingV2, 'old', { seq: 9n, head: 4, hits: 0 } as Ring);
    expect(up.defaulted).toEqual(['seq', 'head']);
    expect(up.object).toMatchObject({ seq: 9n, head: 4, name: 'ring3' });
    expectBytes(k2, up.object, 3);
    // The v2 kernel saves the same ring again; a v1 kernel reads it.
    up.object.hits = 5;
    k2.get(KState).register(RingV2, 'old', up.object);
    k2.finish();
    const k3 = k2.liveUpdate();
    const down = k3.get(KState).restore(RingV1, 'old');
    expect(down.skippedFields).toEqual(['seq', 'head']);
    expect(down.skippedSubsections).toEqual(['ring-stats']);
    expectBytes(k3, down.object, 3);
  });

  it('kho inspect can dump the stream from memory alone, found through the kstate subtree', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: image() });
    k1.get(KState).register(RingV2, 7, makeRing(k1, 4));
    k1.prepare();
    const root = k1.get(KState).savedStats!.rootPhys;
    k1.serialize();
    const params = k1.jump();
    const ram = machine.device(PhysicalMemory);
    const d = dumpStream(ram, root);
    expect(d.sections).toEqual([expect.objectContaining({ id: 'ring', instance: 7, fields: expect.objectContaining({ name: 'ring4', seq: String(2n ** 40n + 4n), head: 4 }) })]);
    const k2 = machine.bootFrom(params, { image: image() });
    expect(k2.get(Kho).retrieveSubtree(KSTATE_SUBTREE).phys).toBe(root);
  });

  it('sections nobody restores are named at finish with their memory, which stays preserved', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: image() });
    const ring = makeRing(k1, 5);
    k1.get(KState).register(RingV2, 'lost', ring);
    const k2 = k1.liveUpdate();
    k2.restore();
    const fin = k2.finish();
    const report = fin.plugins.kstate.report as unknown as FinishReport;
    expect(report.unrestored).toEqual([
      {
        id: 'ring',
        name: 'ring',
        instance: "'lost'",
        memory: [`buf: folio 0x${ring.buf!.phys.toString(16)} order 3`, expect.stringMatching(/^log: vmalloc 16 pages/), `region: phys range 0x${ring.region!.start.toString(16)}+0x4000`],
      },
    ]);
    expect((fin.plugins.kho.report as { unrestoredBlocks: number }).unrestoredBlocks).toBeGreaterThan(3);
  });
});

describe('kstate unwinding in a real kernel', () => {
  it('a page allocation failing at any point of prepare leaves nothing preserved; cancel undoes a good one', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: image() });
    k1.get(KState).register(RingV2, 1, makeRing(k1, 6));
    k1.get(KState).register(RingV2, 2, makeRing(k1, 7));
    const kho = k1.get(Kho);
    const faults = k1.get(FaultInjector);
    const buddy = k1.get(BuddyAllocator);
    const before = kho.stats();
    let failures = 0;
    for (let nth = 1; nth < 200; nth++) {
      const free0 = buddy.nrFreePages;
      const pages0 = kho.stats().trackerPages;
      const injected = faults.injected;
      faults.configure({ failNth: nth });
      try {
        k1.prepare();
      } catch (e) {
        expect((e as KernelError).errno).toBe(Errno.ENOMEM);
        expect((e as KernelError).message).toMatch(/^ENOMEM: live update prepare failed in plugin 'kstate': ENOMEM: /);
        failures++;
        const after = kho.stats();
        expect(after.trackerBlocks).toBe(before.trackerBlocks);
        expect(after.subtrees).not.toContain(KSTATE_SUBTREE);
        // Only tracker nodes built on the way remain (the radix tree keeps empty nodes, as upstream does).
        expect(buddy.nrFreePages).toBe(free0 - (after.trackerPages - pages0));
        continue;
      } finally {
        faults.reset();
      }
      expect(k1.state).toBe('prepared');
      k1.cancel();
      expect(kho.stats().trackerBlocks).toBe(before.trackerBlocks);
      expect(kho.stats().subtrees).not.toContain(KSTATE_SUBTREE);
      if (faults.injected === injected) break;
    }
    expect(failures).toBeGreaterThan(4);
    const k2 = k1.liveUpdate();
    expect(k2.get(KState).restore(RingV2, 1).object.name).toBe('ring6');
  });

  it('a corrupted stream is refused in the next kernel: reported at restore, never a crash', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: image() });
    k1.get(KState).register(RingV2, 1, makeRing(k1, 8));
    k1.prepare();
    const root = k1.get(KState).savedStats!.rootPhys;
    k1.serialize();
    const params = k1.jump();
    const ram = machine.device(PhysicalMemory);
    ram.writeU8(root + 100, ram.readU8(root + 100) ^ 0x10);
    const k2 = machine.bootFrom(params, { image: image() });
    const phase = k2.restore();
    expect(phase.plugins.kstate.ok).toBe(false);
    expect(phase.plugins.kstate.error).toMatch(/^EINVAL: kstate: record at byte \d+: checksum 0x[0-9a-f]+ \(computed 0x[0-9a-f]+\); the stream is corrupt$/);
    expect(() => k2.get(KState).restore(RingV2, 1)).toThrow(KernelError);
    expect(k2.finish().plugins.kstate.report).toEqual({ error: phase.plugins.kstate.error });
  });
});
