import { Errno, KernelError } from '@kho/kernel';
import { decodeFdt } from '@kho/fdt';
import { BuddyAllocator, FaultInjector, PAGE_SIZE, PhysicalMemory, createMachine, physmemModule, type RamRange, pfn, phys, toOrder } from '@kho/physmem';
import { KHO_KEXEC_METADATA_SUBTREE } from './abi';
import { Kho } from './kho';
import { khoModule } from './module';
import { Tracker } from './ports';
import { FakeTracker, khoFakesModule } from './testing';

const MiB = 2 ** 20;

function boot(opts: { cmdline?: string; ranges?: RamRange[] } = {}) {
  const machine = opts.ranges ? createMachine({ ranges: opts.ranges }) : createMachine({ mem: '256M' });
  const k = machine.boot({ image: [physmemModule(), khoFakesModule(), khoModule()], cmdline: opts.cmdline ?? '' });
  return { k, kho: k.get(Kho), tracker: k.get<Tracker>(Tracker) as FakeTracker, buddy: k.get(BuddyAllocator), ram: k.get(PhysicalMemory), faults: k.get(FaultInjector) };
}

const blocks = (t: FakeTracker): string[] => [...t.blocks.keys()].sort();

describe('Kho: the outgoing side in one kernel', () => {
  it('boots with a root FDT of its generation (kho-v3 by default), itself preserved, and kexec-metadata', () => {
    const { kho, tracker, ram } = boot();
    expect(kho.isEnabled()).toBe(true);
    expect(kho.generation?.compatible).toBe('kho-v3');
    expect(kho.subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE]);
    const root = decodeFdt(ram.read(kho.rootFdtPhys, PAGE_SIZE));
    expect(root.getString('compatible')).toBe('kho-v3');
    expect(tracker.has(pfn(kho.rootFdtPhys / PAGE_SIZE), toOrder(0))).toBe(true);
    expect(tracker.blocks.size).toBe(2); // the root FDT and the kexec-metadata blob
    expect(kho.stats()).toMatchObject({ enabled: true, khoBoot: false, compatible: 'kho-v3', kexecCount: 0 });
  });

  it('kho_abi=v2 writes kho-v2, without kexec-metadata or blob-size', () => {
    const { kho, ram } = boot({ cmdline: 'kho_abi=v2' });
    expect(kho.generation?.compatible).toBe('kho-v2');
    expect(kho.subtrees()).toEqual([]);
    const blob = kho.allocPreserve(100);
    kho.addSubtree('mine', blob, 100);
    const root = decodeFdt(ram.read(kho.rootFdtPhys, PAGE_SIZE));
    expect([...root.child('mine')!.props.keys()]).toEqual(['preserved-data']);
  });

  it('a bad kho_abi= leaves KHO disabled with one line in the log, and the boot goes on', () => {
    const { k, kho } = boot({ cmdline: 'kho_abi=v7' });
    expect(kho.isEnabled()).toBe(false);
    expect(k.log.filter('error', 'kho').map((l) => l.message)).toEqual(['kho_abi=v7 is not a KHO generation (wanted one of v1, v1-karr, v2, v3, v4, v4-composite); KHO disabled']);
    expect(() => kho.allocPreserve(1)).toThrow(new KernelError(Errno.EOPNOTSUPP, 'preserve: KHO is not initialised'));
  });

  it('an allocation failing while boot:late builds the outgoing side leaves KHO up, preserving nothing, saying why', () => {
    // fail each boot allocation in turn until one boot gets through (the first ones place the scratch areas here)
    let failed = 0;
    for (let n = 1; n <= 40; n++) {
      const { k, kho, tracker, buddy } = boot({ cmdline: `fail_page_alloc=${n},100,1` });
      const why = kho.stats().outgoingError;
      if (kho.isEnabled()) break;
      if (!why) continue;
      failed++;
      expect(k.disabled.size).toBe(0);
      expect(kho.isEnabled()).toBe(false);
      expect(why).toMatch(/^ENOMEM: .*injected failure/);
      expect(tracker.blocks.size).toBe(0); // what succeeded was undone
      expect(() => kho.preserveFolio(buddy.folioAlloc(0))).toThrow(`EOPNOTSUPP: preserve: KHO is not initialised (its outgoing side could not be set up: ${why})`);
      expect(k.log.filter('error', 'kho').map((l) => l.message)).toEqual([`cannot set up the outgoing handover (${why}): this kernel preserves nothing`]);
    }
    expect(failed).toBeGreaterThanOrEqual(2);
  });

  it("is the kernel-image module named 'kho' (what images list and errors name)", () => {
    expect(khoModule().name).toBe('kho');
  });

  it('kho=off: the API answers EOPNOTSUPP', () => {
    const { kho, buddy } = boot({ cmdline: 'kho=off' });
    expect(kho.isEnabled()).toBe(false);
    expect(() => kho.preserveFolio(buddy.folioAlloc(0))).toThrow(new KernelError(Errno.EOPNOTSUPP, 'preserve: KHO is disabled (kho=off)'));
    expect(() => kho.addSubtree('x', phys(0x1000), 8)).toThrow(new KernelError(Errno.EOPNOTSUPP, 'addSubtree: KHO is disabled (kho=off)'));
  });
});

