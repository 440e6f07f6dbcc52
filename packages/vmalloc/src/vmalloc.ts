import { injectable } from 'tsyringe';
import { Errno, KernelError, hex, isKernelError, withUnwind } from '@kho/kernel';
import { BuddyAllocator, MAX_PAGE_ORDER, Memmap, ORDER_0, PAGE_SIZE, PageFlag, PhysicalMemory, toOrder, type Order, type Pfn } from '@kho/physmem';

/**
 * The simulated vmalloc range: [2^52, 2^52 + 2^45), 32 TiB of kernel virtual addresses. x86-64's real range
 * (VMALLOC_START 0xffffc90000000000 with 4-level paging) needs all 64 bits and is not exact as a JavaScript
 * number; every address here is below 2^53, so virtual addresses are plain numbers like physical ones, and
 * none of them can be mistaken for RAM (the machine has none at or above 2^50).
 */
export const VMALLOC_START = 2 ** 52;
/** Bytes of the simulated vmalloc range. */
export const VMALLOC_SIZE = 2 ** 45;
/** End (exclusive) of the simulated vmalloc range. */
export const VMALLOC_END = VMALLOC_START + VMALLOC_SIZE;

/**
 * Area flags. VM_ALLOC and VM_HUGE_VMAP share their values with KHO_VMALLOC_ALLOC and KHO_VMALLOC_HUGE_VMAP;
 * the others are the simulator's values (Linux has VM_IOREMAP 0x1, VM_ALLOC 0x2, VM_MAP 0x4, VM_USERMAP 0x8).
 * They exist so that an area KHO cannot preserve can be built and refused.
 */
export const VM_ALLOC = 0x1;
/** The area is mapped with blocks of 2^order pages, order > 0. */
export const VM_HUGE_VMAP = 0x2;
/** An ioremap()ed area (device memory): not preservable. */
export const VM_IOREMAP = 0x4;
/** A vmap()ed area of pages its caller owns: not preservable. */
export const VM_MAP = 0x8;
/** An area that may be mapped to user space: not preservable. */
export const VM_USERMAP = 0x10;
/** Every flag this simulator knows. */
export const VM_FLAGS_KNOWN = VM_ALLOC | VM_HUGE_VMAP | VM_IOREMAP | VM_MAP | VM_USERMAP;

/** Order of a huge vmalloc block when `huge` is asked without an order: 9, a 2 MiB PMD mapping on x86-64. */
export const VMALLOC_HUGE_ORDER = 9;
/** Unmapped bytes after every area (Linux's guard page), so an overrun faults instead of reaching the next area. */
export const VMALLOC_GUARD_SIZE = PAGE_SIZE;

/** A vmalloc area: contiguous in virtual space, made of blocks of 2^order pages anywhere in RAM. */
export interface VmArea {
  /** First virtual address. */
  readonly addr: number;
  /** Mapped bytes: nrPages × PAGE_SIZE (the guard page after the area is not counted). */
  readonly size: number;
  readonly nrPages: number;
  readonly order: number;
  readonly flags: number;
  /** Head pfn of each block of 2^order pages, in address order. */
  readonly blocks: readonly Pfn[];
}

export interface VmallocOptions {
  /** Map with huge blocks (order VMALLOC_HUGE_ORDER unless `order` says otherwise). */
  readonly huge?: boolean;
  /** Block order 0..MAX_PAGE_ORDER; above 0 the area is VM_HUGE_VMAP. */
  readonly order?: number;
  /** Extra area flags (VM_IOREMAP, VM_MAP, VM_USERMAP; VM_HUGE_VMAP means `huge`). VM_ALLOC is always set. */
  readonly flags?: number;
}

/** One area and how its pages are held. */
class Area implements VmArea {
  constructor(
    readonly addr: number,
    readonly size: number,
    readonly nrPages: number,
    readonly order: Order,
    readonly flags: number,
    readonly blocks: readonly Pfn[],
    /** True when every page is held on its own (refcount 1, order 0, as restorePages returns them); else each block is one buddy allocation. */
    readonly perPage: boolean,
  ) {}

  /** End of the area's mapped bytes (exclusive). */
  get end(): number {
    return this.addr + this.size;
  }
}

