import { injectable } from 'tsyringe';
import { Errno, KernelBug, KernelError, hex } from '@kho/kernel';
import { MAX_PAGE_ORDER, PAGE_SIZE, toOrder, type Order, type Pfn } from './abi';
import { BuddyAllocator, Folio } from './buddy';
import { Memmap, PageFlag } from './memmap';
import { PhysicalMemory } from './memory';

/** Object sizes of the kmalloc caches, smallest first (Linux's kmalloc-8 .. kmalloc-8k). */
export const KMALLOC_SIZES: readonly number[] = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
/**
 * Slab order of each cache (pages per slab = 2^order), as SLUB picks them on a machine with a few CPUs: one page
 * up to 256-byte objects, then larger slabs so that a slab still holds 16 objects (8 for 4 KiB, 4 for 8 KiB).
 */
export const KMALLOC_SLAB_ORDERS: readonly Order[] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 3, 3].map(toOrder);
/** The largest size served by a cache; anything bigger is a large kmalloc (a compound page). */
export const KMALLOC_MAX_CACHE_SIZE = 8192;
/** The largest kmalloc: one block of the buddy allocator's largest order (4 MiB). */
export const KMALLOC_MAX_SIZE = PAGE_SIZE * 2 ** MAX_PAGE_ORDER;
/** Objects a slab may hold at most (the 16-bit free-object stack; kmalloc-8 on one page holds 512). */
export const SLAB_MAX_OBJECTS = 65535;

/**
 * The head page of a slab: PageFlag.Slab, and private word = cache index (into KMALLOC_SIZES) | SLAB_PAGE_MAGIC << 32.
 * The head page of a large kmalloc: no Slab flag, private word = order | LARGE_KMALLOC_MAGIC << 32. Tail pages
 * carry only their compound marks. These marks live in the per-boot memmap: nothing of them crosses a kexec.
 */
export const SLAB_PAGE_MAGIC = 0x534c4142; // 'SLAB'
export const LARGE_KMALLOC_MAGIC = 0x4b4d4c47; // 'KMLG'

/** What an object slot holds. */
export type ObjectState = 'free' | 'allocated' | 'awaiting';

/** An object slot of a slab (see {@link Slab.objectAt}). */
export interface SlabObject {
  readonly kind: 'slab';
  /** Head pfn of the slab (a block of 2^order pages). */
  readonly headPfn: Pfn;
  readonly order: Order;
  /** Index into KMALLOC_SIZES. */
  readonly cache: number;
  /** The cache's name, e.g. 'kmalloc-96'. */
  readonly cacheName: string;
  readonly objectSize: number;
  /** Index of the object within its slab: it starts at headPfn * PAGE_SIZE + index * objectSize. */
  readonly index: number;
  /** Objects the slab holds. */
  readonly nrObjects: number;
  readonly state: ObjectState;
}

/** A large kmalloc (more than KMALLOC_MAX_CACHE_SIZE bytes): one compound page, the whole of it the object. */
export interface LargeKmallocObject {
  readonly kind: 'large';
  readonly headPfn: Pfn;
  readonly order: Order;
  /** Bytes usable (PAGE_SIZE << order). */
  readonly size: number;
  readonly state: 'allocated';
}

export type KmallocObject = SlabObject | LargeKmallocObject;

/** One cache's line of {@link Slab.slabInfo}, /proc/slabinfo style. */
export interface KmallocCacheInfo {
  readonly name: string;
  readonly objectSize: number;
  /** Order of the slabs this cache allocates (adopted slabs may have another). */
  readonly order: Order;
  readonly objectsPerSlab: number;
  readonly slabs: number;
  /** Objects allocated. */
  readonly activeObjects: number;
  /** Objects of adopted slabs still awaiting their restore (neither free nor allocated). */
  readonly awaitingObjects: number;
  /** Object slots in all its slabs. */
  readonly totalObjects: number;
  /** Bytes of the slabs' pages. */
  readonly bytes: number;
}

