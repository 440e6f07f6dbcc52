import { injectable } from 'tsyringe';
import { Errno, KernelError, withUnwind } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE, PhysicalMemory, type Folio } from '@kho/physmem';
import { MEMFD_MAX_FILES, MEMFD_MAX_FILE_SIZE, MEMFD_MAX_FOLIO_ORDER, MEMFD_NAME_MAX } from './abi';

/** What `stat` and `list` report about a file. */
export interface MemfdStat {
  readonly name: string;
  /** Bytes. */
  readonly size: number;
  /** Folios in its page cache, and the pages they hold (holes hold none). */
  readonly folios: number;
  readonly pages: number;
  /** Marked with `preserve`: handed over at the next live update. */
  readonly preserved: boolean;
  /** File descriptors open on it. */
  readonly openFds: number;
}

/** A file of the page cache at a moment: its folios ascending by offset. Handed to the plugin at prepare. */
export interface MemfdFileView {
  readonly name: string;
  readonly size: number;
  readonly folios: ReadonlyArray<{ readonly offset: number; readonly folio: Folio }>;
}

/** A file: a sparse page cache of folios, keyed by the page index in the file of each folio's first page. */
interface Inode {
  readonly name: string;
  size: number;
  readonly folios: Map<number, Folio>;
  preserved: boolean;
  /** Still reachable by name (not unlinked). */
  linked: boolean;
  opens: number;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * memfd-like files in RAM, one namespace per boot: `create` a file by name and get a file descriptor, `write`
 * and `read` at any offset (holes read as zero), `truncate`, `close`, `unlink`. A file's data lives in folios of
 * a sparse page cache, allocated when first written (the largest of order 0..MEMFD_MAX_FOLIO_ORDER that is
 * aligned, inside the write and free), non-movable, so never in KHO scratch. A file marked with `preserve`
 * survives a live update (see MemfdPlugin): the next kernel has it under the same name; `open` it again.
 *
 * As with POSIX files, an unlinked file lives on until its last descriptor is closed. Descriptors are the lowest
 * free non-negative integers. Limits: names of 1..MEMFD_NAME_MAX UTF-8 bytes without '/' or NUL (EINVAL),
 * MEMFD_MAX_FILES files (ENOSPC), files of MEMFD_MAX_FILE_SIZE bytes (E2BIG). A descriptor that is not open is
 * EINVAL (the simulator has no EBADF). While a live update is prepared, preserved files cannot change (EBUSY).
 */
@injectable()
export class Memfd {
  private readonly byName = new Map<string, Inode>();
  private readonly inodes = new Set<Inode>();
  private readonly fds = new Map<number, Inode>();
  private frozen = false;

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
  ) {}

  // ---------------------------------------------------------------- the file API

  /**
   * Creates an empty file named `name` and opens it. Returns its descriptor. Throws EINVAL for a bad name,
   * EEXIST when the name is taken and ENOSPC when MEMFD_MAX_FILES files exist.
   */
  create(name: string): number {
    checkName(name);
    if (this.byName.has(name)) throw new KernelError(Errno.EEXIST, `create: a file named '${name}' exists`);
    if (this.inodes.size >= MEMFD_MAX_FILES) throw new KernelError(Errno.ENOSPC, `create: ${this.inodes.size} files exist (at most ${MEMFD_MAX_FILES})`);
    const inode: Inode = { name, size: 0, folios: new Map(), preserved: false, linked: true, opens: 0 };
    this.byName.set(name, inode);
    this.inodes.add(inode);
    return this.openInode(inode);
  }

  /** Opens the file named `name`. Returns a new descriptor. Throws ENOENT when there is no such file. */
  open(name: string): number {
    return this.openInode(this.named(name, 'open'));
  }

  /** Closes `fd`; an unlinked file is freed with its last descriptor. Throws EINVAL when `fd` is not open. */
  close(fd: number): void {
    const inode = this.file(fd, 'close');
    this.fds.delete(fd);
    inode.opens--;
    this.release(inode);
  }