/**
 * The vmalloc allocator of one boot: areas contiguous in a simulated virtual range, backed by pages from the
 * buddy allocator (non-movable, so never in KHO scratch) and flagged PageFlag.Vmalloc in the memmap. Areas are
 * placed first-fit with a guard page after each; huge areas are aligned to their block size. Accessors take
 * virtual addresses and may cross page boundaries: consecutive virtual pages are usually not consecutive in RAM.
 */
@injectable()
export class Vmalloc {
  /** Areas sorted by address. */
  private list: Area[] = [];
  /** The area of the last lookup (accesses tend to stay in one area). */
  private last: Area | undefined;
  private pages = 0;

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly buddy: BuddyAllocator,
  ) {}

  // --- allocation ---------------------------------------------------------------------------------------

  /**
   * Allocates an area of at least `size` bytes (rounded up to whole blocks of PAGE_SIZE << order) and maps it.
   * Its contents are whatever the pages held (see {@link vzalloc}). Returns its virtual address.
   * Throws EINVAL for a size that is not a positive integer, a bad order or unknown flags; ENOMEM when the
   * vmalloc range has no room or a page allocation fails, after freeing every page this call took.
   */
  vmalloc(size: number, opts: VmallocOptions = {}): number {
    if (!Number.isSafeInteger(size) || size <= 0) throw new KernelError(Errno.EINVAL, `vmalloc: size ${size} (wanted a positive integer number of bytes)`);
    const extra = opts.flags ?? 0;
    if (!Number.isInteger(extra) || extra < 0 || (extra & ~VM_FLAGS_KNOWN) !== 0) {
      throw new KernelError(Errno.EINVAL, `vmalloc: flags ${describe(extra)} (wanted a subset of ${hex(VM_FLAGS_KNOWN)})`);
    }
    const huge = opts.huge === true || (extra & VM_HUGE_VMAP) !== 0;
    const order = opts.order ?? (huge ? VMALLOC_HUGE_ORDER : 0);
    if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
      throw new KernelError(Errno.EINVAL, `vmalloc: order ${order} (wanted an integer in 0..${MAX_PAGE_ORDER})`);
    }
    if (huge && order === 0) throw new KernelError(Errno.EINVAL, 'vmalloc: a huge mapping with order 0 (wanted an order in 1..10)');
    const flags = VM_ALLOC | (order > 0 ? VM_HUGE_VMAP : 0) | (extra & (VM_IOREMAP | VM_MAP | VM_USERMAP));
    const per = 2 ** order;
    const nrBlocks = Math.ceil(size / (PAGE_SIZE * per));
    const bytes = nrBlocks * per * PAGE_SIZE;
    const slot = this.findRoom(bytes, PAGE_SIZE * per);
    if (slot < 0) {
      throw new KernelError(Errno.ENOMEM, `vmalloc: size ${size}: no free range of ${bytes} bytes (+ guard page) in the vmalloc space [${hex(VMALLOC_START)}-${hex(VMALLOC_END)})`);
    }
    if (nrBlocks * per > this.buddy.nrFreePages) {
      throw new KernelError(Errno.ENOMEM, `vmalloc: size ${size}: needs ${nrBlocks * per} pages, ${this.buddy.nrFreePages} are free`);
    }
    const blocks: Pfn[] = [];
    let taken = 0;
    try {
      withUnwind((u) => {
        u.push(() => {
          for (let i = taken - 1; i >= 0; i--) this.buddy.freePages(blocks[i], toOrder(order));
        });
        for (; taken < nrBlocks; taken++) blocks.push(this.buddy.allocPages(order));
      });
    } catch (e) {
      if (!isKernelError(e, Errno.ENOMEM)) throw e;
      const why = e.reason;
      throw new KernelError(Errno.ENOMEM, `vmalloc: size ${size}: block ${taken + 1} of ${nrBlocks} (order ${order}) failed: ${why}`, { cause: e });
    }
    return this.insert(new Area(slot, bytes, nrBlocks * per, toOrder(order), flags, blocks, false));
  }

  /** Like {@link vmalloc}, with the area's bytes zeroed. */
  vzalloc(size: number, opts: VmallocOptions = {}): number {
    const addr = this.vmalloc(size, opts);
    this.fill(addr, this.lookup(addr)!.size, 0);
    return addr;
  }

  /**
   * Unmaps the area starting at `addr` and frees every page of it (clearing PageFlag.Vmalloc). Throws EINVAL,
   * changing nothing, when `addr` is not the start of an area.
   */
  vfree(addr: number): void {
    const i = this.indexOf(addr);
    const a = i >= 0 ? this.list[i] : undefined;
    if (!a || a.addr !== addr) throw new KernelError(Errno.EINVAL, `vfree: ${notAreaStart(addr, a ?? this.lookup(addr))}`);
    this.list.splice(i, 1);
    if (this.last === a) this.last = undefined;
    this.pages -= a.nrPages;
    const per = 2 ** a.order;
    for (const pfn of a.blocks) {
      for (let p = pfn; p < pfn + per; p++) this.memmap.clearFlags(p, PageFlag.Vmalloc);
      if (!a.perPage) this.buddy.freePages(pfn, a.order);
      else for (let p = pfn; p < pfn + per; p++) this.buddy.freePages(p, ORDER_0);
    }
  }

  /**
   * Maps pages the caller already holds one by one (refcount 1, order 0 each, as KHO's restorePages returns
   * them), in blocks of 2^order pages with the given head pfns, into a new area with VM_ALLOC and `flags`.
   * From then on the area owns them: {@link vfree} frees every page. Returns its address. Throws EINVAL for
   * an empty block list, a bad order or unknown flags, and ENOMEM when the vmalloc range has no room (the pages
   * stay the caller's).
   */
  adoptPages(blocks: readonly Pfn[], order: number, flags: number): number {
    if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
      throw new KernelError(Errno.EINVAL, `vmalloc adoptPages: order ${order} (wanted an integer in 0..${MAX_PAGE_ORDER})`);
    }
    if (blocks.length === 0) throw new KernelError(Errno.EINVAL, 'vmalloc adoptPages: no blocks (wanted at least one)');
    if ((flags & ~VM_FLAGS_KNOWN) !== 0) throw new KernelError(Errno.EINVAL, `vmalloc adoptPages: flags ${describe(flags)} (wanted a subset of ${hex(VM_FLAGS_KNOWN)})`);
    const per = 2 ** order;
    const bytes = blocks.length * per * PAGE_SIZE;
    const slot = this.findRoom(bytes, PAGE_SIZE * per);
    if (slot < 0) {
      throw new KernelError(Errno.ENOMEM, `vmalloc adoptPages: no free range of ${bytes} bytes (+ guard page) in the vmalloc space [${hex(VMALLOC_START)}-${hex(VMALLOC_END)})`);
    }
    return this.insert(new Area(slot, bytes, blocks.length * per, toOrder(order), flags | VM_ALLOC, blocks.slice(), true));
  }

  // --- queries ------------------------------------------------------------------------------------------

  /** The area whose mapped bytes contain `addr`, or undefined (outside every area, or in a guard page). */
  findVmArea(addr: number): VmArea | undefined {
    return this.lookup(addr);
  }

  /** Every area, by ascending address. */
  areas(): readonly VmArea[] {
    return this.list.slice();
  }

  /** Pages mapped by all areas (the kernel's vmalloc_nr_pages()). */
  get nrPages(): number {
    return this.pages;
  }

  /** The physical address `vaddr` maps to. Throws EFAULT when no area maps it. */
  virtToPhys(vaddr: number): number {
    const a = this.lookup(vaddr);
    if (!a) throw new KernelError(Errno.EFAULT, `virtToPhys(${describe(vaddr)}): no vmalloc area maps it`);
    return physIn(a, vaddr);
  }

  // --- typed access (little-endian; any alignment; may cross pages) -------------------------------------

  readU8(vaddr: number): number {
    return this.ram.readU8(this.physOf(vaddr, 1, 'readU8'));
  }

  readU16(vaddr: number): number {
    const p = this.physInPage(vaddr, 2, 'readU16');
    return p >= 0 ? this.ram.readU16(p) : this.view(vaddr, 2).getUint16(0, true);
  }

  readU32(vaddr: number): number {
    const p = this.physInPage(vaddr, 4, 'readU32');
    return p >= 0 ? this.ram.readU32(p) : this.view(vaddr, 4).getUint32(0, true);
  }

  /** The u64 at `vaddr` as a number: exact below 2^53 (as PhysicalMemory.readU64). */
  readU64(vaddr: number): number {
    const p = this.physInPage(vaddr, 8, 'readU64');
    if (p >= 0) return this.ram.readU64(p);
    const v = this.view(vaddr, 8);
    return v.getUint32(4, true) * 2 ** 32 + v.getUint32(0, true);
  }

  /** The u64 at `vaddr` as a bigint (as PhysicalMemory.readU64n). */
  readU64n(vaddr: number): bigint {
    const p = this.physInPage(vaddr, 8, 'readU64n');
    return p >= 0 ? this.ram.readU64n(p) : this.view(vaddr, 8).getBigUint64(0, true);
  }

  writeU8(vaddr: number, v: number): void {
    this.ram.writeU8(this.physOf(vaddr, 1, 'writeU8'), v);
  }

  writeU16(vaddr: number, v: number): void {
    const p = this.physInPage(vaddr, 2, 'writeU16');
    if (p >= 0) return this.ram.writeU16(p, v);
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v, true);
    this.write(vaddr, b);
  }

  writeU32(vaddr: number, v: number): void {
    const p = this.physInPage(vaddr, 4, 'writeU32');
    if (p >= 0) return this.ram.writeU32(p, v);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    this.write(vaddr, b);
  }

  /** Stores `v` modulo 2^64 at `vaddr`. Throws EINVAL for a number that is not an integer, EFAULT when unmapped. */
  writeU64(vaddr: number, v: bigint | number): void {
    if (typeof v === 'number' && !Number.isInteger(v)) throw new KernelError(Errno.EINVAL, `writeU64 at ${describe(vaddr)}: ${v} is not an integer`);
    const p = this.physInPage(vaddr, 8, 'writeU64');
    if (p >= 0) return this.ram.writeU64(p, v);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
    this.write(vaddr, b);
  }

  /** A copy of `len` bytes at `vaddr`. Throws EINVAL for a bad length, EFAULT when any byte is unmapped. */
  read(vaddr: number, len: number): Uint8Array {
    checkLength('read', len);
    const out = new Uint8Array(len);
    if (len === 0) return out;
    this.forEachPage(vaddr, len, 'read', (pfn, off, n, done) => {
      const page = this.ram.pageIfPresent(pfn);
      if (page) out.set(page.subarray(off, off + n), done);
    });
    return out;
  }

  /** Copies `bytes` to `vaddr`. Throws EFAULT, writing nothing, when any byte is unmapped. */
  write(vaddr: number, bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.forEachPage(vaddr, bytes.length, 'write', (pfn, off, n, done) => {
      this.ram.write(pfn * PAGE_SIZE + off, bytes.subarray(done, done + n));
    });
  }

  /** Sets `len` bytes at `vaddr` to `byte`. Throws like {@link write}. */
  fill(vaddr: number, len: number, byte: number): void {
    checkLength('fill', len);
    if (len === 0) return;
    this.forEachPage(vaddr, len, 'fill', (pfn, off, n) => this.ram.fill(pfn * PAGE_SIZE + off, n, byte));
  }

  // --- internals ----------------------------------------------------------------------------------------

  /** First fit: the lowest address aligned to `align` with `bytes` + a guard page free; -1 when none. */
  private findRoom(bytes: number, align: number): number {
    const need = bytes + VMALLOC_GUARD_SIZE;
    let cursor = VMALLOC_START;
    for (const a of this.list) {
      const at = Math.ceil(cursor / align) * align;
      if (at + need <= a.addr) return at;
      cursor = a.end + VMALLOC_GUARD_SIZE;
    }
    const at = Math.ceil(cursor / align) * align;
    return at + need <= VMALLOC_END ? at : -1;
  }

  private insert(a: Area): number {
    const per = 2 ** a.order;
    for (const pfn of a.blocks) for (let p = pfn; p < pfn + per; p++) this.memmap.setFlags(p, PageFlag.Vmalloc);
    let i = this.list.length;
    while (i > 0 && this.list[i - 1].addr > a.addr) i--;
    this.list.splice(i, 0, a);
    this.pages += a.nrPages;
    this.last = a;
    return a.addr;
  }

  /** Index of the last area starting at or below `addr`, or -1. */
  private indexOf(addr: number): number {
    const list = this.list;
    let lo = 0;
    let hi = list.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].addr <= addr) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  private lookup(addr: number): Area | undefined {
    const l = this.last;
    if (l !== undefined && addr >= l.addr && addr < l.end && Number.isInteger(addr)) return l;
    if (!Number.isInteger(addr)) return undefined;
    const i = this.indexOf(addr);
    if (i < 0 || addr >= this.list[i].end) return undefined;
    return (this.last = this.list[i]);
  }

  /** The area holding all of [vaddr, vaddr + len). Throws EFAULT otherwise. */
  private span(vaddr: number, len: number, what: string): Area {
    const a = this.lookup(vaddr);
    if (!a) throw new KernelError(Errno.EFAULT, `vmalloc ${what} at ${describe(vaddr)}: no vmalloc area maps it`);
    if (vaddr + len > a.end) {
      throw new KernelError(Errno.EFAULT, `vmalloc ${what} at ${hex(vaddr)} (${len} bytes) runs past the end of the area ${hex(a.addr)}+${a.size}`);
    }
    return a;
  }

  private physOf(vaddr: number, len: number, what: string): number {
    return physIn(this.span(vaddr, len, what), vaddr);
  }

  /** The phys of `vaddr` when its `len` bytes lie in one page, else -1. Throws EFAULT when any byte is unmapped. */
  private physInPage(vaddr: number, len: number, what: string): number {
    const a = this.span(vaddr, len, what);
    return ((vaddr - a.addr) % PAGE_SIZE) + len <= PAGE_SIZE ? physIn(a, vaddr) : -1;
  }

  /** The `len` bytes at `vaddr` (already checked to be mapped) as a view, for values that cross a page. */
  private view(vaddr: number, len: number): DataView {
    return new DataView(this.read(vaddr, len).buffer);
  }

  /** Calls `fn(pfn, offsetInPage, bytes, bytesDoneSoFar)` for each page piece of a mapped span (checked first). */
  private forEachPage(vaddr: number, len: number, what: string, fn: (pfn: number, off: number, n: number, done: number) => void): void {
    const a = this.span(vaddr, len, what);
    const per = 2 ** a.order;
    let done = 0;
    while (done < len) {
      const rel = vaddr + done - a.addr;
      const page = Math.floor(rel / PAGE_SIZE);
      const off = rel - page * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, len - done);
      const block = Math.floor(page / per);
      fn(a.blocks[block] + (page - block * per), off, n, done);
      done += n;
    }
  }
}