/** Statistics of the kmalloc allocator. */
export interface SlabInfo {
  readonly caches: readonly KmallocCacheInfo[];
  readonly large: { readonly objects: number; readonly pages: number; readonly bytes: number };
  /** Bytes of pages held by slabs and large kmallocs. */
  readonly totalBytes: number;
}

/** The name Linux gives the kmalloc cache of `size` bytes: kmalloc-96, kmalloc-1k. */
export function kmallocCacheName(size: number): string {
  return size >= 1024 ? `kmalloc-${size / 1024}k` : `kmalloc-${size}`;
}

const FREE = 0;
const ALLOCATED = 1;
const AWAITING = 2;
const STATE_NAMES: readonly ObjectState[] = ['free', 'allocated', 'awaiting'];

// Cache index for a size of 1..8192 bytes, by (size + 7) >> 3.
const SIZE_INDEX = new Uint8Array(KMALLOC_MAX_CACHE_SIZE / 8 + 1);
for (let granule = 1, c = 0; granule < SIZE_INDEX.length; granule++) {
  while (KMALLOC_SIZES[c] < granule * 8) c++;
  SIZE_INDEX[granule] = c;
}

class KmallocCache {
  readonly name: string;
  readonly objectsPerSlab: number;
  /** Slabs with at least one free object, oldest first. */
  readonly partial = new Set<SlabPage>();
  /** The bookkeeping of this cache's last freed slab, reused by the next one (typed arrays cost more than pages). */
  spare: SlabPage | undefined;
  slabs = 0;
  pages = 0;
  totalObjects = 0;
  inUse = 0;
  awaiting = 0;

  constructor(
    readonly index: number,
    readonly size: number,
    readonly order: Order,
  ) {
    this.name = kmallocCacheName(size);
    this.objectsPerSlab = Math.floor((PAGE_SIZE * 2 ** order) / size);
  }
}

/** Host-side bookkeeping of one slab; it dies with the kernel, as the caches do. */
class SlabPage {
  readonly state: Uint8Array;
  /** Free object indices; the top is handed out next. */
  readonly freeStack: Uint16Array;
  nrFree = 0;
  inUse = 0;
  awaiting = 0;

  constructor(
    public pfn: Pfn,
    readonly order: Order,
    readonly cache: KmallocCache,
    readonly nrObjects: number,
  ) {
    this.state = new Uint8Array(nrObjects);
    this.freeStack = new Uint16Array(nrObjects);
  }

  get phys(): number {
    return this.pfn * PAGE_SIZE;
  }

  /** Frees object `i` (whatever it was): the lowest indices are pushed last when called from high to low. */
  pushFree(i: number): void {
    this.state[i] = FREE;
    this.freeStack[this.nrFree++] = i;
  }
}

/**
 * kmalloc for one boot: 13 caches of 8 bytes to 8 KiB objects on slabs from the buddy allocator, and larger
 * sizes as compound pages straight from it (a "large kmalloc").
 *
 * The simulator has no kernel virtual addresses: the linear map is the identity, so **a kmalloc pointer is a
 * physical address** and kfree takes that address. There is no NULL either (address 0 is RAM): every failure
 * throws. Slab pages come from normal memory (never scratch), so objects on them may be preserved.
 *
 * The memmap marks what a page is (see {@link SLAB_PAGE_MAGIC}); which objects of a slab are free lives in host
 * memory, keyed by the slab's head pfn, and dies with the kernel: a new kernel rebuilds its caches, and the
 * preservation side (@kho/kho-slab's KhoSlab) hands restored slabs back with {@link Slab.adoptSlab},
 * {@link Slab.adoptObject} and {@link Slab.releaseAwaiting}. A slab whose last object is freed goes back to the
 * buddy allocator at once. Objects of an adopted slab may be "awaiting" their restore: neither free (kmalloc never
 * hands them out) nor allocated (kfree refuses them).
 */