describe('preservation', () => {
  it('preservePages splits as upstream: an 8 MiB-aligned 8 MiB range is one order-11 block; unpreservePages undoes it exactly', () => {
    const { kho, tracker } = boot();
    const before = blocks(tracker);
    kho.preservePages(pfn((8 * MiB) / PAGE_SIZE), 2048);
    expect(tracker.has(pfn(2048), toOrder(11))).toBe(true);
    expect(blocks(tracker).length).toBe(before.length + 1);
    kho.unpreservePages(pfn((8 * MiB) / PAGE_SIZE), 2048);
    expect(blocks(tracker)).toEqual(before);
  });

  it('kho-v3 keeps each block inside one NUMA node; kho-v2 does not', () => {
    // node 1 sits between two ranges of node 0, so the boundary at 64 MiB is far from every scratch area
    const ranges = [
      { start: 0, size: 64 * MiB, node: 0 },
      { start: 64 * MiB, size: 128 * MiB, node: 1 },
      { start: 192 * MiB, size: 64 * MiB, node: 0 },
    ];
    const range = [(32 * MiB) / PAGE_SIZE, (64 * MiB) / PAGE_SIZE] as const; // [32 MiB, 96 MiB)
    const v3 = boot({ ranges });
    const v2 = boot({ ranges, cmdline: 'kho_abi=v2' });
    for (const { kho } of [v3, v2]) {
      for (const a of kho.scratchAreas()) expect(a.addr >= 96 * MiB || a.addr + a.size <= 32 * MiB).toBe(true);
      kho.preservePages(pfn(range[0]), range[1]);
    }
    // kho-v3: 32 MiB on node 0, then 32 MiB on node 1
    expect(v3.tracker.has(pfn((32 * MiB) / PAGE_SIZE), toOrder(13))).toBe(true);
    expect(v3.tracker.has(pfn((64 * MiB) / PAGE_SIZE), toOrder(13))).toBe(true);
    // kho-v2: the same split without the clamp (32 MiB is 32 MiB-aligned, so min(ctz, log2) gives 13 then 13 too)
    expect(v2.tracker.has(pfn((32 * MiB) / PAGE_SIZE), toOrder(13))).toBe(true);
    // and a range where only the clamp splits: [0, 128 MiB) is one order-15 block for kho-v2, two for kho-v3
    const a = boot({ ranges });
    const b = boot({ ranges, cmdline: 'kho_abi=v2' });
    for (const { kho } of [a, b]) {
      const sc = kho.scratchAreas();
      if (sc.some((x) => x.addr < 128 * MiB)) throw new Error(`scratch below 128 MiB in this layout: ${JSON.stringify(sc)}`);
    }
    a.kho.preservePages(pfn(0), (128 * MiB) / PAGE_SIZE);
    b.kho.preservePages(pfn(0), (128 * MiB) / PAGE_SIZE);
    expect(b.tracker.has(pfn(0), toOrder(15))).toBe(true);
    expect(a.tracker.has(pfn(0), toOrder(14))).toBe(true);
    expect(a.tracker.has(pfn((64 * MiB) / PAGE_SIZE), toOrder(14))).toBe(true);
  });

  it('a preservePages that fails part-way unpreserves what it preserved (each failure point in turn)', () => {
    for (let n = 1; ; n++) {
      const { kho, tracker, faults } = boot();
      const before = blocks(tracker);
      faults.configure({ failNth: n });
      try {
        kho.preservePages(pfn(0x1001), 37); // 7 blocks, one page of tracker metadata each
      } catch (e) {
        expect(e).toBeInstanceOf(KernelError);
        expect(blocks(tracker)).toEqual(before);
        continue;
      }
      expect(n).toBe(8); // 7 blocks, one tracker page each: the 8th allocation is never made
      break;
    }
  });

  it('refuses a block the tracker cannot record with E2BIG (the kho-v1 bitmaps stop at order 10), changing nothing', () => {
    const { kho, tracker } = boot();
    tracker.maxOrder = 10;
    const before = blocks(tracker);
    // 4 MiB + 8 MiB from 4 MiB: an order-10 block, then an order-11 block the tracker cannot take
    expect(() => kho.preservePages(pfn(1024), 3072)).toThrow(
      new KernelError(Errno.E2BIG, 'preserve: block 0x800000 order 11 is larger than the radix tracker can record (order 10 at most)'),
    );
    expect(blocks(tracker)).toEqual(before);
  });

  it.each<[string, (kho: Kho, buddy: BuddyAllocator) => void, KernelError]>([
    ['a block outside RAM', (kho) => kho.preservePages(pfn(2 ** 30), 1), new KernelError(Errno.EINVAL, 'preserve: block 0x40000000000 order 0 is not RAM')],
    ['a zero page count', (kho) => kho.preservePages(pfn(0x100), 0), new KernelError(Errno.EINVAL, 'page count 0 (wanted a positive integer)')],
    ['unpreserving what was not preserved', (kho, buddy) => kho.unpreserveFolio(buddy.folioAlloc(0)), new KernelError(Errno.ENOENT, '')],
    ['allocPreserve(0)', (kho) => kho.allocPreserve(0), new KernelError(Errno.EINVAL, 'allocPreserve: size 0 (wanted a positive integer)')],
    ['allocPreserve of more than 4 MiB', (kho) => kho.allocPreserve(4 * MiB + 1), new KernelError(Errno.E2BIG, 'allocPreserve: 4194305 bytes needs order 11 (wanted at most 10)')],
  ])('refuses %s', (_what, call, want) => {
    const { kho, buddy, tracker } = boot();
    const before = blocks(tracker);
    expect(() => call(kho, buddy)).toThrow(want.reason ? want : KernelError);
    expect(blocks(tracker)).toEqual(before);
  });

  it('refuses to preserve memory in a scratch area', () => {
    const { kho } = boot();
    const a = kho.scratchAreas()[1];
    expect(() => kho.preservePages(pfn(a.addr / PAGE_SIZE), 1)).toThrow(/overlaps scratch area .* \(preserved memory must lie outside scratch\)/);
  });
});

