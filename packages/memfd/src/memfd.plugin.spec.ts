import { injectable } from 'tsyringe';
import { Errno, KernelError, registerPerBoot, type Kernel, type KernelModule, type KernelPlugin, type Machine } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Memmap, PAGE_SIZE, PhysicalMemory, createMachine, physmemModule, pfn, toOrder, type Order } from '@kho/physmem';
import { KHO_KEXEC_METADATA_SUBTREE, Kho, PROP_SUB_FDT, Tracker, khoModule, writeStamp } from '@kho/kho-core';
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { MEMFD_FILE_SIZE, MEMFD_FOLIO_SIZE, MEMFD_HEADER_SIZE, MEMFD_MAX_FILES, MEMFD_SUBTREE, MemfdFileStruct, MemfdFolioStruct, MemfdHeaderStruct } from './abi';
import { Memfd } from './memfd';
import { MemfdPlugin, memfdModule } from './memfd.plugin';
import { decodeMemfdTable, sealMemfdTable, type MemfdTableFile } from './memfd.table';
import { bytesOf, firstDifference } from './testing/bytes';

const MiB = 2 ** 20;

/** The kernel image of every boot here: a full KHO kernel (memblock, the radix tracker) plus memfd. */
function image(): KernelModule[] {
  return [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), memfdModule()];
}

/** Free pages after a cold boot of the same machine: where a kernel that leaked nothing is back to. */
function coldBootFreePages(): number {
  const machine = createMachine({ mem: '512M' });
  const free = machine.boot({ image: image() }).get(BuddyAllocator).nrFreePages;
  machine.shutdown();
  return free;
}

/** Writes `chunks` ([offset, length, seed]) into a new file; returns what the whole file must read as. */
function fill(memfd: Memfd, name: string, chunks: Array<[number, number, number]>, size?: number): Uint8Array {
  const fd = memfd.create(name);
  for (const [offset, len, seed] of chunks) memfd.write(fd, offset, bytesOf(seed, len));
  if (size !== undefined) memfd.truncate(fd, size);
  const content = memfd.read(fd, 0, memfd.size(fd));
  memfd.close(fd);
  return content;
}

/** Reads the whole file `name` through a new descriptor. */
function contentOf(memfd: Memfd, name: string): Uint8Array {
  const fd = memfd.open(name);
  const out = memfd.read(fd, 0, memfd.size(fd));
  memfd.close(fd);
  return out;
}

function preserve(memfd: Memfd, name: string): void {
  const fd = memfd.open(name);
  memfd.preserve(fd);
  memfd.close(fd);
}

/**
 * A first kernel with files of different sizes and holes: four preserved (one empty), one never preserved, one
 * preserved then unlinked, one preserved then unpreserved. Returns the contents the preserved ones must have.
 */
function firstKernel(): { machine: Machine; k1: Kernel; expected: Map<string, Uint8Array> } {
  const machine = createMachine({ mem: '512M' });
  const k1 = machine.boot({ image: image() });
  const memfd = k1.get(Memfd);
  const expected = new Map<string, Uint8Array>();
  expected.set('empty', fill(memfd, 'empty', []));
  expected.set('small', fill(memfd, 'small', [[0, 100, 1]]));
  expected.set('sparse', fill(memfd, 'sparse', [[0, 10, 2], [MiB + 7, 5000, 3], [5 * MiB - 3, 6, 4]], 8 * MiB)); // holes, a trailing one too
  expected.set('big', fill(memfd, 'big', [[0, 6 * MiB, 5]], 5 * MiB + 123)); // order-9 folios, the last one cut
  for (const name of expected.keys()) preserve(memfd, name);
  fill(memfd, 'scratchpad', [[0, 64 * 1024, 6]]);
  fill(memfd, 'gone', [[0, 3 * PAGE_SIZE, 7]]);
  preserve(memfd, 'gone');
  memfd.unlink('gone');
  fill(memfd, 'changed-mind', [[0, 10, 8]]);
  preserve(memfd, 'changed-mind');
  const fd = memfd.open('changed-mind');
  memfd.unpreserve(fd);
  memfd.close(fd);
  return { machine, k1, expected };
}

