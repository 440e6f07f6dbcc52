import { totalmem } from 'node:os';
import { Errno, KernelError, formatBytes, hex } from '@kho/kernel';
import { PAGE_SIZE } from './abi';
import { bootHostBytes, hostMemoryBudget } from './host-cost';

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

/** log2 of the host chunk that backs RAM: 2 MiB, allocated on the first write into it. */
export const RAM_CHUNK_SHIFT = 21;
/** Bytes of one host chunk. */
export const RAM_CHUNK_SIZE = 2 ** RAM_CHUNK_SHIFT;
/** Pages of one host chunk. */
export const RAM_CHUNK_PAGES = RAM_CHUNK_SIZE / PAGE_SIZE;
/** Chunks per directory group (8 GiB): the directory has one slot per group of the address space below endAddr. */
const GROUP_CHUNKS = 4096;
/**
 * Chunks are carved, in the order they are first written, from host buffers of 64 MiB. One buffer per chunk
 * would make V8 collect garbage at almost every allocation (each is 2 MiB of external memory: 2048 of them took
 * seconds in a large heap), and a buffer above 32 MiB is always its own mmap in glibc, so its untouched pages
 * cost no resident memory: never-written memory in an allocated chunk stays free.
 */
const SLAB_CHUNKS = 32;

const TWO_32 = 2 ** 32;

/**
 * The backing of one 2 MiB chunk of physical addresses: its bytes, a little-endian view of them, and which of
 * its pages were ever written (only those are "populated": an image file holds exactly them). Bytes of pages
 * never written are zero, always.
 */
interface Chunk {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly written: Uint8Array;
  nWritten: number;
  /** The bytes as 32-bit words, made on first use by pageWords. */
  words: Int32Array | undefined;
  /** Every page of the chunk is RAM. */
  readonly allRam: boolean;
}

/** True when typed arrays are little-endian here (every platform Node runs on today), as pageWords' callers need. */
export const LITTLE_ENDIAN_HOST = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;
/** 32-bit words in a page. */
export const PAGE_WORDS = PAGE_SIZE / 4;

