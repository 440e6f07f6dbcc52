import { injectable } from 'tsyringe';
import { Errno, KernelError, KernelLog, formatBytes, hex } from '@kho/kernel';
import { BuddyAllocator, Memmap, PAGE_SIZE, PageFlag, PhysicalMemory } from '@kho/physmem';
import type { EarlyAllocator } from '@kho/kho-core';
import { RangeSet } from './regions';

/** One early allocation or reservation, as recorded for inspection and tests. */
export interface MemblockRecord {
  readonly base: number;
  readonly size: number;
  readonly owner: string;
  /** True when scratch-only mode was on at the time. */
  readonly scratchOnly: boolean;
}

/** A contiguous piece of the physical map with one kind, for maps and reports. */
export interface MemblockRegion {
  readonly base: number;
  readonly size: number;
  readonly kind: 'free' | 'reserved' | 'noinit' | 'scratch';
}

/**
 * The early-boot allocator (Linux's memblock): the memory map from the machine's RAM, reserved regions,
 * scratch and no-init marks, top-down allocation, scratch-only mode, and the final hand-off of every page that
 * is neither reserved nor preserved to the buddy allocator. One per boot; it serves only until that hand-off.
 */
@injectable()
export class Memblock implements EarlyAllocator {
  private readonly reserved = new RangeSet();
  private readonly scratch = new RangeSet();
  private readonly noinit = new RangeSet();
  private scratchOnly = false;
  private handedOff = false;
  /** Named reservations and allocations (not the per-block KHO reservations, which are counted only). */
  readonly records: MemblockRecord[] = [];
  private readonly ownerBytes = new Map<string, number>();

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
  ) {}

  /** True while every allocation must come from scratch memory. */
  get isScratchOnly(): boolean {
    return this.scratchOnly;
  }

  reserve(base: number, size: number, owner: string): void {
    this.checkOpen('reserve');
    if (!this.ram.isRam(base, size)) {
      throw new KernelError(Errno.EINVAL, `memblock_reserve(${hex(base)}, ${formatBytes(size)}) for ${owner}: not inside memory`);
    }
    this.reserved.add(base, size);
    this.ownerBytes.set(owner, (this.ownerBytes.get(owner) ?? 0) + size);
    if (owner !== 'kho') this.records.push({ base, size, owner, scratchOnly: this.scratchOnly });
  }

  free(base: number, size: number): void {
    this.checkOpen('free');
    this.reserved.remove(base, size);
    // Keep the named records and the per-owner totals true: trim what the freed span covers.
    const end = base + size;
    for (let i = this.records.length - 1; i >= 0; i--) {
      const r = this.records[i];
      const lo = Math.max(r.base, base);
      const hi = Math.min(r.base + r.size, end);
      if (hi <= lo) continue;
      this.ownerBytes.set(r.owner, (this.ownerBytes.get(r.owner) ?? 0) - (hi - lo));
      const pieces: MemblockRecord[] = [];
      if (r.base < lo) pieces.push({ ...r, size: lo - r.base });
      if (hi < r.base + r.size) pieces.push({ ...r, base: hi, size: r.base + r.size - hi });
      this.records.splice(i, 1, ...pieces);
    }
  }

  alloc(size: number, align: number, opts: { min?: number; max?: number; node?: number; owner?: string } = {}): number {
    this.checkOpen('alloc');
    const owner = opts.owner ?? 'memblock';
    if (!Number.isInteger(size) || size <= 0) throw new KernelError(Errno.EINVAL, `memblock_alloc: size ${size} for ${owner}`);
    // Not `align & (align - 1)`: bitwise operators truncate to 32 bits, and alignments may exceed 2^32.
    if (!Number.isInteger(align) || align <= 0 || 2 ** Math.round(Math.log2(align)) !== align) {
      throw new KernelError(Errno.EINVAL, `memblock_alloc: alignment ${align} is not a power of two`);
    }
    const min = opts.min ?? 0;
    const max = opts.max ?? Infinity;
    const candidates: Array<[number, number]> = [];
    for (const r of this.ram.ranges) {
      if (opts.node !== undefined && r.node !== opts.node) continue;
      const lo = Math.max(r.start, min);
      const hi = Math.min(r.start + r.size, max);
      if (hi > lo) candidates.push([lo, hi]);
    }
    // Scratch-only: nothing but scratch. Otherwise never scratch: it serves movable allocations only (like CMA),
    // and what memblock hands out is the kernel's own, unmovable memory.
    const pools = this.scratchOnly ? intersect(candidates, this.scratch.ranges()) : subtractAll(candidates, this.scratch.ranges());
    const taken = this.reserved.ranges();
    // Top-down, like Linux: the highest free gap that fits.
    for (let p = pools.length - 1; p >= 0; p--) {
      const gaps = subtract(pools[p], taken);
      for (let g = gaps.length - 1; g >= 0; g--) {
        const [lo, hi] = gaps[g];
        const base = Math.floor((hi - size) / align) * align;
        if (base >= lo) {
          this.reserve(base, size, owner);
          return base;
        }
      }
    }
    const where = [
      opts.node !== undefined ? `node ${opts.node}` : '',
      opts.max !== undefined ? `below ${hex(max)}` : '',
      this.scratchOnly ? 'in scratch (scratch-only mode)' : '',
    ]
      .filter(Boolean)
      .join(', ');
    throw new KernelError(Errno.ENOMEM, `memblock_alloc: no room for ${formatBytes(size)} for ${owner}${where ? ` ${where}` : ''}`);
  }

  markScratch(base: number, size: number): void {
    this.checkOpen('markScratch');
    if (!this.ram.isRam(base, size)) throw new KernelError(Errno.EINVAL, `memblock_mark_scratch(${hex(base)}, ${formatBytes(size)}): not inside memory`);
    this.scratch.add(base, size);
  }

  markNoInit(base: number, size: number): void {
    this.checkOpen('markNoInit');
    this.noinit.add(base, size);
  }

  setScratchOnly(on: boolean): void {
    this.scratchOnly = on;
  }

  reservedBytes(filter: { min?: number; max?: number; node?: number } = {}): number {
    if (filter.node === undefined) return this.reserved.bytesWithin(filter.min ?? 0, filter.max ?? Infinity);
    let n = 0;
    for (const r of this.ram.ranges) {
      if (r.node !== filter.node) continue;
      n += this.reserved.bytesWithin(Math.max(r.start, filter.min ?? 0), Math.min(r.start + r.size, filter.max ?? Infinity));
    }
    return n;
  }

  /** Whether any byte of the range is reserved. */
  isReserved(base: number, size: number): boolean {
    return this.reserved.overlaps(base, size);
  }

  /** Whether the whole range is scratch memory. */
  isScratch(base: number, size: number): boolean {
    return this.scratch.covers(base, size);
  }

  /** Bytes reserved per owner. */
  reservedByOwner(): ReadonlyMap<string, number> {
    return this.ownerBytes;
  }

  /** The physical map as free / reserved / no-init / scratch regions (scratch only where it is free). */
  regions(): MemblockRegion[] {
    const out: MemblockRegion[] = [];
    const reserved = this.reserved.ranges();
    const noinit = this.noinit.ranges();
    const scratch = this.scratch.ranges();
    for (const r of this.ram.ranges) {
      const range: [number, number] = [r.start, r.start + r.size];
      // Whole lists at a time (linear), not one piece against a whole list (quadratic in a KHO boot's blocks).
      const held = intersect([range], reserved);
      for (const [nb, ne] of intersect(held, noinit)) out.push({ base: nb, size: ne - nb, kind: 'noinit' });
      for (const [rb, re] of minus(held, noinit)) out.push({ base: rb, size: re - rb, kind: 'reserved' });
      const open = subtract(range, reserved);
      for (const [sb, se] of intersect(open, scratch)) out.push({ base: sb, size: se - sb, kind: 'scratch' });
      for (const [fb, fe] of minus(open, scratch)) out.push({ base: fb, size: fe - fb, kind: 'free' });
    }
    return out.sort((a, b) => a.base - b.base);
  }

  /**
   * memblock_free_all: gives every page that is not reserved to the buddy allocator (scratch pages flagged so
   * that they serve movable allocations only) and marks reserved pages PG_reserved, except no-init ones, whose
   * descriptors their owner initialises. After this, memblock refuses further use. Returns pages freed.
   */
  handOff(buddy: BuddyAllocator, memmap: Memmap): number {
    this.checkOpen('handOff');
    if (this.scratchOnly) throw new KernelError(Errno.EBUSY, 'memblock hand-off while still in scratch-only mode');
    let freed = 0;
    const reserved = this.reserved.ranges();
    const noinit = this.noinit.ranges();
    // Whole pages, as the free pass below withholds them: a reservation need not be page-aligned. Flags go on a
    // range at a time (the memmap keeps a uniform 2 MiB pageblock as one descriptor), never page by page.
    for (const [b, e] of minus(reserved, noinit)) {
      const first = pageDown(b) / PAGE_SIZE;
      const end = pageUp(e) / PAGE_SIZE;
      if (end > first) memmap.setFlagsRange(first, end - first, PageFlag.Reserved);
    }
    // Every scratch page is flagged, reserved or not: whatever is freed there later serves movable allocations only.
    for (const [sb, se] of this.scratch.ranges()) {
      const first = pageUp(sb) / PAGE_SIZE;
      const end = pageDown(se) / PAGE_SIZE;
      if (end > first) memmap.setFlagsRange(first, end - first, PageFlag.Scratch);
    }
    for (const r of this.ram.ranges) {
      for (const [b, e] of subtract([pageUp(r.start), pageDown(r.start + r.size)], reserved.map(([rb, re]) => [pageDown(rb), pageUp(re)]))) {
        if (e > b) {
          buddy.freeRange(b / PAGE_SIZE, (e - b) / PAGE_SIZE);
          freed += (e - b) / PAGE_SIZE;
        }
      }
    }
    this.handedOff = true;
    this.log.info('memblock', `handed ${freed} free pages (${formatBytes(freed * PAGE_SIZE)}) to the buddy allocator`);
    return freed;
  }

  private checkOpen(what: string): void {
    if (this.handedOff) throw new KernelError(Errno.EPERM, `memblock ${what} after the hand-off to the buddy allocator`);
  }
}

