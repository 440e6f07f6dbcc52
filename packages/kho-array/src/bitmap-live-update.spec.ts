import fc from 'fast-check';
import { seededRandom, type BootParams, type Kernel, type KernelModule, type Machine } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, type Folio, PAGE_SIZE, PhysicalMemory, createMachine, physmemModule, type PhysAddr } from '@kho/physmem';
import { Kho, Tracker, khoModule, readableGenerations } from '@kho/kho-core';
import { Memblock, memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { BitmapTracker } from './bitmap-tracker';
import { bitmapArrayTrackerModule, bitmapChunksTrackerModule } from './module';

// memblock and radix-tracker are test-only dependencies (devDependencies): a full kernel needs an early
// allocator, and the radix tree is the tracker the bitmap trackers are compared with.
type TrackerName = 'radix' | 'bitmap-chunks' | 'bitmap-array';
const TRACKERS: Record<TrackerName, { module: () => KernelModule; compatible: string }> = {
  radix: { module: radixTrackerModule, compatible: 'kho-v4' },
  'bitmap-chunks': { module: bitmapChunksTrackerModule, compatible: 'kho-v1' },
  'bitmap-array': { module: bitmapArrayTrackerModule, compatible: 'kho-v1-karr' },
};
const NAMES = Object.keys(TRACKERS) as TrackerName[];
const BITMAPS: TrackerName[] = ['bitmap-chunks', 'bitmap-array'];

const image = (t: TrackerName): KernelModule[] => [physmemModule({ handOffAllRam: false }), memblockModule(), TRACKERS[t].module(), khoModule()];
const newMachine = (): Machine => createMachine({ mem: '512M' });

/** Free pages of a cold boot of a 512 MiB machine with tracker `t` (the leak baseline). */
const coldFree = new Map<TrackerName, number>();
function coldFreePages(t: TrackerName): number {
  if (!coldFree.has(t)) {
    const m = newMachine();
    coldFree.set(t, m.boot({ image: image(t) }).get(BuddyAllocator).nrFreePages);
    m.shutdown();
  }
  return coldFree.get(t)!;
}

interface Preserved {
  phys: number;
  order: number;
  /** A seeded u32 at the start of every page. */
  words: number[];
}

/** Allocates folios of the given orders, writes a seeded word into every page, preserves them. */
function preserveFolios(k: Kernel, orders: readonly number[], seed: number): Preserved[] {
  const buddy = k.get(BuddyAllocator);
  const ram = k.get(PhysicalMemory);
  const kho = k.get(Kho);
  const rand = seededRandom(seed);
  return orders.map((order) => {
    const f = buddy.folioAlloc(order);
    const words = Array.from({ length: 2 ** order }, () => Math.floor(rand() * 2 ** 32));
    words.forEach((w, i) => ram.writeU32(f.phys + i * PAGE_SIZE, w));
    kho.preserveFolio(f);
    return { phys: f.phys, order, words };
  });
}

/** Restores every folio, checks its order and words, frees it. Returns the problems found. */
function restoreFolios(k: Kernel, folios: readonly Preserved[]): string[] {
  const kho = k.get(Kho);
  const ram = k.get(PhysicalMemory);
  const buddy = k.get(BuddyAllocator);
  const problems: string[] = [];
  for (const p of folios) {
    let f: Folio;
    try {
      f = kho.restoreFolio(p.phys as PhysAddr);
    } catch (e) {
      problems.push(`${p.phys}: ${(e as Error).message}`);
      continue;
    }
    if (f.order !== p.order) problems.push(`${p.phys}: order ${f.order} (wanted ${p.order})`);
    p.words.forEach((w, i) => {
      if (ram.readU32(p.phys + i * PAGE_SIZE) !== w) problems.push(`${p.phys}: page ${i} differs`);
    });
    buddy.folioPut(f);
  }
  return problems;
}

describe.each(NAMES)('a live update with the %s tracker', (name) => {
  it('carries random folios: every one comes back with its order and bytes, and nothing leaks (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 10 }), { minLength: 1, maxLength: 24 }), fc.integer({ min: 1, max: 2 ** 31 }), (orders, seed) => {
        const m = newMachine();
        const k1 = m.boot({ image: image(name) });
        const folios = preserveFolios(k1, orders, seed);
        const tracker1 = k1.get<Tracker>(Tracker);
        expect(tracker1.kind).toBe(name);
        expect(k1.get(Kho).generation!.compatible).toBe(TRACKERS[name].compatible);
        const k2 = k1.liveUpdate();
        const kho = k2.get(Kho);
        expect(kho.stats().revivalError).toBeUndefined();
        expect(kho.isKhoBoot()).toBe(true);
        const inc = kho.incomingHandover!;
        expect(inc.pfns.length).toBe(folios.length + 1 + (inc.generation.kexecMetadata ? 1 : 0)); // and the root FDT (and kexec-metadata from kho-v3 on)
        expect(restoreFolios(k2, folios)).toEqual([]);
        expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
        expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldFreePages(name));
        m.shutdown();
      }),
      { numRuns: 4 },
    );
  });
});