  /**
   * Removes the name `name`; the file is freed now, or when its last descriptor is closed. It is no longer
   * preserved. Throws ENOENT when there is no such file and EBUSY when it is preserved by a prepared update.
   */
  unlink(name: string): void {
    const inode = this.named(name, 'unlink');
    this.checkMutable(inode, 'unlink');
    this.byName.delete(name);
    inode.linked = false;
    inode.preserved = false;
    this.release(inode);
  }

  /**
   * Writes `bytes` at `offset`, allocating folios for the holes it covers, and grows the file to cover them.
   * Returns the number of bytes written (all of them). Throws EINVAL for a bad descriptor or offset, E2BIG when
   * the file would pass MEMFD_MAX_FILE_SIZE, EBUSY for a file preserved by a prepared update, and ENOMEM when a
   * folio cannot be allocated; a failed write changes nothing.
   */
  write(fd: number, offset: number, bytes: Uint8Array): number {
    const inode = this.file(fd, 'write');
    checkCount(offset, 'write', 'offset');
    if (bytes.length === 0) return 0;
    const end = offset + bytes.length;
    if (end > MEMFD_MAX_FILE_SIZE) {
      throw new KernelError(Errno.E2BIG, `write: file '${inode.name}' would grow to ${end} bytes (at most ${MEMFD_MAX_FILE_SIZE})`);
    }
    this.checkMutable(inode, 'write');
    const first = Math.floor(offset / PAGE_SIZE);
    const last = Math.floor((end - 1) / PAGE_SIZE);
    withUnwind((u) => {
      for (let p = first; p <= last; ) {
        const found = findFolio(inode, p);
        if (found >= 0) {
          p = found + 2 ** inode.folios.get(found)!.order;
          continue;
        }
        const head = p;
        const order = holeOrder(inode, head, last);
        const folio = this.buddy.folioAlloc(order); // non-movable: never in scratch
        u.push(() => this.buddy.folioPut(folio));
        this.ram.fill(folio.phys, folio.size, 0);
        inode.folios.set(head, folio);
        u.push(() => inode.folios.delete(head));
        p = head + 2 ** order;
      }
    });
    for (let pos = offset; pos < end; ) {
      const head = findFolio(inode, Math.floor(pos / PAGE_SIZE));
      const folio = inode.folios.get(head)!;
      const start = head * PAGE_SIZE;
      const n = Math.min(end, start + folio.size) - pos;
      this.ram.write(folio.phys + (pos - start), bytes.subarray(pos - offset, pos - offset + n));
      pos += n;
    }
    if (end > inode.size) inode.size = end;
    return bytes.length;
  }

  /**
   * Reads up to `len` bytes at `offset`: fewer at the end of the file, none at or past it; holes read as zero.
   * Returns a new array. Throws EINVAL for a bad descriptor, offset or length.
   */
  read(fd: number, offset: number, len: number): Uint8Array {
    const inode = this.file(fd, 'read');
    checkCount(offset, 'read', 'offset');
    checkCount(len, 'read', 'length');
    const n = Math.max(0, Math.min(len, inode.size - offset));
    const out = new Uint8Array(n);
    const end = offset + n;
    for (let pos = offset; pos < end; ) {
      const p = Math.floor(pos / PAGE_SIZE);
      const head = findFolio(inode, p);
      if (head < 0) {
        pos = Math.min(end, (p + 1) * PAGE_SIZE); // a hole: zeros
        continue;
      }
      // Page by page, straight from RAM's backing: a page never written reads as zero and costs nothing.
      const folio = inode.folios.get(head)!;
      const addr = folio.phys + (pos - head * PAGE_SIZE);
      const inPage = addr % PAGE_SIZE;
      const m = Math.min(end - pos, PAGE_SIZE - inPage);
      const page = this.ram.pageIfPresent((addr - inPage) / PAGE_SIZE);
      if (page) out.set(page.subarray(inPage, inPage + m), pos - offset);
      pos += m;
    }
    return out;
  }

