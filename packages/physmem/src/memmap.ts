import { injectable } from 'tsyringe';
import { Errno, KernelError, hex } from '@kho/kernel';
import { PAGE_SIZE, type Order, type Pfn } from './abi';
import { MEMMAP_BLOCK_BYTES, MEMMAP_SECTION_BYTES, PAGEBLOCK_PAGES, SECTION_PAGES } from './host-cost';
import { PhysicalMemory } from './memory';

/**
 * Page flags kept in the memmap (a subset of the kernel's page flags, plus the simulator's own). Values are
 * bits of a u16.
 */
export const PageFlag = {
  /** Head of a free block owned by the buddy allocator (PageBuddy); its order is in the descriptor. */
  Buddy: 1,
  /** Head page of a compound page (folio of order > 0). */
  Head: 2,
  /** Tail page of a compound page; the descriptor holds its offset from the head. */
  Tail: 4,
  /** Reserved: not managed by the allocator (PG_reserved). */
  Reserved: 8,
  /** Descriptor deliberately not initialised at boot (preserved memory whose struct page KHO fills in later). */
  NoInit: 16,
  /** KHO scratch memory: the buddy allocator serves it to movable allocations only. */
  Scratch: 32,
  /** Owned by a slab cache. */
  Slab: 64,
  /** Backs a vmalloc area. */
  Vmalloc: 128,
} as const;
export type PageFlag = (typeof PageFlag)[keyof typeof PageFlag];

const PB = PAGEBLOCK_PAGES;
const BLOCKS_PER_SECTION = SECTION_PAGES / PAGEBLOCK_PAGES;
const { Tail } = PageFlag;

/**
 * The per-page descriptors of one pageblock (512 pages, 2 MiB) whose pages differ from one another: 17 bytes a
 * page in one buffer. Once a pageblock has them, they hold all its pages, the first included.
 */
class PageblockPages {
  readonly refcount: Int32Array;
  readonly privLo: Uint32Array;
  readonly privHi: Uint32Array;
  readonly flags: Uint16Array;
  readonly headOff: Uint16Array;
  readonly order: Uint8Array;

  /** Pages 1..511 as the uniform pageblock described them: `tailFlags`, and offsets `tailBase + j` unless it is -1 (the caller copies page 0). */
  constructor(tailFlags: number, tailBase: number) {
    const buf = new ArrayBuffer(MEMMAP_BLOCK_BYTES);
    this.refcount = new Int32Array(buf, 0, PB);
    this.privLo = new Uint32Array(buf, 4 * PB, PB);
    this.privHi = new Uint32Array(buf, 8 * PB, PB);
    this.flags = new Uint16Array(buf, 12 * PB, PB);
    this.headOff = new Uint16Array(buf, 14 * PB, PB);
    this.order = new Uint8Array(buf, 16 * PB, PB);
    if (tailFlags !== 0) this.flags.fill(tailFlags, 1);
    if (tailBase >= 0) for (let j = 1; j < PB; j++) this.headOff[j] = tailBase + j;
  }
}

/**
 * The descriptors of one present section (2^18 pages, 1 GiB), created on its first write (deferred struct-page
 * initialisation: a section nobody touched reads as all zero and costs nothing). Per pageblock it holds the first
 * page's descriptor and, while the pageblock is uniform, what its other 511 pages share: a flags word, and whether
 * their compound-head offsets run on from a base (page j: base + j) or are 0; their refcount, order and private
 * word are 0. A pageblock whose pages come to differ gets its own per-page descriptors (`blocks[b]`, holding all
 * 512, from then on the only copy of its first page's), and keeps them.
 */
class MemSection {
  readonly refcount: Int32Array;
  readonly privLo: Uint32Array;
  readonly privHi: Uint32Array;
  readonly flags: Uint16Array;
  readonly headOff: Uint16Array;
  readonly tailFlags: Uint16Array;
  /** 0: the other pages' offsets are 0; v > 0: page j's offset is v - 1 + j. */
  readonly tailBase1: Uint16Array;
  readonly order: Uint8Array;
  blocks: Array<PageblockPages | undefined> | undefined;

