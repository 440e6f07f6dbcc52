import { Errno, KernelError, hex } from '@kho/kernel';
import { PAGE_SIZE, type Pfn } from './abi';

/** One contiguous range of RAM on one NUMA node. `start` and `size` are bytes, page-aligned. */
export interface RamRange {
  readonly start: number;
  readonly size: number;
  readonly node: number;
}

/** The machine's RAM layout: its ranges in any order (they are sorted), with holes allowed between them. */
export interface MemoryLayout {
  readonly ranges: readonly RamRange[];
}

/** No RAM at or above 2^50 bytes, so every address and pfn is an exact JavaScript number. */
export const MAX_PHYS_ADDR = 2 ** 50;

const TWO_32 = 2 ** 32;

/**
 * The machine's RAM: a device attached to the Machine, so its bytes survive every kexec. Bytes are sparse:
 * host memory is spent only for pages that were written (one 4 KiB buffer per page); memory never written reads
 * as zero. Every access is checked against the RAM ranges: a span with any byte outside RAM throws EFAULT.
 * Multi-byte values are little-endian. Accesses within one page use the last page's cached DataView, so the
 * hot paths allocate nothing; accesses crossing a page boundary take a slower byte-by-byte path.
 */
export class PhysicalMemory {
  /** The RAM ranges, sorted by start. */
  readonly ranges: readonly RamRange[];
  /** The distinct NUMA node ids, ascending. */
  readonly nodes: readonly number[];
  /** Bytes of RAM in all ranges. */
  readonly totalBytes: number;
  /** The end (exclusive) of the highest range. */
  readonly endAddr: number;

  private readonly starts: number[];
  private readonly ends: number[];
  private readonly backing = new Map<number, PageSlot>();
  private readonly zeroPage = newSlot();
  // The page of the last access: its pfn, bytes and view; `cPresent` is false while it is the shared zero
  // page (a read of a never-written page), so a write must first allocate.
  private cPfn = NaN;
  private cBytes: Uint8Array = this.zeroPage.bytes;
  private cView: DataView = this.zeroPage.view;
  private cPresent = false;

  /**
   * Builds the RAM from `layout`. Throws EINVAL, naming the range, when a range is not page-aligned, is empty,
   * ends above 2^50, has a bad node id, or overlaps another.
   */
  constructor(layout: MemoryLayout) {
    const ranges = layout.ranges.map((r) => Object.freeze({ start: r.start, size: r.size, node: r.node }));
    for (const r of ranges) {
      const what = `RAM range ${describeRange(r)}`;
      if (!Number.isSafeInteger(r.start) || r.start < 0 || r.start % PAGE_SIZE !== 0) {
        throw new KernelError(Errno.EINVAL, `${what}: start is not a page-aligned address`);
      }
      if (!Number.isSafeInteger(r.size) || r.size <= 0 || r.size % PAGE_SIZE !== 0) {
        throw new KernelError(Errno.EINVAL, `${what}: size ${r.size} is not a positive multiple of ${PAGE_SIZE}`);
      }
      if (r.start + r.size > MAX_PHYS_ADDR) throw new KernelError(Errno.EINVAL, `${what}: ends above 2^50 (${hex(MAX_PHYS_ADDR)})`);
      if (!Number.isInteger(r.node) || r.node < 0 || r.node > 1023) {
        throw new KernelError(Errno.EINVAL, `${what}: node ${r.node} is not an integer in 0..1023`);
      }
    }
    if (ranges.length === 0) throw new KernelError(Errno.EINVAL, 'RAM layout has no ranges');
    ranges.sort((a, b) => a.start - b.start);
    for (let i = 1; i < ranges.length; i++) {
      const prev = ranges[i - 1];
      if (ranges[i].start < prev.start + prev.size) {
        throw new KernelError(Errno.EINVAL, `RAM range ${describeRange(ranges[i])} overlaps RAM range ${describeRange(prev)}`);
      }
    }
    this.ranges = Object.freeze(ranges);
    this.nodes = Object.freeze([...new Set(ranges.map((r) => r.node))].sort((a, b) => a - b));
    this.totalBytes = ranges.reduce((n, r) => n + r.size, 0);
    this.starts = ranges.map((r) => r.start);
    this.ends = ranges.map((r) => r.start + r.size);
    this.endAddr = this.ends[this.ends.length - 1];
  }

