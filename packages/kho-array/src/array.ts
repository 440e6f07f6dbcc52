import { Errno, KernelError, hex, withUnwind, KernelBug } from '@kho/kernel';
import { BuddyAllocator, Folio, Memmap, PAGE_SIZE, PhysicalMemory, ORDER_0, type Pfn, type PhysAddr } from '@kho/physmem';
import type { Kho } from '@kho/kho-core';
import {
  KA_V0_MAX_STARTPOS,
  KA_V0_NR_ENTRIES,
  KA_V1_BLOCK_SPACE,
  KA_V1_HEADER_SIZE,
  KA_V1_MAX_ENTRIES,
  KA_V1_MAX_POS_INCREMENT,
  KA_V1_NUM_ENTRIES_SHIFT,
  KA_V1_POS_INCREMENT_SHIFT,
  KHO_ARRAY_DEFAULT_VERSION,
  KHO_ARRAY_DESC_SIZE,
  KHO_ARRAY_MAGIC,
  KHO_ARRAY_VERSIONS,
  KHO_ARRAY_VERSION_0,
  KHO_ARRAY_VERSION_1,
  KaPageV0Struct,
  KaPageV1Struct,
  decodeKhoArrayDescriptor,
  encodeKhoArrayDescriptor,
} from './abi';
import { SAFE, TWO_32, U64_MAX, addSmall, big, canon, diffSmall, fromWords, hexU64, hiWord, loWord, sub, toU64, type U64 } from './u64';

/** How an array is opened: `read` (iterate), `write` (iterate and change), `restore` (validate, restore every page, then iterate). */
export type KhoArrayMode = 'read' | 'write' | 'restore';
/** A page layout: 0 (the RFC's dense pages) or 1 (the project's sparse blocks). */
export type KhoArrayVersion = 0 | 1;
/** A position and its entry, as `readAll` returns them and `writeAll` takes them. */
export type KhoArrayEntry = readonly [pos: U64, entry: U64];

/** What preserving and restoring an array needs from KHO. */
export type KhoArrayPreserver = Pick<Kho, 'preserveFolio' | 'unpreserveFolio' | 'restoreFolio' | 'isPreservedIncoming'>;

/**
 * The services an array works with: its pages come from `buddy` (order 0, non-movable) and are read and written
 * through `ram`; `memmap` lets a restore check every page's KHO stamp before taking any; `kho` is needed only to
 * preserve and restore (a tracker serialised through an array, which is never preserved, can leave it out).
 */
export interface KhoArrayContext {
  readonly ram: PhysicalMemory;
  readonly memmap: Memmap;
  readonly buddy: BuddyAllocator;
  readonly kho?: KhoArrayPreserver;
}

const MODES: readonly string[] = ['read', 'write', 'restore'];
const WORDS = PAGE_SIZE / 4;
/** The "no page yet" view. */
const NO_PAGE = new Uint32Array(0);
// The cursor reads and writes pages in place through u32 views, at the offsets of the declared layouts (./abi):
// u32 indices of the page header's fields, u64 indices of the first entry or block, and the block header's bit
// positions, copied into module constants for the hot paths.
/** u32 index of `next` (the same offset in both versions). */
const W_NEXT = KaPageV1Struct.offsetOf('next') / 4;
/** u32 index of v0's `startpos` and v1's `first_pos` (the same offset). */
const W_POS = KaPageV1Struct.offsetOf('first_pos') / 4;
/** u32 index of the word holding v1's `nr_blocks` (low half) and `used` (high half). */
const W_COUNTS = KaPageV1Struct.offsetOf('nr_blocks') / 4;
/** Shift of `used` in that word, plus 3: the cursor counts used space in u64 words (bytes = words << 3). */
const USED_WORDS_SHIFT = 8 * (KaPageV1Struct.offsetOf('used') - KaPageV1Struct.offsetOf('nr_blocks')) + 3;
/** u32 index of v1's reserved field. */
const W_RESERVED = KaPageV1Struct.offsetOf('reserved') / 4;
/** u64 index of the first v1 block (after the header). */
const V1_BLOCKS = KA_V1_HEADER_SIZE / 8;
/** u64 index of entries[0] of a v0 page (after next and startpos). */
const V0_ENTRIES = KaPageV0Struct.offsetOf('entries') / 8;
const V0_LAST_SLOT = KA_V0_NR_ENTRIES - 1;
/** u64 words in a page. */
const PAGE_U64 = PAGE_SIZE / 8;
/** A block header's `num_entries` starts at bit NUM_SHIFT, its `pos_increment` at bit INC_SHIFT of the low word. */
const NUM_SHIFT = KA_V1_NUM_ENTRIES_SHIFT;
const INC_SHIFT = KA_V1_POS_INCREMENT_SHIFT;
const MAX_NUM = KA_V1_MAX_ENTRIES;
/** `pos_increment` = (low word >>> INC_SHIFT) + high word * HI_INC, and low word bits from INC_SHIFT = inc * LO_INC. */
const HI_INC = 2 ** (32 - INC_SHIFT);
const LO_INC = 2 ** INC_SHIFT;
/** `hiK` of a block that is not v1's tail block: above every slot index (a small integer, for the compiler). */
const NO_HI_K = 0x3fffffff;

