import { injectable } from 'tsyringe';
import { Errno, KernelBug, KernelError, hex } from '@kho/kernel';
import { MAX_PAGE_ORDER, NR_PAGE_ORDERS, PAGE_SIZE, pfnToPhys, type Order, type Pfn, type PhysAddr } from './abi';
import { FaultInjector } from './faults';
import { Memmap, PageFlag, describePfn } from './memmap';
import { PhysicalMemory } from './memory';

/** A block of 2^order pages handed out as one unit (a compound page when order > 0). */
export class Folio {
  constructor(
    readonly pfn: Pfn,
    readonly order: Order,
  ) {}

  /** Physical address of the first byte. */
  get phys(): PhysAddr {
    return pfnToPhys(this.pfn);
  }

  /** Pages in the folio. */
  get nrPages(): number {
    return 2 ** this.order;
  }

  /** Bytes in the folio. */
  get size(): number {
    return this.nrPages * PAGE_SIZE;
  }
}

/** Where an allocation may come from. */
export interface AllocOptions {
  /** Allocate from this NUMA node only (default: any node, lowest first). */
  readonly node?: number;
  /** A movable allocation: served from scratch memory first, then from normal memory. */
  readonly movable?: boolean;
}

/** One pool's free blocks per order, /proc/buddyinfo style. */
export interface BuddyInfo {
  readonly node: number;
  readonly pool: 'normal' | 'scratch';
  /** Free blocks of each order 0..MAX_PAGE_ORDER. */
  readonly blocks: readonly number[];
  readonly freePages: number;
}

const { Buddy, Head, Tail, Reserved, Scratch } = PageFlag;
const POW2: readonly number[] = Array.from({ length: NR_PAGE_ORDERS }, (_, k) => 2 ** k);
const INITIAL_STACK = 16;

/**
 * The buddy allocator of one boot: blocks of 2^order pages (order 0..MAX_PAGE_ORDER), per NUMA node, in two
 * pools per node: normal memory and KHO scratch memory (pages flagged Scratch), which serves movable
 * allocations only. A freed block merges with its buddy when that is free, of the same order, in the same RAM
 * range and of the same pool.
 *
 * Free lists are per (node, pool, order) stacks of head pfns; a free block's head descriptor carries the Buddy
 * flag, its order, and its stack position in the private word, so any free block leaves its list in O(1) when
 * its buddy is freed. It starts empty: memory is handed to it with {@link BuddyAllocator.freeRange}.
 */
@injectable()
export class BuddyAllocator {
  /** Calls to allocPages and folioAlloc, including failed ones. */
  allocCalls = 0;
  /** Successful allocations per order. */
  readonly allocsByOrder: number[] = new Array<number>(NR_PAGE_ORDERS).fill(0);