  constructor() {
    const n = BLOCKS_PER_SECTION;
    const buf = new ArrayBuffer(MEMMAP_SECTION_BYTES);
    this.refcount = new Int32Array(buf, 0, n);
    this.privLo = new Uint32Array(buf, 4 * n, n);
    this.privHi = new Uint32Array(buf, 8 * n, n);
    this.flags = new Uint16Array(buf, 12 * n, n);
    this.headOff = new Uint16Array(buf, 14 * n, n);
    this.tailFlags = new Uint16Array(buf, 16 * n, n);
    this.tailBase1 = new Uint16Array(buf, 18 * n, n);
    this.order = new Uint8Array(buf, 20 * n, n);
  }
}

/**
 * The page descriptors of one boot (the kernel's memmap of struct page): one per page frame of RAM, none for
 * holes. It starts all zero and dies with the kernel; nothing in it survives kexec.
 *
 * Storage is SPARSEMEM-like and costs what is used: sections of 1 GiB are created on first write; within one, a
 * pageblock (2 MiB) whose 511 pages after the first are alike (free memory, a 2 MiB folio, a reserved range)
 * costs one descriptor and a flags word, and one whose pages differ costs 17 bytes a page (Linux spends 64).
 * Range operations (`updateFlagsRange`, `markCompound`, ...) work a pageblock at a time where they can, so
 * handing a TiB to the buddy allocator or restoring a 2 MiB folio does not touch 512 descriptors.
 *
 * Every public method takes a pfn and throws EFAULT for a pfn that is not RAM; the @internal ones (for the
 * buddy allocator) trust the caller.
 */
@injectable()
export class Memmap {
  /** Page frames described (RAM pages). */
  readonly nrPages: number;

  private readonly startPfn: number[];
  private readonly endPfn: number[];
  private readonly start0: number;
  private readonly end0: number;
  private readonly sections: Array<MemSection | undefined>;
  private nSections = 0;
  private nSplit = 0;
  // The pageblock of the last lookup: its number, section (undefined while absent), index in the section, and
  // per-page descriptors (undefined while it is uniform).
  private cPb = NaN;
  private cS: MemSection | undefined = undefined;
  private cB = 0;
  private cD: PageblockPages | undefined = undefined;

  constructor(ram: PhysicalMemory) {
    this.startPfn = ram.ranges.map((r) => r.start / PAGE_SIZE);
    this.endPfn = ram.ranges.map((r) => (r.start + r.size) / PAGE_SIZE);
    this.nrPages = ram.totalBytes / PAGE_SIZE;
    this.start0 = this.startPfn[0];
    this.end0 = this.endPfn[0];
    this.sections = new Array<MemSection | undefined>(Math.ceil(this.endPfn[this.endPfn.length - 1] / SECTION_PAGES)).fill(undefined);
  }

  /** Host bytes per page frame when every pageblock has per-page descriptors (the most it can cost). */
  get bytesPerPage(): number {
    return MEMMAP_BLOCK_BYTES / PB + MEMMAP_SECTION_BYTES / SECTION_PAGES;
  }

  /** Host bytes the memmap occupies now: its present sections and the pageblocks with per-page descriptors. */
  get totalBytes(): number {
    return this.nSections * MEMMAP_SECTION_BYTES + this.nSplit * MEMMAP_BLOCK_BYTES;
  }

  /** Sections created so far (each describes 1 GiB of physical addresses). */
  get presentSections(): number {
    return this.nSections;
  }

  /** Pageblocks (2 MiB) with per-page descriptors. */
  get splitPageblocks(): number {
    return this.nSplit;
  }

  /** True when `pfn` is a page frame of RAM (so it has a descriptor). */
  hasPage(pfn: number): boolean {
    return this.rangeOfPfn(pfn) >= 0;
  }

