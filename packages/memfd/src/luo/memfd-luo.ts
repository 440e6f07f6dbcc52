import { injectable, type DependencyContainer } from 'tsyringe';
import { Errno, KernelError, KernelLog, describeError, findKernelError, hex, registerPerBoot, withUnwind, type KernelModule } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE, PhysicalMemory, isPhysAddr, toPhysAddr, type Folio } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KhoVmalloc, Vmalloc, decodeKhoVmalloc, decodeKhoVmallocChunk, encodeKhoVmalloc } from '@kho/vmalloc';
import { LiveupdateFileHandler, type KernelFile, type LiveupdateFileOpArgs } from '@kho/liveupdate';
import {
  MEMFD_LUO_ALL_SEALS,
  MEMFD_LUO_COMPATIBLE,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  MEMFD_LUO_MAX_PAGES,
  MemfdLuoFolioSerStruct,
  MemfdLuoSerStruct,
} from './abi';
import { MemfdFs, type MemfdInode } from './memfd-file';

const ENTRY = MemfdLuoFolioSerStruct.size;
const TWO_32 = 2 ** 32;
const PFN_HI_MASK = 0xfffff; // bits 32..51 of the u64
const FLAGS = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;

/** What preserve keeps for unpreserve (never handed over). */
interface Preserved {
  readonly inode: MemfdInode;
  readonly folios: ReadonlyArray<{ index: number; folio: Folio }>;
  /** The vmalloc'ed folio array (0 when the file was empty) and its descriptor. */
  readonly array: number;
  readonly desc: Uint8Array | undefined;
}

/** One folio entry of the array. */
export interface MemfdLuoFolioEntry {
  readonly pfn: number;
  readonly flags: number;
  readonly index: number;
}

/** Decodes `n` entries of a folio array (16 bytes each). */
export function decodeFolioEntries(bytes: Uint8Array, n: number): MemfdLuoFolioEntry[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: MemfdLuoFolioEntry[] = [];
  for (let i = 0; i < n; i++) {
    const lo = v.getUint32(i * ENTRY, true);
    const hi = v.getUint32(i * ENTRY + 4, true);
    const ilo = v.getUint32(i * ENTRY + 8, true);
    const ihi = v.getUint32(i * ENTRY + 12, true);
    out.push({ pfn: (hi & PFN_HI_MASK) * TWO_32 + lo, flags: hi >>> 20, index: ihi >= 2 ** 21 ? Infinity : ihi * TWO_32 + ilo });
  }
  return out;
}

/**
 * LUO's memfd handler, `memfd-v2` (upstream mm/memfd_luo.c, linux-mm fb2257f1; spec section 6). It preserves a
 * shmem memfd (no links) as a 48-byte record and a vmalloc'ed array of `{pfn | flags, index}` entries, one per
 * folio, after filling every hole of the file; the file's size is frozen while preserved. In the next kernel it
 * rebuilds an anonymous memfd with the same size, position, seals and the very same folios (no copy), which free
 * the ordinary way when the file goes.
 */
@injectable()
export class MemfdLuoHandler implements LiveupdateFileHandler {
  readonly compatible = MEMFD_LUO_COMPATIBLE;

  constructor(
    private readonly fs: MemfdFs,
    private readonly kho: Kho,
    private readonly vmalloc: Vmalloc,
    private readonly khoVmalloc: KhoVmalloc,
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
  ) {}

  /** A shmem file with no links: a memfd, not hugetlbfs and not a named tmpfs file. */
  canPreserve(file: KernelFile): boolean {
    return this.fs.isShmem(file) && this.fs.inodeOf(file).nlink === 0;
  }

  /** The inode: two fds of one memfd are one file for the "preserved once" rule. */
  getId(file: KernelFile): unknown {
    return this.fs.isShmem(file) ? this.fs.inodeOf(file) : file;
  }