  /**
   * True when every byte of [addr, addr + size) lies inside one RAM range (size 0: addr is in or at the end of
   * one). Accesses are more lenient: a span may continue into an adjacent range.
   */
  isRam(addr: number, size = 1): boolean {
    if (!Number.isInteger(addr) || !Number.isInteger(size) || size < 0) return false;
    const i = this.rangeIndex(addr, size === 0);
    return i >= 0 && addr + size <= this.ends[i];
  }

  /**
   * True when every byte of [addr, addr + size) is RAM, running on across ranges that touch (two nodes back to
   * back): the test for a preserved block, which may span a node boundary where nothing keeps it inside one node.
   */
  spansRam(addr: number, size: number): boolean {
    if (this.isRam(addr, size)) return true;
    if (!Number.isInteger(addr) || !Number.isInteger(size) || size < 0) return false;
    let i = this.rangeIndex(addr, size === 0);
    if (i < 0) return false;
    while (addr + size > this.ends[i] && i + 1 < this.starts.length && this.starts[i + 1] === this.ends[i]) i++;
    return addr + size <= this.ends[i];
  }

  /** The RAM range holding `addr`, or undefined for a hole. */
  findRange(addr: number): RamRange | undefined {
    const i = Number.isInteger(addr) ? this.rangeIndex(addr, false) : -1;
    return i < 0 ? undefined : this.ranges[i];
  }

  /** The RAM range holding `addr`. Throws EFAULT when `addr` is not RAM. */
  rangeOf(addr: number): RamRange {
    const r = this.findRange(addr);
    if (!r) throw new KernelError(Errno.EFAULT, `physical address ${hex(addr)} is not RAM`);
    return r;
  }

  /** The NUMA node of `addr`. Throws EFAULT when `addr` is not RAM. */
  nodeOf(addr: number): number {
    return this.rangeOf(addr).node;
  }

  // --- typed access -------------------------------------------------------------------------------------