@injectable()
export class Slab {
  private readonly caches: KmallocCache[] = KMALLOC_SIZES.map((size, i) => new KmallocCache(i, size, KMALLOC_SLAB_ORDERS[i]));
  private readonly slabs = new Map<number, SlabPage>();
  private largeObjects = 0;
  private largePages = 0;

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly buddy: BuddyAllocator,
  ) {}

  // ---------------------------------------------------------------- the allocator

  /**
   * Allocates `size` bytes (contents undefined: whatever the memory held). Returns the object's physical address:
   * aligned to the object size in the power-of-two caches (to 32 and 64 bytes in kmalloc-96 and kmalloc-192), to
   * its pages for a large kmalloc. Throws EINVAL
   * for a size that is not an integer of at least 1 (size 0 is refused: there is no ZERO_SIZE_PTR), E2BIG above
   * KMALLOC_MAX_SIZE, ENOMEM from the buddy allocator (nothing changed).
   */
  kmalloc(size: number): number {
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new KernelError(Errno.EINVAL, `kmalloc: size ${size} (wanted an integer in 1..${KMALLOC_MAX_SIZE}; size 0 is refused)`);
    }
    if (size > KMALLOC_MAX_CACHE_SIZE) return this.kmallocLarge(size);
    const cache = this.caches[SIZE_INDEX[(size + 7) >> 3]];
    let slab: SlabPage | undefined;
    for (const s of cache.partial) {
      slab = s;
      break;
    }
    slab ??= this.newSlab(cache);
    const i = slab.freeStack[--slab.nrFree];
    slab.state[i] = ALLOCATED;
    slab.inUse++;
    cache.inUse++;
    if (slab.nrFree === 0) cache.partial.delete(slab);
    return slab.phys + i * cache.size;
  }

  /** Like {@link Slab.kmalloc}, with the object's bytes (its whole cache size) zeroed. */
  kzalloc(size: number): number {
    const ptr = this.kmalloc(size);
    this.ram.fill(ptr, this.ksize(ptr), 0);
    return ptr;
  }

  /**
   * Frees an object from kmalloc (or one restored and adopted). An emptied slab goes back to the buddy allocator.
   * Throws EINVAL, changing nothing, for an address that is not an allocated object: not RAM, neither a slab nor a
   * large kmalloc, not the start of an object, already free, or awaiting its restore.
   */
  kfree(ptr: number): void {
    const slab = this.locate('kfree', ptr);
    if (slab === undefined) {
      this.freeLarge(ptr / PAGE_SIZE);
      return;
    }
    const i = (ptr - slab.phys) / slab.cache.size;
    this.requireAllocated('kfree', ptr, slab, i);
    slab.pushFree(i);
    slab.inUse--;
    slab.cache.inUse--;
    if (slab.inUse === 0 && slab.awaiting === 0) this.destroySlab(slab);
    else if (slab.nrFree === 1) slab.cache.partial.add(slab);
  }

  /** Bytes usable in the allocated object at `ptr` (its cache's size, or the large kmalloc's pages). EINVAL as kfree. */
  ksize(ptr: number): number {
    const slab = this.locate('ksize', ptr);
    if (slab === undefined) return PAGE_SIZE * 2 ** this.memmap.order(ptr / PAGE_SIZE);
    this.requireAllocated('ksize', ptr, slab, (ptr - slab.phys) / slab.cache.size);
    return slab.cache.size;
  }

  /**
   * What is at `ptr`: an object slot of a slab (in any state) or an allocated large kmalloc. Throws EINVAL when
   * `ptr` is not RAM, not in a slab or large kmalloc, or not the start of an object slot.
   */
  objectAt(ptr: number): KmallocObject {
    const slab = this.locate('objectAt', ptr);
    const pfn = Math.floor(ptr / PAGE_SIZE);
    if (slab === undefined) {
      const order = this.memmap.order(pfn);
      return { kind: 'large', headPfn: pfn as Pfn, order, size: PAGE_SIZE * 2 ** order, state: 'allocated' };
    }
    const i = (ptr - slab.phys) / slab.cache.size;
    const c = slab.cache;
    return {
      kind: 'slab',
      headPfn: slab.pfn,
      order: slab.order,
      cache: c.index,
      cacheName: c.name,
      objectSize: c.size,
      index: i,
      nrObjects: slab.nrObjects,
      state: STATE_NAMES[slab.state[i]],
    };
  }

  /** The index into KMALLOC_SIZES of the cache whose objects are exactly `objectSize` bytes, or -1. */
  cacheIndexOf(objectSize: number): number {
    return KMALLOC_SIZES.indexOf(objectSize);
  }

  /** Per-cache statistics (every cache, empty ones too) and the large kmallocs. */
  slabInfo(): SlabInfo {
    const caches = this.caches.map((c) => ({
      name: c.name,
      objectSize: c.size,
      order: c.order,
      objectsPerSlab: c.objectsPerSlab,
      slabs: c.slabs,
      activeObjects: c.inUse,
      awaitingObjects: c.awaiting,
      totalObjects: c.totalObjects,
      bytes: c.pages * PAGE_SIZE,
    }));
    const large = { objects: this.largeObjects, pages: this.largePages, bytes: this.largePages * PAGE_SIZE };
    return { caches, large, totalBytes: caches.reduce((n, c) => n + c.bytes, large.bytes) };
  }

  // ---------------------------------------------------------------- hooks for the preservation side

  /**
   * Takes a block of 2^order pages the caller owns (allocated, e.g. just restored with kho's restoreFolio, its
   * private word clear) into cache `cache` as a slab. Object i is awaiting its restore when `awaiting(i)` is true
   * (default: all), free otherwise; free objects are handed out by kmalloc from now on. A slab with nothing
   * awaiting is empty and goes straight back to the buddy allocator. The slab may have another order than the
   * cache's own slabs (it holds floor((PAGE_SIZE << order) / size) objects). Throws EINVAL, changing nothing, for a
   * bad cache or order, a block that is not an allocated, unmarked block of that order, or one too small for an object.
   */
  adoptSlab(headPfn: Pfn, order: Order, cache: number, awaiting: (index: number) => boolean = () => true): void {
    const what = `adoptSlab(${describe(headPfn)}, order ${order})`;
    if (!Number.isInteger(cache) || cache < 0 || cache >= this.caches.length) {
      throw new KernelError(Errno.EINVAL, `${what}: cache ${cache} (wanted 0..${this.caches.length - 1})`);
    }
    const c = this.caches[cache];
    this.checkOwnedBlock(what, headPfn, order);
    const nrObjects = Math.floor((PAGE_SIZE * 2 ** order) / c.size);
    if (nrObjects < 1 || nrObjects > SLAB_MAX_OBJECTS) {
      throw new KernelError(Errno.EINVAL, `${what}: holds ${nrObjects} objects of ${c.size} bytes (wanted 1..${SLAB_MAX_OBJECTS})`);
    }
    const slab = new SlabPage(headPfn, order, c, nrObjects);
    for (let i = nrObjects - 1; i >= 0; i--) {
      if (awaiting(i)) {
        slab.state[i] = AWAITING;
        slab.awaiting++;
      } else {
        slab.pushFree(i);
      }
    }
    this.installSlab(slab);
    c.awaiting += slab.awaiting;
    if (slab.awaiting === 0) this.destroySlab(slab);
    else if (slab.nrFree > 0) c.partial.add(slab);
  }

  /**
   * Marks the awaiting object at `ptr` allocated: kfree works on it from now on. Throws EINVAL, changing nothing,
   * when `ptr` is not the start of an object of a slab, or the object is not awaiting its restore.
   */
  adoptObject(ptr: number): void {
    const slab = this.locate('adoptObject', ptr);
    if (slab === undefined) throw new KernelError(Errno.EINVAL, `adoptObject(${hex(ptr)}): a large kmalloc, not a slab object`);
    const i = (ptr - slab.phys) / slab.cache.size;
    if (slab.state[i] !== AWAITING) {
      throw new KernelError(Errno.EINVAL, `adoptObject(${hex(ptr)}): ${objectName(slab, i)} is ${STATE_NAMES[slab.state[i]]} (wanted awaiting)`);
    }
    slab.state[i] = ALLOCATED;
    slab.awaiting--;
    slab.inUse++;
    slab.cache.awaiting--;
    slab.cache.inUse++;
  }

  /**
   * Frees every object of the slab at `headPfn` that still awaits its restore (its owner has finished restoring);
   * the slab goes back to the buddy allocator when nothing in it is allocated. Returns how many were released.
   * Throws EINVAL when `headPfn` is not the head of a slab.
   */
  releaseAwaiting(headPfn: number): number {
    const slab = this.slabs.get(headPfn);
    if (slab === undefined) throw new KernelError(Errno.EINVAL, `releaseAwaiting(${describe(headPfn)}): not the head pfn of a slab`);
    const released = slab.awaiting;
    if (released === 0) return 0;
    for (let i = slab.nrObjects - 1; i >= 0; i--) if (slab.state[i] === AWAITING) slab.pushFree(i);
    slab.awaiting = 0;
    slab.cache.awaiting -= released;
    if (slab.inUse === 0) this.destroySlab(slab);
    else slab.cache.partial.add(slab);
    return released;
  }

  /**
   * Takes a block of 2^order pages the caller owns (e.g. a restored folio) as a large kmalloc, so that kfree frees
   * it. Returns its address. Throws EINVAL, changing nothing, like {@link Slab.adoptSlab}.
   */
  adoptLargeKmalloc(headPfn: Pfn, order: Order): number {
    this.checkOwnedBlock(`adoptLargeKmalloc(${describe(headPfn)}, order ${order})`, headPfn, order);
    this.memmap.setPrivate(headPfn, order, LARGE_KMALLOC_MAGIC);
    this.largeObjects++;
    this.largePages += 2 ** order;
    return headPfn * PAGE_SIZE;
  }

  // ---------------------------------------------------------------- checks for tests

  /**
   * Checks that the memmap and the bookkeeping agree: every slab is marked (flag, cache in the private word), holds
   * something, counts its objects right and is on its cache's partial list exactly when it has a free object; the
   * cache counters add up. Throws KernelBug on the first violation.
   */
  checkInvariants(): void {
    const sums = this.caches.map(() => ({ slabs: 0, pages: 0, total: 0, inUse: 0, awaiting: 0 }));
    for (const [pfn, s] of this.slabs) {
      const where = `slab ${hex(s.phys)} (${s.cache.name})`;
      if (s.pfn !== pfn) bug(`${where} is filed under pfn ${hex(pfn)}`);
      if (!this.memmap.testFlag(pfn, PageFlag.Slab)) bug(`${where} is not marked Slab`);
      if (this.memmap.privateHi(pfn) !== SLAB_PAGE_MAGIC || this.memmap.privateLo(pfn) !== s.cache.index) bug(`${where}: private word does not name its cache`);
      if (this.memmap.refcount(pfn) < 1 || this.memmap.order(pfn) !== s.order) bug(`${where} is not an allocated block of order ${s.order}`);
      const n = [0, 0, 0];
      for (let i = 0; i < s.nrObjects; i++) n[s.state[i]]++;
      if (n[FREE] !== s.nrFree || n[ALLOCATED] !== s.inUse || n[AWAITING] !== s.awaiting) bug(`${where}: object counts disagree with the object states`);
      for (let k = 0; k < s.nrFree; k++) if (s.state[s.freeStack[k]] !== FREE) bug(`${where}: object ${s.freeStack[k]} on the free stack is not free`);
      if (s.inUse + s.awaiting === 0) bug(`${where} is empty but was not freed`);
      if (s.cache.partial.has(s) !== s.nrFree > 0) bug(`${where}: on the partial list ${s.cache.partial.has(s)}, ${s.nrFree} free objects`);
      const sum = sums[s.cache.index];
      sum.slabs++;
      sum.pages += 2 ** s.order;
      sum.total += s.nrObjects;
      sum.inUse += s.inUse;
      sum.awaiting += s.awaiting;
    }
    this.caches.forEach((c, i) => {
      const s = sums[i];
      if (c.slabs !== s.slabs || c.pages !== s.pages || c.totalObjects !== s.total || c.inUse !== s.inUse || c.awaiting !== s.awaiting) {
        bug(`${c.name}: counters ${JSON.stringify([c.slabs, c.pages, c.totalObjects, c.inUse, c.awaiting])} disagree with its slabs ${JSON.stringify(Object.values(s))}`);
      }
      for (const p of c.partial) if (this.slabs.get(p.pfn) !== p) bug(`${c.name}: a freed slab ${hex(p.phys)} is on the partial list`);
    });
  }

  // ---------------------------------------------------------------- internals

  private kmallocLarge(size: number): number {
    if (size > KMALLOC_MAX_SIZE) {
      throw new KernelError(Errno.E2BIG, `kmalloc: size ${size} is above KMALLOC_MAX_SIZE (${KMALLOC_MAX_SIZE} bytes, order ${MAX_PAGE_ORDER})`);
    }
    let k = 0;
    while (PAGE_SIZE * 2 ** k < size) k++;
    const order = toOrder(k);
    const folio = this.buddy.folioAlloc(order);
    this.memmap.setPrivate(folio.pfn, order, LARGE_KMALLOC_MAGIC);
    this.largeObjects++;
    this.largePages += 2 ** order;
    return folio.phys;
  }

  private freeLarge(pfn: number): void {
    const order = this.memmap.order(pfn);
    this.memmap.setPrivate(pfn, 0, 0);
    this.buddy.folioPut(new Folio(pfn as Pfn, order));
    this.largeObjects--;
    this.largePages -= 2 ** order;
  }

  private newSlab(c: KmallocCache): SlabPage {
    const folio = this.buddy.folioAlloc(c.order);
    let slab = c.spare;
    c.spare = undefined;
    if (slab) {
      slab.pfn = folio.pfn;
      slab.nrFree = 0; // every object of a freed slab is free: only the stack order is rebuilt
    } else {
      slab = new SlabPage(folio.pfn, c.order, c, c.objectsPerSlab);
    }
    for (let i = slab.nrObjects - 1; i >= 0; i--) slab.pushFree(i);
    this.installSlab(slab);
    c.partial.add(slab);
    return slab;
  }

  private installSlab(slab: SlabPage): void {
    this.memmap.setFlags(slab.pfn, PageFlag.Slab);
    this.memmap.setPrivate(slab.pfn, slab.cache.index, SLAB_PAGE_MAGIC);
    this.slabs.set(slab.pfn, slab);
    const c = slab.cache;
    c.slabs++;
    c.pages += 2 ** slab.order;
    c.totalObjects += slab.nrObjects;
  }

  private destroySlab(slab: SlabPage): void {
    const c = slab.cache;
    c.partial.delete(slab);
    c.slabs--;
    c.pages -= 2 ** slab.order;
    c.totalObjects -= slab.nrObjects;
    this.slabs.delete(slab.pfn);
    this.memmap.clearFlags(slab.pfn, PageFlag.Slab);
    this.memmap.setPrivate(slab.pfn, 0, 0);
    this.buddy.folioPut(new Folio(slab.pfn, slab.order));
    if (slab.order === c.order && slab.nrObjects === c.objectsPerSlab) c.spare = slab;
  }

  /**
   * The slab holding the object slot that starts at `ptr`, or undefined for the start of an allocated large
   * kmalloc. Throws EINVAL for anything else.
   */
  private locate(what: string, ptr: number): SlabPage | undefined {
    if (!Number.isSafeInteger(ptr) || ptr < 0) throw new KernelError(Errno.EINVAL, `${what}(${ptr}): not an address`);
    const pfn = Math.floor(ptr / PAGE_SIZE);
    if (!this.memmap.hasPage(pfn)) throw new KernelError(Errno.EINVAL, `${what}(${hex(ptr)}): not an address of RAM`);
    const head = this.memmap.compoundHead(pfn);
    const flags = this.memmap.flags(head);
    if (flags & PageFlag.Slab) {
      const slab = this.slabs.get(head);
      if (slab === undefined) bug(`page ${hex(head)} is marked Slab but no slab is filed under it`);
      const size = slab.cache.size;
      const off = ptr - slab.phys;
      const i = Math.floor(off / size);
      if (i >= slab.nrObjects) {
        throw new KernelError(Errno.EINVAL, `${what}(${hex(ptr)}): in the unused tail of the ${slab.cache.name} slab at ${hex(slab.phys)} (${slab.nrObjects} objects)`);
      }
      if (off % size !== 0) {
        throw new KernelError(Errno.EINVAL, `${what}(${hex(ptr)}): ${off % size} bytes into ${objectName(slab, i)} (not the start of an object)`);
      }
      return slab;
    }
    const isLarge = this.memmap.privateHi(head) === LARGE_KMALLOC_MAGIC && (flags & PageFlag.Buddy) === 0 && this.memmap.refcount(head) > 0;
    if (!isLarge) throw new KernelError(Errno.EINVAL, `${what}(${hex(ptr)}): not a kmalloc object (the page is neither a slab nor a large kmalloc)`);
    if (ptr !== head * PAGE_SIZE) {
      throw new KernelError(Errno.EINVAL, `${what}(${hex(ptr)}): inside the large kmalloc at ${hex(head * PAGE_SIZE)} (not its start)`);
    }
    return undefined;
  }

  private requireAllocated(what: string, ptr: number, slab: SlabPage, i: number): void {
    const s = slab.state[i];
    if (s === ALLOCATED) return;
    const why = s === FREE ? 'is already free' : 'is awaiting its restore (not allocated)';
    throw new KernelError(Errno.EINVAL, `${what}(${hex(ptr)}): ${objectName(slab, i)} ${why}`);
  }

  /** Checks that (headPfn, order) is an allocated, unmarked block the caller owns. */
  private checkOwnedBlock(what: string, headPfn: Pfn, order: number): void {
    if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
      throw new KernelError(Errno.EINVAL, `${what}: order ${order} is not an integer in 0..${MAX_PAGE_ORDER}`);
    }
    if (!Number.isSafeInteger(headPfn) || !this.memmap.hasPage(headPfn)) throw new KernelError(Errno.EINVAL, `${what}: not a page of RAM`);
    if (headPfn % 2 ** order !== 0) throw new KernelError(Errno.EINVAL, `${what}: not aligned to its order`);
    const wrong = this.whyNotOwned(headPfn, order);
    if (wrong !== undefined) throw new KernelError(Errno.EINVAL, `${what}: ${wrong} (wanted an allocated block of order ${order} nobody marked)`);
  }

  private whyNotOwned(pfn: Pfn, order: number): string | undefined {
    const flags = this.memmap.flags(pfn);
    const refcount = this.memmap.refcount(pfn);
    if (this.buddy.isFree(pfn)) return 'it is free';
    if (flags & PageFlag.Tail) return 'it is a tail page';
    if (refcount < 1) return `it is not allocated (refcount ${refcount})`;
    if (this.memmap.order(pfn) !== order) return `it was allocated with order ${this.memmap.order(pfn)}`;
    if (order > 0 && !(flags & PageFlag.Head)) return 'it is not a compound page';
    if (flags & PageFlag.Slab) return 'it is a slab already';
    if (this.memmap.getPrivate(pfn) !== 0n) return `its private word is in use (${hex(this.memmap.getPrivate(pfn))})`;
    return undefined;
  }
}

function objectName(slab: SlabPage, i: number): string {
  return `object ${i} of the ${slab.cache.name} slab at ${hex(slab.phys)}`;
}

function describe(pfn: number): string {
  return Number.isSafeInteger(pfn) && pfn >= 0 ? `pfn ${hex(pfn)}` : `pfn ${pfn}`;
}

function bug(message: string): never {
  throw new KernelBug(`slab: ${message}`);
}