  /**
   * Freezes the mapping, writes the record, pins every folio of [0, size) (filling holes), preserves each folio
   * and the entry array. EOPNOTSUPP for a seal outside 0x3f, EFBIG past 2^32 − 1 pages, ENOMEM; on failure
   * everything is undone (holes filled stay filled, as upstream).
   */
  preserve(args: LiveupdateFileOpArgs): void {
    const inode = this.fs.inodeOf(args.file!);
    const what = `memfd-v2 preserve of ${args.file!.path}`;
    const p = withUnwind((u) => {
      inode.frozen = true;
      u.push(() => (inode.frozen = false));
      const rec = this.kho.allocPreserve(MemfdLuoSerStruct.size);
      u.push(() => this.kho.unpreserveFree(rec));
      if ((inode.seals & ~MEMFD_LUO_ALL_SEALS) !== 0) throw new KernelError(Errno.EOPNOTSUPP, `${what}: seals ${hex(inode.seals)} (memfd-v2 knows only ${hex(MEMFD_LUO_ALL_SEALS)})`);
      const pages = Math.ceil(inode.size / PAGE_SIZE);
      if (pages > MEMFD_LUO_MAX_PAGES) throw new KernelError(Errno.EFBIG, `${what}: ${pages} pages (at most ${MEMFD_LUO_MAX_PAGES})`);
      let preserved: Preserved = { inode, folios: [], array: 0, desc: undefined };
      let record = { pos: args.file!.pos, size: inode.size, seals: inode.seals, flags: 0, nr_folios: 0, folios: { first: 0, total_pages: 0, flags: 0, order: 0 } };
      if (inode.size > 0) {
        const folios = this.fs.pinAll(inode);
        const array = this.vmalloc.vzalloc(folios.length * ENTRY);
        u.push(() => this.vmalloc.vfree(array));
        const bytes = new Uint8Array(folios.length * ENTRY);
        const v = new DataView(bytes.buffer);
        folios.forEach(({ index, folio }, i) => {
          this.kho.preserveFolio(folio);
          u.push(() => this.kho.unpreserveFolio(folio));
          v.setUint32(i * ENTRY, folio.pfn % TWO_32, true);
          v.setUint32(i * ENTRY + 4, Math.floor(folio.pfn / TWO_32) | (FLAGS << 20), true);
          v.setUint32(i * ENTRY + 8, index % TWO_32, true);
          v.setUint32(i * ENTRY + 12, Math.floor(index / TWO_32), true);
        });
        this.vmalloc.write(array, bytes);
        const desc = this.khoVmalloc.preserveVmalloc(array);
        u.push(() => this.khoVmalloc.unpreserveVmalloc(desc));
        const d = decodeKhoVmalloc(desc);
        record = { ...record, nr_folios: folios.length, folios: { first: d.first, total_pages: d.totalPages, flags: d.flags, order: d.order } };
        preserved = { inode, folios, array, desc };
      }
      MemfdLuoSerStruct.write(this.ram, rec, record);
      args.serializedData = rec;
      return preserved;
    });
    args.privateData = p;
  }

  /** Refreshes the position, which may have moved since preserve. EINVAL when the record is missing. */
  freeze(args: LiveupdateFileOpArgs): void {
    if (!args.serializedData) throw new KernelError(Errno.EINVAL, 'memfd-v2 freeze: no record');
    this.ram.writeU64(args.serializedData + MemfdLuoSerStruct.offsetOf('pos'), args.file!.pos);
  }

  /** Undoes preserve: unfreezes the mapping, unpreserves the array and every folio, frees the array and the record. */
  unpreserve(args: LiveupdateFileOpArgs): void {
    const p = args.privateData as Preserved;
    p.inode.frozen = false;
    if (p.desc) this.khoVmalloc.unpreserveVmalloc(p.desc);
    for (const { folio } of p.folios) this.kho.unpreserveFolio(folio);
    if (p.array) this.vmalloc.vfree(p.array);
    this.kho.unpreserveFree(toPhysAddr(args.serializedData, 'memfd-v2 record'));
  }