describe.each(BITMAPS)('the %s tracker across a kexec', (name) => {
  it('is serialised at the serialize phase, and neither it nor its map is preserved: the next kernel frees them', () => {
    const m = newMachine();
    const k1 = m.boot({ image: image(name) });
    const folios = preserveFolios(k1, [0, 3, 9, 10, 0], 5);
    const tracker = k1.get<Tracker>(Tracker) as BitmapTracker;
    expect(tracker).toBeInstanceOf(BitmapTracker);
    expect(tracker.serialized).toBe(false);
    k1.prepare();
    k1.serialize();
    expect(tracker.serialized).toBe(true);
    const pages = tracker.metadataPfns();
    expect(pages).toHaveLength(tracker.stats().metadataPages);
    const k2 = k1.kexec();
    const inc = k2.get(Kho).incomingHandover!;
    const blocks = inc.pfns.map((p, i) => [p, p + 2 ** inc.orders[i]] as const);
    for (const p of pages) expect(blocks.some(([s, e]) => p >= s && p < e)).toBe(false);
    expect(k2.get(Memblock).reservedByOwner().get('kho')).toBe(folios.reduce((n, f) => n + PAGE_SIZE * 2 ** f.order, PAGE_SIZE));
    expect(restoreFolios(k2, folios)).toEqual([]);
    k2.finish();
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldFreePages(name));
  });

  it('chains: every generation boots with it, restores, preserves again and builds a new map', () => {
    const m = newMachine();
    let k = m.boot({ image: image(name) });
    let folios = preserveFolios(k, [1, 4, 0], 1);
    const maps: number[] = [];
    for (let gen = 2; gen <= 5; gen++) {
      k.prepare();
      k.serialize();
      maps.push(k.get<Tracker>(Tracker).init());
      k = k.kexec();
      expect(k.get(Kho).isKhoBoot()).toBe(true);
      expect(k.get(Kho).incomingHandover!.mapPhys).toBe(maps[maps.length - 1]);
      expect(restoreFolios(k, folios)).toEqual([]);
      expect(k.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
      expect(k.get<Tracker>(Tracker).init()).toBe(0); // this kernel's tracker has no map yet
      folios = preserveFolios(k, [gen % 11, 0, 10], gen);
    }
    expect(maps.every((p) => p > 0)).toBe(true);
    k = k.liveUpdate();
    expect(restoreFolios(k, folios)).toEqual([]);
    k.finish();
    expect(k.get(BuddyAllocator).nrFreePages).toBe(coldFreePages(name));
  });

  it('a serialize that cannot allocate cancels the update with nothing left behind; a retry succeeds', () => {
    const m = newMachine();
    const k1 = m.boot({ image: image(name) });
    const folios = preserveFolios(k1, [0, 2, 9], 3);
    const buddy = k1.get(BuddyAllocator);
    const tracker = k1.get<Tracker>(Tracker) as BitmapTracker;
    const free0 = buddy.nrFreePages;
    const stats0 = tracker.stats();
    for (let k = 1; k <= 3; k++) {
      k1.prepare();
      k1.get(FaultInjector).configure({ failNth: k });
      expect(() => k1.serialize()).toThrow(/^ENOMEM: live update serialize failed in plugin 'kho': ENOMEM: /);
      k1.get(FaultInjector).reset();
      expect(k1.state).toBe('running');
      expect(tracker.serialized).toBe(false);
      expect(tracker.stats()).toEqual(stats0);
      expect(buddy.nrFreePages).toBe(free0);
    }
    const k2 = k1.liveUpdate();
    expect(restoreFolios(k2, folios)).toEqual([]);
  });

  it('a kexec without serialize hands over no map (as kho-v1 without finalize): the next kernel boots cold and says why', () => {
    const m = newMachine();
    const k1 = m.boot({ image: image(name) });
    preserveFolios(k1, [0, 4], 8);
    const k2 = k1.kexec(); // no prepare, no serialize
    const kho = k2.get(Kho);
    expect(kho.isKhoBoot()).toBe(false);
    expect(kho.stats().revivalError).toBe("'preserved-memory-map' is 0 (wanted the phys of the map)");
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldFreePages(name));
  });

  it('a kexec after a cancelled update: cancel pointed the root FDT back at no map, so the next kernel boots cold', () => {
    const m = newMachine();
    const k1 = m.boot({ image: image(name) });
    preserveFolios(k1, [0, 4], 8);
    k1.prepare();
    k1.serialize();
    k1.cancel();
    const k2 = k1.kexec();
    const kho = k2.get(Kho);
    expect(kho.isKhoBoot()).toBe(false);
    expect(kho.stats().revivalError).toBe("'preserved-memory-map' is 0 (wanted the phys of the map)");
  });

  it('a cancelled update frees the map and lets preservation go on', () => {
    const m = newMachine();
    const k1 = m.boot({ image: image(name) });
    const folios = preserveFolios(k1, [0], 3);
    const buddy = k1.get(BuddyAllocator);
    const tracker = k1.get<Tracker>(Tracker) as BitmapTracker;
    const free0 = buddy.nrFreePages;
    k1.prepare();
    k1.serialize();
    expect(() => preserveFolios(k1, [1], 4)).toThrow(/^EBUSY: bitmap tracker: add of block 0x[0-9a-f]+ order 1 after serialize/);
    k1.cancel();
    expect(tracker.serialized).toBe(false);
    expect(buddy.nrFreePages).toBe(free0 - 2); // the folio EBUSY refused is still allocated
    folios.push(...preserveFolios(k1, [5], 6));
    const k2 = k1.liveUpdate();
    expect(k2.get(Kho).incomingHandover!.pfns.length).toBe(3);
    expect(restoreFolios(k2, folios)).toEqual([]);
  });
});