/**
 * The machine's RAM: a device attached to the Machine, so its bytes survive every kexec. Bytes live in host
 * chunks of 2 MiB (like SPARSEMEM's sections), allocated on the first write into them; a page is a view into its
 * chunk. Memory never written costs nothing and reads as zero. A page counts as populated once written (or handed
 * out writable by page()), so `populatedPfns` lists exactly the pages an image file must hold.
 *
 * Every access is checked against the RAM ranges: a span with any byte outside RAM throws EFAULT. Multi-byte
 * values are little-endian. Reads go through the last chunk read (when the whole chunk is RAM, any span inside it
 * is, page boundaries included); writes through the last page written. Other accesses take a slower path.
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
  /** dir[g][i] is chunk g * GROUP_CHUNKS + i, or undefined until written. */
  private readonly dir: Array<Array<Chunk | undefined> | undefined>;
  private nChunks = 0;
  private nWritten = 0;
  private slab: ArrayBuffer | undefined;
  private slabUsed = SLAB_CHUNKS;
  // Read cache: a chunk whose 2 MiB are all RAM, and its view (the shared zero chunk while it has no backing).
  private rChunk = NaN;
  private rBytes: Uint8Array = ZERO_CHUNK.bytes;
  private rView: DataView = ZERO_CHUNK.view;
  // Write cache: a written page (so marked populated) and where it starts in its chunk's view.
  private wPfn = NaN;
  private wView: DataView = ZERO_CHUNK.view;
  private wBase = 0;

  /**
   * Builds the RAM from `layout`. Throws EINVAL, naming the range, when a range is not page-aligned, is empty,
   * ends above 2^50, has a bad node id, or overlaps another; and ENOMEM, before allocating anything, when a boot
   * of that much RAM needs more host memory for its page descriptors and free lists than a quarter of the host's
   * memory (`opts.hostMemory`, default the host's total).
   */
  constructor(layout: MemoryLayout, opts: { readonly hostMemory?: number } = {}) {
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
    const total = ranges.reduce((n, r) => n + r.size, 0);
    const hostMemory = opts.hostMemory ?? totalmem();
    const need = bootHostBytes(ranges);
    const budget = hostMemoryBudget(hostMemory);
    if (need > budget) {
      throw new KernelError(
        Errno.ENOMEM,
        `${formatBytes(total)} of RAM needs about ${formatBytes(need)} of host memory per boot for its page descriptors and free lists; this host allows ${formatBytes(budget)} (a quarter of its ${formatBytes(hostMemory)})`,
      );
    }
    this.ranges = Object.freeze(ranges);
    this.nodes = Object.freeze([...new Set(ranges.map((r) => r.node))].sort((a, b) => a - b));
    this.totalBytes = total;
    this.starts = ranges.map((r) => r.start);
    this.ends = ranges.map((r) => r.start + r.size);
    this.endAddr = this.ends[this.ends.length - 1];
    this.dir = new Array<Array<Chunk | undefined> | undefined>(Math.ceil(this.endAddr / RAM_CHUNK_SIZE / GROUP_CHUNKS)).fill(undefined);
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
    const c = Math.floor(addr / RAM_CHUNK_SIZE);
    const off = addr - c * RAM_CHUNK_SIZE;
    if (c !== this.rChunk || (off | 0) !== off) return this.readSlow(addr, 1);
    return this.rBytes[off];
  }

  /** The little-endian u16 at `addr`. Throws EFAULT when any byte is outside RAM. */
  readU16(addr: number): number {
    const c = Math.floor(addr / RAM_CHUNK_SIZE);
    const off = addr - c * RAM_CHUNK_SIZE;
    if (c !== this.rChunk || off > RAM_CHUNK_SIZE - 2 || (off | 0) !== off) return this.readSlow(addr, 2);
    return this.rView.getUint16(off, true);
  }

  /** The little-endian u32 at `addr`. Throws EFAULT when any byte is outside RAM. */
  readU32(addr: number): number {
    const c = Math.floor(addr / RAM_CHUNK_SIZE);
    const off = addr - c * RAM_CHUNK_SIZE;
    if (c !== this.rChunk || off > RAM_CHUNK_SIZE - 4 || (off | 0) !== off) return this.readSlow(addr, 4);
    return this.rView.getUint32(off, true);
  }

  /**
   * The little-endian u64 at `addr` as a number (hi * 2^32 + lo): exact below 2^53; a larger value comes back
   * rounded but still at least 2^53, so range checks against real addresses reject it. Throws EFAULT outside RAM.
   */
  readU64(addr: number): number {
    const c = Math.floor(addr / RAM_CHUNK_SIZE);
    const off = addr - c * RAM_CHUNK_SIZE;
    if (c !== this.rChunk || off > RAM_CHUNK_SIZE - 8 || (off | 0) !== off) {
      return this.readSlow(addr + 4, 4, 8, addr) * TWO_32 + this.readSlow(addr, 4, 8);
    }
    const v = this.rView;
    return v.getUint32(off + 4, true) * TWO_32 + v.getUint32(off, true);
  }

  /** The little-endian u64 at `addr` as a bigint (`n` as in `1n`: every value exact). Throws EFAULT when any byte is outside RAM. */
  readU64n(addr: number): bigint {
    const c = Math.floor(addr / RAM_CHUNK_SIZE);
    const off = addr - c * RAM_CHUNK_SIZE;
    if (c !== this.rChunk || off > RAM_CHUNK_SIZE - 8 || (off | 0) !== off) {
      return BigInt(this.readSlow(addr + 4, 4, 8, addr)) * 4294967296n + BigInt(this.readSlow(addr, 4, 8));
    }
    return this.rView.getBigUint64(off, true);
  }

  /** Stores the low 8 bits of `v` at `addr`. Throws EFAULT outside RAM. */
  writeU8(addr: number, v: number): void {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.wPfn || (off | 0) !== off) return this.writeSlow(addr, 1, v);
    this.wView.setUint8(this.wBase + off, v);
  }

  /** Stores `v` modulo 2^16, little-endian, at `addr`. Throws EFAULT when any byte is outside RAM. */
  writeU16(addr: number, v: number): void {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.wPfn || off > PAGE_SIZE - 2 || (off | 0) !== off) return this.writeSlow(addr, 2, v);
    this.wView.setUint16(this.wBase + off, v, true);
  }

  /** Stores `v` modulo 2^32, little-endian, at `addr` (as a C store would). Throws EFAULT when any byte is outside RAM. */
  writeU32(addr: number, v: number): void {
    const p = Math.floor(addr / PAGE_SIZE);
    const off = addr - p * PAGE_SIZE;
    if (p !== this.wPfn || off > PAGE_SIZE - 4 || (off | 0) !== off) return this.writeSlow(addr, 4, v);
    this.wView.setUint32(this.wBase + off, v, true);
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
    if (p !== this.wPfn || off > PAGE_SIZE - 8 || (off | 0) !== off) {
      this.checkSpan(addr, 8);
      this.writeSlow(addr, 4, lo);
      this.writeSlow(addr + 4, 4, hi);
      return;
    }
    const view = this.wView;
    const at = this.wBase + off;
    view.setUint32(at, lo, true);
    view.setUint32(at + 4, hi, true);
  }

  // --- bulk access --------------------------------------------------------------------------------------

  /** A copy of the `len` bytes at `addr`. Throws EINVAL for a bad length and EFAULT when any byte is outside RAM. */
  read(addr: number, len: number): Uint8Array {
    checkLength('read', len);
    this.checkSpan(addr, len);
    const out = new Uint8Array(len);
    this.forEachChunk(addr, len, (chunk, off, n, done) => {
      if (chunk) out.set(chunk.bytes.subarray(off, off + n), done);
    });
    return out;
  }

  /** Copies `bytes` to `addr`. Throws EFAULT (writing nothing) when any byte of the span is outside RAM. */
  write(addr: number, bytes: Uint8Array): void {
    this.checkSpan(addr, bytes.length);
    this.forEachChunk(addr, bytes.length, (chunk, off, n, done, c) => {
      const ch = this.markWritten(chunk ?? this.allocChunk(c), off, n);
      ch.bytes.set(bytes.subarray(done, done + n), off);
    });
  }

  /** Sets `len` bytes at `addr` to `byte`. Zero-filling never-written memory spends no host memory. Throws like write. */
  fill(addr: number, len: number, byte: number): void {
    checkLength('fill', len);
    this.checkSpan(addr, len);
    const b = byte & 0xff;
    this.forEachChunk(addr, len, (chunk, off, n, _done, c) => {
      // Zeros over never-written pages leave them as they were: zero, and not populated.
      if (b === 0) chunk?.bytes.fill(0, off, off + n);
      else this.markWritten(chunk ?? this.allocChunk(c), off, n).bytes.fill(b, off, off + n);
    });
  }

  /**
   * Zero-copy writable views of [addr, addr + len): one per host chunk the span touches, in address order. Every
   * page of the span counts as written (populated). For filling large spans at memory speed. Throws EINVAL for a
   * bad length and EFAULT when any byte is outside RAM.
   */
  writeViews(addr: number, len: number): Uint8Array[] {
    checkLength('writeViews', len);
    this.checkSpan(addr, len);
    const out: Uint8Array[] = [];
    this.forEachChunk(addr, len, (chunk, off, n, _done, c) => {
      out.push(this.markWritten(chunk ?? this.allocChunk(c), off, n).bytes.subarray(off, off + n));
    });
    return out;
  }

  /**
   * Calls `fn(view, length)` for each host-chunk piece of [addr, addr + len), in address order: `view` is a
   * zero-copy view of the piece's bytes (never written to through it: that would bypass the populated pages), or
   * null where no byte of the piece's chunk was ever written (the piece reads as `length` zero bytes). For reading
   * large spans at memory speed. Throws EINVAL for a bad length and EFAULT when any byte is outside RAM.
   */
  readSpans(addr: number, len: number, fn: (view: Uint8Array | null, length: number) => void): void {
    checkLength('readSpans', len);
    this.checkSpan(addr, len);
    this.forEachChunk(addr, len, (chunk, off, n) => fn(chunk ? chunk.bytes.subarray(off, off + n) : null, n));
  }

  /**
   * The 4096 bytes of page frame `pfn` as a zero-copy writable view into its chunk (allocating the chunk if it had
   * no backing; the page counts as populated). Every call returns a view of the same bytes. Throws EFAULT when the
   * page is not RAM.
   */
  page(pfn: number): Uint8Array {
    this.checkSpan(pfn * PAGE_SIZE, PAGE_SIZE);
    const c = Math.floor(pfn / RAM_CHUNK_PAGES);
    const off = (pfn - c * RAM_CHUNK_PAGES) * PAGE_SIZE;
    const chunk = this.markWritten(this.chunkAt(c) ?? this.allocChunk(c), off, PAGE_SIZE);
    return chunk.bytes.subarray(off, off + PAGE_SIZE);
  }

  /**
   * The 2 MiB chunk holding page `pfn` as 32-bit words in host byte order (see LITTLE_ENDIAN_HOST): the page starts
   * at word `(pfn mod 512) * PAGE_WORDS`. For hot paths that walk structures in RAM without a view per page: every
   * page of a chunk gives the same array. With `write`, the page counts as populated (the chunk is allocated if
   * needed); without, a chunk never written gives a shared array of zeros, which must not be written to (nor may
   * any page through a read: its writes would not be populated). Throws EFAULT when the page is not RAM.
   */
  pageWords(pfn: number, write = false): Int32Array {
    const c = Math.floor(pfn / RAM_CHUNK_PAGES);
    let chunk = this.dir[Math.floor(c / GROUP_CHUNKS)]?.[c & (GROUP_CHUNKS - 1)];
    // A backed chunk that is all RAM needs no access check: any page of it is RAM.
    if (chunk === undefined || !chunk.allRam || Math.floor(pfn) !== pfn) {
      this.checkSpan(pfn * PAGE_SIZE, PAGE_SIZE);
      if (chunk === undefined) {
        if (!write) return ZERO_WORDS;
        chunk = this.allocChunk(c);
      }
    }
    if (write) {
      const j = pfn - c * RAM_CHUNK_PAGES;
      if (chunk.written[j] === 0) this.markWritten(chunk, j * PAGE_SIZE, PAGE_SIZE);
    }
    return (chunk.words ??= new Int32Array(chunk.bytes.buffer, chunk.bytes.byteOffset, RAM_CHUNK_SIZE / 4));
  }

  /** The bytes of page frame `pfn` if it was ever written, else undefined (it reads as zero). Throws EFAULT when not RAM. */
  pageIfPresent(pfn: number): Uint8Array | undefined {
    this.checkSpan(pfn * PAGE_SIZE, PAGE_SIZE);
    const c = Math.floor(pfn / RAM_CHUNK_PAGES);
    const j = pfn - c * RAM_CHUNK_PAGES;
    const chunk = this.chunkAt(c);
    return chunk && chunk.written[j] ? chunk.bytes.subarray(j * PAGE_SIZE, (j + 1) * PAGE_SIZE) : undefined;
  }

  /** The pfns of every populated page, ascending (the pages an image file must hold). */
  populatedPfns(): number[] {
    const out: number[] = [];
    this.dir.forEach((group, g) => {
      if (!group) return;
      group.forEach((chunk, i) => {
        if (!chunk || chunk.nWritten === 0) return;
        const first = (g * GROUP_CHUNKS + i) * RAM_CHUNK_PAGES;
        for (let j = 0; j < RAM_CHUNK_PAGES; j++) if (chunk.written[j]) out.push(first + j);
      });
    });
    return out;
  }

  /** Populated pages among the `nrPages` page frames from `pfn` (holes count as none). */
  populatedPagesIn(pfn: number, nrPages: number): number {
    let n = 0;
    const end = pfn + nrPages;
    for (let c = Math.floor(pfn / RAM_CHUNK_PAGES); c * RAM_CHUNK_PAGES < end; c++) {
      const chunk = this.chunkAt(c);
      if (!chunk || chunk.nWritten === 0) continue;
      const first = c * RAM_CHUNK_PAGES;
      const lo = Math.max(pfn, first) - first;
      const hi = Math.min(end, first + RAM_CHUNK_PAGES) - first;
      if (lo === 0 && hi === RAM_CHUNK_PAGES) n += chunk.nWritten;
      else for (let j = lo; j < hi; j++) n += chunk.written[j];
    }
    return n;
  }

  /** Bytes of the populated pages (page-exact: what an image file of this RAM holds). */
  get populatedBytes(): number {
    return this.nWritten * PAGE_SIZE;
  }

  /**
   * Host bytes spent on backing: the 2 MiB chunks allocated so far (address space; only the pages of them that
   * were written are resident).
   */
  get hostBytes(): number {
    return this.nChunks * RAM_CHUNK_SIZE;
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

  /** Chunk number `c`, or undefined when it has no backing. */
  private chunkAt(c: number): Chunk | undefined {
    // Bit operations rather than `%`: a chunk number may be held as a double, and float modulo is a slow call.
    return this.dir[Math.floor(c / GROUP_CHUNKS)]?.[c & (GROUP_CHUNKS - 1)];
  }

  /** Allocates the backing of chunk `c` (which must have none; the caller has checked it holds RAM). */
  private allocChunk(c: number): Chunk {
    const g = Math.floor(c / GROUP_CHUNKS);
    const group = (this.dir[g] ??= new Array<Chunk | undefined>(GROUP_CHUNKS).fill(undefined));
    if (this.slabUsed === SLAB_CHUNKS) {
      this.slab = new ArrayBuffer(SLAB_CHUNKS * RAM_CHUNK_SIZE);
      this.slabUsed = 0;
    }
    const bytes = new Uint8Array(this.slab!, this.slabUsed++ * RAM_CHUNK_SIZE, RAM_CHUNK_SIZE);
    const allRam = this.spansRam(c * RAM_CHUNK_SIZE, RAM_CHUNK_SIZE);
    const chunk: Chunk = { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, RAM_CHUNK_SIZE), written: new Uint8Array(RAM_CHUNK_PAGES), nWritten: 0, words: undefined, allRam };
    group[c & (GROUP_CHUNKS - 1)] = chunk;
    this.nChunks++;
    // The read caches may show this chunk as the shared zero chunk: from now on its bytes are these.
    if (c === this.rChunk) this.cacheRead(c, chunk);
    return chunk;
  }

  /** Marks the pages of bytes [off, off + n) of `chunk` written. Returns the chunk. */
  private markWritten(chunk: Chunk, off: number, n: number): Chunk {
    const last = Math.floor((off + n - 1) / PAGE_SIZE);
    for (let j = Math.floor(off / PAGE_SIZE); j <= last; j++) {
      if (chunk.written[j] === 0) {
        chunk.written[j] = 1;
        chunk.nWritten++;
        this.nWritten++;
      }
    }
    return chunk;
  }

  private cacheRead(c: number, chunk: Chunk | undefined): void {
    this.rChunk = c;
    const ch = chunk ?? ZERO_CHUNK;
    this.rBytes = ch.bytes;
    this.rView = ch.view;
  }

  /**
   * Reads `n` (1, 2 or 4) bytes at `addr` after checking the span [spanAddr, spanAddr + spanLen) (by default the
   * value's own bytes). Within one chunk it reads through the chunk (and caches it when all of it is RAM); across
   * chunks it reads byte by byte.
   */
  private readSlow(addr: number, n: number, spanLen = n, spanAddr = addr): number {
    this.checkSpan(spanAddr, spanLen);
    const c = Math.floor(addr / RAM_CHUNK_SIZE);
    const off = addr - c * RAM_CHUNK_SIZE;
    if (off + n <= RAM_CHUNK_SIZE) {
      const chunk = this.chunkAt(c);
      if (this.spansRam(c * RAM_CHUNK_SIZE, RAM_CHUNK_SIZE)) this.cacheRead(c, chunk);
      const v = (chunk ?? ZERO_CHUNK).view;
      return n === 1 ? v.getUint8(off) : n === 2 ? v.getUint16(off, true) : v.getUint32(off, true);
    }
    let value = 0;
    for (let i = n - 1; i >= 0; i--) value = value * 256 + this.byteAt(addr + i);
    return value;
  }

  private byteAt(a: number): number {
    const c = Math.floor(a / RAM_CHUNK_SIZE);
    return this.chunkAt(c)?.bytes[a - c * RAM_CHUNK_SIZE] ?? 0;
  }

  /** Writes `n` (1, 2 or 4) bytes of `v` at `addr`, checking the span; caches the page when the value fits in it. */
  private writeSlow(addr: number, n: number, v: number): void {
    this.checkSpan(addr, n);
    const c = Math.floor(addr / RAM_CHUNK_SIZE);
    const off = addr - c * RAM_CHUNK_SIZE;
    if (off + n <= RAM_CHUNK_SIZE) {
      const chunk = this.markWritten(this.chunkAt(c) ?? this.allocChunk(c), off, n);
      const inPage = off % PAGE_SIZE;
      if (inPage + n <= PAGE_SIZE) {
        this.wPfn = Math.floor(addr / PAGE_SIZE);
        this.wView = chunk.view;
        this.wBase = off - inPage;
      }
      const view = chunk.view;
      if (n === 1) view.setUint8(off, v);
      else if (n === 2) view.setUint16(off, v, true);
      else view.setUint32(off, v, true);
      return;
    }
    let rest = n === 4 ? v >>> 0 : v & (n === 2 ? 0xffff : 0xff);
    for (let i = 0; i < n; i++) {
      const a = addr + i;
      const ca = Math.floor(a / RAM_CHUNK_SIZE);
      const oa = a - ca * RAM_CHUNK_SIZE;
      this.markWritten(this.chunkAt(ca) ?? this.allocChunk(ca), oa, 1).bytes[oa] = rest & 0xff;
      rest = Math.floor(rest / 256);
    }
  }

  /** Calls `fn(chunk or undefined, offsetInChunk, bytes, bytesDoneSoFar, chunkNumber)` for each chunk piece of a checked span. */
  private forEachChunk(addr: number, len: number, fn: (chunk: Chunk | undefined, off: number, n: number, done: number, c: number) => void): void {
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const c = Math.floor(a / RAM_CHUNK_SIZE);
      const off = a - c * RAM_CHUNK_SIZE;
      const n = Math.min(RAM_CHUNK_SIZE - off, len - done);
      fn(this.chunkAt(c), off, n, done, c);
      done += n;
    }
  }
}

/** What reads of a chunk with no backing see: 2 MiB of zeros, shared, never written (no host memory is touched). */
const ZERO_CHUNK: Chunk = (() => {
  const bytes = new Uint8Array(RAM_CHUNK_SIZE);
  return { bytes, view: new DataView(bytes.buffer), written: new Uint8Array(RAM_CHUNK_PAGES), nWritten: 0, words: undefined, allRam: false };
})();
const ZERO_WORDS = new Int32Array(ZERO_CHUNK.bytes.buffer);

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