  /**
   * Rebuilds the memfd. Throws EINVAL for a record that is not a preserved page of RAM, non-zero flags, or an
   * array that cannot be restored or does not match the record, a size past 2^32 − 1 pages, or folios that do
   * not cover [0, size) exactly (preserve fills every hole, so a valid record always does); EOPNOTSUPP for unknown seals (the record is
   * freed); EIO for a folio that is not a preserved block (outside RAM, never preserved, restored already). On a
   * failure the folios taken so far and every later valid one go back to the allocator; none is kept that the
   * previous kernel did not preserve.
   */
  retrieve(args: LiveupdateFileOpArgs): void {
    const rec = args.serializedData;
    const what = `memfd-v2 record at ${Number.isSafeInteger(rec) ? hex(rec) : '>= 2^53'}`;
    if (!rec) throw new KernelError(Errno.EINVAL, `${what}: the handle is 0`);
    if (!isPhysAddr(rec) || rec % PAGE_SIZE !== 0 || !this.ram.isRam(rec, MemfdLuoSerStruct.size)) throw new KernelError(Errno.EINVAL, `${what}: not a page of RAM`);
    const ser = MemfdLuoSerStruct.read(this.ram, rec);
    const freeRecord = (): void => {
      try {
        this.kho.restoreFree(rec);
      } catch (e) {
        this.log.warn('memfd', `${what}: not freed: ${describeError(e, { errno: true })}`);
      }
    };
    if ((ser.seals & ~MEMFD_LUO_ALL_SEALS) !== 0) {
      freeRecord();
      throw new KernelError(Errno.EOPNOTSUPP, `${what}: seals ${hex(ser.seals)} (wanted only ${hex(MEMFD_LUO_ALL_SEALS)})`);
    }
    if (ser.flags !== 0) {
      freeRecord();
      throw new KernelError(Errno.EINVAL, `${what}: flags ${hex(ser.flags)} (wanted 0)`);
    }
    const sizePages = Math.ceil(ser.size / PAGE_SIZE);
    if (!Number.isSafeInteger(ser.size) || sizePages > MEMFD_LUO_MAX_PAGES) {
      freeRecord(); // as for unknown seals: the array and folios it names stay reserved and finish names them
      throw new KernelError(Errno.EINVAL, `${what}: size ${Number.isFinite(ser.size) ? ser.size : '>= 2^53'} bytes is past the ${MEMFD_LUO_MAX_PAGES} pages a memfd-v2 file holds`);
    }
    const file = this.fs.newFile('', 0);
    const inode = this.fs.inodeOf(file);
    try {
      inode.seals = ser.seals;
      inode.size = ser.size;
      file.pos = Number.isFinite(ser.pos) ? ser.pos : 0;
      const pages = ser.nr_folios > 0 ? this.restoreFolios(inode, ser, what) : 0;
      // preserve fills every hole of [0, size): entries that do not cover the size exactly are not what it wrote
      if (pages !== sizePages) {
        throw new KernelError(Errno.EINVAL, `${what}: its folios hold ${pages} pages of the file but its size of ${ser.size} bytes needs ${sizePages} (wanted every page of the file preserved)`);
      }
    } catch (e) {
      file.put(); // frees what was inserted
      freeRecord();
      throw e;
    }
    freeRecord();
    args.file = file;
  }

