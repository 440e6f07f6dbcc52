import { BootParams, Errno, KernelError, type Kernel } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Folio, Memmap, PAGE_SIZE, PhysicalMemory, pfn, toOrder, type PhysAddr } from '@kho/physmem';
import { KHO_KEXEC_METADATA_SUBTREE, Kho, type ScratchArea } from '@kho/kho-core';
import { Memblock } from '@kho/memblock';
import { Liveupdate, Vfs, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish } from '@kho/liveupdate';
import { MemfdFs } from '@kho/memfd';
import { KhoTest } from './demo/kho-test';
import { DEFAULT_DEMO, coldBootFreePages, runDemo, runFirstHalf, type DemoOptions } from './demo/run';
import { kernelImage, machineFor, idlePages } from './system';

const MiB = 2 ** 20;
const SMALL: DemoOptions = { ...DEFAULT_DEMO, ram: 512 * MiB, mem: 32 * MiB, seed: 7 };

function inside(areas: readonly ScratchArea[], base: number, size: number): boolean {
  return areas.some((a) => base >= a.addr && base + size <= a.addr + a.size);
}

describe('a machine of 4 TiB', () => {
  it('boots with memory above the 1 TiB line, its memmap costing what is used, not its size', () => {
    const machine = machineFor({ ram: 4 * 2 ** 40 });
    const k = machine.boot({ image: kernelImage() });
    expect(k.get(Kho).isEnabled()).toBe(true);
    const memmap = k.get(Memmap);
    // All of it free in max-order blocks but the kernel's own reservations (its image, a 64-byte-a-page memmap
    // reservation, KHO's scratch areas, which the buddy allocator serves too).
    expect(k.get(BuddyAllocator).nrFreePages).toBeGreaterThan((3.9 * 2 ** 40) / PAGE_SIZE);
    // 2^30 page frames: the memmap is its 4096 sections (10.5 KiB each) and the few pageblocks whose pages differ,
    // not 17 bytes for each frame (17 GiB).
    expect(memmap.presentSections).toBe(4096);
    expect(memmap.totalBytes).toBeLessThan(64 * MiB);
    expect(k.get(PhysicalMemory).hostBytes).toBeLessThan(64 * MiB);
    machine.shutdown();
  });
});

describe('the flagship live update, in one process', () => {
  it.each([1, 2, 3])('seed %d: every folio comes back with its order and every byte verifies; nothing leaks', (seed) => {
    const r = runDemo({ ...SMALL, seed });
    expect(r.second.errors).toEqual([]);
    expect(r.second.khoBoot).toBe(true);
    expect(r.second.restore?.folios).toBe(r.first.folios);
    expect(r.second.restore?.bytes).toBe(SMALL.mem);
    expect(r.second.restore?.ordersMatch).toBe(true);
    expect(r.second.restore?.checksumActual).toBe(r.second.restore?.checksumExpected);
    expect(r.second.freePagesAfterFinish).toBe(r.second.freePagesColdBoot);
    // + the folio list (one vmalloc page here) and its kho_vmalloc chunk page, the kho_test blob, the root FDT,
    // and the memfd files' folios and table
    expect(r.first.blocksPreserved).toBeGreaterThan(r.first.folios + 4);
    expect(r.second.files).toEqual({ files: 3, bytes: 13 * 2 ** 20 + 17 + 200_000 + 3 * 2 ** 20 + 123 + 1000, verified: true, problems: [] });
    expect(r.ok).toBe(true);
  });

  it('detects a flipped byte in a preserved folio (the check can fail)', () => {
    const first = runFirstHalf(SMALL);
    const ram = first.machine.device(PhysicalMemory);
    const k = first.machine.bootFrom(first.params, { image: kernelImage({ mem: SMALL.mem, seed: SMALL.seed }) });
    const kho = k.get(Kho);
    const inc = kho.incomingHandover!;
    // the largest block is certainly folio data (list, blob and FDT are single pages or small)
    let idx = 0;
    inc.orders.forEach((o, i) => (o > inc.orders[idx] ? (idx = i) : undefined));
    const addr = inc.pfns[idx] * PAGE_SIZE + 123;
    ram.writeU8(addr, ram.readU8(addr) ^ 0x40);
    const report = k.restore();
    expect(report.ok).toBe(false);
    expect(report.plugins['kho-test'].error).toMatch(/^EIO: kho_test: checksum 0x[0-9a-f]+ \(wanted 0x[0-9a-f]+\), orders match$/);
  });
});