  private free = 0;
  // Zone z = 2 * nodeSlot + (scratch ? 1 : 0); free area a = z * NR_PAGE_ORDERS + order.
  private readonly nodeSlots = new Int16Array(1024).fill(-1);
  private readonly rangeZone: Int32Array;
  private readonly nZones: number;
  private readonly zoneFree: Float64Array;
  private readonly zoneMask: Int32Array;
  private readonly areaLen: Int32Array;
  private readonly areaStack: Float64Array[];

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly faults: FaultInjector,
  ) {
    ram.nodes.forEach((n, slot) => (this.nodeSlots[n] = slot));
    this.rangeZone = Int32Array.from(ram.ranges, (r) => 2 * this.nodeSlots[r.node]);
    this.nZones = 2 * ram.nodes.length;
    this.zoneFree = new Float64Array(this.nZones);
    this.zoneMask = new Int32Array(this.nZones);
    this.areaLen = new Int32Array(this.nZones * NR_PAGE_ORDERS);
    this.areaStack = Array.from({ length: this.nZones * NR_PAGE_ORDERS }, () => new Float64Array(INITIAL_STACK));
  }

  // --- counters -----------------------------------------------------------------------------------------

  /** Free pages in every pool of every node (the kernel's nr_free_pages()). */
  get nrFreePages(): number {
    return this.free;
  }

  /** Free pages in the scratch pools. */
  get freeScratchPages(): number {
    let n = 0;
    for (let z = 1; z < this.nZones; z += 2) n += this.zoneFree[z];
    return n;
  }

  /** Free pages on `node` (both pools); 0 for a node this machine does not have. */
  freePagesOf(node: number): number {
    const slot = this.slotOf(node);
    return slot < 0 ? 0 : this.zoneFree[2 * slot] + this.zoneFree[2 * slot + 1];
  }

  /** Free blocks of `order` in every pool. */
  freeBlocks(order: number): number {
    let n = 0;
    for (let z = 0; z < this.nZones; z++) n += this.areaLen[z * NR_PAGE_ORDERS + order] ?? 0;
    return n;
  }

  /** Free blocks per order for every node and pool, as /proc/buddyinfo shows them. */
  buddyinfo(): BuddyInfo[] {
    const out: BuddyInfo[] = [];
    this.ram.nodes.forEach((node, slot) => {
      for (const pool of ['normal', 'scratch'] as const) {
        const z = 2 * slot + (pool === 'scratch' ? 1 : 0);
        const blocks = Array.from({ length: NR_PAGE_ORDERS }, (_, k) => this.areaLen[z * NR_PAGE_ORDERS + k]);
        out.push({ node, pool, blocks, freePages: this.zoneFree[z] });
      }
    });
    return out;
  }

  /** True when `pfn` lies inside a free block. */
  isFree(pfn: Pfn): boolean {
    return this.freeHeadOf(pfn) >= 0;
  }

  // --- allocation ---------------------------------------------------------------------------------------

  /**
   * Allocates 2^order contiguous, naturally aligned pages. Returns the head pfn, with refcount 1 and the order
   * recorded. Throws EINVAL for a bad order or node, and ENOMEM when no block fits (or fault injection says so).
   * The order is a plain number because this is where it is checked.
   */
  allocPages(order: number, opts?: AllocOptions): Pfn {
    if (!(order >= 0 && order <= MAX_PAGE_ORDER) || order % 1 !== 0) {
      throw new KernelError(Errno.EINVAL, `allocPages: order ${order} is not an integer in 0..${MAX_PAGE_ORDER}`);
    }
    this.allocCalls++;
    let slot = -1;
    let movable = false;
    if (opts !== undefined) {
      if (opts.node !== undefined) {
        slot = this.slotOf(opts.node);
        if (slot < 0) throw new KernelError(Errno.EINVAL, `allocPages: node ${opts.node} is not a node of this machine (nodes: ${this.ram.nodes.join(', ')})`);
      }
      movable = opts.movable === true;
    }
    if (this.faults.shouldFail()) {
      throw new KernelError(Errno.ENOMEM, `allocPages: injected failure of an order-${order} allocation on ${this.where(slot)} (fault injection)`);
    }
    const pfn = this.take(order, slot, movable);
    if (pfn < 0) {
      const pool = movable ? 'normal or scratch' : 'normal';
      throw new KernelError(Errno.ENOMEM, `allocPages: no free ${pool} block of order ${order} on ${this.where(slot)} (${this.free} pages free in all)`);
    }
    this.allocsByOrder[order]++;
    return pfn as Pfn; // take() returned a free block head (not -1): a real pfn
  }

  /**
   * Drops one reference to the block allocated at `pfn` with `order`; at zero the block returns to the allocator
   * and merges with free buddies (a compound page loses its head and tail marks). Throws EINVAL, changing
   * nothing, for a pfn that is not RAM, unaligned, free, a tail page, not allocated, or allocated with another order.
   */
  freePages(pfn: Pfn, order: Order): void {
    this.put('freePages', pfn, order, false);
  }

  /** Allocates a folio: like allocPages, and for order > 0 marks the head (Head) and tails (Tail, offset). */
  folioAlloc(order: number, opts?: AllocOptions): Folio {
    const pfn = this.allocPages(order, opts);
    if (order > 0) this.memmap.markCompound(pfn, order);
    return new Folio(pfn, order as Order); // allocPages accepted it: an integer in 0..MAX_PAGE_ORDER
  }

  /** Takes one more reference to `folio`. Throws EINVAL when it is not an allocated folio. */
  folioGet(folio: Folio): void {
    const p = this.checkAllocated('folioGet', folio.pfn, folio.order, true);
    this.memmap.setRefOf(p, this.memmap.refOf(p) + 1);
  }

  /** Drops one reference to `folio`; at zero clears its compound marks and frees it. Throws EINVAL like freePages. */
  folioPut(folio: Folio): void {
    this.put('folioPut', folio.pfn, folio.order, true);
  }

  /**
   * Takes ownership of 2^order pages the allocator never handed out (reserved or preserved memory, as
   * kho_restore_pages does): the head gets refcount 1 and the order, tails refcount 0, Reserved is cleared.
   * Freeing the result returns it to the allocator. Returns `pfn`. Throws EINVAL for a bad order, an unaligned
   * pfn or a block that is not inside one RAM range, and EBUSY when any page is free or in use.
   */
  adoptPages(pfn: Pfn, order: Order): Pfn {
    const p = this.checkAdoptable('adoptPages', pfn, order);
    this.memmap.setRefOf(p, 1);
    this.memmap.setOrderOf(p, order);
    return pfn;
  }

  /** Like adoptPages, and marks the block as a compound page (kho_restore_folio). Returns the folio. */
  adoptFolio(pfn: Pfn, order: Order): Folio {
    const p = this.checkAdoptable('adoptFolio', pfn, order);
    this.memmap.setRefOf(p, 1);
    this.memmap.setOrderOf(p, order);
    if (order > 0) this.memmap.markCompound(p, order);
    return new Folio(pfn, order);
  }

  /**
   * Hands `nrPages` pages from `startPfn` to the allocator (the kernel's memblock_free_all for one region): their
   * refcounts go to 0, Reserved is cleared, and they are freed as the largest naturally aligned blocks that cross
   * neither a RAM range boundary nor a change of the Scratch flag, merging with free neighbours. The memmap is
   * edited a pageblock at a time and the free lists a block at a time, so a TiB costs what its max-order blocks
   * do. Throws EINVAL, changing nothing, when the range is empty, not all RAM, or holds a page that is already free.
   */
  freeRange(startPfn: number, nrPages: number): void {
    if (!Number.isSafeInteger(startPfn) || startPfn < 0 || !Number.isSafeInteger(nrPages) || nrPages < 1) {
      throw new KernelError(Errno.EINVAL, `freeRange: start pfn ${describePfn(startPfn)} and ${nrPages} pages is not a non-empty range`);
    }
    const mm = this.memmap;
    const end = startPfn + nrPages;
    const what = `freeRange [${hex(startPfn)}-${hex(end - 1)}]`;
    for (let cur = startPfn; cur < end; ) {
      const r = mm.rangeOfPfn(cur);
      if (r < 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(cur)} is not a page of RAM`);
      cur = Math.min(end, mm.rangeEndPfn(r));
    }
    const first = this.freeHeadOf(startPfn);
    if (first >= 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(startPfn)} is already free (in the free block at ${hex(first)})`);
    const busy = mm.findFlag(startPfn, nrPages, Buddy);
    if (busy >= 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(busy)} is already free`);
    mm.clearRefcountsRange(startPfn, nrPages);
    mm.updateFlagsRange(startPfn, nrPages, Reserved, 0);
    for (let cur = startPfn; cur < end; ) {
      const r = mm.rangeOfPfn(cur);
      const segEnd = Math.min(end, mm.rangeEndPfn(r));
      // The run of pages with the same Scratch flag.
      const runEnd = mm.flagRunEnd(cur, segEnd, Scratch);
      while (cur < runEnd) {
        let k = MAX_PAGE_ORDER;
        while (k > 0 && ((cur & (POW2[k] - 1)) !== 0 || cur + POW2[k] > runEnd)) k--;
        this.release(r, cur, k);
        cur += POW2[k];
      }
    }
  }

  // --- checks for tests ---------------------------------------------------------------------------------

  /**
   * Checks every invariant of the free lists: each free block is naturally aligned, inside one RAM range, in the
   * right node and pool, marked Buddy with its order and stack position, has refcount 0, overlaps no other free
   * block; no other page is marked Buddy; counts and order masks agree. Throws KernelBug on the first violation.
   */
  checkInvariants(): void {
    const mm = this.memmap;
    const blocks: Array<[number, number]> = [];
    let total = 0;
    for (let z = 0; z < this.nZones; z++) {
      let zoneTotal = 0;
      for (let k = 0; k < NR_PAGE_ORDERS; k++) {
        const a = z * NR_PAGE_ORDERS + k;
        const len = this.areaLen[a];
        if (((this.zoneMask[z] >> k) & 1) !== (len > 0 ? 1 : 0)) bug(`zone ${z} order ${k}: mask bit disagrees with ${len} blocks`);
        for (let pos = 0; pos < len; pos++) {
          const p = this.areaStack[a][pos];
          const n = POW2[k];
          const where = `free block ${hex(p)} (order ${k}, zone ${z})`;
          const r = mm.rangeOfPfn(p);
          if (r < 0) bug(`${where} is not RAM`);
          if (p % n !== 0) bug(`${where} is not aligned to its order`);
          if (p + n > mm.rangeEndPfn(r)) bug(`${where} crosses the end of its RAM range`);
          if (this.rangeZone[r] !== (z & ~1)) bug(`${where} is on the wrong node's list`);
          if (!(mm.flagsOf(p) & Buddy)) bug(`${where} is not marked Buddy`);
          if (mm.orderOf(p) !== k) bug(`${where} records order ${mm.orderOf(p)}`);
          if (mm.privLoOf(p) !== pos) bug(`${where} records stack position ${mm.privLoOf(p)}, is at ${pos}`);
          const pool = mm.flagRunEnd(p, p + n, Scratch);
          if (pool < p + n || ((mm.flagsOf(p) & Scratch) !== 0 ? 1 : 0) !== (z & 1)) bug(`${where}: page ${hex(pool < p + n ? pool : p)} is in the wrong pool`);
          const held = mm.findReferenced(p, n, 0);
          if (held >= 0) bug(`${where}: page ${hex(held)} has refcount ${mm.refOf(held)}`);
          const inner = n > 1 ? mm.findFlag(p + 1, n - 1, Buddy) : -1;
          if (inner >= 0) bug(`${where}: page ${hex(inner)} inside it is marked Buddy`);
          blocks.push([p, n]);
          zoneTotal += n;
        }
      }
      if (zoneTotal !== this.zoneFree[z]) bug(`zone ${z} counts ${this.zoneFree[z]} free pages, its lists hold ${zoneTotal}`);
      total += zoneTotal;
    }
    if (total !== this.free) bug(`the allocator counts ${this.free} free pages, its lists hold ${total}`);
    blocks.sort((x, y) => x[0] - y[0]);
    for (let b = 1; b < blocks.length; b++) {
      if (blocks[b][0] < blocks[b - 1][0] + blocks[b - 1][1]) bug(`free block ${hex(blocks[b][0])} overlaps the free block at ${hex(blocks[b - 1][0])}`);
    }
    // No page between the free blocks is marked Buddy.
    let b = 0;
    for (const range of this.ram.ranges) {
      let cur = range.start / PAGE_SIZE;
      const end = (range.start + range.size) / PAGE_SIZE;
      while (cur < end) {
        while (b < blocks.length && blocks[b][0] + blocks[b][1] <= cur) b++;
        const gapEnd = b < blocks.length && blocks[b][0] < end ? blocks[b][0] : end;
        const stray = gapEnd > cur ? mm.findFlag(cur, gapEnd - cur, Buddy) : -1;
        if (stray >= 0) bug(`page ${hex(stray)} is marked Buddy but is on no free list`);
        cur = b < blocks.length && blocks[b][0] < end ? blocks[b][0] + blocks[b][1] : end;
      }
    }
  }

  /** True when no free block has a free buddy it could merge with. */
  fullyMerged(): boolean {
    for (let z = 0; z < this.nZones; z++) {
      for (let k = 0; k < MAX_PAGE_ORDER; k++) {
        const a = z * NR_PAGE_ORDERS + k;
        for (let pos = 0; pos < this.areaLen[a]; pos++) {
          const p = this.areaStack[a][pos];
          if (this.mergeableBuddy(this.memmap.rangeOfPfn(p), p, k, this.memmap.flagsOf(p) & Scratch) >= 0) return false;
        }
      }
    }
    return true;
  }

  // --- internals ----------------------------------------------------------------------------------------

  private slotOf(node: number): number {
    return Number.isInteger(node) && node >= 0 && node < this.nodeSlots.length ? this.nodeSlots[node] : -1;
  }

  private where(slot: number): string {
    return slot < 0 ? 'any node' : `node ${this.ram.nodes[slot]}`;
  }

  /** Pops a block of at least `order` from the allowed zones and splits it; returns its pfn, or -1. */
  private take(order: number, slot: number, movable: boolean): number {
    if (slot >= 0) {
      if (movable) {
        const p = this.takeFrom(2 * slot + 1, order);
        if (p >= 0) return p;
      }
      return this.takeFrom(2 * slot, order);
    }
    if (movable) {
      for (let z = 1; z < this.nZones; z += 2) {
        const p = this.takeFrom(z, order);
        if (p >= 0) return p;
      }
    }
    for (let z = 0; z < this.nZones; z += 2) {
      const p = this.takeFrom(z, order);
      if (p >= 0) return p;
    }
    return -1;
  }

  private takeFrom(z: number, order: number): number {
    const mask = this.zoneMask[z] >> order;
    if (mask === 0) return -1;
    const mm = this.memmap;
    let k = order + 31 - Math.clz32(mask & -mask);
    const a = z * NR_PAGE_ORDERS + k;
    const pos = --this.areaLen[a];
    const p = this.areaStack[a][pos];
    if (pos === 0) this.zoneMask[z] &= ~(1 << k);
    while (k > order) {
      k--;
      this.push(z, k, p + POW2[k]);
    }
    const n = POW2[order];
    this.zoneFree[z] -= n;
    this.free -= n;
    mm.allocHead(p, order);
    return p;
  }

  /** Puts a free block on its list (counts are the caller's business). */
  private push(z: number, k: number, p: number): void {
    const a = z * NR_PAGE_ORDERS + k;
    const pos = this.areaLen[a]++;
    let stack = this.areaStack[a];
    if (pos === stack.length) {
      const bigger = new Float64Array(stack.length * 2);
      bigger.set(stack);
      this.areaStack[a] = stack = bigger;
    }
    stack[pos] = p;
    this.memmap.listHead(p, k, pos);
    this.zoneMask[z] |= 1 << k;
  }

  /** Takes the free block at `p` off its list, in O(1). */
  private remove(z: number, k: number, p: number): void {
    const mm = this.memmap;
    const a = z * NR_PAGE_ORDERS + k;
    const pos = mm.privLoOf(p);
    const last = --this.areaLen[a];
    const stack = this.areaStack[a];
    if (pos !== last) {
      const moved = stack[last];
      stack[pos] = moved;
      mm.setPrivLoOf(moved, pos);
    }
    if (last === 0) this.zoneMask[z] &= ~(1 << k);
    mm.unlistHead(p);
  }

  /** The pfn of the free buddy that block (p, k) in range r can merge with, or -1. */
  private mergeableBuddy(r: number, p: number, k: number, scratch: number): number {
    const size = POW2[k];
    const bp = (p / size) & 1 ? p - size : p + size;
    if (bp < this.memmap.rangeStartPfn(r) || bp + size > this.memmap.rangeEndPfn(r)) return -1;
    return this.memmap.isFreeHead(bp, k, scratch) ? bp : -1;
  }

  /** Frees block p of order k in RAM range r: merges with free buddies, then lists it. */
  private release(r: number, p: number, k: number): void {
    const scratch = this.memmap.flagsOf(p) & Scratch;
    const z = this.rangeZone[r] + (scratch ? 1 : 0);
    const n = POW2[k];
    while (k < MAX_PAGE_ORDER) {
      const bp = this.mergeableBuddy(r, p, k, scratch);
      if (bp < 0) break;
      this.remove(z, k, bp);
      if (bp < p) p = bp;
      k++;
    }
    this.push(z, k, p);
    this.zoneFree[z] += n;
    this.free += n;
  }

  /** The shared checks of freePages/folioGet/folioPut; returns the head pfn. */
  private checkAllocated(what: string, pfn: number, order: number, folio: boolean): number {
    if (!(order >= 0 && order <= MAX_PAGE_ORDER) || order % 1 !== 0) {
      throw new KernelError(Errno.EINVAL, `${what}: order ${order} is not an integer in 0..${MAX_PAGE_ORDER}`);
    }
    const mm = this.memmap;
    const r = mm.rangeOfPfn(pfn);
    if (r < 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${describePfn(pfn)} is not a page of RAM`);
    // A pfn of RAM is an integer: `&` tests its low bits (float `%` would be a slow call).
    if ((pfn & (POW2[order] - 1)) !== 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is not aligned to order ${order}`);
    const f = mm.flagsOf(pfn);
    if (f & Tail) {
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is a tail page of the folio at ${hex(pfn - mm.headOffOf(pfn))}`);
    }
    const ref = mm.refOf(pfn);
    if (f & Buddy || ref <= 0) {
      const head = this.freeHeadOf(pfn);
      const state = head >= 0 ? `is free (in the free block at ${hex(head)})` : `is not allocated (refcount ${ref})`;
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} ${state}`);
    }
    const had = mm.orderOf(pfn);
    if (had !== order) {
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} was allocated with order ${had}, not ${order}`);
    }
    if (folio && order > 0 && !(f & Head)) {
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is an order-${order} block, not a folio (no Head mark)`);
    }
    return pfn;
  }

  private put(what: string, pfn: number, order: number, folio: boolean): void {
    const p = this.checkAllocated(what, pfn, order, folio);
    const mm = this.memmap;
    const ref = mm.refOf(p) - 1;
    mm.setRefOf(p, ref);
    if (ref > 0) return;
    if (mm.flagsOf(p) & Head) mm.clearCompound(p, order);
    this.release(mm.rangeOfPfn(p), p, order);
  }

  private checkAdoptable(what: string, pfn: number, order: number): number {
    if (!(order >= 0 && order <= MAX_PAGE_ORDER) || order % 1 !== 0) {
      throw new KernelError(Errno.EINVAL, `${what}: order ${order} is not an integer in 0..${MAX_PAGE_ORDER}`);
    }
    const mm = this.memmap;
    const r = mm.rangeOfPfn(pfn);
    if (r < 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${describePfn(pfn)} is not a page of RAM`);
    if ((pfn & (POW2[order] - 1)) !== 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is not aligned to order ${order}`);
    const n = POW2[order];
    if (pfn + n > mm.rangeEndPfn(r)) {
      throw new KernelError(Errno.EINVAL, `${what}: the order-${order} block at ${hex(pfn)} runs past the end of its RAM range`);
    }
    const head = this.freeHeadOf(pfn);
    if (head >= 0) throw new KernelError(Errno.EBUSY, `${what}: pfn ${hex(pfn)} is free (in the free block at ${hex(head)})`);
    if (n <= 8) {
      // A few pages (restoring 4 KiB pages one by one): one pass to check, one to clear.
      for (let p = pfn; p < pfn + n; p++) {
        const f = mm.flagsOf(p);
        if (f & Buddy) throw new KernelError(Errno.EBUSY, `${what}: pfn ${hex(p)} is free`);
        if (f & (Head | Tail) || (mm.refOf(p) > 0 && !(f & Reserved))) throw new KernelError(Errno.EBUSY, `${what}: pfn ${hex(p)} is in use (refcount ${mm.refOf(p)})`);
      }
      for (let p = pfn; p < pfn + n; p++) {
        const f = mm.flagsOf(p);
        if (f & Reserved) mm.setFlagsOf(p, f & ~Reserved);
        if (mm.refOf(p) !== 0) mm.setRefOf(p, 0);
      }
      return pfn;
    }
    // The first page that is free or in use, as a page-by-page scan would meet it.
    const free = mm.findFlag(pfn, n, Buddy);
    const compound = mm.findFlag(pfn, n, Head | Tail);
    const held = mm.findReferenced(pfn, n, Reserved);
    const firstBusy = Math.min(...[compound, held].filter((x) => x >= 0), Infinity);
    if (free >= 0 && free <= firstBusy) throw new KernelError(Errno.EBUSY, `${what}: pfn ${hex(free)} is free`);
    if (firstBusy !== Infinity) throw new KernelError(Errno.EBUSY, `${what}: pfn ${hex(firstBusy)} is in use (refcount ${mm.refOf(firstBusy)})`);
    mm.updateFlagsRange(pfn, n, Reserved, 0);
    mm.clearRefcountsRange(pfn, n);
    return pfn;
  }

  /** The head pfn of the free block holding `pfn`, or -1. */
  private freeHeadOf(pfn: number): number {
    const mm = this.memmap;
    const r = mm.rangeOfPfn(pfn);
    if (r < 0) return -1;
    const start = mm.rangeStartPfn(r);
    let last = -1;
    for (let k = 0; k <= MAX_PAGE_ORDER; k++) {
      const hp = pfn - (pfn & (POW2[k] - 1));
      if (hp < start) break;
      // A head already looked at (with a smaller k, so a weaker order test) need not be looked at again.
      if (hp === last) continue;
      last = hp;
      if (mm.flagsOf(hp) & Buddy && mm.orderOf(hp) >= k) return hp;
    }
    return -1;
  }
}

function bug(message: string): never {
  throw new KernelBug(`buddy allocator: ${message}`);
}