  /** Inserts the array's folios into `inode`; returns how many pages of [0, size) they hold. */
  private restoreFolios(inode: MemfdInode, ser: ReturnType<typeof MemfdLuoSerStruct.decode>, what: string): number {
    let array: number;
    try {
      array = this.khoVmalloc.restoreVmalloc(encodeKhoVmalloc({ first: ser.folios.first, totalPages: ser.folios.total_pages, flags: ser.folios.flags, order: ser.folios.order }));
    } catch (e) {
      throw new KernelError(Errno.EINVAL, `${what}: the folio array cannot be restored: ${describeError(e, { errno: true })}`);
    }
    try {
      const n = ser.nr_folios;
      if (!Number.isSafeInteger(n) || n * ENTRY > ser.folios.total_pages * PAGE_SIZE) {
        throw new KernelError(Errno.EINVAL, `${what}: nr_folios ${Number.isFinite(n) ? n : '>= 2^53'} does not fit its array of ${ser.folios.total_pages} pages`);
      }
      const entries = decodeFolioEntries(this.vmalloc.read(array, n * ENTRY), n);
      const sizePages = Math.ceil(inode.size / PAGE_SIZE);
      let pages = 0;
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i];
        if (e.pfn === 0) continue;
        try {
          if (e.index >= sizePages) throw new KernelError(Errno.EINVAL, `index ${e.index} is past the file's ${sizePages} pages`);
          const folio = this.kho.restoreFolio(toPhysAddr(e.pfn * PAGE_SIZE, 'the folio'));
          // a large folio may reach past the end of the file: only its pages inside [0, size) count
          pages += Math.min(folio.nrPages, sizePages - e.index);
          try {
            this.fs.insertFolio(inode, e.index, folio);
          } catch (err) {
            this.buddy.folioPut(folio);
            throw err;
          }
        } catch (err) {
          const ke = findKernelError(err);
          this.releaseRest(entries.slice(i + 1));
          throw new KernelError(Errno.EIO, `${what}: folio entry ${i} (pfn ${hex(e.pfn)}, index ${e.index}): ${ke ? ke.reason : describeError(err)}`);
        }
      }
      return pages;
    } finally {
      this.vmalloc.vfree(array);
    }
  }

  /** After a failed retrieve: the entries not yet taken that are preserved blocks are restored and freed. */
  private releaseRest(entries: readonly MemfdLuoFolioEntry[]): void {
    for (const e of entries) {
      if (e.pfn === 0) continue;
      try {
        this.buddy.folioPut(this.kho.restoreFolio(toPhysAddr(e.pfn * PAGE_SIZE, 'the folio')));
      } catch {
        // not a preserved block: nothing to give back
      }
    }
  }

  /** Never retrieved: the preserved data is discarded (array restored, every folio restored and freed, record freed). */
  finish(args: LiveupdateFileOpArgs): void {
    if (args.retrieveStatus !== 0) return;
    const rec = args.serializedData;
    if (!isPhysAddr(rec) || rec % PAGE_SIZE !== 0 || !this.ram.isRam(rec, MemfdLuoSerStruct.size)) {
      this.log.warn('memfd', `memfd-v2 finish: record ${Number.isSafeInteger(rec) ? hex(rec) : '>= 2^53'} is not RAM; nothing freed`);
      return;
    }
    const ser = MemfdLuoSerStruct.read(this.ram, rec);
    if (ser.nr_folios > 0) {
      try {
        const array = this.khoVmalloc.restoreVmalloc(encodeKhoVmalloc({ first: ser.folios.first, totalPages: ser.folios.total_pages, flags: ser.folios.flags, order: ser.folios.order }));
        const n = Math.min(ser.nr_folios, (ser.folios.total_pages * PAGE_SIZE) / ENTRY);
        this.releaseRest(decodeFolioEntries(this.vmalloc.read(array, n * ENTRY), n));
        this.vmalloc.vfree(array);
      } catch (e) {
        this.log.warn('memfd', `memfd-v2 finish: the folio array of record ${hex(rec)} cannot be restored (${describeError(e, { errno: true })}); its folios stay reserved`);
      }
    }
    try {
      this.kho.restoreFree(rec);
    } catch (e) {
      this.log.warn('memfd', `memfd-v2 finish: record ${hex(rec)} not freed: ${describeError(e, { errno: true })}`);
    }
  }
}

/**
 * The kernel-image module of memfd through LUO: {@link MemfdFs} (memfd_create for processes) and
 * {@link MemfdLuoHandler} contributed as a LUO file handler. Needs liveupdateModule and vmallocModule in the image.
 */