describe('the next kernel', () => {
  function secondKernel(opts: DemoOptions = SMALL): { k2: Kernel; scratch: readonly ScratchArea[] } {
    const first = runFirstHalf(opts);
    const k2 = first.machine.bootFrom(first.params, { image: kernelImage({ mem: opts.mem, seed: opts.seed }) });
    return { k2, scratch: first.scratch };
  }

  it('allocates nothing but scratch during early boot', () => {
    const { k2, scratch } = secondKernel();
    const records = k2.get(Memblock).records.filter((r) => r.owner !== 'kho-scratch-array');
    expect(records.map((r) => r.owner)).toEqual(['kernel', 'memmap-node0']);
    for (const r of records) {
      expect(r.scratchOnly).toBe(true);
      expect(inside(scratch, r.base, r.size)).toBe(true);
    }
    expect(k2.get(Kho).scratchAreas()).toEqual(scratch);
  });

  it('never hands a preserved page to anyone, even with the allocator exhausted before restore', () => {
    const { k2 } = secondKernel();
    const buddy = k2.get(BuddyAllocator);
    const ram = k2.get(PhysicalMemory);
    const inc = k2.get(Kho).incomingHandover!;
    // every block still preserved after boot (reserve_mem regions and their FDT are taken back during boot)
    const preserved = inc.pfns.filter((p, i) => k2.get(Kho).isPreservedIncoming(pfn(p), inc.orders[i])).map((p) => [p, p + 2 ** inc.orders[inc.pfns.indexOf(p)]] as const);
    expect(preserved.length).toBeGreaterThan(10);
    const taken: Folio[] = [];
    for (const movable of [false, true]) {
      for (let order = 10; order >= 0; order--) {
        for (;;) {
          let f: Folio;
          try {
            f = buddy.folioAlloc(order, { movable });
          } catch (e) {
            expect((e as KernelError).errno).toBe(Errno.ENOMEM);
            break;
          }
          taken.push(f);
          for (const [s, e] of preserved) expect(f.pfn + f.nrPages <= s || f.pfn >= e).toBe(true);
          // scribble on every page handed out
          for (let p = 0; p < f.nrPages; p++) ram.writeU64((f.pfn + p) * PAGE_SIZE, 0xdeadbeefn);
        }
      }
    }
    expect(buddy.nrFreePages).toBe(0);
    const report = k2.restore();
    expect(report.ok).toBe(true);
    expect(k2.get(KhoTest).lastRestore?.verified).toBe(true);
    for (const f of taken) buddy.folioPut(f);
  });

  it('with KHO disabled on its command line, restores nothing, crashes nothing, and preserved memory is ordinary memory', () => {
    const again = runFirstHalf(SMALL);
    const params = new BootParams('kho=off', again.params.toMap());
    const k = again.machine.bootFrom(params, { image: kernelImage({ mem: SMALL.mem, seed: SMALL.seed }) });
    const kho = k.get(Kho);
    expect(kho.isKhoBoot()).toBe(false);
    expect(kho.isEnabled()).toBe(false);
    expect(k.restore().ok).toBe(true);
    expect(k.get(KhoTest).lastRestore).toBeUndefined();
    expect(k.log.filter('info', 'kho').map((l) => l.message)).toContain(
      'KHO is disabled (kho=off): the handover is ignored, preserved memory becomes ordinary memory',
    );
    const ranges = again.machine.device(PhysicalMemory).ranges;
    expect(idlePages(k)).toBe(coldBootFreePages(ranges, { ...SMALL, cmdline: 'kho=off' }));
    expect(() => kho.preserveFolio(new Folio(0 as never, toOrder(0)))).toThrow('EOPNOTSUPP: preserve: KHO is disabled (kho=off)');
  });
});