describe('memfd across a live update', () => {
  it('brings every preserved file back with the same bytes in the same folios; the others are gone; nothing leaks', () => {
    const { k1, expected } = firstKernel();
    const before = k1.get(Memfd).preservedFiles();
    const physBefore = before.flatMap((f) => f.folios.map(({ offset, folio }) => `${f.name}@${offset}:${folio.phys}/${folio.order}`));
    const k2 = k1.liveUpdate();
    const memfd = k2.get(Memfd);
    const restore = k2.restore();
    expect(restore.ok).toBe(true);
    const folios = before.reduce((n, f) => n + f.folios.length, 0);
    expect(restore.plugins.memfd.report).toEqual({ files: 4, folios, bytes: 100 + 8 * MiB + 5 * MiB + 123 });
    expect(memfd.list()).toEqual([
      { name: 'big', size: 5 * MiB + 123, folios: 3, pages: 1536, preserved: false, openFds: 0 },
      { name: 'empty', size: 0, folios: 0, pages: 0, preserved: false, openFds: 0 },
      { name: 'small', size: 100, folios: 1, pages: 1, preserved: false, openFds: 0 },
      { name: 'sparse', size: 8 * MiB, folios: 4, pages: 5, preserved: false, openFds: 0 }, // orders 0, 1, 0, 0
    ]);
    for (const [name, content] of expected) expect({ name, diff: firstDifference(contentOf(memfd, name), content) }).toEqual({ name, diff: -1 });
    // Nothing was copied: the files own the very folios the first kernel wrote.
    for (const name of expected.keys()) preserve(memfd, name);
    const physAfter = memfd.preservedFiles().flatMap((f) => f.folios.map(({ offset, folio }) => `${f.name}@${offset}:${folio.phys}/${folio.order}`));
    expect(physAfter).toEqual(physBefore);
    for (const name of ['scratchpad', 'gone', 'changed-mind']) {
      expect(() => memfd.open(name)).toThrow(new KernelError(Errno.ENOENT, `open: no file named '${name}'`));
    }
    const finish = k2.finish();
    expect(finish.ok).toBe(true);
    expect(finish.plugins.memfd.report).toEqual({ freedTablePages: 1 });
    expect(finish.plugins.kho.report).toEqual({ unrestoredBlocks: 0, unrestoredBytes: 0, unrestored: [] });
    for (const s of memfd.list()) memfd.unlink(s.name);
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldBootFreePages());
  });

  it('restored files are ordinary files: they change, and a second live update carries them on', () => {
    const { k1, expected } = firstKernel();
    const k2 = k1.liveUpdate();
    expect(k2.restore().ok).toBe(true);
    expect(k2.finish().ok).toBe(true);
    const m2 = k2.get(Memfd);
    const fd = m2.open('small');
    m2.write(fd, 50, bytesOf(9, 100));
    m2.preserve(fd);
    const small = m2.read(fd, 0, 150);
    m2.close(fd);
    preserve(m2, 'sparse');
    const k3 = k2.liveUpdate();
    const m3 = k3.get(Memfd);
    expect(k3.restore().plugins.memfd.report).toEqual({ files: 2, folios: 5, bytes: 150 + 8 * MiB });
    expect(firstDifference(contentOf(m3, 'small'), small)).toBe(-1);
    expect(firstDifference(contentOf(m3, 'sparse'), expected.get('sparse')!)).toBe(-1);
    expect(m3.list().map((s) => s.name)).toEqual(['small', 'sparse']);
    expect(k3.finish().ok).toBe(true);
    for (const s of m3.list()) m3.unlink(s.name);
    expect(k3.get(BuddyAllocator).nrFreePages).toBe(coldBootFreePages());
  });

  it('hands nothing over when no file is preserved', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: image() });
    fill(k1.get(Memfd), 'local', [[0, 10, 1]]);
    const k2 = k1.liveUpdate();
    expect(k2.get(Kho).subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE]);
    expect(k2.restore().plugins.memfd).toEqual({ ok: true });
    expect(k2.get(Memfd).list()).toEqual([]);
  });

  it('prepare writes the table and freezes the preserved files; serialize seals the table; cancel undoes all of it', () => {
    const { k1, expected } = firstKernel();
    const memfd = k1.get(Memfd);
    const kho = k1.get(Kho);
    const tracker = k1.get<Tracker>(Tracker);
    const buddy = k1.get(BuddyAllocator);
    const ram = k1.get(PhysicalMemory);
    const free0 = buddy.nrFreePages;
    const pages0 = kho.stats().trackerPages;
    const folios = memfd.preservedFiles().flatMap((f) => f.folios.map((x) => x.folio));

    k1.prepare();
    const table = k1.get(MemfdPlugin).outgoingTable!;
    expect(kho.subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE, MEMFD_SUBTREE]);
    for (const f of folios) expect(tracker.has(f.pfn, f.order)).toBe(true);
    expect(ram.readU32(table.phys + MemfdHeaderStruct.offsetOf('crc32'))).toBe(0); // written, not yet sealed
    expect(() => decodeMemfdTable(ram.read(table.phys, table.size))).toThrow(/table crc32 is 0x0 but its bytes give/);
    const fd = memfd.open('small');
    const busy = "file 'small' is preserved by a prepared live update (it cannot change until the update ends)";
    expect(() => memfd.write(fd, 0, new Uint8Array(1))).toThrow(new KernelError(Errno.EBUSY, `write: ${busy}`));
    expect(() => memfd.truncate(fd, 0)).toThrow(new KernelError(Errno.EBUSY, `truncate: ${busy}`));
    expect(() => memfd.unlink('small')).toThrow(new KernelError(Errno.EBUSY, `unlink: ${busy}`));
    expect(() => memfd.unpreserve(fd)).toThrow(new KernelError(Errno.EBUSY, "unpreserve: file 'small' is preserved by a prepared live update"));
    const other = memfd.open('scratchpad');
    expect(() => memfd.preserve(other)).toThrow(new KernelError(Errno.EBUSY, 'preserve: a live update is prepared (the preserved files are fixed until it ends)'));
    memfd.write(other, 0, new Uint8Array(1)); // a file that is not preserved stays writable
    expect(firstDifference(memfd.read(fd, 0, 100), expected.get('small')!)).toBe(-1); // reads are fine

    k1.serialize();
    const files = decodeMemfdTable(ram.read(table.phys, table.size));
    expect(files.map((f: MemfdTableFile) => [f.name, f.size, f.folios.length])).toEqual(
      memfd.preservedFiles().map((f) => [f.name, f.size, f.folios.length]),
    );

    k1.cancel();
    expect(k1.get(MemfdPlugin).outgoingTable).toBeUndefined();
    expect(kho.subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE]);
    for (const f of folios) expect(tracker.has(f.pfn, f.order)).toBe(false);
    expect(tracker.has(pfn(table.phys / PAGE_SIZE), toOrder(0))).toBe(false);
    // The tracker frees the nodes that unpreserving emptied: the allocator is back to its count.
    expect(kho.stats().trackerPages).toBe(pages0);
    expect(buddy.nrFreePages).toBe(free0);
    memfd.write(fd, 0, new Uint8Array(1));
    memfd.preserve(other);
  });

  it('when a plugin after it fails to prepare, the kernel cancels memfd: nothing stays preserved', () => {
    @injectable()
    class Failing implements KernelPlugin {
      readonly name = 'failing';
      readonly after = ['memfd'];
      prepare(): void {
        throw new KernelError(Errno.ENOMEM, 'failing: no memory for my state');
      }
    }
    const failing: KernelModule = { name: 'failing', register: (c) => registerPerBoot(c, Failing, { plugin: true }) };
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: [...image(), failing] });
    fill(k1.get(Memfd), 'data', [[0, 3 * MiB, 1]]);
    preserve(k1.get(Memfd), 'data');
    const folios = k1.get(Memfd).preservedFiles()[0].folios.map((x) => x.folio);
    expect(() => k1.prepare()).toThrow("ENOMEM: live update prepare failed in plugin 'failing': ENOMEM: failing: no memory for my state");
    expect(k1.state).toBe('running');
    expect(k1.get(Kho).subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE]);
    for (const f of folios) expect(k1.get<Tracker>(Tracker).has(f.pfn, f.order)).toBe(false);
    k1.get(Memfd).write(k1.get(Memfd).open('data'), 0, new Uint8Array(1)); // thawed
  });

  it('a prepare failing at each of its page allocations in turn leaves nothing preserved, and a retry succeeds', () => {
    let failures = 0;
    for (let nth = 1; nth < 200; nth++) {
      const { k1, expected } = firstKernel();
      const memfd = k1.get(Memfd);
      const kho = k1.get(Kho);
      const tracker = k1.get<Tracker>(Tracker);
      const buddy = k1.get(BuddyAllocator);
      const before = { blocks: kho.stats().trackerBlocks, pages: kho.stats().trackerPages, free: buddy.nrFreePages };
      const folios = memfd.preservedFiles().flatMap((f) => f.folios.map((x) => x.folio));
      const faults = k1.get(FaultInjector);
      faults.configure({ failNth: nth });
      let error: unknown;
      try {
        k1.prepare();
      } catch (e) {
        error = e;
      }
      const injected = faults.injected;
      faults.reset();
      if (injected === 0) {
        expect(error).toBeUndefined();
        break; // prepare made fewer than nth allocations: every failure point was tried
      }
      failures++;
      expect((error as KernelError).errno).toBe(Errno.ENOMEM);
      expect((error as KernelError).message).toMatch(/^ENOMEM: live update prepare failed in plugin 'memfd': ENOMEM: allocPages: injected failure of an order-\d+ allocation/);
      expect(kho.stats().trackerBlocks).toBe(before.blocks);
      for (const f of folios) expect(tracker.has(f.pfn, f.order)).toBe(false);
      expect(kho.subtrees()).toEqual([KHO_KEXEC_METADATA_SUBTREE]);
      expect(k1.get(MemfdPlugin).outgoingTable).toBeUndefined();
      expect(kho.stats().trackerPages).toBe(before.pages);
      expect(buddy.nrFreePages).toBe(before.free);
      const fd = memfd.open('small');
      memfd.write(fd, 0, expected.get('small')!.subarray(0, 1)); // not frozen
      memfd.close(fd);
      const k2 = k1.liveUpdate();
      expect(k2.restore().ok).toBe(true);
      for (const [name, content] of expected) expect(firstDifference(contentOf(k2.get(Memfd), name), content)).toBe(-1);
    }
    // The table and the tracker nodes for folios of several orders: more than one allocation to fail.
    expect(failures).toBeGreaterThan(2);
  });
});