function pageUp(a: number): number {
  return Math.ceil(a / PAGE_SIZE) * PAGE_SIZE;
}
function pageDown(a: number): number {
  return Math.floor(a / PAGE_SIZE) * PAGE_SIZE;
}

/** Parts of `range` not covered by the sorted, disjoint `holes`. */
export function subtract(range: readonly [number, number], holes: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let cur = range[0];
  for (const [b, e] of holes) {
    if (e <= cur) continue;
    if (b >= range[1]) break;
    if (b > cur) out.push([cur, Math.min(b, range[1])]);
    cur = Math.max(cur, e);
    if (cur >= range[1]) break;
  }
  if (cur < range[1]) out.push([cur, range[1]]);
  return out;
}

/**
 * Parts of the sorted, disjoint ranges `a` not covered by the sorted, disjoint `holes`, in one pass over both
 * lists (subtracting `holes` from each range of `a` in turn would rescan them from the start every time).
 */
function minus(a: ReadonlyArray<readonly [number, number]>, holes: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let j = 0;
  for (const [b, e] of a) {
    while (j < holes.length && holes[j][1] <= b) j++;
    let cur = b;
    for (let k = j; k < holes.length && holes[k][0] < e; k++) {
      if (holes[k][0] > cur) out.push([cur, holes[k][0]]);
      cur = Math.max(cur, holes[k][1]);
    }
    if (cur < e) out.push([cur, e]);
  }
  return out;
}

/** The parts of the sorted, disjoint `ranges` not covered by the sorted, disjoint `holes`. */
function subtractAll(ranges: ReadonlyArray<readonly [number, number]>, holes: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  return ranges.flatMap((r) => subtract(r, holes));
}

/** Intersection of two sorted, disjoint range lists. */
export function intersect(a: ReadonlyArray<readonly [number, number]>, b: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const lo = Math.max(a[i][0], b[j][0]);
    const hi = Math.min(a[i][1], b[j][1]);
    if (hi > lo) out.push([lo, hi]);
    if (a[i][1] < b[j][1]) i++;
    else j++;
  }
  return out;
}