  /** The byte at `addr`. Throws EFAULT outside RAM. */
  readU8(addr: number): number {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || (off | 0) !== off) return this.readSlow(addr, 1);
    return this.cBytes[off];
  }

  /** The little-endian u16 at `addr`. Throws EFAULT when any byte is outside RAM. */
  readU16(addr: number): number {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || off > PAGE_SIZE - 2 || (off | 0) !== off) return this.readSlow(addr, 2);
    return this.cView.getUint16(off, true);
  }

  /** The little-endian u32 at `addr`. Throws EFAULT when any byte is outside RAM. */
  readU32(addr: number): number {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || off > PAGE_SIZE - 4 || (off | 0) !== off) return this.readSlow(addr, 4);
    return this.cView.getUint32(off, true);
  }

  /** The little-endian u64 at `addr`, as a bigint. Throws EFAULT when any byte is outside RAM. */
  readU64(addr: number): bigint {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || off > PAGE_SIZE - 8 || (off | 0) !== off) {
      return BigInt(this.readSlow(addr + 4, 4, 8, addr)) * 4294967296n + BigInt(this.readSlow(addr, 4, 8));
    }
    return this.cView.getBigUint64(off, true);
  }

  /**
   * The little-endian u64 at `addr` as a number (hi * 2^32 + lo): exact below 2^53; a larger value comes back
   * rounded but still at least 2^53, so range checks against real addresses reject it. Throws EFAULT outside RAM.
   */
  readU64n(addr: number): number {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || off > PAGE_SIZE - 8 || (off | 0) !== off) {
      return this.readSlow(addr + 4, 4, 8, addr) * TWO_32 + this.readSlow(addr, 4, 8);
    }
    const v = this.cView;
    return v.getUint32(off + 4, true) * TWO_32 + v.getUint32(off, true);
  }

  /** Stores the low 8 bits of `v` at `addr`. Throws EFAULT outside RAM. */
  writeU8(addr: number, v: number): void {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || !this.cPresent || (off | 0) !== off) return this.writeSlow(addr, 1, v);
    this.cBytes[off] = v;
  }

  /** Stores `v` modulo 2^16, little-endian, at `addr`. Throws EFAULT when any byte is outside RAM. */
  writeU16(addr: number, v: number): void {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || !this.cPresent || off > PAGE_SIZE - 2 || (off | 0) !== off) return this.writeSlow(addr, 2, v);
    this.cView.setUint16(off, v, true);
  }

  /** Stores `v` modulo 2^32, little-endian, at `addr` (as a C store would). Throws EFAULT when any byte is outside RAM. */
  writeU32(addr: number, v: number): void {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || !this.cPresent || off > PAGE_SIZE - 4 || (off | 0) !== off) return this.writeSlow(addr, 4, v);
    this.cView.setUint32(off, v, true);
  }

  /**
   * Stores `v` modulo 2^64, little-endian, at `addr` (negative values as two's complement). Throws EINVAL for a
   * number that is not an integer and EFAULT when any byte is outside RAM.
   */
  writeU64(addr: number, v: bigint | number): void {
    let lo: number;
    let hi: number;
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) throw new KernelError(Errno.EINVAL, `writeU64 at ${hex(addr)}: ${v} is not an integer`);
      lo = v >>> 0;
      hi = Math.floor(v / TWO_32) >>> 0;
    } else {
      const u = BigInt.asUintN(64, v);
      lo = Number(u & 0xffffffffn);
      hi = Number(u >> 32n);
    }
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.cPfn || !this.cPresent || off > PAGE_SIZE - 8 || (off | 0) !== off) {
      this.checkSpan(addr, 8);
      this.writeSlow(addr, 4, lo);
      this.writeSlow(addr + 4, 4, hi);
      return;
    }
    const view = this.cView;
    view.setUint32(off, lo, true);
    view.setUint32(off + 4, hi, true);
  }

  // --- bulk access --------------------------------------------------------------------------------------

  /** A copy of the `len` bytes at `addr`. Throws EINVAL for a bad length and EFAULT when any byte is outside RAM. */
  read(addr: number, len: number): Uint8Array {
    checkLength('read', len);
    this.checkSpan(addr, len);
    const out = new Uint8Array(len);
    this.forEachPage(addr, len, (p, off, n, done) => {
      const page = this.backing.get(p);
      if (page) out.set(page.bytes.subarray(off, off + n), done);
    });
    return out;
  }

  /** Copies `bytes` to `addr`. Throws EFAULT (writing nothing) when any byte of the span is outside RAM. */
  write(addr: number, bytes: Uint8Array): void {
    this.checkSpan(addr, bytes.length);
    this.forEachPage(addr, bytes.length, (p, off, n, done) => {
      this.pageAt(p).set(bytes.subarray(done, done + n), off);
    });
  }

  /** Sets `len` bytes at `addr` to `byte`. Zero-filling a never-written page spends no host memory. Throws like write. */
  fill(addr: number, len: number, byte: number): void {
    checkLength('fill', len);
    this.checkSpan(addr, len);
    const b = byte & 0xff;
    this.forEachPage(addr, len, (p, off, n) => {
      const page = b === 0 ? this.backing.get(p)?.bytes : this.pageAt(p);
      page?.fill(b, off, off + n);
    });
  }

  /**
   * The 4096 bytes of page frame `pfn` as a zero-copy writable view (allocating its backing if it had none).
   * Throws EFAULT when the page is not RAM.
   */
  page(pfn: Pfn | number): Uint8Array {
    this.checkSpan(pfn * PAGE_SIZE, PAGE_SIZE);
    return this.pageAt(pfn);
  }

  /** The bytes of page frame `pfn` if it was ever written, else undefined (it reads as zero). Throws EFAULT when not RAM. */
  pageIfPresent(pfn: Pfn | number): Uint8Array | undefined {
    this.checkSpan(pfn * PAGE_SIZE, PAGE_SIZE);
    return this.backing.get(pfn)?.bytes;
  }

  /** The pfns of every page with host backing, ascending (the pages an image file must hold). */
  populatedPfns(): number[] {
    return [...this.backing.keys()].sort((a, b) => a - b);
  }

  /** Host bytes spent on backing. */
  get populatedBytes(): number {
    return this.backing.size * PAGE_SIZE;
  }

  // --- internals ----------------------------------------------------------------------------------------

  /**
   * Throws the EFAULT every access reports when any byte of [addr, addr + len) is not RAM. Unlike isRam, a span
   * may run on into an adjacent range (two nodes back to back): every byte of it is still RAM.
   */
  private checkSpan(addr: number, len: number): void {
    if (this.spansRam(addr, len)) return;
    throw new KernelError(Errno.EFAULT, `physical access at ${hexAddr(addr)} (${len} bytes) is outside RAM`);
  }

  /** Index of the range holding `addr` (or ending at it, with `atEnd`), or -1. */
  private rangeIndex(addr: number, atEnd: boolean): number {
    const starts = this.starts;
    const ends = this.ends;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (addr < starts[mid]) hi = mid - 1;
      else if (addr > ends[mid] || (addr === ends[mid] && !atEnd)) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  /** The backing of a RAM page, allocated on first use. The caller has checked that `p` is RAM. */
  private pageAt(p: number): Uint8Array {
    return this.slotAt(p).bytes;
  }

  private slotAt(p: number): PageSlot {
    let slot = this.backing.get(p);
    if (!slot) {
      slot = newSlot();
      this.backing.set(p, slot);
      if (p === this.cPfn) this.cache(p, slot);
    }
    return slot;
  }

  private cache(p: number, slot: PageSlot | undefined): void {
    this.cPfn = p;
    this.cPresent = slot !== undefined;
    const s = slot ?? this.zeroPage;
    this.cBytes = s.bytes;
    this.cView = s.view;
  }

  /**
   * Reads `n` (1, 2 or 4) bytes at `addr` after checking the span [spanAddr, spanAddr + spanLen) (by default the
   * value's own bytes). Within one page it caches the page; across a page boundary it reads byte by byte.
   */
  private readSlow(addr: number, n: number, spanLen = n, spanAddr = addr): number {
    this.checkSpan(spanAddr, spanLen);
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (off + n <= PAGE_SIZE) {
      if (p !== this.cPfn) this.cache(p, this.backing.get(p));
      const v = this.cView;
      return n === 1 ? v.getUint8(off) : n === 2 ? v.getUint16(off, true) : v.getUint32(off, true);
    }
    let value = 0;
    for (let i = n - 1; i >= 0; i--) value = value * 256 + (this.backing.get(Math.floor((addr + i) / PAGE_SIZE))?.bytes[(addr + i) % PAGE_SIZE] ?? 0);
    return value;
  }

  /** Writes `n` (1, 2 or 4) bytes of `v` at `addr`, checking the span; caches the page when the value fits in it. */
  private writeSlow(addr: number, n: number, v: number): void {
    this.checkSpan(addr, n);
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (off + n <= PAGE_SIZE) {
      if (p !== this.cPfn || !this.cPresent) this.cache(p, this.slotAt(p));
      const view = this.cView;
      if (n === 1) view.setUint8(off, v);
      else if (n === 2) view.setUint16(off, v, true);
      else view.setUint32(off, v, true);
      return;
    }
    let rest = n === 4 ? v >>> 0 : v & (n === 2 ? 0xffff : 0xff);
    for (let i = 0; i < n; i++) {
      const a = addr + i;
      this.pageAt(Math.floor(a / PAGE_SIZE))[a % PAGE_SIZE] = rest & 0xff;
      rest = Math.floor(rest / 256);
    }
  }

  /** Calls `fn(pfn, offsetInPage, bytes, bytesDoneSoFar)` for each page piece of a checked span. */
  private forEachPage(addr: number, len: number, fn: (p: number, off: number, n: number, done: number) => void): void {
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const p = Math.floor(a / PAGE_SIZE);
      const off = a - p * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, len - done);
      fn(p, off, n, done);
      done += n;
    }
  }
}

/** The backing of one page: its bytes and a little-endian view of them, made once. */
interface PageSlot {
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

function newSlot(): PageSlot {
  const bytes = new Uint8Array(PAGE_SIZE);
  return { bytes, view: new DataView(bytes.buffer) };
}

function checkLength(what: string, len: number): void {
  if (!Number.isSafeInteger(len) || len < 0) throw new KernelError(Errno.EINVAL, `${what}: length ${len} is not a non-negative integer`);
}

function hexAddr(addr: number): string {
  return Number.isSafeInteger(addr) && addr >= 0 ? hex(addr) : String(addr);
}

/** `[0x0-0xfffff] node 0`, the range's first and last byte, as the kernel prints memory ranges. */
export function describeRange(r: RamRange): string {
  const ok = Number.isSafeInteger(r.start) && Number.isSafeInteger(r.size) && r.start >= 0 && r.size > 0;
  return ok ? `[${hex(r.start)}-${hex(r.start + r.size - 1)}] node ${r.node}` : `{start ${r.start}, size ${r.size}} node ${r.node}`;
}