describe('kexec variants', () => {
  it('a kexec with nothing preserved hands over only KHO\'s own blocks (root FDT, kexec-metadata), and finish gives them back', () => {
    const machine = machineFor({ ram: 512 * MiB });
    const k1 = machine.boot({ image: kernelImage() });
    const k2 = k1.liveUpdate();
    const kho = k2.get(Kho);
    expect(kho.isKhoBoot()).toBe(true);
    expect(kho.incomingHandover!.pfns.length).toBe(2);
    expect(k2.restore().ok).toBe(true);
    const fin = k2.finish();
    expect(fin.plugins.kho.report).toEqual({ unrestoredBlocks: 0, unrestoredBytes: 0, unrestored: [] });
    expect(idlePages(k2)).toBe(coldBootFreePages(machine.device(PhysicalMemory).ranges, { ...SMALL, cmdline: '' }));
  });

  it('chains: a KHO-booted kernel preserves again and the next one restores; scratch areas are reused', () => {
    const first = runFirstHalf(SMALL);
    const image = kernelImage({ mem: SMALL.mem, seed: SMALL.seed });
    let k = first.machine.bootFrom(first.params, { image });
    const scratch = k.get(Kho).scratchAreas();
    expect(scratch).toEqual(first.scratch);
    for (let gen = 2; gen <= 4; gen++) {
      expect(k.restore().ok).toBe(true);
      expect(k.get(KhoTest).lastRestore?.verified).toBe(true);
      expect(k.finish().ok).toBe(true);
      k.get(KhoTest).generate();
      k = k.liveUpdate();
      expect(k.generation).toBe(gen + 1);
      expect(k.get(Kho).scratchAreas()).toEqual(scratch);
    }
    expect(k.restore().ok).toBe(true);
    expect(k.finish().ok).toBe(true);
    expect(idlePages(k)).toBe(coldBootFreePages(first.machine.device(PhysicalMemory).ranges, SMALL, k.cmdline.text));
  });

  it('a failing prepare leaves no block preserved and a retry succeeds', () => {
    const machine = machineFor({ ram: 512 * MiB });
    const k1 = machine.boot({ image: kernelImage({ mem: 8 * MiB, seed: 3 }) });
    const test = k1.get(KhoTest);
    test.generate();
    const kho = k1.get(Kho);
    const before = kho.stats();
    const buddy = k1.get(BuddyAllocator);
    const free0 = buddy.nrFreePages;
    const faults = k1.get(FaultInjector);
    faults.configure({ failNth: 1 });
    // kstate saves the self-test's state (and its vmalloc list) first: its page is the first allocation
    expect(() => k1.prepare()).toThrow(/^ENOMEM: live update prepare failed in plugin 'kstate': ENOMEM: /);
    faults.reset();
    const after = kho.stats();
    expect(after.trackerBlocks).toBe(before.trackerBlocks);
    expect(kho.subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE]);
    // nothing stays behind: the radix tree frees the nodes it built for blocks it then forgot
    expect(after.trackerPages).toBe(before.trackerPages);
    expect(buddy.nrFreePages).toBe(free0);
    const k2 = k1.liveUpdate();
    expect(k2.restore().ok).toBe(true);
    expect(k2.get(KhoTest).lastRestore?.verified).toBe(true);
  });
});