describe('subtrees', () => {
  it('addSubtree records the blob and its size (kho-v3); EEXIST for a taken name; removeSubtree is silent for an unknown blob', () => {
    const { kho, ram } = boot();
    const blob = kho.allocPreserve(300);
    kho.addSubtree('mine', blob, 300);
    const node = decodeFdt(ram.read(kho.rootFdtPhys, PAGE_SIZE)).child('mine')!;
    expect(Number(node.getU64LE('preserved-data'))).toBe(blob);
    expect(Number(node.getU64LE('blob-size'))).toBe(300);
    expect(() => kho.addSubtree('mine', blob, 300)).toThrow(new KernelError(Errno.EEXIST, "subtree 'mine' already exists in the root FDT"));
    kho.removeSubtree(phys(0x7777000));
    kho.removeSubtree(blob);
    expect(kho.subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE]);
  });

  it('ENOMEM when the root FDT page is full, with nothing left behind', () => {
    const { kho } = boot();
    let i = 0;
    try {
      for (; i < 1000; i++) kho.addSubtree(`subtree-${i}`, phys(0x1000 * (i + 1)), 8);
    } catch (e) {
      expect(e).toBeInstanceOf(KernelError);
      expect((e as KernelError).errno).toBe(Errno.ENOMEM);
    }
    expect(i).toBeGreaterThan(10);
    expect(i).toBeLessThan(1000);
    expect(kho.subtrees()).toHaveLength(i + 1);
  });

  it('retrieveSubtree without an incoming handover is ENOENT', () => {
    const { kho } = boot();
    expect(() => kho.retrieveSubtree('mine')).toThrow(new KernelError(Errno.ENOENT, "retrieveSubtree('mine'): this boot has no incoming KHO handover"));
  });
});

describe('restore without a stamp', () => {
  it('restoreFolio, restorePages and restoreFree refuse a page that carries no stamp (EINVAL, with a warning)', () => {
    const { k, kho, buddy } = boot();
    const f = buddy.folioAlloc(0);
    expect(() => kho.restoreFolio(f.phys)).toThrow(/no KHO stamp/);
    expect(() => kho.restorePages(f.phys, 1)).toThrow(/no KHO stamp/);
    expect(() => kho.restoreFree(f.phys)).toThrow(/no KHO stamp/);
    expect(k.log.filter('warn', 'kho')).toHaveLength(3);
    expect(kho.stampOrder(f.pfn)).toBeUndefined();
    expect(kho.isPreservedIncoming(f.pfn, toOrder(0))).toBe(false);
  });
});

describe('the brands on the API (a compile-time contract: the typecheck fails if a directive below goes unused)', () => {
  it('the address-taking calls take a PhysAddr: not a Pfn, not a plain number', () => {
    const { kho, buddy } = boot();
    const f = buddy.folioAlloc(0);
    // @ts-expect-error a page frame number is not an address
    expect(() => kho.restoreFolio(f.pfn)).toThrow(KernelError);
    // @ts-expect-error a number read from RAM goes through toPhysAddr or another check first
    expect(() => kho.unpreserveFree(f.phys + 0)).toThrow(/was not preserved/);
    // @ts-expect-error the same for subtrees
    expect(() => kho.addSubtree('raw', 0x1000, 8)).not.toThrow();
    // @ts-expect-error and for preservePages, which takes a Pfn, not an address
    expect(() => kho.preservePages(f.phys, 1)).toThrow(KernelError);
  });
});