// Typed-array views of RAM pages assume a little-endian host (x86, arm64): the u64 fields are little-endian.
if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new KernelBug('kho-array needs a little-endian host');
// And the word indices above assume the layouts they were taken from.
if (
  KaPageV0Struct.offsetOf('next') !== KaPageV1Struct.offsetOf('next') ||
  KaPageV0Struct.offsetOf('startpos') !== KaPageV1Struct.offsetOf('first_pos') ||
  KaPageV1Struct.offsetOf('nr_blocks') % 4 !== 0 ||
  KaPageV1Struct.offsetOf('used') !== KaPageV1Struct.offsetOf('nr_blocks') + 2 ||
  KaPageV1Struct.offsetOf('reserved') % 4 !== 0 ||
  KA_V1_HEADER_SIZE % 8 !== 0 ||
  INC_SHIFT >= 32
) {
  throw new KernelBug('kho-array: the page layouts no longer match the cursor\'s word indices');
}

function fail(errno: Errno, message: string): KernelError {
  return new KernelError(errno, `kho array: ${message}`);
}

function badPointer(ptr: U64, from: number, why: string): KernelError {
  return fail(Errno.EINVAL, `page ${hexU64(ptr)} (${from === 0 ? "the descriptor's first" : `next of page ${hex(from)}`}) ${why}`);
}

function badPage(phys: number, why: string): KernelError {
  return fail(Errno.EINVAL, `page ${hex(phys)}: ${why}`);
}

function badBlock(phys: number, block: number, why: string): KernelError {
  return fail(Errno.EINVAL, `page ${hex(phys)}: block ${block} ${why}`);
}

/** Below this position a tail block may reserve a whole page of slots without passing 2^64 - 1. */
const NEAR_TOP = U64_MAX - 1023n;

/** Slots a new tail block starting at `p` reserves: `room`, fewer when its last position would pass 2^64 - 1. */
function reservedSlots(p: U64, room: number): number {
  if (typeof p === 'number' || p < NEAR_TOP) return room;
  const left = U64_MAX - p + 1n;
  return left < BigInt(room) ? Number(left) : room;
}

function describeVersion(v: unknown): string {
  return typeof v === 'number' || typeof v === 'bigint' ? String(v) : typeof v;
}

/**
 * A KHO array (docs/abi/kho.md section 9) and its iterator in one object: a sparse sequence of u64 entries at
 * u64 positions, kept in one-page chunks of simulated RAM, visited linearly from the lowest position up.
 *
 * Positions and entries are numbers below 2^53 and bigints from 2^53 on (either type is accepted). The iterator
 * has a position (`pos`, 0 at first) that never moves backwards: `seek` moves it forward, `next` moves it to the
 * next non-empty entry, `get`/`set` read and write the entry at it. Version 0 and version 1 differ only in their
 * pages (see `./abi`).
 *
 * Ownership: an array made by `create`, or opened for `write` or `restore`, owns its pages and may `preserve`,
 * `unpreserve` and `destroy` them; one opened for `read` only reads. The 16-byte descriptor is the caller's:
 * `descriptor()` returns it and `writeDescriptor(phys)` stores it; the array never writes it by itself, so write
 * it after the last change (its `first` changes when the first page is allocated, and in version 0 when a page is
 * inserted before the first).
 *
 * How it is fast: the cursor is a typed-array view of the current page and a "block" of consecutive slots in it
 * (in version 0 the page's 510 entries, in version 1 a block), so `next`, `get`, `seek` and `set` touch only
 * u32 words of that view and numbers; bigints appear only for positions or entries from 2^53 on. Both versions
 * share one class so that every property access on the hot paths sees one object shape.
 */
export class KhoArray {
  private first: U64;
  /** The iterator's position. */
  private p: U64 = 0;
  /** Nothing consumed at `p` yet (after open or seek): `next` may stop at `p` itself. */
  private fresh = true;
  /** The cursor has been moved to `p` (the cursor fields describe it). */
  private located = false;
  /** The u32 index in `cWords` of the low word of the entry at `p`, or -1 when the cursor block has no slot for `p`. */
  private k = -1;

  /** The cursor page (0 before the first page is entered), a view of its words, and the page before it (v0). */
  private cPhys = 0;
  private cWords: Uint32Array = NO_PAGE;
  private cPrev = 0;
  /** v1: the cursor page's used bytes (in u64 words) and block count, and the cursor block's index (v0: 0 of 1). */
  private cUsedW = 0;
  private cNrBlocks = 0;
  private cBlock = 0;
  /**
   * The cursor block: u64 indices of its header (v1) and first entry, its slot count, its first and last
   * position, and whether the last is a number (then every position of the block is).
   */
  private bHdr = 0;
  private bEnt = 0;
  private bNum = 0;
  private bStart: U64 = 0;
  private bLast: U64 = 0;
  private bFast = true;
  /**
   * The cursor block is the array's last (the chain was followed to its end, or this iterator appended it): no
   * need to read the `next` pointer again. A reader therefore sees each page as it was when it reached it.
   */
  private tail = false;
  /**
   * v1 writing: the u32 index of the last slot stored into in the tail block, whose slots after it are reserved
   * empty slots up to the page's end (NO_HI_K for any other block, and in v0). A store within one empty slot
   * after it is a plain store; a larger gap trims the block there and starts a new one.
   */
  private hiK = NO_HI_K;

  /** Pages the cursor entered or allocated: a page reached twice is a cycle. */
  private readonly seen = new Set<number>();
  private readonly owned: Folio[];
  private isPreserved = false;

  /** @internal Use {@link KhoArrays}, {@link createKhoArray} or {@link openKhoArray}. */
  constructor(
    private readonly ctx: KhoArrayContext,
    readonly version: KhoArrayVersion,
    readonly mode: KhoArrayMode,
    first: U64,
    owned: Folio[],
  ) {
    this.first = first;
    this.owned = owned;
  }

  // ---------------------------------------------------------------- iterator