export function memfdLuoModule(): KernelModule {
  return {
    name: 'memfd-luo',
    register(c: DependencyContainer): void {
      registerPerBoot(c, MemfdFs);
      registerPerBoot(c, MemfdLuoHandler);
      c.register(LiveupdateFileHandler, { useToken: MemfdLuoHandler });
    },
  };
}

/** What `kho inspect` shows of a memfd-v2 record. */
export interface DecodedMemfdLuo {
  readonly pos: number;
  readonly size: number;
  readonly seals: number;
  readonly flags: number;
  readonly nrFolios: number;
  readonly array: { readonly first: string; readonly totalPages: number; readonly flags: number; readonly order: number; readonly pages: readonly string[] };
  readonly folios: ReadonlyArray<{ readonly pfn: string; readonly index: number; readonly flags: number }>;
  readonly error?: string;
}

/**
 * Decodes the memfd-v2 record at `phys` and its folio array (following the kho_vmalloc chunk pages) without a
 * kernel: for inspectors. Hostile-input safe: pointers checked against RAM, the chunk chain bounded and checked
 * for loops, the entries bounded by the array; a problem is returned in `error` (or thrown for the record itself).
 */
export function decodeMemfdLuoRecord(ram: { isRam(a: number, s?: number): boolean; read(a: number, n: number): Uint8Array }, phys: number): DecodedMemfdLuo {
  if (!Number.isSafeInteger(phys) || !ram.isRam(phys, MemfdLuoSerStruct.size)) throw new KernelError(Errno.EINVAL, `memfd-v2 record ${Number.isFinite(phys) ? hex(phys) : '>= 2^53'} is not RAM`);
  const r = MemfdLuoSerStruct.decode(ram.read(phys, MemfdLuoSerStruct.size));
  const pages: number[] = [];
  let error: string | undefined;
  const seen = new Set<number>();
  for (let c = r.folios.first; c !== 0 && pages.length < r.folios.total_pages; ) {
    if (!Number.isSafeInteger(c) || c % PAGE_SIZE !== 0 || !ram.isRam(c, PAGE_SIZE) || seen.has(c)) {
      error = `chunk ${Number.isFinite(c) ? hex(c) : '>= 2^53'} is not a page of RAM, or is reached twice`;
      break;
    }
    seen.add(c);
    const chunk = decodeKhoVmallocChunk(ram.read(c, PAGE_SIZE));
    for (const p of chunk.phys) if (pages.length < r.folios.total_pages) pages.push(p);
    c = chunk.next;
  }
  const folios: Array<{ pfn: string; index: number; flags: number }> = [];
  const n = Math.min(r.nr_folios, pages.length * (PAGE_SIZE / ENTRY));
  if (r.nr_folios > n && !error) error = `nr_folios ${r.nr_folios} does not fit an array of ${pages.length} pages`;
  for (let i = 0; i < n; i++) {
    const page = pages[Math.floor((i * ENTRY) / PAGE_SIZE)];
    if (!Number.isSafeInteger(page) || !ram.isRam(page, PAGE_SIZE)) {
      error = `array page ${Number.isFinite(page) ? hex(page) : '>= 2^53'} is not RAM`;
      break;
    }
    const [e] = decodeFolioEntries(ram.read(page + ((i * ENTRY) % PAGE_SIZE), ENTRY), 1);
    folios.push({ pfn: hex(e.pfn), index: e.index, flags: e.flags });
  }
  return {
    pos: r.pos,
    size: r.size,
    seals: r.seals,
    flags: r.flags,
    nrFolios: r.nr_folios,
    array: { first: Number.isFinite(r.folios.first) ? hex(r.folios.first) : '>= 2^53', totalPages: r.folios.total_pages, flags: r.folios.flags, order: r.folios.order, pages: pages.map((p) => (Number.isFinite(p) ? hex(p) : '>= 2^53')) },
    folios,
    error,
  };
}
