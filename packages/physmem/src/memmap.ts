import { injectable } from 'tsyringe';
import { Errno, KernelError, hex } from '@kho/kernel';
import { PAGE_SIZE, type Pfn } from './abi';
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

/**
 * The page descriptors of one boot (the kernel's memmap of struct page): one per page frame of RAM, none for
 * holes. It is built empty (all zero) at every boot and dies with the kernel; nothing in it survives kexec.
 *
 * Descriptors are stored column-wise in typed arrays, 17 bytes per page frame (Linux spends 64):
 * refcount i32, flags u16, order u8, compound-head offset u16, private lo and hi u32. Every method takes a pfn
 * and throws EFAULT for a pfn that is not RAM.
 */
@injectable()
export class Memmap {
  /** @internal per-page columns, indexed by {@link Memmap.index}; the buddy allocator uses them directly. */
  readonly refcounts: Int32Array;
  /** @internal */
  readonly flagBits: Uint16Array;
  /** @internal */
  readonly orders: Uint8Array;
  /** @internal offset of a tail page from its compound head. */
  readonly headOffsets: Uint16Array;
  /** @internal */
  readonly privLo: Uint32Array;
  /** @internal */
  readonly privHi: Uint32Array;
  /** Page frames described (RAM pages). */
  readonly nrPages: number;

  // Range r covers pfns [startPfn[r], endPfn[r]) at indices firstIndex[r] + (pfn - startPfn[r]).
  private readonly startPfn: number[];
  private readonly endPfn: number[];
  private readonly firstIndex: number[];
  // Range 0, unpacked for the common single-range lookup.
  private readonly start0: number;
  private readonly len0: number;

  constructor(ram: PhysicalMemory) {
    this.startPfn = ram.ranges.map((r) => r.start / PAGE_SIZE);
    this.endPfn = ram.ranges.map((r) => (r.start + r.size) / PAGE_SIZE);
    this.firstIndex = [];
    let n = 0;
    for (let r = 0; r < this.startPfn.length; r++) {
      this.firstIndex.push(n);
      n += this.endPfn[r] - this.startPfn[r];
    }
    this.nrPages = n;
    this.start0 = this.startPfn[0];
    this.len0 = this.endPfn[0] - this.start0;
    this.refcounts = new Int32Array(n);
    this.flagBits = new Uint16Array(n);
    this.orders = new Uint8Array(n);
    this.headOffsets = new Uint16Array(n);
    this.privLo = new Uint32Array(n);
    this.privHi = new Uint32Array(n);
  }

  /** Host bytes per page frame. */
  get bytesPerPage(): number {
    return (
      Int32Array.BYTES_PER_ELEMENT +
      Uint16Array.BYTES_PER_ELEMENT +
      Uint8Array.BYTES_PER_ELEMENT +
      Uint16Array.BYTES_PER_ELEMENT +
      2 * Uint32Array.BYTES_PER_ELEMENT
    );
  }

  /** Host bytes of the whole memmap. */
  get totalBytes(): number {
    return this.nrPages * this.bytesPerPage;
  }

  /** True when `pfn` is a page frame of RAM (so it has a descriptor). */
  hasPage(pfn: number): boolean {
    return this.indexOrNeg(pfn) >= 0;
  }

  /** @internal the descriptor index of `pfn`. Throws EFAULT when it is not RAM. */
  index(pfn: number): number {
    const i = pfn - this.start0;
    if (i >= 0 && i < this.len0 && i % 1 === 0) return i;
    const j = this.indexOrNeg(pfn);
    if (j < 0) throw new KernelError(Errno.EFAULT, `memmap: pfn ${describePfn(pfn)} is not a page of RAM`);
    return j;
  }

  /** @internal the descriptor index of `pfn`, or -1 when it is not RAM. */
  indexOrNeg(pfn: number): number {
    const r = this.rangeOfPfn(pfn);
    return r < 0 ? -1 : this.firstIndex[r] + pfn - this.startPfn[r];
  }

  /** @internal the RAM range number (index into `ram.ranges`) holding `pfn`, or -1. */
  rangeOfPfn(pfn: number): number {
    const i = pfn - this.start0;
    if (i >= 0 && i < this.len0 && i % 1 === 0) return 0;
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

  /** @internal the pfn described at `index`. */
  pfnAt(index: number): Pfn {
    if (index < this.len0) return (this.start0 + index) as Pfn;
    let r = this.firstIndex.length - 1;
    while (this.firstIndex[r] > index) r--;
    return (this.startPfn[r] + index - this.firstIndex[r]) as Pfn;
  }

  refcount(pfn: number): number {
    return this.refcounts[this.index(pfn)];
  }

  setRefcount(pfn: number, count: number): void {
    this.refcounts[this.index(pfn)] = count;
  }

  /** Every flag bit of `pfn` (see {@link PageFlag}). */
  flags(pfn: number): number {
    return this.flagBits[this.index(pfn)];
  }

  /** Sets the bits of `mask`. */
  setFlags(pfn: number, mask: number): void {
    this.flagBits[this.index(pfn)] |= mask;
  }

  /** Clears the bits of `mask`. */
  clearFlags(pfn: number, mask: number): void {
    this.flagBits[this.index(pfn)] &= ~mask;
  }

  /** True when any bit of `mask` is set. */
  testFlag(pfn: number, mask: number): boolean {
    return (this.flagBits[this.index(pfn)] & mask) !== 0;
  }

  /** The order recorded for `pfn` (meaningful for a block's head page). */
  order(pfn: number): number {
    return this.orders[this.index(pfn)];
  }

  setOrder(pfn: number, order: number): void {
    this.orders[this.index(pfn)] = order;
  }

  /** Low 32 bits of the page's private word. */
  privateLo(pfn: number): number {
    return this.privLo[this.index(pfn)];
  }

  /** High 32 bits of the page's private word. */
  privateHi(pfn: number): number {
    return this.privHi[this.index(pfn)];
  }

  /** Sets the page's private word from its two halves (each taken modulo 2^32). */
  setPrivate(pfn: number, lo: number, hi: number): void {
    const i = this.index(pfn);
    this.privLo[i] = lo;
    this.privHi[i] = hi;
  }

  /** The page's private word as a u64. */
  getPrivate(pfn: number): bigint {
    const i = this.index(pfn);
    return (BigInt(this.privHi[i]) << 32n) | BigInt(this.privLo[i]);
  }

  /** The head of the compound page `pfn` belongs to; `pfn` itself when it is not a tail page. */
  compoundHead(pfn: number): Pfn {
    const i = this.index(pfn);
    return ((this.flagBits[i] & PageFlag.Tail) !== 0 ? pfn - this.headOffsets[i] : pfn) as Pfn;
  }
}

/** `0x12345` for a pfn, or the raw value when it is not a non-negative integer. */
export function describePfn(pfn: number): string {
  return Number.isSafeInteger(pfn) && pfn >= 0 ? hex(pfn) : String(pfn);
}