describe('memfd refuses a hostile handover', () => {
  interface Handover {
    readonly k2: Kernel;
    readonly ram: PhysicalMemory;
    readonly table: number;
    readonly files: MemfdTableFile[];
    readonly blocks: number;
  }

  /** The second kernel, booted, before restore; the table in RAM and what it decodes to. */
  function handover(): Handover {
    const { machine, k1 } = firstKernel();
    const blocks = k1.get(Memfd).preservedFiles().reduce((n, f) => n + f.folios.length, 0) + 1;
    const k2 = k1.liveUpdate();
    const ram = machine.device(PhysicalMemory);
    const table = k2.get(Kho).retrieveSubtree(MEMFD_SUBTREE).phys;
    const size = ram.readU32(table + MemfdHeaderStruct.offsetOf('table_size'));
    return { k2, ram, table, files: decodeMemfdTable(ram.read(table, size)), blocks };
  }

  /** Address of folio entry `j` of file `name`, and the folio. */
  function folioEntry(h: Handover, name: string, j = 0): { at: number; phys: number; order: number } {
    let index = 0;
    for (const f of h.files) {
      if (f.name === name) return { at: h.table + MEMFD_HEADER_SIZE + h.files.length * MEMFD_FILE_SIZE + (index + j) * MEMFD_FOLIO_SIZE, ...f.folios[j] };
      index += f.folios.length;
    }
    throw new Error(`no file ${name}`);
  }

  /** Rewrites the checksum after an edit, as a forger would. */
  function reseal(h: Handover): void {
    const size = h.ram.readU32(h.table + MemfdHeaderStruct.offsetOf('table_size'));
    h.ram.write(h.table, sealMemfdTable(h.ram.read(h.table, size)));
  }

  it.each<[string, (h: Handover) => void, string | RegExp]>([
    ['a bad magic', (h) => h.ram.writeU32(h.table, 0x46444d4d), 'EINVAL: memfd: table magic 0x46444d4d (wanted 0x464d454d)'],
    ['a newer version', (h) => (h.ram.writeU16(h.table + MemfdHeaderStruct.offsetOf('version'), 2), reseal(h)), 'EOPNOTSUPP: memfd: table version 2 (this kernel reads version 1)'],
    [
      'a damaged entry (checksum)',
      (h) => h.ram.writeU8(h.table + MEMFD_HEADER_SIZE + MemfdFileStruct.offsetOf('size'), 0xff),
      /^EINVAL: memfd: table crc32 is 0x[0-9a-f]+ but its bytes give 0x[0-9a-f]+ \(not sealed at serialize, or damaged\)$/,
    ],
    [
      'a folio offset outside its file',
      (h) => (h.ram.writeU64(folioEntry(h, 'small').at + MemfdFolioStruct.offsetOf('offset'), 100), reseal(h)),
      "EINVAL: memfd: file 'small' folio 0: offset 100 is not inside the file (size 100)",
    ],
    [
      'a folio that was never preserved',
      (h) => (h.ram.writeU64(folioEntry(h, 'small').at + MemfdFolioStruct.offsetOf('phys_order'), 300 * MiB), reseal(h)),
      "EINVAL: memfd: file 'small' folio at offset 0: 0x12c00000 order 0 is not a block the previous kernel preserved",
    ],
    [
      'a folio whose order is not the preserved one',
      (h) => {
        const e = folioEntry(h, 'big');
        h.ram.writeU64(e.at + MemfdFolioStruct.offsetOf('phys_order'), e.phys | 8);
        reseal(h);
      },
      /^EINVAL: memfd: file 'big' folio at offset 0: 0x[0-9a-f]+ order 8 is not a block the previous kernel preserved \(it preserved order 9 there\)$/,
    ],
    [
      'a folio that is the table itself',
      (h) => (h.ram.writeU64(folioEntry(h, 'small').at + MemfdFolioStruct.offsetOf('phys_order'), h.table), reseal(h)),
      /^EINVAL: memfd: file 'small' folio at offset 0: 0x[0-9a-f]+ overlaps the table at 0x[0-9a-f]+$/,
    ],
    [
      "a tracker that claims the table's block is larger than the table says",
      (h) => {
        const phys = h.k2.get(Kho).retrieveSubtree(MEMFD_SUBTREE).phys;
        // as the walk of a tracker with that block one order higher would leave it: listed and stamped so
        const inc = h.k2.get(Kho).incomingHandover!;
        const i = inc.pfns.indexOf(pfn(phys / PAGE_SIZE));
        (inc.orders as Order[])[i] = toOrder(inc.orders[i] + 1);
        writeStamp(h.k2.get(Memmap), pfn(phys / PAGE_SIZE), inc.orders[i]);
      },
      /^EINVAL: memfd: the table at 0x[0-9a-f]+ \(\d+ bytes, an order-\d+ block\) is not a block the previous kernel preserved \(it preserved order \d+ there\)$/,
    ],
    [
      'a subtree pointing at memory that was not preserved',
      (h) => h.k2.get(Kho).incomingHandover!.fdt.child(MEMFD_SUBTREE)!.setU64LE(PROP_SUB_FDT, 300 * MiB),
      "EINVAL: retrieveSubtree('memfd'): the blob at 0x12c00000 (480 bytes) lies outside every preserved block",
    ],
    ['a name this kernel already uses', (h) => h.k2.get(Memfd).create('sparse'), "EEXIST: memfd: a file named 'sparse' exists already in this kernel"],
    [
      'more files than this kernel has room for',
      (h) => {
        for (let i = 0; i < MEMFD_MAX_FILES - 3; i++) h.k2.get(Memfd).create(`local-${i}`);
      },
      'ENOSPC: memfd: 4 files to restore, room for 3',
    ],
  ])('with %s: the error is reported, nothing is restored, KHO reports the blocks', (_what, forge, message) => {
    const h = handover();
    forge(h);
    const memfd = h.k2.get(Memfd);
    const own = memfd.list();
    const restore = h.k2.restore();
    expect(restore.ok).toBe(false);
    expect(restore.plugins.memfd.ok).toBe(false);
    if (typeof message === 'string') expect(restore.plugins.memfd.error).toBe(message);
    else expect(restore.plugins.memfd.error).toMatch(message);
    expect(memfd.list()).toEqual(own);
    // Every block of the handover is still reserved, its stamp intact: finish names them, none was freed.
    const finish = h.k2.finish();
    expect(finish.plugins.memfd).toEqual({ ok: true });
    expect((finish.plugins.kho.report as { unrestoredBlocks: number }).unrestoredBlocks).toBe(h.blocks);
  });
});