  /** The iterator's position: a number below 2^53, a bigint from 2^53 on. */
  get pos(): U64 {
    return this.p;
  }

  /**
   * Moves the position forward to `pos` (staying put is allowed). Throws EINVAL when `pos` is not an integer in
   * 0..2^64-1 (a number must be below 2^53) or lies before the current position, and for a malformed page met
   * on the way (see {@link openKhoArray}).
   */
  seek(pos: U64): void {
    let p: U64 | undefined;
    if (typeof pos === 'number' && pos >= 0 && pos < SAFE && pos % 1 === 0) p = pos + 0; // + 0: -0 becomes 0
    else p = toU64(pos);
    if (p === undefined) throw fail(Errno.EINVAL, `seek to position ${String(pos)} (wanted an integer in 0..2^64-1; numbers below 2^53)`);
    if (p < this.p) {
      throw fail(Errno.EINVAL, `seek to position ${String(p)} moves backwards from position ${String(this.p)} (access is linear, lowest index first)`);
    }
    this.p = p;
    this.fresh = true;
    this.locate(p);
  }

  /**
   * Moves to the next non-empty entry: the first one at the position itself right after open or `seek`, else
   * the first one after it. Returns true when there is one (`pos` is then its position); false at the end, and
   * the position then moves to the array's last slot (unless it is past it already). Throws EINVAL for a
   * malformed page or entry met on the way (read mode checks each page when it reaches it).
   */
  next(): boolean {
    let i: number;
    if (this.fresh) {
      this.fresh = false;
      if (!this.located) this.locate(this.p);
      if (this.cPhys === 0) return false;
      i = this.k >= 0 ? this.k : this.bStart > this.p ? 2 * this.bEnt : 2 * (this.bEnt + this.bNum);
    } else {
      if (this.k < 0) return false; // past the end already (or empty)
      i = this.k + 2;
    }
    for (;;) {
      const w = this.cWords;
      const base = 2 * this.bEnt;
      const end = base + 2 * this.bNum;
      for (; i < end; i += 2) {
        const lo = w[i];
        if ((lo | w[i + 1]) !== 0) {
          const slot = (i - base) >> 1;
          const pos = this.bFast ? (this.bStart as number) + slot : addSmall(this.bStart, slot)!;
          if ((lo & 1) === 0 && (lo & 7) !== 0) throw this.badEntry(lo, w[i + 1], pos);
          this.k = i;
          this.p = pos;
          return true;
        }
      }
      if (!this.nextBlock()) {
        if (this.bLast >= this.p) {
          this.k = end - 2;
          this.p = this.bLast;
        }
        return false;
      }
      i = 2 * this.bEnt;
    }
  }

  /** The entry at the position (0 for an empty slot): a number below 2^53, a bigint from 2^53 on. */
  get(): U64 {
    if (!this.located) this.locate(this.p);
    const k = this.k;
    if (k < 0) return 0;
    const w = this.cWords;
    return fromWords(w[k], w[k + 1]);
  }

  /**
   * The value of the tagged entry at the position (`entry >> 1`): a number below 2^53, a bigint from there.
   * Throws ENOENT for an empty slot and EINVAL for an entry that is a pointer.
   */
  getValue(): U64 {
    if (!this.located) this.locate(this.p);
    const k = this.k;
    const w = this.cWords;
    const lo = k < 0 ? 0 : w[k];
    const hi = k < 0 ? 0 : w[k + 1];
    if ((lo | hi) === 0) throw fail(Errno.ENOENT, `getValue: no entry at position ${String(this.p)}`);
    if ((lo & 1) === 0) {
      throw fail(Errno.EINVAL, `getValue: the entry at position ${String(this.p)} is the pointer ${hexU64(fromWords(lo, hi))} (wanted a tagged value)`);
    }
    return fromWords(((lo >>> 1) | ((hi & 1) << 31)) >>> 0, hi >>> 1);
  }

  /**
   * Stores `entry` at the position: 0 (clears the slot), an 8-byte-aligned physical pointer, or a tagged value
   * (bit 0 set; see {@link setValue}). Throws EPERM unless opened for write; EINVAL for an entry that is none of
   * these or not in 0..2^64-1, for a version-1 position inside a gap before the array's last position (version 1
   * appends past its end or overwrites a slot it holds), and for a version-0 position above the last page a u64
   * can index; ENOMEM when a page cannot be allocated or preserved (the array is then unchanged).
   */
  set(entry: U64): void {
    if (this.mode !== 'write') throw this.notWritable('set');
    let lo: number;
    let hi: number;
    if (typeof entry === 'number' && entry >= 0 && entry < SAFE && entry % 1 === 0) {
      lo = entry >>> 0;
      hi = (entry - lo) / TWO_32;
    } else {
      const e = toU64(entry);
      if (e === undefined) throw fail(Errno.EINVAL, `set: entry ${String(entry)} is not an integer in 0..2^64-1 (numbers below 2^53)`);
      lo = loWord(e);
      hi = hiWord(e);
    }
    if ((lo & 1) === 0 && (lo & 7) !== 0) {
      throw fail(Errno.EINVAL, `set: entry ${hexU64(fromWords(lo, hi))} is neither a tagged value (bit 0 set) nor an 8-byte-aligned pointer`);
    }
    this.store(lo, hi);
  }