/** The phys `vaddr` maps to inside area `a` (the caller checked that `a` holds it). */
function physIn(a: Area, vaddr: number): number {
  const rel = vaddr - a.addr;
  const page = Math.floor(rel / PAGE_SIZE);
  const per = 2 ** a.order;
  const block = Math.floor(page / per);
  return (a.blocks[block] + (page - block * per)) * PAGE_SIZE + (rel - page * PAGE_SIZE);
}

/** `<addr> is not the start of a vmalloc area`, naming the area it is inside of, if any. */
export function notAreaStart(addr: number, inside: VmArea | undefined): string {
  return `${describe(addr)} is not the start of a vmalloc area${inside ? ` (it is inside the area at ${hex(inside.addr)})` : ''}`;
}

/** `0x…` for a non-negative safe integer, `>= 2^53` for Infinity (how decoders report a u64 too large to be exact), else the raw value. */
export function describe(n: number): string {
  if (n === Infinity) return '>= 2^53';
  return Number.isSafeInteger(n) && n >= 0 ? hex(n) : String(n);
}

function checkLength(what: string, len: number): void {
  if (!Number.isSafeInteger(len) || len < 0) throw new KernelError(Errno.EINVAL, `vmalloc ${what}: length ${len} is not a non-negative integer`);
}