describe('a kernel refuses a handover written with another tracker, restoring nothing', () => {
  const pairs = NAMES.flatMap((from) => NAMES.filter((to) => to !== from).map((to) => [from, to] as const));

  it.each(pairs)('%s → %s', (from, to) => {
    const m = newMachine();
    const k1 = m.boot({ image: image(from) });
    const folios = preserveFolios(k1, [0, 5], 9);
    const k2 = k1.liveUpdate({ image: image(to) });
    const kho = k2.get(Kho);
    expect(kho.isKhoBoot()).toBe(false);
    const reads = readableGenerations(to).map((g) => `'${g.compatible}'`).join(', ');
    expect(kho.stats().revivalError).toBe(`root FDT compatible is '${TRACKERS[from].compatible}\\0', a ${from} handover (wanted one this kernel reads: ${reads})`);
    expect(k2.get(Memblock).reservedByOwner().get('kho') ?? 0).toBe(0);
    expect(() => kho.restoreFolio((folios[1].phys) as PhysAddr)).toThrow(/no KHO stamp/);
    // the preserved memory is ordinary memory: the same free pages as a cold boot
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldFreePages(to));
  });
});

describe('a hostile kho-v1 handover is refused at boot with a clear reason, and nothing is reserved', () => {
  /** The first kernel of `name`, with folios of several orders preserved, stopped at the jump. */
  function jumped(name: TrackerName): { m: Machine; params: BootParams; ram: PhysicalMemory; map: number; pfns: number[] } {
    const m = newMachine();
    const k1 = m.boot({ image: image(name) });
    preserveFolios(k1, [0, 0, 3, 9], 2);
    k1.prepare();
    k1.serialize();
    const tracker = k1.get<Tracker>(Tracker);
    const map = tracker.init();
    const pfns = tracker.metadataPfns();
    return { m, params: k1.jump(), ram: m.device(PhysicalMemory), map, pfns };
  }

  const hex = (n: number): string => `0x${n.toString(16)}`;
  type Case = [string, TrackerName, (ram: PhysicalMemory, map: number, pfns: number[]) => string];
  it.each<Case>([
    [
      'a chunk pointer outside RAM',
      'bitmap-chunks',
      (ram, map) => {
        let last = map;
        while (ram.readU64(last) !== 0) last = ram.readU64(last);
        ram.writeU64(last, 0x40_0000_0000);
        return `bitmap chunks: chunk 0x4000000000 (next of chunk ${hex(last)}) is outside RAM`;
      },
    ],
    [
      'a cycle of chunks',
      'bitmap-chunks',
      (ram, map) => {
        const second = ram.readU64(map);
        ram.writeU64(ram.readU64(second), second);
        return `bitmap chunks: chunk ${hex(second)} (next of chunk ${hex(ram.readU64(second))}) is reached twice (a cycle or a shared page)`;
      },
    ],
    ['num_elms 256', 'bitmap-chunks', (ram, map) => (ram.writeU32(map + 12, 256), `bitmap chunks: chunk ${hex(map)} has num_elms 256 (wanted at most 255)`)],
    ['order 11', 'bitmap-chunks', (ram, map) => (ram.writeU32(map + 8, 11), `bitmap chunks: chunk ${hex(map)} has order 11 (wanted 0..10)`)],
    [
      'a bitmap pointer not page-aligned',
      'bitmap-chunks',
      (ram, map) => {
        const bm = ram.readU64(map + 24);
        ram.writeU64(map + 24, bm + 0x10);
        return `bitmap chunks: chunk ${hex(map)} entry 0: bitmap ${hex(bm + 0x10)} is not page-aligned`;
      },
    ],
    [
      'a record with reserved not 0',
      'bitmap-array',
      (ram, _map, pfns) => {
        const rec = pfns[2] * PAGE_SIZE; // the descriptor page, one array page, then the first record page
        ram.writeU32(rec + 12, 0xff);
        return `bitmap array: record ${hex(rec)} (position 0) has reserved 0xff (wanted 0)`;
      },
    ],
    [
      'an array entry that is not a valid pointer',
      'bitmap-array',
      (ram, _map, pfns) => {
        const slot = pfns[1] * PAGE_SIZE + 32; // entry 0 of the array page
        const bad = ram.readU64(slot) + 2;
        ram.writeU64(slot, bad);
        return `kho array: entry ${hex(bad)} at position 0 (page ${hex(pfns[1] * PAGE_SIZE)}) is neither a tagged value nor an 8-byte-aligned pointer`;
      },
    ],
    [
      'an array entry that points outside RAM',
      'bitmap-array',
      (ram, _map, pfns) => (ram.writeU64(pfns[1] * PAGE_SIZE + 40, 0x40_0000_0000), 'bitmap array: record 0x4000000000 (position 1) is outside RAM'),
    ],
  ])('%s (%s)', (_name, name, corrupt) => {
    const { m, params, ram, map, pfns } = jumped(name);
    const reason = corrupt(ram, map, pfns);
    const k2 = m.bootFrom(params, { image: image(name) });
    const kho = k2.get(Kho);
    expect(kho.isKhoBoot()).toBe(false);
    expect(kho.stats().revivalError).toBe(name === 'bitmap-array' && reason.startsWith('kho array') ? `bitmap array: ${reason}` : reason);
    expect(k2.log.filter('error', 'kho').map((l) => l.message)).toEqual([`disabling KHO revival: ${kho.stats().revivalError}; booting cold`]);
    expect(k2.get(Memblock).reservedByOwner().get('kho') ?? 0).toBe(0);
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldFreePages(name));
  });
});
