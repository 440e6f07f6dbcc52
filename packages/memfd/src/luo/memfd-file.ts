import { injectable } from 'tsyringe';
import { CommandLine, Errno, KernelError, hex } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE, PhysicalMemory, type Folio } from '@kho/physmem';
import { KernelFile, type FileOperations, type Process } from '@kho/liveupdate';
import {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MEMFD_LUO_ALL_SEALS,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_HUGETLB,
} from './abi';

/** A 2 MiB folio: the PMD size of x86-64, what shmem's transparent huge pages use. */
export const SHMEM_HUGE_ORDER = 9;
const HUGE_PAGES = 2 ** SHMEM_HUGE_ORDER;

/** `transparent_hugepage_shmem=` values this model knows (Linux 6.14+ boot parameter). */
export type ShmemHuge = 'never' | 'always' | 'within_size' | 'advise';

/**
 * A memfd's inode: a sparse page cache of folios (keyed by the page index of their head), a size, seals and
 * upstream's "mapping frozen" flag (set while LUO preserves it: no size change). It has no name in any
 * namespace (`i_nlink == 0`), which is what LUO's memfd handler requires.
 */
export interface MemfdInode {
  readonly name: string;
  readonly hugetlb: boolean;
  size: number;
  seals: number;
  /** upstream SHMEM_F_MAPPING_FROZEN: growing, shrinking and hole punching are EPERM. */
  frozen: boolean;
  readonly folios: Map<number, Folio>;
  /** Links from a filesystem: always 0 for a memfd. */
  readonly nlink: 0;
}

/**
 * memfd files for processes (`memfd_create(2)`), one instance per boot: a shmem page cache in simulated RAM.
 * Folios are allocated on first write, mapping or fallocate, never movable (so never in KHO scratch); their order
 * follows `transparent_hugepage_shmem=` (never by default: 4 KiB folios; `always`: 2 MiB folios where a 2 MiB
 * aligned range holds no folio yet; `within_size`: the same when the range lies inside i_size). `MFD_HUGETLB`
 * makes a hugetlbfs file instead (2 MiB pages, not shmem: LUO refuses it).
 */
