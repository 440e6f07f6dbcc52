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
  // Memmap columns, held directly for the hot paths.
  private readonly flags: Uint16Array;
  private readonly orders: Uint8Array;
  private readonly refcounts: Int32Array;
  private readonly privLo: Uint32Array;
  private readonly privHi: Uint32Array;
  private readonly headOffsets: Uint16Array;
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
    this.flags = memmap.flagBits;
    this.orders = memmap.orders;
    this.refcounts = memmap.refcounts;
    this.privLo = memmap.privLo;
    this.privHi = memmap.privHi;
    this.headOffsets = memmap.headOffsets;
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
  freeBlocks(order: Order): number {
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
  isFree(pfn: number): boolean {
    return this.freeHeadOf(pfn) >= 0;
  }

  // --- allocation ---------------------------------------------------------------------------------------

  /**
   * Allocates 2^order contiguous, naturally aligned pages. Returns the head pfn, with refcount 1 and the order
   * recorded. Throws EINVAL for a bad order or node, and ENOMEM when no block fits (or fault injection says so).
   */
  allocPages(order: Order, opts?: AllocOptions): Pfn {
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
    return pfn as Pfn;
  }

  /**
   * Drops one reference to the block allocated at `pfn` with `order`; at zero the block returns to the allocator
   * and merges with free buddies (a compound page loses its head and tail marks). Throws EINVAL, changing
   * nothing, for a pfn that is not RAM, unaligned, free, a tail page, not allocated, or allocated with another order.
   */
  freePages(pfn: Pfn | number, order: Order): void {
    this.put('freePages', pfn, order, false);
  }

  /** Allocates a folio: like allocPages, and for order > 0 marks the head (Head) and tails (Tail, offset). */
  folioAlloc(order: Order, opts?: AllocOptions): Folio {
    const pfn = this.allocPages(order, opts);
    if (order > 0) this.makeCompound(this.memmap.index(pfn), order);
    return new Folio(pfn, order);
  }

  /** Takes one more reference to `folio`. Throws EINVAL when it is not an allocated folio. */
  folioGet(folio: Folio): void {
    const i = this.checkAllocated('folioGet', folio.pfn, folio.order, true);
    this.refcounts[i]++;
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
  adoptPages(pfn: Pfn | number, order: Order): Pfn {
    const i = this.checkAdoptable('adoptPages', pfn, order);
    this.refcounts[i] = 1;
    this.orders[i] = order;
    return pfn as Pfn;
  }

  /** Like adoptPages, and marks the block as a compound page (kho_restore_folio). Returns the folio. */
  adoptFolio(pfn: Pfn | number, order: Order): Folio {
    const i = this.checkAdoptable('adoptFolio', pfn, order);
    this.refcounts[i] = 1;
    this.orders[i] = order;
    if (order > 0) this.makeCompound(i, order);
    return new Folio(pfn as Pfn, order);
  }

  /**
   * Hands `nrPages` pages from `startPfn` to the allocator (the kernel's memblock_free_all for one region): their
   * refcounts go to 0, Reserved is cleared, and they are freed as the largest naturally aligned blocks that cross
   * neither a RAM range boundary nor a change of the Scratch flag, merging with free neighbours. Throws EINVAL,
   * changing nothing, when the range is empty, not all RAM, or holds a page that is already free.
   */
  freeRange(startPfn: number, nrPages: number): void {
    if (!Number.isSafeInteger(startPfn) || startPfn < 0 || !Number.isSafeInteger(nrPages) || nrPages < 1) {
      throw new KernelError(Errno.EINVAL, `freeRange: start pfn ${describePfn(startPfn)} and ${nrPages} pages is not a non-empty range`);
    }
    const end = startPfn + nrPages;
    const what = `freeRange [${hex(startPfn)}-${hex(end - 1)}]`;
    for (let cur = startPfn; cur < end; ) {
      const r = this.memmap.rangeOfPfn(cur);
      if (r < 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(cur)} is not a page of RAM`);
      cur = Math.min(end, this.memmap.rangeEndPfn(r));
    }
    const first = this.freeHeadOf(startPfn);
    if (first >= 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(startPfn)} is already free (in the free block at ${hex(first)})`);
    this.forEachRun(startPfn, end, (i0, n, p0) => {
      for (let i = i0; i < i0 + n; i++) {
        if (this.flags[i] & Buddy) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(p0 + i - i0)} is already free`);
      }
    });
    this.forEachRun(startPfn, end, (i0, n) => {
      this.refcounts.fill(0, i0, i0 + n);
      for (let i = i0; i < i0 + n; i++) this.flags[i] &= ~Reserved;
    });
    for (let cur = startPfn; cur < end; ) {
      const r = this.memmap.rangeOfPfn(cur);
      const segEnd = Math.min(end, this.memmap.rangeEndPfn(r));
      let i = this.memmap.index(cur);
      const scratch = this.flags[i] & Scratch;
      // The run of pages with the same Scratch flag.
      let runEnd = cur + 1;
      for (i++; runEnd < segEnd && (this.flags[i] & Scratch) === scratch; i++) runEnd++;
      while (cur < runEnd) {
        let k = MAX_PAGE_ORDER;
        while (k > 0 && (cur % POW2[k] !== 0 || cur + POW2[k] > runEnd)) k--;
        this.release(r, cur, this.memmap.index(cur), k);
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
    const covered = new Uint8Array(this.memmap.nrPages);
    let total = 0;
    for (let z = 0; z < this.nZones; z++) {
      let zoneTotal = 0;
      for (let k = 0; k < NR_PAGE_ORDERS; k++) {
        const a = z * NR_PAGE_ORDERS + k;
        const len = this.areaLen[a];
        if (((this.zoneMask[z] >> k) & 1) !== (len > 0 ? 1 : 0)) bug(`zone ${z} order ${k}: mask bit disagrees with ${len} blocks`);
        for (let pos = 0; pos < len; pos++) {
          const p = this.areaStack[a][pos];
          const where = `free block ${hex(p)} (order ${k}, zone ${z})`;
          const r = this.memmap.rangeOfPfn(p);
          if (r < 0) bug(`${where} is not RAM`);
          if (p % POW2[k] !== 0) bug(`${where} is not aligned to its order`);
          if (p + POW2[k] > this.memmap.rangeEndPfn(r)) bug(`${where} crosses the end of its RAM range`);
          if (this.rangeZone[r] !== (z & ~1)) bug(`${where} is on the wrong node's list`);
          const i = this.memmap.index(p);
          if (!(this.flags[i] & Buddy)) bug(`${where} is not marked Buddy`);
          if (this.orders[i] !== k) bug(`${where} records order ${this.orders[i]}`);
          if (this.privLo[i] !== pos) bug(`${where} records stack position ${this.privLo[i]}, is at ${pos}`);
          for (let j = i; j < i + POW2[k]; j++) {
            if (covered[j]) bug(`${where} overlaps another free block at ${hex(this.memmap.pfnAt(j))}`);
            covered[j] = 1;
            if (((this.flags[j] & Scratch) !== 0 ? 1 : 0) !== (z & 1)) bug(`${where}: page ${hex(this.memmap.pfnAt(j))} is in the wrong pool`);
            if (this.refcounts[j] !== 0) bug(`${where}: page ${hex(this.memmap.pfnAt(j))} has refcount ${this.refcounts[j]}`);
            if (j > i && this.flags[j] & Buddy) bug(`${where}: page ${hex(this.memmap.pfnAt(j))} inside it is marked Buddy`);
          }
          zoneTotal += POW2[k];
        }
      }
      if (zoneTotal !== this.zoneFree[z]) bug(`zone ${z} counts ${this.zoneFree[z]} free pages, its lists hold ${zoneTotal}`);
      total += zoneTotal;
    }
    if (total !== this.free) bug(`the allocator counts ${this.free} free pages, its lists hold ${total}`);
    for (let i = 0; i < this.memmap.nrPages; i++) {
      if (this.flags[i] & Buddy && !covered[i]) bug(`page ${hex(this.memmap.pfnAt(i))} is marked Buddy but is on no free list`);
    }
  }

  /** True when no free block has a free buddy it could merge with. */
  fullyMerged(): boolean {
    for (let z = 0; z < this.nZones; z++) {
      for (let k = 0; k < MAX_PAGE_ORDER; k++) {
        const a = z * NR_PAGE_ORDERS + k;
        for (let pos = 0; pos < this.areaLen[a]; pos++) {
          const p = this.areaStack[a][pos];
          const r = this.memmap.rangeOfPfn(p);
          const i = this.memmap.index(p);
          if (this.mergeableBuddy(r, p, i, k, this.flags[i] & Scratch) >= 0) return false;
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
    let k = order + 31 - Math.clz32(mask & -mask);
    const a = z * NR_PAGE_ORDERS + k;
    const pos = --this.areaLen[a];
    const p = this.areaStack[a][pos];
    if (pos === 0) this.zoneMask[z] &= ~(1 << k);
    const i = this.memmap.index(p);
    this.flags[i] &= ~Buddy;
    while (k > order) {
      k--;
      this.push(z, k, p + POW2[k], i + POW2[k]);
    }
    const n = POW2[order];
    this.zoneFree[z] -= n;
    this.free -= n;
    this.refcounts[i] = 1;
    this.orders[i] = order;
    this.privLo[i] = 0;
    this.privHi[i] = 0;
    return p;
  }

  /** Puts a free block on its list (counts are the caller's business). */
  private push(z: number, k: number, p: number, i: number): void {
    const a = z * NR_PAGE_ORDERS + k;
    const pos = this.areaLen[a]++;
    let stack = this.areaStack[a];
    if (pos === stack.length) {
      const bigger = new Float64Array(stack.length * 2);
      bigger.set(stack);
      this.areaStack[a] = stack = bigger;
    }
    stack[pos] = p;
    this.privLo[i] = pos;
    this.flags[i] |= Buddy;
    this.orders[i] = k;
    this.zoneMask[z] |= 1 << k;
  }

  /** Takes the free block with descriptor index `i` off its list, in O(1). */
  private remove(z: number, k: number, i: number): void {
    const a = z * NR_PAGE_ORDERS + k;
    const pos = this.privLo[i];
    const last = --this.areaLen[a];
    const stack = this.areaStack[a];
    if (pos !== last) {
      const moved = stack[last];
      stack[pos] = moved;
      this.privLo[this.memmap.index(moved)] = pos;
    }
    if (last === 0) this.zoneMask[z] &= ~(1 << k);
    this.flags[i] &= ~Buddy;
    this.privLo[i] = 0;
    this.orders[i] = 0;
  }

  /** The descriptor index of the free buddy that block (p, i, k) in range r can merge with, or -1. */
  private mergeableBuddy(r: number, p: number, i: number, k: number, scratch: number): number {
    const size = POW2[k];
    const bp = (p / size) & 1 ? p - size : p + size;
    if (bp < this.memmap.rangeStartPfn(r) || bp + size > this.memmap.rangeEndPfn(r)) return -1;
    const bi = i + bp - p;
    const bf = this.flags[bi];
    return bf & Buddy && this.orders[bi] === k && (bf & Scratch) === scratch ? bi : -1;
  }

  /** Frees block (p, i) of order k in RAM range r: merges with free buddies, then lists it. */
  private release(r: number, p: number, i: number, k: number): void {
    const scratch = this.flags[i] & Scratch;
    const z = this.rangeZone[r] + (scratch ? 1 : 0);
    const n = POW2[k];
    while (k < MAX_PAGE_ORDER) {
      const bi = this.mergeableBuddy(r, p, i, k, scratch);
      if (bi < 0) break;
      this.remove(z, k, bi);
      if (bi < i) {
        p -= POW2[k];
        i = bi;
      }
      k++;
    }
    this.push(z, k, p, i);
    this.zoneFree[z] += n;
    this.free += n;
  }

  /** The shared checks of freePages/folioGet/folioPut; returns the head's descriptor index. */
  private checkAllocated(what: string, pfn: number, order: number, folio: boolean): number {
    if (!(order >= 0 && order <= MAX_PAGE_ORDER) || order % 1 !== 0) {
      throw new KernelError(Errno.EINVAL, `${what}: order ${order} is not an integer in 0..${MAX_PAGE_ORDER}`);
    }
    const r = this.memmap.rangeOfPfn(pfn);
    if (r < 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${describePfn(pfn)} is not a page of RAM`);
    if (pfn % POW2[order] !== 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is not aligned to order ${order}`);
    const i = this.memmap.index(pfn);
    const f = this.flags[i];
    if (f & Tail) {
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is a tail page of the folio at ${hex(pfn - this.headOffsets[i])}`);
    }
    if (f & Buddy || this.refcounts[i] <= 0) {
      const head = this.freeHeadOf(pfn);
      const state = head >= 0 ? `is free (in the free block at ${hex(head)})` : `is not allocated (refcount ${this.refcounts[i]})`;
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} ${state}`);
    }
    if (this.orders[i] !== order) {
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} was allocated with order ${this.orders[i]}, not ${order}`);
    }
    if (folio && order > 0 && !(f & Head)) {
      throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is an order-${order} block, not a folio (no Head mark)`);
    }
    return i;
  }

  private put(what: string, pfn: number, order: number, folio: boolean): void {
    const i = this.checkAllocated(what, pfn, order, folio);
    if (--this.refcounts[i] > 0) return;
    if (this.flags[i] & Head) this.clearCompound(i, order);
    this.release(this.memmap.rangeOfPfn(pfn), pfn, i, order);
  }

  private makeCompound(i: number, order: number): void {
    this.flags[i] = (this.flags[i] & ~Tail) | Head;
    for (let j = 1; j < POW2[order]; j++) {
      this.flags[i + j] = (this.flags[i + j] & ~Head) | Tail;
      this.headOffsets[i + j] = j;
    }
  }

  private clearCompound(i: number, order: number): void {
    this.flags[i] &= ~Head;
    for (let j = 1; j < POW2[order]; j++) {
      this.flags[i + j] &= ~Tail;
      this.headOffsets[i + j] = 0;
    }
  }

  private checkAdoptable(what: string, pfn: number, order: number): number {
    if (!(order >= 0 && order <= MAX_PAGE_ORDER) || order % 1 !== 0) {
      throw new KernelError(Errno.EINVAL, `${what}: order ${order} is not an integer in 0..${MAX_PAGE_ORDER}`);
    }
    const r = this.memmap.rangeOfPfn(pfn);
    if (r < 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${describePfn(pfn)} is not a page of RAM`);
    if (pfn % POW2[order] !== 0) throw new KernelError(Errno.EINVAL, `${what}: pfn ${hex(pfn)} is not aligned to order ${order}`);
    if (pfn + POW2[order] > this.memmap.rangeEndPfn(r)) {
      throw new KernelError(Errno.EINVAL, `${what}: the order-${order} block at ${hex(pfn)} runs past the end of its RAM range`);
    }
    const head = this.freeHeadOf(pfn);
    if (head >= 0) throw new KernelError(Errno.EBUSY, `${what}: pfn ${hex(pfn)} is free (in the free block at ${hex(head)})`);
    const i = this.memmap.index(pfn);
    for (let j = i; j < i + POW2[order]; j++) {
      const f = this.flags[j];
      const p = hex(pfn + j - i);
      if (f & Buddy) throw new KernelError(Errno.EBUSY, `${what}: pfn ${p} is free`);
      if (f & (Head | Tail) || (this.refcounts[j] > 0 && !(f & Reserved))) {
        throw new KernelError(Errno.EBUSY, `${what}: pfn ${p} is in use (refcount ${this.refcounts[j]})`);
      }
    }
    for (let j = i; j < i + POW2[order]; j++) {
      this.flags[j] &= ~Reserved;
      this.refcounts[j] = 0;
    }
    return i;
  }

  /** The head pfn of the free block holding `pfn`, or -1. */
  private freeHeadOf(pfn: number): number {
    const r = this.memmap.rangeOfPfn(pfn);
    if (r < 0) return -1;
    const start = this.memmap.rangeStartPfn(r);
    const i = this.memmap.index(pfn);
    for (let k = 0; k <= MAX_PAGE_ORDER; k++) {
      const off = pfn % POW2[k];
      if (pfn - off < start) break;
      const hi = i - off;
      if (this.flags[hi] & Buddy && this.orders[hi] >= k) return pfn - off;
    }
    return -1;
  }

  /** Calls `fn(firstIndex, count, firstPfn)` for each RAM-range piece of [start, end) (all RAM, checked). */
  private forEachRun(start: number, end: number, fn: (i0: number, n: number, p0: number) => void): void {
    for (let cur = start; cur < end; ) {
      const segEnd = Math.min(end, this.memmap.rangeEndPfn(this.memmap.rangeOfPfn(cur)));
      fn(this.memmap.index(cur), segEnd - cur, cur);
      cur = segEnd;
    }
  }
}

function bug(message: string): never {
  throw new KernelBug(`buddy allocator: ${message}`);
}