describe('an allocation failing while the next kernel sets up its own handover (KHO, kexec-metadata, LUO)', () => {
  // Every allocation of the next kernel's boot that precedes a working outgoing side fails once in turn. Whatever
  // fails, what the previous kernel handed over is restored: the self-test's folios, the memfd files, the LUO
  // session. Only the new kernel's ability to preserve is lost, and it says why.
  it('never costs the incoming handover', () => {
    const cmdline = 'kho_scratch=16M,16M,16M liveupdate=on';
    const image = kernelImage({ mem: 256 * 1024, seed: 5, maxOrder: 3 });
    let outgoingFailures = 0;
    for (let n = 1; n <= 40; n++) {
      const machine = machineFor({ ram: 128 * MiB });
      const k1 = machine.boot({ image, cmdline });
      k1.get(KhoTest).generate();
      const p = k1.get(Vfs).spawn('vmm');
      const memfd = k1.get(MemfdFs).memfdCreate(p, 'guest');
      p.pwrite(memfd, 0, Uint8Array.of(1, 2, 3));
      luoPreserveFd(p, luoCreateSession(p, luoOpenDevice(p), 's'), memfd, 7);
      const k2 = k1.liveUpdate({ cmdline: `${cmdline} fail_page_alloc=${n},100,1` });
      expect([...k2.disabled.keys()]).toEqual([]);
      const kho = k2.get(Kho);
      expect(kho.isKhoBoot()).toBe(true);
      const luo = k2.get(Liveupdate);
      const failed = kho.stats().outgoingError ?? luo.status().outgoingError;
      expect(k2.restore().ok).toBe(true);
      expect(k2.get(KhoTest).lastRestore?.verified).toBe(true);
      const q = k2.get(Vfs).spawn('vmm');
      const dev = luoOpenDevice(q);
      const s = luoRetrieveSession(q, dev, 's');
      expect(q.pread(luoRetrieveFd(q, s, 7), 0, 3)).toEqual(Uint8Array.of(1, 2, 3));
      luoSessionFinish(q, s);
      if (failed) {
        outgoingFailures++;
        expect(failed).toMatch(/ENOMEM: .*injected failure/);
        // the kernel says why it cannot preserve, and preserves nothing
        expect(() => luoCreateSession(q, dev, 'new')).toThrow(/^EOPNOTSUPP: CREATE_SESSION: /);
        if (!kho.isEnabled()) expect(() => kho.allocPreserve(8)).toThrow(/^EOPNOTSUPP: preserve: KHO is not initialised \(its outgoing side could not be set up: ENOMEM: /);
      }
      q.exit();
      const fin = k2.finish();
      expect(fin.ok).toBe(true);
      expect(fin.plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
      if (!failed) break; // the outgoing side came up: every allocation before it has been failed once
    }
    expect(outgoingFailures).toBeGreaterThan(5);
  });
});

describe('the preservation API refuses misuse with the documented errors', () => {
  function booted() {
    const first = runFirstHalf(SMALL);
    const k2 = first.machine.bootFrom(first.params, { image: kernelImage({ mem: SMALL.mem, seed: SMALL.seed }) });
    const kho = k2.get(Kho);
    const inc = kho.incomingHandover!;
    const big = inc.orders.findIndex((o) => o >= 1);
    return { k2, kho, inc, bigPhys: inc.pfns[big] * PAGE_SIZE, buddy: k2.get(BuddyAllocator), scratch: first.scratch };
  }

  it('restoring twice, a tail page, an unpreserved page or an unaligned address fails with a warning', () => {
    const { kho, bigPhys, k2 } = booted();
    expect(() => kho.restoreFolio((bigPhys + PAGE_SIZE) as PhysAddr)).toThrow(/^EINVAL: restoreFolio\(0x[0-9a-f]+\): no KHO stamp \(not preserved, already restored, or a tail page\)$/);
    const folio = kho.restoreFolio(bigPhys as PhysAddr);
    expect(folio.phys).toBe(bigPhys);
    expect(() => kho.restoreFolio(bigPhys as PhysAddr)).toThrow(/no KHO stamp/);
    expect(() => kho.restoreFolio((bigPhys + 5) as PhysAddr)).toThrow(/the address is not page-aligned$/);
    expect(() => kho.restoreFolio((2 ** 45) as PhysAddr)).toThrow(/the address is not RAM$/);
    expect(k2.log.filter('warn', 'kho').length).toBeGreaterThanOrEqual(4);
  });

  it('restoring after finish is refused (EPERM): what nobody restored stays reserved and named', () => {
    const { k2, kho, bigPhys } = booted();
    const fin = k2.finish();
    expect(fin.plugins.kho.report).toMatchObject({ unrestoredBlocks: expect.any(Number) });
    expect(() => kho.restoreFolio(bigPhys as PhysAddr)).toThrow(/^EPERM: restoreFolio\(0x[0-9a-f]+\): the handover is finished \(blocks nobody restored stay reserved\)$/);
    expect(() => kho.restorePages(bigPhys as PhysAddr, 2)).toThrow(/^EPERM: restorePages/);
  });

  it('unpreserving what was never preserved is ENOENT; preserving inside scratch is EINVAL; allocPreserve bounds', () => {
    const { kho, buddy, scratch } = booted();
    const f = buddy.folioAlloc(2);
    expect(() => kho.unpreserveFolio(f)).toThrow(/^ENOENT: unpreserve: block 0x[0-9a-f]+ order 2 was not preserved$/);
    kho.preserveFolio(f);
    kho.preserveFolio(f); // idempotent, like the tracker
    kho.unpreserveFolio(f);
    expect(() => kho.unpreserveFolio(f)).toThrow(/was not preserved/);
    const inScratch = new Folio((scratch[0].addr / PAGE_SIZE + 16) as never, toOrder(0));
    expect(() => kho.preserveFolio(inScratch)).toThrow(/^EINVAL: preserve: block 0x[0-9a-f]+ order 0 overlaps scratch area 0x[0-9a-f]+\+[\d.]+ MiB/);
    expect(() => kho.allocPreserve(0)).toThrow('EINVAL: allocPreserve: size 0 (wanted a positive integer)');
    expect(() => kho.allocPreserve(8 * MiB)).toThrow('E2BIG: allocPreserve: 8388608 bytes needs order 11 (wanted at most 10)');
    const p = kho.allocPreserve(5000);
    expect(buddy.isFree(pfn(p / PAGE_SIZE))).toBe(false);
    kho.unpreserveFree(p);
    expect(buddy.isFree(pfn(p / PAGE_SIZE))).toBe(true);
  });

  it('preservePages splits greedily and restorePages gives pages that free one by one', () => {
    const machine = machineFor({ ram: 512 * MiB });
    const k1 = machine.boot({ image: kernelImage() });
    const buddy = k1.get(BuddyAllocator);
    const base = buddy.allocPages(4); // 16 pages, aligned to 16
    const ram = k1.get(PhysicalMemory);
    for (let i = 1; i < 16; i++) ram.writeU32((base + i) * PAGE_SIZE, 0x1000 + i);
    k1.get(Kho).preservePages(pfn(base + 1), 15); // orders 0,1,2,3 (1+2+4+8 pages)
    const k2 = k1.liveUpdate();
    const inc = k2.get(Kho).incomingHandover!;
    const mine = inc.pfns.map((p, i) => [p - base, inc.orders[i]]).filter(([off]) => off >= 0 && off < 16);
    expect(mine.sort((a, b) => a[0] - b[0])).toEqual([
      [1, 0],
      [2, 1],
      [4, 2],
      [8, 3],
    ]);
    const kho2 = k2.get(Kho);
    expect(() => kho2.restorePages(((base + 1) * PAGE_SIZE) as PhysAddr, 16)).toThrow(/block of order \d has no KHO stamp|not RAM|no KHO stamp/);
    const first = kho2.restorePages(((base + 1) * PAGE_SIZE) as PhysAddr, 15);
    const buddy2 = k2.get(BuddyAllocator);
    for (let i = 0; i < 15; i++) {
      expect(k2.get(PhysicalMemory).readU32((first + i) * PAGE_SIZE)).toBe(0x1001 + i);
      buddy2.freePages(pfn(first + i), toOrder(0));
    }
    expect(() => kho2.restorePages(((base + 1) * PAGE_SIZE) as PhysAddr, 15)).toThrow(/no KHO stamp/);
  });
});