  /**
   * Sets the size of the file to `size`: shrinking frees the folios that start at or past it and zeroes the
   * rest of the one it cuts; growing adds a hole. Throws EINVAL for a bad descriptor or size, E2BIG above
   * MEMFD_MAX_FILE_SIZE and EBUSY for a file preserved by a prepared update.
   */
  truncate(fd: number, size: number): void {
    const inode = this.file(fd, 'truncate');
    checkCount(size, 'truncate', 'size');
    if (size > MEMFD_MAX_FILE_SIZE) throw new KernelError(Errno.E2BIG, `truncate: size ${size} (at most ${MEMFD_MAX_FILE_SIZE})`);
    this.checkMutable(inode, 'truncate');
    if (size < inode.size) {
      for (const [head, folio] of [...inode.folios]) {
        const start = head * PAGE_SIZE;
        if (start >= size) {
          inode.folios.delete(head);
          this.buddy.folioPut(folio);
        } else if (start + folio.size > size) {
          this.ram.fill(folio.phys + (size - start), start + folio.size - size, 0); // bytes past the end stay zero
        }
      }
    }
    inode.size = size;
  }

  /** The size of the file open as `fd`, in bytes. Throws EINVAL when `fd` is not open. */
  size(fd: number): number {
    return this.file(fd, 'size').size;
  }

  /**
   * Marks the file open as `fd` for preservation: at the next live update its data and name are handed to the
   * next kernel. Idempotent. Throws EINVAL when `fd` is not open, ENOENT when the file was unlinked (it has no
   * name to come back under) and EBUSY while an update is prepared.
   */
  preserve(fd: number): void {
    const inode = this.file(fd, 'preserve');
    if (!inode.linked) throw new KernelError(Errno.ENOENT, `preserve: file '${inode.name}' was unlinked`);
    if (this.frozen) throw new KernelError(Errno.EBUSY, `preserve: a live update is prepared (the preserved files are fixed until it ends)`);
    inode.preserved = true;
  }

  /** Undoes {@link preserve}. Idempotent. Throws EINVAL when `fd` is not open and EBUSY while an update is prepared. */
  unpreserve(fd: number): void {
    const inode = this.file(fd, 'unpreserve');
    if (this.frozen && inode.preserved) throw new KernelError(Errno.EBUSY, `unpreserve: file '${inode.name}' is preserved by a prepared live update`);
    inode.preserved = false;
  }

  /** What the file named `name` holds. Throws ENOENT when there is no such file. */
  stat(name: string): MemfdStat {
    return this.statOf(this.named(name, 'stat'));
  }

  /** Every file with a name, sorted by name. */
  list(): MemfdStat[] {
    return [...this.byName.keys()].sort().map((n) => this.statOf(this.byName.get(n)!));
  }

  /** Pages held by every file of this kernel, unlinked ones still open included. */
  get usedPages(): number {
    let n = 0;
    for (const inode of this.inodes) for (const f of inode.folios.values()) n += f.nrPages;
    return n;
  }

  // ---------------------------------------------------------------- for MemfdPlugin

  /** @internal The files marked for preservation, sorted by name, with their folios ascending by offset. */
  preservedFiles(): MemfdFileView[] {
    return [...this.byName.values()]
      .filter((i) => i.preserved)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((i) => ({
        name: i.name,
        size: i.size,
        folios: [...i.folios.keys()].sort((a, b) => a - b).map((head) => ({ offset: head * PAGE_SIZE, folio: i.folios.get(head)! })),
      }));
  }

  /** @internal A live update is prepared: preserved files may not change, and the set of them is fixed. */
  freeze(): void {
    this.frozen = true;
  }

  /** @internal The update was cancelled. */
  thaw(): void {
    this.frozen = false;
  }

  /** @internal Whether a name is taken, and how many more files fit (checked before a restore adopts files). */
  has(name: string): boolean {
    return this.byName.has(name);
  }
  get freeSlots(): number {
    return MEMFD_MAX_FILES - this.inodes.size;
  }