  /**
   * Stores the tagged value `(value << 1) | 1` at the position. Throws EPERM unless opened for write, EINVAL
   * for a value outside 0..2^63-1, and like {@link set} otherwise.
   */
  setValue(value: U64): void {
    if (this.mode !== 'write') throw this.notWritable('setValue');
    let lo: number;
    let hi: number;
    if (typeof value === 'number' && value >= 0 && value < SAFE && value % 1 === 0) {
      const vlo = value >>> 0;
      lo = ((vlo << 1) | 1) >>> 0;
      hi = ((value - vlo) / TWO_32) * 2 + (vlo >>> 31);
    } else {
      const v = toU64(value);
      if (v === undefined || big(v) > 0x7fffffffffffffffn) throw fail(Errno.EINVAL, `setValue: value ${String(value)} is not an integer in 0..2^63-1`);
      const e = (big(v) << 1n) | 1n;
      lo = Number(e & 0xffffffffn);
      hi = Number(e >> 32n);
    }
    this.store(lo, hi);
  }

  /**
   * Writes `entries` ([position, entry] pairs in strictly increasing positions, at or after the current one)
   * through {@link seek} and {@link set}. Stops at the first error, which it throws; the entries before it stay
   * written. Returns how many entries it wrote.
   */
  writeAll(entries: Iterable<KhoArrayEntry>): number {
    let n = 0;
    for (const [pos, entry] of entries) {
      const q = toU64(pos);
      if (n > 0 && q !== undefined && !(q > this.p)) {
        throw fail(Errno.EINVAL, `writeAll: position ${String(q)} does not follow position ${String(this.p)} (wanted strictly increasing positions)`);
      }
      this.seek(pos);
      this.set(entry);
      n++;
    }
    return n;
  }

  /**
   * Every non-empty entry of the whole array, lowest position first, read by a separate reader: this iterator
   * does not move. Throws EINVAL for a malformed page or entry.
   */
  readAll(): Array<[U64, U64]> {
    const r = this.reader();
    const out: Array<[U64, U64]> = [];
    while (r.next()) out.push([r.p, r.get()]);
    return out;
  }

  /** A new iterator in read mode over the same pages, at position 0. */
  reader(): KhoArray {
    return new KhoArray(this.ctx, this.version, 'read', this.first, []);
  }

  // ---------------------------------------------------------------- descriptor and pages

  /** Phys of the first page (0 for an empty array). */
  get firstPhys(): U64 {
    return this.first;
  }

  /** Pages this array owns (0 for an array opened for read). */
  get nrPages(): number {
    return this.owned.length;
  }

  /** Phys of every page this array owns, in allocation order (for an opened array, chain order). */
  pagePhys(): number[] {
    return this.owned.map((f) => f.phys);
  }

  /** Whether {@link preserve} is in effect. */
  get preserved(): boolean {
    return this.isPreserved;
  }

  /** The 16-byte `struct kho_array` describing this array now. */
  descriptor(): Uint8Array {
    return encodeKhoArrayDescriptor(this.version, big(this.first));
  }

  /** Writes {@link descriptor} at `phys` (the caller's memory). Throws EFAULT when the 16 bytes are not RAM. */
  writeDescriptor(phys: number): void {
    this.ctx.ram.write(phys, this.descriptor());
  }

  /**
   * Preserves every page for the next kernel (pages added later are preserved as they are allocated). Throws
   * EPERM for an array opened for read, EOPNOTSUPP without KHO, EEXIST when already preserved, and what KHO
   * throws (ENOMEM, EINVAL), having unpreserved exactly the pages this call preserved.
   */
  preserve(): void {
    const kho = this.ownerWithKho('preserve');
    if (this.isPreserved) throw fail(Errno.EEXIST, 'preserve: the array is already preserved');
    withUnwind((u) => {
      for (const f of this.owned) {
        kho.preserveFolio(f);
        u.push(() => kho.unpreserveFolio(f));
      }
    });
    this.isPreserved = true;
  }

  /** Undoes {@link preserve}. Throws EPERM for an array opened for read, EOPNOTSUPP without KHO, ENOENT when not preserved. */
  unpreserve(): void {
    const kho = this.ownerWithKho('unpreserve');
    if (!this.isPreserved) throw fail(Errno.ENOENT, 'unpreserve: the array is not preserved');
    for (let i = this.owned.length - 1; i >= 0; i--) kho.unpreserveFolio(this.owned[i]);
    this.isPreserved = false;
  }

  /**
   * Frees every page (unpreserving them first when preserved) with the free matching their allocation or
   * restore (`folioPut`). The array is then empty, its iterator back at position 0; the caller's descriptor is
   * not touched. Throws EPERM for an array opened for read.
   */
  destroy(): void {
    if (this.mode === 'read') throw this.notOwner('destroy');
    if (this.isPreserved) this.unpreserve();
    for (let i = this.owned.length - 1; i >= 0; i--) this.ctx.buddy.folioPut(this.owned[i]);
    this.owned.length = 0;
    this.first = 0;
    this.p = 0;
    this.fresh = true;
    this.located = false;
    this.k = -1;
    this.cPhys = 0;
    this.cWords = NO_PAGE;
    this.cPrev = 0;
    this.tail = false;
    this.hiK = NO_HI_K;
    this.seen.clear();
  }

  /** @internal The pages the cursor has entered, in chain order (openKhoArray's full scan). */
  visitedPages(): number[] {
    return [...this.seen];
  }

  // ---------------------------------------------------------------- cursor (both versions)

  /** Moves the cursor to `p`: onto the block slot holding it, else onto the block after it, else the last block. */
  private locate(p: U64): void {
    this.located = true;
    if (this.cPhys === 0) {
      if (this.first === 0) {
        this.k = -1;
        return;
      }
      this.enterPage(this.checkPage(this.first, 0));
    }
    while (this.bLast < p && !this.tail && this.nextBlock());
    this.k = this.bStart <= p && p <= this.bLast ? 2 * (this.bEnt + diffSmall(p, this.bStart)) : -1;
  }