  /** @internal the RAM range number (index into `ram.ranges`) holding `pfn`, or -1. */
  rangeOfPfn(pfn: number): number {
    if (pfn >= this.start0 && pfn < this.end0 && Math.floor(pfn) === pfn) return 0;
    if (!Number.isInteger(pfn)) return -1;
    const starts = this.startPfn;
    let lo = 1;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (pfn < starts[mid]) hi = mid - 1;
      else if (pfn >= this.endPfn[mid]) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  /** @internal first pfn of RAM range `r`. */
  rangeStartPfn(r: number): number {
    return this.startPfn[r];
  }

  /** @internal end pfn (exclusive) of RAM range `r`. */
  rangeEndPfn(r: number): number {
    return this.endPfn[r];
  }

  // --- public, checked accessors ------------------------------------------------------------------------

  refcount(pfn: number): number {
    return this.refOf(this.check(pfn));
  }

  setRefcount(pfn: number, count: number): void {
    this.setRefOf(this.check(pfn), count);
  }

  /** Every flag bit of `pfn` (see {@link PageFlag}). */
  flags(pfn: number): number {
    return this.flagsOf(this.check(pfn));
  }

  /** Sets the bits of `mask`. */
  setFlags(pfn: number, mask: number): void {
    const p = this.check(pfn);
    this.setFlagsOf(p, this.flagsOf(p) | mask);
  }

  /** Clears the bits of `mask`. */
  clearFlags(pfn: number, mask: number): void {
    const p = this.check(pfn);
    this.setFlagsOf(p, this.flagsOf(p) & ~mask);
  }

  /** True when any bit of `mask` is set. */
  testFlag(pfn: number, mask: number): boolean {
    return (this.flagsOf(this.check(pfn)) & mask) !== 0;
  }

  /** The order recorded for `pfn` (meaningful for a block's head page). */
  order(pfn: number): Order {
    // Written only by the allocator from an Order (or 0 when the page was freed): an order already.
    return this.orderOf(this.check(pfn)) as Order;
  }

  setOrder(pfn: number, order: number): void {
    this.setOrderOf(this.check(pfn), order);
  }

  /** Low 32 bits of the page's private word. */
  privateLo(pfn: number): number {
    return this.privLoOf(this.check(pfn));
  }

  /** High 32 bits of the page's private word. */
  privateHi(pfn: number): number {
    return this.privHiOf(this.check(pfn));
  }

  /** Sets the page's private word from its two halves (each taken modulo 2^32). */
  setPrivate(pfn: number, lo: number, hi: number): void {
    const p = this.check(pfn);
    this.setPrivLoOf(p, lo);
    this.setPrivHiOf(p, hi);
  }

  /** The page's private word as a u64. */
  getPrivate(pfn: number): bigint {
    const p = this.check(pfn);
    return (BigInt(this.privHiOf(p)) << 32n) | BigInt(this.privLoOf(p));
  }

  /**
   * Sets the bits of `mask` on every page of [pfn, pfn + nrPages), a pageblock at a time (a whole uniform pageblock
   * stays one descriptor). Throws EINVAL for a bad count and EFAULT, changing nothing, when a page is not RAM.
   */
  setFlagsRange(pfn: number, nrPages: number, mask: number): void {
    this.checkRange(pfn, nrPages);
    this.updateFlagsRange(pfn, nrPages, 0, mask);
  }

  /** Clears the bits of `mask` on every page of [pfn, pfn + nrPages). Throws like setFlagsRange. */
  clearFlagsRange(pfn: number, nrPages: number, mask: number): void {
    this.checkRange(pfn, nrPages);
    this.updateFlagsRange(pfn, nrPages, mask, 0);
  }

  /** Offset of a tail page from its compound head (0 for any other page). */
  headOffset(pfn: number): number {
    return this.headOffOf(this.check(pfn));
  }

  /** Sets the offset of a tail page from its compound head. */
  setHeadOffset(pfn: number, offset: number): void {
    this.setHeadOffOf(this.check(pfn), offset);
  }

  /** The head of the compound page `pfn` belongs to; `pfn` itself when it is not a tail page. */
  compoundHead(pfn: number): Pfn {
    const p = this.check(pfn);
    return ((this.flagsOf(p) & Tail) !== 0 ? p - this.headOffOf(p) : p) as Pfn;
  }

  // --- @internal unchecked accessors (the buddy allocator's hot paths) ----------------------------------
  //
  // Each resolves the pfn's pageblock through a one-entry cache (`cPb`): a pageblock with per-page descriptors
  // is then one typed-array access; a uniform one reads its section's arrays.

  /** @internal */
  flagsOf(pfn: number): number {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) return d.flags[pfn & (PB - 1)];
    const s = this.cS;
    if (s === undefined) return 0;
    return (pfn & (PB - 1)) === 0 ? s.flags[this.cB] : s.tailFlags[this.cB];
  }