@injectable()
export class MemfdFs {
  readonly huge: ShmemHuge;

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    cmdline: CommandLine,
  ) {
    const v = cmdline.get('transparent_hugepage_shmem') ?? 'never';
    if (!['never', 'always', 'within_size', 'advise'].includes(v)) {
      throw new KernelError(Errno.EINVAL, `transparent_hugepage_shmem=${v} (wanted never, always, within_size or advise)`);
    }
    this.huge = v as ShmemHuge;
  }

  /**
   * memfd_create(name, flags) in `proc`: a new empty file, open read-write. Returns the fd. EINVAL for unknown
   * flags or a name over 249 bytes (NAME_MAX minus "memfd:").
   */
  memfdCreate(proc: Process, name: string, flags = 0): number {
    if ((flags & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB)) !== 0) throw new KernelError(Errno.EINVAL, `memfd_create: flags ${hex(flags)} hold unknown bits`);
    if (new TextEncoder().encode(name).length > 249) throw new KernelError(Errno.EINVAL, `memfd_create: name of more than 249 bytes`);
    const hugetlb = (flags & MFD_HUGETLB) !== 0;
    // Without MFD_ALLOW_SEALING a memfd starts with F_SEAL_SEAL: no seal can ever be added.
    const seals = (flags & MFD_ALLOW_SEALING) !== 0 && !hugetlb ? 0 : F_SEAL_SEAL;
    const file = this.newFile(name, seals, hugetlb);
    return proc.installFile(file, (flags & MFD_CLOEXEC) !== 0);
  }

  /** A new memfd file object (no fd): what LUO's retrieve makes. */
  newFile(name: string, seals: number, hugetlb = false): KernelFile {
    const inode: MemfdInode = { name, hugetlb, size: 0, seals, frozen: false, folios: new Map(), nlink: 0 };
    return new KernelFile(`${hugetlb ? '/memfd' : 'memfd'}:${name} (deleted)`, hugetlb ? this.hugetlbOps : this.shmemOps, inode);
  }

  /** True for a memfd of the shmem kind (what LUO's memfd handler accepts). */
  isShmem(file: KernelFile): boolean {
    return file.ops === this.shmemOps;
  }

  /** The inode of a memfd file (either kind). EINVAL for another file. */
  inodeOf(file: KernelFile): MemfdInode {
    if (file.ops !== this.shmemOps && file.ops !== this.hugetlbOps) throw new KernelError(Errno.EINVAL, `${file.path} is not a memfd`);
    return file.privateData as MemfdInode;
  }

  /** The folios of `inode` in index order, filling every hole of [0, size) first (what pinning does). */
  pinAll(inode: MemfdInode): Array<{ index: number; folio: Folio }> {
    const pages = Math.ceil(inode.size / PAGE_SIZE);
    for (let i = 0; i < pages; ) {
      const head = findHead(inode, i);
      if (head >= 0) i = head + 2 ** inode.folios.get(head)!.order;
      else i = this.fault(inode, i) + 1;
    }
    return [...inode.folios.keys()].sort((a, b) => a - b).map((index) => ({ index, folio: inode.folios.get(index)! }));
  }

  /** Adds an adopted folio (from the previous kernel) at `index`. EINVAL when it overlaps one already there. */
  insertFolio(inode: MemfdInode, index: number, folio: Folio): void {
    if (rangeUsed(inode, index, folio.nrPages)) throw new KernelError(Errno.EINVAL, `folio at index ${index} (order ${folio.order}) overlaps a folio already in the file`);
    inode.folios.set(index, folio);
  }

  /** Frees every folio of `inode` (the last reference went). */
  freeAll(inode: MemfdInode): void {
    for (const f of inode.folios.values()) this.buddy.folioPut(f);
    inode.folios.clear();
  }

  // ------------------------------------------------------------------------------------ file operations

  private readonly shmemOps: FileOperations = this.ops(false);
  private readonly hugetlbOps: FileOperations = this.ops(true);

  private ops(_hugetlb: boolean): FileOperations {
    const ino = (f: KernelFile): MemfdInode => f.privateData as MemfdInode;
    return {
      release: (f) => this.freeAll(ino(f)),
      size: (f) => ino(f).size,
      read: (f, off, len) => this.read(ino(f), off, len),
      write: (f, off, bytes) => this.write(ino(f), off, bytes),
      truncate: (f, size) => this.truncate(ino(f), size),
      fallocate: (f, off, len) => this.fallocate(ino(f), off, len),
      addSeals: (f, seals) => this.addSeals(ino(f), seals),
      getSeals: (f) => ino(f).seals,
      mapPage: (f, i) => this.mapPage(ino(f), i),
    };
  }

  private read(inode: MemfdInode, off: number, len: number): Uint8Array {
    if (!Number.isSafeInteger(len) || len < 0) throw new KernelError(Errno.EINVAL, `read: length ${len}`);
    const n = Math.max(0, Math.min(len, inode.size - off));
    const out = new Uint8Array(n);
    for (let pos = off; pos < off + n; ) {
      const p = Math.floor(pos / PAGE_SIZE);
      const inPage = pos - p * PAGE_SIZE;
      const m = Math.min(off + n - pos, PAGE_SIZE - inPage);
      const head = findHead(inode, p);
      if (head >= 0) {
        const page = this.ram.pageIfPresent(inode.folios.get(head)!.pfn + (p - head));
        if (page) out.set(page.subarray(inPage, inPage + m), pos - off);
      }
      pos += m;
    }
    return out;
  }

  private write(inode: MemfdInode, off: number, bytes: Uint8Array): number {
    if (bytes.length === 0) return 0;
    if ((inode.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0) throw new KernelError(Errno.EPERM, `write: ${inode.name} is sealed against writes`);
    const end = off + bytes.length;
    if (end > inode.size) {
      if ((inode.seals & F_SEAL_GROW) !== 0) throw new KernelError(Errno.EPERM, `write: ${inode.name} is sealed against growing (F_SEAL_GROW)`);
      if (inode.frozen) throw new KernelError(Errno.EPERM, `write: ${inode.name} is preserved by LUO: its size cannot change`);
      inode.size = end;
    }
    for (let pos = off; pos < end; ) {
      const p = Math.floor(pos / PAGE_SIZE);
      const inPage = pos - p * PAGE_SIZE;
      const m = Math.min(end - pos, PAGE_SIZE - inPage);
      this.pageOf(inode, p).set(bytes.subarray(pos - off, pos - off + m), inPage);
      pos += m;
    }
    return bytes.length;
  }

  private truncate(inode: MemfdInode, size: number): void {
    if (size === inode.size) return;
    if (inode.frozen) throw new KernelError(Errno.EPERM, `ftruncate: ${inode.name} is preserved by LUO: its size cannot change`);
    if (size < inode.size && (inode.seals & F_SEAL_SHRINK) !== 0) throw new KernelError(Errno.EPERM, `ftruncate: ${inode.name} is sealed against shrinking`);
    if (size > inode.size && (inode.seals & F_SEAL_GROW) !== 0) throw new KernelError(Errno.EPERM, `ftruncate: ${inode.name} is sealed against growing`);
    if (size < inode.size) {
      const keep = Math.ceil(size / PAGE_SIZE);
      for (const [head, f] of [...inode.folios]) {
        if (head >= keep) {
          inode.folios.delete(head);
          this.buddy.folioPut(f);
        } else if (head + f.nrPages > keep || size % PAGE_SIZE !== 0) {
          const start = head * PAGE_SIZE;
          if (start + f.size > size) this.ram.fill(f.phys + (size - start), start + f.size - size, 0);
        }
      }
    }
    inode.size = size;
  }

  private fallocate(inode: MemfdInode, off: number, len: number): void {
    if (!Number.isSafeInteger(len) || len <= 0) throw new KernelError(Errno.EINVAL, `fallocate: length ${len}`);
    if (inode.frozen) throw new KernelError(Errno.EPERM, `fallocate: ${inode.name} is preserved by LUO`);
    const end = off + len;
    if (end > inode.size && (inode.seals & F_SEAL_GROW) !== 0) throw new KernelError(Errno.EPERM, `fallocate: ${inode.name} is sealed against growing`);
    if (end > inode.size) inode.size = end;
    for (let p = Math.floor(off / PAGE_SIZE); p < Math.ceil(end / PAGE_SIZE); ) {
      const head = findHead(inode, p);
      p = head >= 0 ? head + 2 ** inode.folios.get(head)!.order : this.fault(inode, p) + 1;
    }
  }

  private addSeals(inode: MemfdInode, seals: number): void {
    if ((seals & ~MEMFD_LUO_ALL_SEALS) !== 0) throw new KernelError(Errno.EINVAL, `F_ADD_SEALS: ${hex(seals)} holds unknown seals`);
    if ((inode.seals & F_SEAL_SEAL) !== 0) throw new KernelError(Errno.EPERM, `F_ADD_SEALS: ${inode.name} is sealed against new seals (F_SEAL_SEAL)`);
    inode.seals |= seals;
  }

  private mapPage(inode: MemfdInode, i: number): Uint8Array {
    if (!Number.isSafeInteger(i) || i < 0 || i * PAGE_SIZE >= inode.size) throw new KernelError(Errno.EFAULT, `page ${i} of ${inode.name} is past its end (SIGBUS)`);
    return this.pageOf(inode, i);
  }

  /** Page `p` of the file as a writable view of RAM, faulting a folio in when it is a hole. */
  private pageOf(inode: MemfdInode, p: number): Uint8Array {
    let head = findHead(inode, p);
    if (head < 0) head = this.fault(inode, p);
    return this.ram.page(inode.folios.get(head)!.pfn + (p - head));
  }

  /**
   * Allocates the folio holding page `p` (a hole): 2 MiB when the huge policy allows and the aligned 2 MiB range
   * is free of folios (falling back to 4 KiB when no 2 MiB block is free), else 4 KiB. Zeroed. Returns its head
   * index. ENOMEM when not even a page is free.
   */
  private fault(inode: MemfdInode, p: number): number {
    const base = p - (p % HUGE_PAGES);
    const hugeOk =
      inode.hugetlb ||
      ((this.huge === 'always' || (this.huge === 'within_size' && (base + HUGE_PAGES) * PAGE_SIZE <= inode.size)) && !rangeUsed(inode, base, HUGE_PAGES));
    if (hugeOk) {
      try {
        const f = this.buddy.folioAlloc(SHMEM_HUGE_ORDER);
        this.ram.fill(f.phys, f.size, 0);
        inode.folios.set(base, f);
        return base;
      } catch (e) {
        if (inode.hugetlb) throw e;
      }
    }
    const f = this.buddy.folioAlloc(0);
    this.ram.fill(f.phys, PAGE_SIZE, 0);
    inode.folios.set(p, f);
    return p;
  }
}

/** The head index of the folio holding page `p`, or -1 for a hole. */
export function findHead(inode: MemfdInode, p: number): number {
  if (inode.folios.has(p)) return p;
  for (let o = 1; o <= 10; o++) {
    const head = p - (p % 2 ** o);
    const f = inode.folios.get(head);
    if (f !== undefined && head + f.nrPages > p) return head;
  }
  return -1;
}

/**
 * Whether any folio of `inode` holds a page of [base, base + n). Folios are naturally aligned, so one that overlaps
 * the range either holds `base` or has its head inside the range: one lookup for the first, then either the folios
 * or the range's pages, whichever are fewer.
 */
function rangeUsed(inode: MemfdInode, base: number, n: number): boolean {
  if (findHead(inode, base) >= 0) return true;
  if (inode.folios.size < n) {
    for (const [head, f] of inode.folios) if (head < base + n && head + f.nrPages > base) return true;
    return false;
  }
  for (let p = base + 1; p < base + n; p++) if (inode.folios.has(p)) return true;
  return false;
}