  /** Moves the cursor to the next block (of this page or the next page); false (nothing moved) on the last block. */
  private nextBlock(): boolean {
    if (this.tail) return false;
    if (this.cBlock + 1 < this.cNrBlocks) {
      this.nextBlockInPage();
      return true;
    }
    const w = this.cWords;
    const next = fromWords(w[W_NEXT], w[W_NEXT + 1]);
    if (next === 0) {
      this.tail = true;
      if (this.mode === 'write' && this.version === KHO_ARRAY_VERSION_1) this.hiK = this.lastStoredK();
      return false;
    }
    this.enterPage(this.checkPage(next, this.cPhys));
    return true;
  }

  private enterPage(phys: number): void {
    this.tail = false;
    if (this.version === KHO_ARRAY_VERSION_0) this.enterPageV0(phys);
    else this.enterPageV1(phys);
  }

  private store(lo: number, hi: number): void {
    if (!this.located) this.locate(this.p);
    const k = this.k;
    if (k >= 0 && k <= this.hiK + 4) {
      // A slot the cursor block holds (in v1's tail block: at most one empty slot after the last one stored).
      const w = this.cWords;
      w[k] = lo;
      w[k + 1] = hi;
      if (k > this.hiK) this.hiK = k;
    } else if ((lo | hi) !== 0) {
      if (this.version === KHO_ARRAY_VERSION_0) this.insertV0(lo, hi);
      else this.appendV1(lo, hi);
    } else {
      return; // clearing a slot that holds nothing
    }
    this.fresh = false;
  }

  private setBlock(hdr: number, ent: number, num: number, start: U64, last: U64): void {
    this.bHdr = hdr;
    this.bEnt = ent;
    this.bNum = num;
    this.bStart = start;
    this.bLast = last;
    this.bFast = typeof last === 'number';
    this.hiK = NO_HI_K;
  }

  /** Checks a page pointer read from RAM (or the descriptor) before following it; returns it as a number. */
  private checkPage(ptr: U64, from: number): number {
    if (typeof ptr !== 'number' || !this.ctx.ram.isRam(ptr)) throw badPointer(ptr, from, 'is outside RAM');
    if (ptr % PAGE_SIZE !== 0) throw badPointer(ptr, from, 'is not page-aligned');
    if (this.seen.has(ptr)) throw badPointer(ptr, from, 'is reached twice (a cycle)');
    this.seen.add(ptr);
    return ptr;
  }

  /** A view of the words of the page at `phys` (RAM, page-aligned). PhysicalMemory never replaces a page's backing. */
  private view(phys: number): Uint32Array {
    const bytes = this.ctx.ram.page(phys / PAGE_SIZE);
    return new Uint32Array(bytes.buffer, bytes.byteOffset, WORDS);
  }

  /** Points the `next` field of the page at `phys` to `to`. */
  private link(phys: number, to: number): void {
    const w = this.view(phys);
    w[W_NEXT] = to >>> 0;
    w[W_NEXT + 1] = (to - (to >>> 0)) / TWO_32;
  }

  /**
   * A zeroed order-0, non-movable page for this array, preserved when the array is. Throws ENOMEM (and what
   * preserving throws) with nothing allocated.
   */
  private allocPage(): number {
    const { buddy, ram } = this.ctx;
    const folio = buddy.folioAlloc(0);
    try {
      ram.fill(folio.phys, PAGE_SIZE, 0);
      if (this.isPreserved) this.ctx.kho!.preserveFolio(folio);
    } catch (e) {
      buddy.folioPut(folio);
      throw e;
    }
    this.owned.push(folio);
    this.seen.add(folio.phys);
    return folio.phys;
  }

  // ---------------------------------------------------------------- version 0: one block of 510 slots per page

  /** Makes the (checked) page at `phys` the cursor page after checking its header. */
  private enterPageV0(phys: number): void {
    const w = this.view(phys);
    const start = fromWords(w[W_POS], w[W_POS + 1]);
    if (typeof start === 'number' ? start % KA_V0_NR_ENTRIES !== 0 : start % BigInt(KA_V0_NR_ENTRIES) !== 0n) {
      throw badPage(phys, `startpos ${String(start)} is not a multiple of ${KA_V0_NR_ENTRIES}`);
    }
    if (big(start) > KA_V0_MAX_STARTPOS) throw badPage(phys, `startpos ${String(start)} leaves slots beyond position 2^64-1`);
    if (this.cPhys !== 0 && !(start > this.bLast)) {
      throw badPage(phys, `startpos ${String(start)} is not after position ${String(this.bLast)}, the end of the previous page (positions must increase)`);
    }
    this.setPageV0(phys, w, start, this.cPhys);
  }

  private setPageV0(phys: number, w: Uint32Array, start: U64, prev: number): void {
    this.cPrev = prev;
    this.cPhys = phys;
    this.cWords = w;
    this.cNrBlocks = 1;
    this.cBlock = 0;
    this.setBlock(0, V0_ENTRIES, KA_V0_NR_ENTRIES, start, addSmall(start, V0_LAST_SLOT)!);
  }