  /** @internal */
  setFlagsOf(pfn: number, v: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) {
      d.flags[pfn & (PB - 1)] = v;
      return;
    }
    let s = this.cS;
    if (s === undefined) {
      if (v === 0) return;
      s = this.createSection();
    }
    if ((pfn & (PB - 1)) === 0) s.flags[this.cB] = v;
    else if (v !== s.tailFlags[this.cB]) this.split().flags[pfn & (PB - 1)] = v;
  }

  /** @internal */
  refOf(pfn: number): number {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) return d.refcount[pfn & (PB - 1)];
    const s = this.cS;
    return s !== undefined && (pfn & (PB - 1)) === 0 ? s.refcount[this.cB] : 0;
  }

  /** @internal */
  setRefOf(pfn: number, v: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) d.refcount[pfn & (PB - 1)] = v;
    else if ((pfn & (PB - 1)) === 0) {
      if (v !== 0 || this.cS !== undefined) (this.cS ?? this.createSection()).refcount[this.cB] = v;
    } else if (v !== 0) {
      if (this.cS === undefined) this.createSection();
      this.split().refcount[pfn & (PB - 1)] = v;
    }
  }

  /** @internal */
  orderOf(pfn: number): number {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) return d.order[pfn & (PB - 1)];
    const s = this.cS;
    return s !== undefined && (pfn & (PB - 1)) === 0 ? s.order[this.cB] : 0;
  }

  /** @internal */
  setOrderOf(pfn: number, v: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) d.order[pfn & (PB - 1)] = v;
    else if ((pfn & (PB - 1)) === 0) {
      if (v !== 0 || this.cS !== undefined) (this.cS ?? this.createSection()).order[this.cB] = v;
    } else if (v !== 0) {
      if (this.cS === undefined) this.createSection();
      this.split().order[pfn & (PB - 1)] = v;
    }
  }

  /** @internal */
  privLoOf(pfn: number): number {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) return d.privLo[pfn & (PB - 1)];
    const s = this.cS;
    return s !== undefined && (pfn & (PB - 1)) === 0 ? s.privLo[this.cB] : 0;
  }

  /** @internal */
  setPrivLoOf(pfn: number, v: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) d.privLo[pfn & (PB - 1)] = v;
    else if ((pfn & (PB - 1)) === 0) {
      if (v !== 0 || this.cS !== undefined) (this.cS ?? this.createSection()).privLo[this.cB] = v;
    } else if (v !== 0) {
      if (this.cS === undefined) this.createSection();
      this.split().privLo[pfn & (PB - 1)] = v;
    }
  }

  /** @internal */
  privHiOf(pfn: number): number {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) return d.privHi[pfn & (PB - 1)];
    const s = this.cS;
    return s !== undefined && (pfn & (PB - 1)) === 0 ? s.privHi[this.cB] : 0;
  }

  /** @internal */
  setPrivHiOf(pfn: number, v: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) d.privHi[pfn & (PB - 1)] = v;
    else if ((pfn & (PB - 1)) === 0) {
      if (v !== 0 || this.cS !== undefined) (this.cS ?? this.createSection()).privHi[this.cB] = v;
    } else if (v !== 0) {
      if (this.cS === undefined) this.createSection();
      this.split().privHi[pfn & (PB - 1)] = v;
    }
  }

  /** @internal */
  headOffOf(pfn: number): number {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) return d.headOff[pfn & (PB - 1)];
    const s = this.cS;
    if (s === undefined) return 0;
    const j = pfn & (PB - 1);
    if (j === 0) return s.headOff[this.cB];
    const base1 = s.tailBase1[this.cB];
    return base1 === 0 ? 0 : base1 - 1 + j;
  }

  /** @internal */
  setHeadOffOf(pfn: number, v: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    if (d !== undefined) {
      d.headOff[pfn & (PB - 1)] = v;
      return;
    }
    let s = this.cS;
    if (s === undefined) {
      if (v === 0) return;
      s = this.createSection();
    }
    const j = pfn & (PB - 1);
    if (j === 0) s.headOff[this.cB] = v;
    else if (v !== (s.tailBase1[this.cB] === 0 ? 0 : s.tailBase1[this.cB] - 1 + j)) this.split().headOff[j] = v;
  }

  // --- @internal combined writes of the buddy allocator's free lists (one pageblock lookup for several fields)

  /** @internal the head of a block leaving the free lists for an allocation: Buddy cleared, refcount 1, `order`, private 0. */
  allocHead(pfn: number, order: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    let d = this.cD;
    const j = pfn & (PB - 1);
    if (d === undefined) {
      if (j === 0) {
        const s = this.cS ?? this.createSection();
        const b = this.cB;
        s.flags[b] &= ~PageFlag.Buddy;
        s.refcount[b] = 1;
        s.order[b] = order;
        s.privLo[b] = 0;
        s.privHi[b] = 0;
        return;
      }
      if (this.cS === undefined) this.createSection();
      d = this.split();
    }
    d.flags[j] &= ~PageFlag.Buddy;
    d.refcount[j] = 1;
    d.order[j] = order;
    d.privLo[j] = 0;
    d.privHi[j] = 0;
  }

  /** @internal the head of a block put on a free list: Buddy set, `order`, private low word = its stack position. */
  listHead(pfn: number, order: number, pos: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    let d = this.cD;
    const j = pfn & (PB - 1);
    if (d === undefined) {
      if (j === 0) {
        const s = this.cS ?? this.createSection();
        const b = this.cB;
        s.flags[b] |= PageFlag.Buddy;
        s.order[b] = order;
        s.privLo[b] = pos;
        return;
      }
      if (this.cS === undefined) this.createSection();
      d = this.split();
    }
    d.flags[j] |= PageFlag.Buddy;
    d.order[j] = order;
    d.privLo[j] = pos;
  }

  /** @internal the head of a block taken off a free list to merge: Buddy cleared, order and private low word 0. */
  unlistHead(pfn: number): void {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    const j = pfn & (PB - 1);
    if (d !== undefined) {
      d.flags[j] &= ~PageFlag.Buddy;
      d.order[j] = 0;
      d.privLo[j] = 0;
    } else if (j === 0 && this.cS !== undefined) {
      const b = this.cB;
      this.cS.flags[b] &= ~PageFlag.Buddy;
      this.cS.order[b] = 0;
      this.cS.privLo[b] = 0;
    } else {
      // A free head is never a uniform pageblock's other page; keep the general path for anything else.
      this.setFlagsOf(pfn, this.flagsOf(pfn) & ~PageFlag.Buddy);
      this.setOrderOf(pfn, 0);
      this.setPrivLoOf(pfn, 0);
    }
  }

  /** @internal whether `pfn` is the head of a free block of `order` whose Scratch bit is `scratch`. */
  isFreeHead(pfn: number, order: number, scratch: number): boolean {
    if (Math.floor(pfn / PB) !== this.cPb) this.resolve(pfn);
    const d = this.cD;
    const j = pfn & (PB - 1);
    let f: number;
    let k: number;
    if (d !== undefined) {
      f = d.flags[j];
      k = d.order[j];
    } else {
      const s = this.cS;
      if (s === undefined || j !== 0) return false; // a uniform pageblock's other pages are never free heads
      f = s.flags[this.cB];
      k = s.order[this.cB];
    }
    return (f & PageFlag.Buddy) !== 0 && k === order && (f & PageFlag.Scratch) === scratch;
  }

  // --- @internal range operations -----------------------------------------------------------------------

  /** @internal flags = (flags & ~clear) | set on every page of [pfn, pfn + n) (all RAM). */
  updateFlagsRange(pfn: number, n: number, clear: number, set: number): void {
    if (n <= 8 && (pfn & (PB - 1)) + n <= PB) {
      // A few pages in one pageblock (restoring small folios one by one): page by page, no piece walk.
      for (let p = pfn; p < pfn + n; p++) {
        const f = this.flagsOf(p);
        const nf = (f & ~clear) | set;
        if (nf !== f) this.setFlagsOf(p, nf);
      }
      return;
    }
    this.forEachPiece(pfn, n, set !== 0, (s, b, j0, j1) => {
      if (!s) return; // absent: all zero, and `set` is 0
      let d = s.blocks?.[b];
      if (!d) {
        if (j0 === 0) s.flags[b] = (s.flags[b] & ~clear) | set;
        const lo = Math.max(j0, 1);
        if (lo >= j1) return;
        const t = s.tailFlags[b];
        const nt = (t & ~clear) | set;
        if (nt === t) return;
        if (lo === 1 && j1 === PB) {
          s.tailFlags[b] = nt;
          return;
        }
        d = this.splitBlock(s, b);
      }
      const f = d.flags;
      for (let j = j0; j < j1; j++) f[j] = (f[j] & ~clear) | set;
    });
  }

  /** @internal refcount 0 on every page of [pfn, pfn + n) (all RAM). */
  clearRefcountsRange(pfn: number, n: number): void {
    if (n <= 8 && (pfn & (PB - 1)) + n <= PB) {
      for (let p = pfn; p < pfn + n; p++) if (this.refOf(p) !== 0) this.setRefOf(p, 0);
      return;
    }
    this.forEachPiece(pfn, n, false, (s, b, j0, j1) => {
      if (!s) return;
      const d = s.blocks?.[b];
      if (d) d.refcount.fill(0, j0, j1);
      else if (j0 === 0) s.refcount[b] = 0;
    });
  }

  /**
   * @internal marks the 2^order pages at `head` as one compound page: Head on the head (Tail cleared), Tail and
   * the offset from the head on the others (Head cleared).
   */
  markCompound(head: number, order: number): void {
    const n = 2 ** order;
    this.setFlagsOf(head, (this.flagsOf(head) & ~Tail) | PageFlag.Head);
    if (n === 1) return;
    this.forEachPiece(head + 1, n - 1, true, (s, b, j0, j1, first) => {
      const sec = s!;
      let d = sec.blocks?.[b];
      if (!d) {
        if (j0 === 0) {
          sec.flags[b] = (sec.flags[b] & ~PageFlag.Head) | Tail;
          sec.headOff[b] = first - head;
        }
        const lo = Math.max(j0, 1);
        if (lo >= j1) return;
        if (lo === 1 && j1 === PB) {
          // A whole uniform pageblock: its pages' offsets run on from its first page's.
          sec.tailFlags[b] = (sec.tailFlags[b] & ~PageFlag.Head) | Tail;
          sec.tailBase1[b] = first - j0 - head + 1;
          return;
        }
        d = this.splitBlock(sec, b);
      }
      for (let j = j0; j < j1; j++) {
        d.flags[j] = (d.flags[j] & ~PageFlag.Head) | Tail;
        d.headOff[j] = first - j0 + j - head;
      }
    });
  }

  /** @internal undoes markCompound on the 2^order pages at `head`: Head cleared on the head, Tail and the offset on the others. */
  clearCompound(head: number, order: number): void {
    const n = 2 ** order;
    this.setFlagsOf(head, this.flagsOf(head) & ~PageFlag.Head);
    if (n === 1) return;
    this.forEachPiece(head + 1, n - 1, false, (s, b, j0, j1) => {
      if (!s) return;
      let d = s.blocks?.[b];
      if (!d) {
        if (j0 === 0) {
          s.flags[b] &= ~Tail;
          s.headOff[b] = 0;
        }
        const lo = Math.max(j0, 1);
        if (lo >= j1) return;
        if (lo === 1 && j1 === PB) {
          s.tailFlags[b] &= ~Tail;
          s.tailBase1[b] = 0;
          return;
        }
        if (!(s.tailFlags[b] & Tail) && s.tailBase1[b] === 0) return;
        d = this.splitBlock(s, b);
      }
      for (let j = j0; j < j1; j++) {
        d.flags[j] &= ~Tail;
        d.headOff[j] = 0;
      }
    });
  }

  /** @internal the first pfn of [pfn, pfn + n) (all RAM) with any bit of `mask` set, or -1. */
  findFlag(pfn: number, n: number, mask: number): number {
    return this.findFlagRun(pfn, n, mask, 0);
  }

  /** @internal the first pfn of [pfn, end) whose bits of `mask` differ from pfn's, or `end`. */
  flagRunEnd(pfn: number, end: number, mask: number): number {
    const at = this.findFlagRun(pfn, end - pfn, mask, this.flagsOf(pfn) & mask);
    return at < 0 ? end : at;
  }

  /** @internal the first pfn of [pfn, pfn + n) (all RAM) with a refcount above 0 and no bit of `except`, or -1. */
  findReferenced(pfn: number, n: number, except: number): number {
    if (n <= 8 && (pfn & (PB - 1)) + n <= PB) {
      for (let p = pfn; p < pfn + n; p++) if (this.refOf(p) > 0 && !(this.flagsOf(p) & except)) return p;
      return -1;
    }
    let found = -1;
    this.forEachPiece(pfn, n, false, (s, b, j0, j1, first) => {
      if (!s) return false;
      const d = s.blocks?.[b];
      if (!d) {
        // the other pages of a uniform pageblock have refcount 0
        if (j0 === 0 && s.refcount[b] > 0 && !(s.flags[b] & except)) found = first;
        return found >= 0;
      }
      for (let j = j0; j < j1; j++) {
        if (d.refcount[j] > 0 && !(d.flags[j] & except)) {
          found = first - j0 + j;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  // --- internals ----------------------------------------------------------------------------------------

  private check(pfn: number): number {
    if (pfn >= this.start0 && pfn < this.end0 && Math.floor(pfn) === pfn) return pfn;
    if (this.rangeOfPfn(pfn) < 0) throw new KernelError(Errno.EFAULT, `memmap: pfn ${describePfn(pfn)} is not a page of RAM`);
    return pfn;
  }

  /** Throws unless [pfn, pfn + n) is all RAM (ranges back to back count as one). */
  private checkRange(pfn: number, n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new KernelError(Errno.EINVAL, `memmap: page count ${n} is not a non-negative integer`);
    for (let cur = pfn; cur < pfn + n; ) {
      const r = this.rangeOfPfn(cur);
      if (r < 0) throw new KernelError(Errno.EFAULT, `memmap: pfn ${describePfn(cur)} is not a page of RAM`);
      cur = this.endPfn[r];
    }
  }

  /** Points the pageblock cache at the pageblock of `pfn`. */
  private resolve(pfn: number): void {
    const pb = Math.floor(pfn / PB);
    const s = this.sections[Math.floor(pb / BLOCKS_PER_SECTION)];
    const b = pb & (BLOCKS_PER_SECTION - 1);
    this.cPb = pb;
    this.cS = s;
    this.cB = b;
    this.cD = s?.blocks?.[b];
  }

  /** Creates the section of the cached pageblock (which must be absent). */
  private createSection(): MemSection {
    const s = new MemSection();
    this.sections[Math.floor(this.cPb / BLOCKS_PER_SECTION)] = s;
    this.nSections++;
    this.cS = s;
    return s;
  }

  /** Gives the cached pageblock (uniform, in a present section) per-page descriptors. */
  private split(): PageblockPages {
    return this.splitBlock(this.cS!, this.cB);
  }

  /** Gives pageblock `b` of `s` per-page descriptors, equal to what the uniform pageblock described. */
  private splitBlock(s: MemSection, b: number): PageblockPages {
    const d = new PageblockPages(s.tailFlags[b], s.tailBase1[b] - 1);
    d.refcount[0] = s.refcount[b];
    d.privLo[0] = s.privLo[b];
    d.privHi[0] = s.privHi[b];
    d.flags[0] = s.flags[b];
    d.headOff[0] = s.headOff[b];
    d.order[0] = s.order[b];
    (s.blocks ??= new Array<PageblockPages | undefined>(BLOCKS_PER_SECTION).fill(undefined))[b] = d;
    this.nSplit++;
    if (this.cS === s && this.cB === b) this.cD = d;
    return d;
  }

  /** The first pfn of [pfn, pfn + n) whose bits of `mask` are not `want`, or -1. */
  private findFlagRun(pfn: number, n: number, mask: number, want: number): number {
    if (n <= 8 && (pfn & (PB - 1)) + n <= PB) {
      for (let p = pfn; p < pfn + n; p++) if ((this.flagsOf(p) & mask) !== want) return p;
      return -1;
    }
    let found = -1;
    this.forEachPiece(pfn, n, false, (s, b, j0, j1, first) => {
      if (!s) {
        if (want !== 0) found = first;
        return found >= 0;
      }
      const d = s.blocks?.[b];
      if (!d) {
        if (j0 === 0 && (s.flags[b] & mask) !== want) found = first;
        else if (Math.max(j0, 1) < j1 && (s.tailFlags[b] & mask) !== want) found = first - j0 + Math.max(j0, 1);
        return found >= 0;
      }
      for (let j = j0; j < j1; j++) {
        if ((d.flags[j] & mask) !== want) {
          found = first - j0 + j;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  /**
   * Calls `fn(section, pageblock, firstIndex, endIndex, firstPfn)` for each pageblock piece of [pfn, pfn + n), in
   * order, until it returns true: pages firstIndex..endIndex-1 of the pageblock, the first of them being
   * `firstPfn`. Absent sections are created when `create`; otherwise each is one call with section undefined.
   */
  private forEachPiece(pfn: number, n: number, create: boolean, fn: (s: MemSection | undefined, b: number, j0: number, j1: number, first: number) => boolean | void): void {
    const end = pfn + n;
    for (let p = pfn; p < end; ) {
      const no = Math.floor(p / SECTION_PAGES);
      let s = this.sections[no];
      if (!s && create) {
        s = this.sections[no] = new MemSection();
        this.nSections++;
        if (Math.floor(this.cPb / BLOCKS_PER_SECTION) === no) this.cS = s;
      }
      const stop = Math.min(end, (no + 1) * SECTION_PAGES);
      if (!s) {
        // An absent section reads as all zero: one call for the whole piece of the range in it.
        if (fn(undefined, 0, 0, 0, p) === true) return;
        p = stop;
        continue;
      }
      while (p < stop) {
        const j0 = p & (PB - 1);
        const j1 = Math.min(PB, j0 + (stop - p));
        if (fn(s, (p & (SECTION_PAGES - 1)) >>> 9, j0, j1, p) === true) return;
        p += j1 - j0;
      }
    }
  }
}

/** `0x12345` for a pfn, or the raw value when it is not a non-negative integer. */
export function describePfn(pfn: number): string {
  return Number.isSafeInteger(pfn) && pfn >= 0 ? hex(pfn) : String(pfn);
}