  /**
   * @internal Takes a file back from the previous kernel: linked under `name`, no descriptor open, not marked
   * for preservation. The folios must be valid (checked by the caller): offsets aligned and inside the file,
   * no overlap. Bytes past the end of the file are zeroed, as the page cache keeps them.
   */
  adopt(name: string, size: number, folios: ReadonlyArray<{ readonly offset: number; readonly folio: Folio }>): void {
    const inode: Inode = { name, size, folios: new Map(), preserved: false, linked: true, opens: 0 };
    for (const { offset, folio } of folios) {
      inode.folios.set(offset / PAGE_SIZE, folio);
      if (offset + folio.size > size) this.ram.fill(folio.phys + (size - offset), offset + folio.size - size, 0);
    }
    this.byName.set(name, inode);
    this.inodes.add(inode);
  }

  // ---------------------------------------------------------------- internals

  private openInode(inode: Inode): number {
    let fd = 0;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, inode);
    inode.opens++;
    return fd;
  }

  private file(fd: number, what: string): Inode {
    const inode = this.fds.get(fd);
    if (!inode) throw new KernelError(Errno.EINVAL, `${what}: fd ${fd} is not open`);
    return inode;
  }

  private named(name: string, what: string): Inode {
    const inode = this.byName.get(name);
    if (!inode) throw new KernelError(Errno.ENOENT, `${what}: no file named '${name}'`);
    return inode;
  }

  private checkMutable(inode: Inode, what: string): void {
    if (this.frozen && inode.preserved) {
      throw new KernelError(Errno.EBUSY, `${what}: file '${inode.name}' is preserved by a prepared live update (it cannot change until the update ends)`);
    }
  }

  /** Frees an unlinked file with no descriptor left. */
  private release(inode: Inode): void {
    if (inode.linked || inode.opens > 0) return;
    this.inodes.delete(inode);
    for (const folio of inode.folios.values()) this.buddy.folioPut(folio);
    inode.folios.clear();
  }

  private statOf(inode: Inode): MemfdStat {
    let pages = 0;
    for (const f of inode.folios.values()) pages += f.nrPages;
    return { name: inode.name, size: inode.size, folios: inode.folios.size, pages, preserved: inode.preserved, openFds: inode.opens };
  }
}

/** The page index of the first page of the folio holding page `p`, or -1 for a hole. */
function findFolio(inode: Inode, p: number): number {
  for (let o = 0; o <= MEMFD_MAX_FOLIO_ORDER; o++) {
    const head = p - (p % 2 ** o);
    const f = inode.folios.get(head);
    if (f !== undefined && head + 2 ** f.order > p) return head;
  }
  return -1;
}

/**
 * The order of the folio to allocate for the hole at page `p`, within a write ending at page `last`: the largest
 * order o (at most MEMFD_MAX_FOLIO_ORDER) with `p` aligned to 2^o, the block inside the write, and no folio in
 * it. A folio overlapping an aligned block that starts in a hole must start inside the block, so checking for
 * folio heads is enough.
 */
function holeOrder(inode: Inode, p: number, last: number): number {
  let order = 0;
  while (order < MEMFD_MAX_FOLIO_ORDER) {
    const next = 2 ** (order + 1);
    if (p % next !== 0 || p + next - 1 > last) break;
    let free = true;
    for (let q = p + 2 ** order; q < p + next && free; q++) free = !inode.folios.has(q);
    if (!free) break;
    order++;
  }
  return order;
}

function checkName(name: string): void {
  const bytes = utf8.encode(name);
  if (bytes.length < 1 || bytes.length > MEMFD_NAME_MAX) {
    throw new KernelError(Errno.EINVAL, `create: name '${name}' is ${bytes.length} bytes (wanted 1..${MEMFD_NAME_MAX})`);
  }
  if (name.includes('/') || name.includes('\0')) throw new KernelError(Errno.EINVAL, `create: name ${JSON.stringify(name)} contains '/' or NUL`);
  if (utf8Decoder.decode(bytes) !== name) throw new KernelError(Errno.EINVAL, `create: name ${JSON.stringify(name)} is not valid Unicode`);
}

function checkCount(n: number, what: string, field: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new KernelError(Errno.EINVAL, `${what}: ${field} ${n} (wanted a non-negative integer)`);
}