  /** Allocates the page that holds `p`, links it where it belongs in the chain, makes it the cursor page, stores. */
  private insertV0(lo: number, hi: number): void {
    const p = this.p;
    const start = typeof p === 'number' ? p - (p % KA_V0_NR_ENTRIES) : canon(p - (p % BigInt(KA_V0_NR_ENTRIES)));
    if (big(start) > KA_V0_MAX_STARTPOS) {
      throw fail(Errno.EINVAL, `set: position ${String(p)} is beyond the last version-0 page (startpos at most ${KA_V0_MAX_STARTPOS})`);
    }
    const phys = this.allocPage();
    const w = this.view(phys);
    w[W_POS] = loWord(start);
    w[W_POS + 1] = hiWord(start);
    let prev: number;
    let tail = true;
    if (this.cPhys === 0) {
      this.first = phys; // the array was empty
      prev = 0;
    } else if (this.bStart > p) {
      // p lies in a gap before the cursor page: insert between the page before it and it, which the cursor
      // will reach again
      tail = false;
      this.seen.delete(this.cPhys);
      w[W_NEXT] = this.cPhys >>> 0;
      w[W_NEXT + 1] = (this.cPhys - (this.cPhys >>> 0)) / TWO_32;
      if (this.cPrev === 0) this.first = phys;
      else this.link(this.cPrev, phys);
      prev = this.cPrev;
    } else {
      // p lies beyond the last page (the cursor page, whose next is 0)
      this.link(this.cPhys, phys);
      prev = this.cPhys;
    }
    this.setPageV0(phys, w, start, prev);
    this.tail = tail;
    const k = 2 * (V0_ENTRIES + diffSmall(p, start));
    this.k = k;
    w[k] = lo;
    w[k + 1] = hi;
  }

  // ---------------------------------------------------------------- version 1: blocks of consecutive entries

  /** Makes the (checked) page at `phys` the cursor page, on its first block, after checking its header. */
  private enterPageV1(phys: number): void {
    const w = this.view(phys);
    const firstPos = fromWords(w[W_POS], w[W_POS + 1]);
    const nrBlocks = w[W_COUNTS] & 0xffff;
    const used = w[W_COUNTS] >>> 16;
    if (w[W_RESERVED] !== 0) throw badPage(phys, `reserved field is ${hex(w[W_RESERVED])} (wanted 0)`);
    if (used % 8 !== 0 || used < 16 || used > KA_V1_BLOCK_SPACE) {
      throw badPage(phys, `used is ${used} bytes (wanted a multiple of 8 in 16..${KA_V1_BLOCK_SPACE})`);
    }
    if (nrBlocks === 0) throw badPage(phys, 'nr_blocks is 0 (wanted at least 1)');
    if (this.cPhys !== 0 && !(firstPos > this.bLast)) {
      throw badPage(phys, `first_pos ${String(firstPos)} is not after position ${String(this.bLast)}, the last of the previous page (positions must increase)`);
    }
    const lo = w[2 * V1_BLOCKS];
    const hi = w[2 * V1_BLOCKS + 1];
    if ((lo & 1) !== 0 || lo >>> INC_SHIFT !== 0 || hi !== 0) {
      throw badPage(phys, `block 0 has flags ${lo & 1} and pos_increment ${(lo >>> INC_SHIFT) + hi * HI_INC} (wanted 0 and 0: it starts at first_pos)`);
    }
    this.cPhys = phys;
    this.cWords = w;
    this.cUsedW = used / 8;
    this.cNrBlocks = nrBlocks;
    this.cBlock = 0;
    this.checkBlockV1(V1_BLOCKS, V1_BLOCKS + 1, (lo >>> NUM_SHIFT) & MAX_NUM, firstPos);
  }

  /** Moves the cursor to the next block of the cursor page, checking its header first. */
  private nextBlockInPage(): void {
    const w = this.cWords;
    const hdr = this.bEnt + this.bNum;
    const end = V1_BLOCKS + this.cUsedW;
    const block = this.cBlock + 1;
    const phys = this.cPhys;
    if (hdr + 2 > end) {
      throw badBlock(phys, block, `at byte ${hdr * 8} does not fit before the end of the used bytes (byte ${end * 8}): nr_blocks ${this.cNrBlocks} is too many`);
    }
    const lo = w[2 * hdr];
    const hi = w[2 * hdr + 1];
    const num = (lo >>> NUM_SHIFT) & MAX_NUM;
    const inc = (lo >>> INC_SHIFT) + hi * HI_INC;
    let start: U64 | undefined;
    let ent: number;
    if ((lo & 1) !== 0) {
      if (inc !== 0) throw badBlock(phys, block, `has the absolute flag and pos_increment ${inc} (wanted 0)`);
      if (hdr + 3 > end) {
        throw badBlock(phys, block, `(absolute) at byte ${hdr * 8} has no room for its position before the end of the used bytes (byte ${end * 8})`);
      }
      start = fromWords(w[2 * hdr + 2], w[2 * hdr + 3]);
      if (!(start > this.bLast)) {
        throw badBlock(phys, block, `starts at absolute position ${String(start)}, not after position ${String(this.bLast)} (positions must increase)`);
      }
      ent = hdr + 2;
    } else {
      if (inc === 0) throw badBlock(phys, block, 'has pos_increment 0 (wanted at least 1: positions must increase)');
      start = addSmall(this.bLast, inc);
      if (start === undefined) throw badBlock(phys, block, `starts ${inc} after position ${String(this.bLast)}, beyond 2^64-1`);
      ent = hdr + 1;
    }
    this.cBlock = block;
    this.checkBlockV1(hdr, ent, num, start);
  }

  /** Checks that the block (header at u64 index `hdr`) fits the used bytes, then makes it the cursor block. */
  private checkBlockV1(hdr: number, ent: number, num: number, start: U64): void {
    const end = V1_BLOCKS + this.cUsedW;
    const phys = this.cPhys;
    if (num === 0) throw badBlock(phys, this.cBlock, `holds 0 entries (wanted 1..${KA_V1_MAX_ENTRIES})`);
    if (ent + num > end) {
      throw badBlock(phys, this.cBlock, `of ${num} entries at byte ${hdr * 8} ends at byte ${(ent + num) * 8}, past the end of the used bytes (byte ${end * 8})`);
    }
    if (this.cBlock === this.cNrBlocks - 1 && ent + num !== end) {
      throw badBlock(phys, this.cBlock, `is the last of ${this.cNrBlocks} but ends at byte ${(ent + num) * 8} (wanted byte ${end * 8}, the end of the used bytes)`);
    }
    const last = addSmall(start, num - 1);
    if (last === undefined) throw badBlock(phys, this.cBlock, `of ${num} entries at position ${String(start)} passes position 2^64-1`);
    this.setBlock(hdr, ent, num, start, last);
  }

  /**
   * Stores the entry at `p`, which lies past the last slot stored into by more than one empty slot: the cursor
   * is on the tail block (the last block of the last page). Trims that block after its last stored slot, then
   * starts a new block there (or a new page when the page has no room) whose slots run to the page's end. A `p`
   * in a gap before the cursor block is refused: version 1 only appends.
   */
  private appendV1(lo: number, hi: number): void {
    const p = this.p;
    if (this.cPhys === 0) {
      this.newPageV1(p, lo, hi);
      return;
    }
    if (this.bStart > p) {
      throw fail(
        Errno.EINVAL,
        `set: position ${String(p)} lies in a gap before position ${String(this.bStart)} (version 1 appends after its last position or overwrites a slot it holds)`,
      );
    }
    const w = this.cWords;
    // Trim the tail block after its last stored slot (keeping one slot if none holds anything).
    const num = Math.max(1, (this.hiK >> 1) - this.bEnt + 1);
    const last = addSmall(this.bStart, num - 1)!;
    if (num !== this.bNum) {
      w[2 * this.bHdr] = (w[2 * this.bHdr] & ~(MAX_NUM << NUM_SHIFT)) | (num << NUM_SHIFT);
      this.cUsedW = this.bEnt + num - V1_BLOCKS;
      w[W_COUNTS] = this.cNrBlocks | (this.cUsedW << USED_WORDS_SHIFT); // nr_blocks | used bytes
    }
    const top = V1_BLOCKS + this.cUsedW; // u64 index of the first free word
    const inc = sub(p, last);
    const absolute = !(typeof inc === 'number' && inc <= KA_V1_MAX_POS_INCREMENT);
    const need = absolute ? 3 : 2;
    if (top + need > PAGE_U64) {
      this.newPageV1(p, lo, hi);
      return;
    }
    const ent = top + need - 1;
    const slots = reservedSlots(p, PAGE_U64 - ent);
    if (absolute) {
      w[2 * top] = 1 | (slots << NUM_SHIFT); // flags 1, num_entries, pos_increment 0
      w[2 * top + 1] = 0;
      w[2 * top + 2] = loWord(p);
      w[2 * top + 3] = hiWord(p);
    } else {
      const d = inc as number;
      w[2 * top] = (slots << NUM_SHIFT) + (d % HI_INC) * LO_INC; // num_entries, pos_increment's low bits
      w[2 * top + 1] = Math.floor(d / HI_INC);
    }
    w[2 * ent] = lo;
    w[2 * ent + 1] = hi;
    this.cNrBlocks++;
    this.cUsedW = ent + slots - V1_BLOCKS;
    w[W_COUNTS] = this.cNrBlocks | (this.cUsedW << USED_WORDS_SHIFT);
    this.cBlock = this.cNrBlocks - 1;
    this.setBlock(top, ent, slots, p, addSmall(p, slots - 1)!);
    this.hiK = this.k = 2 * ent;
    this.tail = true;
  }

  /** A new last page whose one block holds the entry at `p` and reserves the rest of the page; it becomes the cursor page. */
  private newPageV1(p: U64, lo: number, hi: number): void {
    const phys = this.allocPage();
    const w = this.view(phys);
    const ent = V1_BLOCKS + 1;
    const slots = reservedSlots(p, PAGE_U64 - ent);
    w[W_POS] = loWord(p);
    w[W_POS + 1] = hiWord(p);
    w[W_COUNTS] = 1 | ((1 + slots) << USED_WORDS_SHIFT); // nr_blocks 1, used bytes
    w[2 * V1_BLOCKS] = slots << NUM_SHIFT; // block header: flags 0, num_entries, pos_increment 0
    w[2 * ent] = lo;
    w[2 * ent + 1] = hi;
    if (this.cPhys === 0) this.first = phys;
    else this.link(this.cPhys, phys);
    this.cPhys = phys;
    this.cWords = w;
    this.cUsedW = 1 + slots;
    this.cNrBlocks = 1;
    this.cBlock = 0;
    this.setBlock(V1_BLOCKS, ent, slots, p, addSmall(p, slots - 1)!);
    this.hiK = this.k = 2 * ent;
    this.tail = true;
  }

  /** The u32 index of the last non-empty slot of the cursor block (before its first slot when all are empty). */
  private lastStoredK(): number {
    const w = this.cWords;
    let k = 2 * (this.bEnt + this.bNum - 1);
    while (k >= 2 * this.bEnt && (w[k] | w[k + 1]) === 0) k -= 2;
    return k;
  }

  // ---------------------------------------------------------------- errors

  private badEntry(lo: number, hi: number, pos: U64): KernelError {
    return fail(
      Errno.EINVAL,
      `entry ${hexU64(fromWords(lo, hi))} at position ${String(pos)} (page ${hex(this.cPhys)}) is neither a tagged value nor an 8-byte-aligned pointer`,
    );
  }

  private notWritable(what: string): KernelError {
    return fail(Errno.EPERM, `${what} at position ${String(this.p)} in ${this.mode} mode (wanted an array opened for write)`);
  }

  private notOwner(what: string): KernelError {
    return fail(Errno.EPERM, `${what} in read mode (wanted the pages' owner: an array created here, or opened for write or restore)`);
  }

  private ownerWithKho(what: string): KhoArrayPreserver {
    if (this.mode === 'read') throw this.notOwner(what);
    if (!this.ctx.kho) throw fail(Errno.EOPNOTSUPP, `${what}: this array has no KHO to preserve with`);
    return this.ctx.kho;
  }
}

/**
 * A new, empty array of `version` (default 1) in write mode, owning its pages. Throws EOPNOTSUPP for a version
 * other than 0 and 1.
 */
export function createKhoArray(ctx: KhoArrayContext, version: number = KHO_ARRAY_DEFAULT_VERSION): KhoArray {
  if (version !== KHO_ARRAY_VERSION_0 && version !== KHO_ARRAY_VERSION_1) {
    throw fail(Errno.EOPNOTSUPP, `create: version ${describeVersion(version)} (wanted ${KHO_ARRAY_VERSIONS.join(' or ')})`);
  }
  return new KhoArray(ctx, version, 'write', 0, []);
}

/**
 * Opens the array described by the 16-byte descriptor `desc` (its bytes, or the phys where they are) in `mode`:
 * - `read`: an iterator that checks each page when it reaches it (pointer inside RAM, page-aligned, not reached
 *   before; header; positions strictly increasing; entries well formed); it owns nothing.
 * - `write`: checks the whole array first, then takes ownership of its pages (they must be this kernel's memory:
 *   the array was created in this boot, or restored; the previous owner must let them go, and whether they are
 *   preserved stays the previous owner's business), as an iterator that may change it.
 * - `restore` (the next kernel): checks the whole array, then that every page carries KHO's order-0 stamp, and
 *   only then restores every page (`restoreFolio`), so that {@link KhoArray.destroy} frees them; an iterator in
 *   restore mode (it reads).
 * Throws EINVAL for a bad mode, a descriptor that is not 16 bytes or not in RAM, a reserved field other than 0, and
 * for any malformed page or entry (nothing restored); EOPNOTSUPP for a bad magic or version, or `restore` without
 * KHO; and what `restoreFolio` throws (the pages restored by then are freed).
 */
export function openKhoArray(ctx: KhoArrayContext, desc: number | Uint8Array, mode: KhoArrayMode = 'read'): KhoArray {
  if (!MODES.includes(mode)) throw fail(Errno.EINVAL, `open: mode '${String(mode)}' (wanted 'read', 'write' or 'restore')`);
  let bytes: Uint8Array;
  if (typeof desc === 'number') {
    if (!ctx.ram.isRam(desc, KHO_ARRAY_DESC_SIZE)) throw fail(Errno.EINVAL, `open: descriptor at ${hexU64(desc)} is not ${KHO_ARRAY_DESC_SIZE} bytes of RAM`);
    bytes = ctx.ram.read(desc, KHO_ARRAY_DESC_SIZE);
  } else {
    if (desc.length !== KHO_ARRAY_DESC_SIZE) throw fail(Errno.EINVAL, `open: descriptor is ${desc.length} bytes (wanted ${KHO_ARRAY_DESC_SIZE})`);
    bytes = desc;
  }
  const d = decodeKhoArrayDescriptor(bytes);
  if (d.magic !== KHO_ARRAY_MAGIC) {
    throw fail(Errno.EOPNOTSUPP, `open: descriptor magic ${hex(d.magic)} (wanted ${hex(KHO_ARRAY_MAGIC)}, 'KARR')`);
  }
  if (d.version !== KHO_ARRAY_VERSION_0 && d.version !== KHO_ARRAY_VERSION_1) {
    throw fail(Errno.EOPNOTSUPP, `open: descriptor version ${d.version} (wanted ${KHO_ARRAY_VERSIONS.join(' or ')})`);
  }
  if (d.reserved !== 0) throw fail(Errno.EINVAL, `open: descriptor reserved field is ${hex(d.reserved)} (wanted 0)`);
  const version = d.version as KhoArrayVersion;
  const first = canon(d.first);
  if (mode === 'read') return new KhoArray(ctx, version, 'read', first, []);

  // Check everything before trusting any of it: a full read visits every page and block and checks each entry.
  const scan = new KhoArray(ctx, version, 'read', first, []);
  while (scan.next());
  const pages = scan.visitedPages();
  if (mode === 'write') return new KhoArray(ctx, version, 'write', first, pages.map((phys) => new Folio((phys / PAGE_SIZE) as Pfn, ORDER_0)));

  const kho = ctx.kho;
  if (!kho) throw fail(Errno.EOPNOTSUPP, 'open: restore needs KHO');
  for (const phys of pages) {
    // The scan checked every page it visited: page-aligned RAM.
    if (!kho.isPreservedIncoming((phys / PAGE_SIZE) as Pfn, ORDER_0)) {
      throw fail(Errno.EINVAL, `restore: page ${hex(phys)} has no KHO stamp of order 0 (it was not preserved as an array page, or is restored already)`);
    }
  }
  const folios = withUnwind((u) =>
    pages.map((phys) => {
      const f = kho.restoreFolio(phys as PhysAddr); // checked by the scan and the stamp check above
      u.push(() => ctx.buddy.folioPut(f));
      return f;
    }),
  );
  return new KhoArray(ctx, version, 'restore', first, folios);
}

