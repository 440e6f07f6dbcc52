import { Errno, KernelError, KernelLog, formatBytes, hex } from '@kho/kernel';
import { BuddyAllocator, MAX_PAGE_ORDER, Memmap, PAGE_SIZE, PhysicalMemory, describePfn, ORDER_0, toOrder, type Order, type Pfn, type PhysAddr } from '@kho/physmem';
import { checkMapCrc, tooManyBlocks, type BlockVisitor, type IncomingWalkOptions, type ReadIncomingOptions, type Tracker, type TrackerStats } from '@kho/kho-core';
import { PRESERVE_BITS, bitmapCoverageLog2, bitmapPhysStart } from './abi';

// Imported constants are copied into module constants: an imported binding compiles to a property read on the
// other module's exports (a getter call for a re-export), which made the hot paths twice as slow once the
// exports object had served other getters.
const BITS = PRESERVE_BITS;
const PAGE = PAGE_SIZE;
const MAX_ORDER = MAX_PAGE_ORDER;
const NR_ORDERS = MAX_ORDER + 1;
const WORDS = BITS / 32;
const POW2: number[] = Array.from({ length: 64 }, (_, i) => 2 ** i);
/** Pfns of 64-bit physical addresses are below 2^52. */
const PFN_LIMIT_LOG2 = 52;
const TWO_53 = 2n ** 53n;

/** One bitmap of this kernel: a page from the buddy allocator, a view of its words, and how many bits are set. */
interface Bitmap {
  readonly index: number;
  readonly phys: number;
  readonly words: Int32Array;
  count: number;
}

/** The cache's "no bitmap": its base is NaN, which fails every range test. */
const NO_BITMAP: Bitmap = { index: NaN, phys: 0, words: new Int32Array(0), count: 0 };

/** A bitmap as a serialised map names it: its order, the first byte it covers, and the phys of its page. */
export interface BitmapRef {
  readonly order: Order;
  readonly physStart: bigint;
  readonly bitmap: number;
}

/** The structure of a serialised map, checked: its bitmaps in the format's order and the pages it occupies. */
export interface ParsedBitmapMap {
  readonly bitmaps: readonly BitmapRef[];
  /** Every page the map occupies (its own pages and the bitmaps), in the order KHO checksums them. */
  readonly pfns: readonly Pfn[];
}

/** What a serialised form's writer built: the value of `preserved-memory-map`, its pages, and how to free them. */
export interface SerialisedForm {
  readonly map: number;
  readonly nrPages: number;
  free(): void;
}

/** Blocks found in an incoming bitmap map, in walk order (see {@link readIncomingBitmaps}). */
export interface IncomingBitmapBlocks {
  readonly count: number;
  readonly pfns: Pfn[];
  readonly orders: Order[];
  /** Pages of the map (its own pages and the bitmaps). */
  readonly metadataPages: number;
}

/**
 * The in-memory half of a bitmap tracker: per order, bitmaps of 32768 bits, one page each (order-0 pages from the
 * buddy allocator, non-movable, read and written through typed-array views), found through a host-side index
 * (order, bitmap index) → page, which is this boot's bookkeeping and crosses nothing. A bitmap page is freed
 * when its last bit is cleared.
 *
 * One class for both serialised forms, held by each tracker: the hot paths (add, del, has, walk) then see one
 * object shape whichever trackers a process uses, as the KHO array's one class for both versions does.
 */
export class BitmapSet {
  private readonly maps: Array<Map<number, Bitmap>> = Array.from({ length: NR_ORDERS }, () => new Map());
  private nrBitmaps = 0;
  private nrBlocks = 0;
  // Per order, the bitmap of the last lookup of that order and the first block index it covers: runs that stay
  // within a bitmap skip the index. Valid while that bitmap is live: freeing a bitmap forgets it.
  private readonly cacheBase = new Float64Array(NR_ORDERS).fill(NaN);
  private readonly cache: Bitmap[] = new Array<Bitmap>(NR_ORDERS).fill(NO_BITMAP);

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
  ) {}

  /** Blocks recorded. */
  get blocks(): number {
    return this.nrBlocks;
  }

  /** Bitmap pages held. */
  get pages(): number {
    return this.nrBitmaps;
  }

  /**
   * Records the block of 2^order pages at `pfn` (idempotent). Throws EINVAL for a bad order or a misaligned pfn,
   * and ENOMEM (nothing changed) when a new bitmap page cannot be allocated.
   */
  add(pfn: number, order: number): void {
    const q = blockIndex(pfn, order);
    let bit = q - this.cacheBase[order];
    if (!(bit >= 0 && bit < BITS)) {
      this.load(order, q, true);
      bit = q - this.cacheBase[order];
    }
    const bm = this.cache[order];
    const words = bm.words;
    const i = bit >>> 5;
    const mask = 1 << (bit & 31);
    const word = words[i];
    if ((word & mask) === 0) {
      words[i] = word | mask;
      bm.count++;
      this.nrBlocks++;
    }
  }

  /**
   * Forgets a block; frees its bitmap page when that was the page's last bit. Returns false when it was not
   * recorded (with a warning when no bitmap covers it). Throws EINVAL like add.
   */
  del(pfn: number, order: number): boolean {
    const q = blockIndex(pfn, order);
    let bit = q - this.cacheBase[order];
    if (!(bit >= 0 && bit < BITS)) {
      if (!this.load(order, q, false)) {
        this.log.warn('kho', `bitmap tracker: no bitmap covers block ${hex(pfn * PAGE)} order ${order}; was it preserved?`);
        return false;
      }
      bit = q - this.cacheBase[order];
    }
    const bm = this.cache[order];
    const words = bm.words;
    const i = bit >>> 5;
    const mask = 1 << (bit & 31);
    const word = words[i];
    if ((word & mask) === 0) return false;
    words[i] = word & ~mask;
    this.nrBlocks--;
    if (--bm.count === 0) this.freeBitmap(order, bm);
    return true;
  }

  /** True when the block is recorded. Throws EINVAL like add. */
  has(pfn: number, order: number): boolean {
    const q = blockIndex(pfn, order);
    let bit = q - this.cacheBase[order];
    if (!(bit >= 0 && bit < BITS)) {
      if (!this.load(order, q, false)) return false;
      bit = q - this.cacheBase[order];
    }
    return (this.cache[order].words[bit >>> 5] & (1 << (bit & 31))) !== 0;
  }

  /** Visits every block: orders ascending, addresses ascending; a visitor returning true stops the walk. */
  walk(visit: BlockVisitor): void {
    for (let order = 0; order < NR_ORDERS; order++) {
      for (const bm of this.sorted(order)) {
        if (walkBitmap(bm.words, bm.index * BITS * POW2[order], toOrder(order), visit)) return;
      }
    }
  }

  /** The bitmaps as a map names them, in walk order. */
  refs(): BitmapRef[] {
    const out: BitmapRef[] = [];
    for (let order = 0; order < NR_ORDERS; order++) {
      for (const bm of this.sorted(order)) out.push({ order: toOrder(order), physStart: bitmapPhysStart(order, bm.index), bitmap: bm.phys });
    }
    return out;
  }

  /** Frees every bitmap page. */
  clear(): void {
    for (let order = 0; order < NR_ORDERS; order++) {
      for (const bm of this.maps[order].values()) this.buddy.freePages((bm.phys / PAGE) as Pfn, ORDER_0);
      this.maps[order].clear();
    }
    this.cacheBase.fill(NaN);
    this.cache.fill(NO_BITMAP);
    this.nrBitmaps = 0;
    this.nrBlocks = 0;
  }

  private sorted(order: number): Bitmap[] {
    return [...this.maps[order].values()].sort((a, b) => a.index - b.index);
  }

  /**
   * Makes the bitmap covering block index `q` of `order` the cached bitmap of that order. Returns false (the
   * cache unchanged) when there is none and `alloc` is false; with `alloc`, a missing bitmap gets a zeroed page.
   */
  private load(order: number, q: number, alloc: boolean): boolean {
    const index = Math.floor(q / BITS);
    let bm = this.maps[order].get(index);
    if (bm === undefined) {
      if (!alloc) return false;
      const pfn = this.buddy.allocPages(0); // ENOMEM: nothing changed yet
      const page = this.ram.page(pfn);
      const words = new Int32Array(page.buffer, page.byteOffset, WORDS);
      words.fill(0);
      bm = { index, phys: pfn * PAGE, words, count: 0 };
      this.maps[order].set(index, bm);
      this.nrBitmaps++;
    }
    this.cache[order] = bm;
    this.cacheBase[order] = index * BITS;
    return true;
  }

  private freeBitmap(order: number, bm: Bitmap): void {
    this.maps[order].delete(bm.index);
    this.nrBitmaps--;
    if (this.cache[order] === bm) {
      this.cache[order] = NO_BITMAP;
      this.cacheBase[order] = NaN;
    }
    this.buddy.freePages((bm.phys / PAGE) as Pfn, ORDER_0);
  }
}

/**
 * The preserved-memory tracker of the kho-v1 designs (docs/abi/kho.md section 7): a {@link BitmapSet} in
 * ordinary memory, and a serialised form chosen by the subclass.
 *
 * Nothing reaches the next kernel until {@link serialize}, which writes the map (a chunk list or a KHO array)
 * into fresh pages and returns its phys; neither the map nor the bitmaps are preserved: the next kernel reads
 * them while it allocates from scratch only. After `serialize` the tracker is final, as upstream's `finalized`
 * state: add and del throw EBUSY until {@link cancelSerialize} frees the map.
 *
 * Walk order (outgoing and incoming): orders ascending, bitmaps by ascending address within an order, blocks by
 * ascending address within a bitmap.
 */
export abstract class BitmapTracker implements Tracker {
  /** The root compatible of the generation this serialisation belongs to (for messages). */
  abstract readonly compatible: string;
  abstract readonly kind: string;
  abstract readonly defaultGeneration: string;
  /** Bitmaps exist per order 0..MAX_PAGE_ORDER only: a larger block cannot be recorded (KHO says E2BIG). */
  readonly maxOrder = MAX_PAGE_ORDER;
  /** Prefix of the incoming reader's messages ('bitmap chunks', 'bitmap array'). */
  protected abstract readonly label: string;

  private readonly bits: BitmapSet;
  private form: SerialisedForm | undefined;

  constructor(
    protected readonly ram: PhysicalMemory,
    protected readonly memmap: Memmap,
    protected readonly buddy: BuddyAllocator,
    log: KernelLog,
  ) {
    this.bits = new BitmapSet(ram, buddy, log);
  }

  /** Writes the serialised form of `bitmaps` (in walk order) into fresh pages. Throws ENOMEM having freed them. */
  protected abstract writeForm(bitmaps: readonly BitmapRef[]): SerialisedForm;

  /** Reads and checks the structure of a serialised map at `mapPhys` (hostile). Throws EINVAL naming what is wrong. */
  protected abstract parseForm(mapPhys: number): ParsedBitmapMap;

  /** The value for `preserved-memory-map`: 0 until {@link serialize} (nothing is in RAM for the next kernel yet). */
  init(): PhysAddr {
    return (this.form?.map ?? 0) as PhysAddr; // pages writeForm allocated
  }

  /**
   * Records the block of 2^order pages at `pfn` (idempotent). Throws EINVAL for a bad order or a misaligned pfn,
   * EBUSY after serialize, and ENOMEM (nothing changed) when a new bitmap page cannot be allocated.
   */
  add(pfn: Pfn, order: Order): void {
    if (this.form !== undefined) throw this.busy('add', pfn, order);
    this.bits.add(pfn, order);
  }

  /**
   * Forgets a block; frees its bitmap page when that was the page's last bit. Returns false when it was not
   * recorded (with a warning when no bitmap covers it). Throws EINVAL like add, and EBUSY after serialize.
   */
  del(pfn: Pfn, order: Order): boolean {
    if (this.form !== undefined) throw this.busy('del', pfn, order);
    return this.bits.del(pfn, order);
  }

  /** True when the block is recorded. Throws EINVAL like add. */
  has(pfn: Pfn, order: Order): boolean {
    return this.bits.has(pfn, order);
  }

  walk(visit: BlockVisitor): void {
    this.bits.walk(visit);
  }

  /**
   * Writes the map for the next kernel (once: until {@link cancelSerialize}, later calls return the same map)
   * and returns its phys, the value of `preserved-memory-map`. Throws ENOMEM having freed what it allocated.
   */
  serialize(): PhysAddr {
    if (this.form === undefined) this.form = this.writeForm(this.bits.refs());
    return this.form.map as PhysAddr;
  }

  /** Frees what {@link serialize} built (the update was cancelled); add and del work again. */
  cancelSerialize(): void {
    const form = this.form;
    if (form === undefined) return;
    this.form = undefined;
    form.free();
  }

  /** True between {@link serialize} and {@link cancelSerialize}. */
  get serialized(): boolean {
    return this.form !== undefined;
  }

  stats(): TrackerStats {
    return { blocks: this.bits.blocks, metadataPages: this.bits.pages + (this.form?.nrPages ?? 0) };
  }

  /**
   * Before serialize: the bitmap pages in walk order. After: every page of the map as the next kernel reads it
   * (see {@link incomingMetadataPfns}), bitmaps included.
   */
  metadataPfns(): Pfn[] {
    if (this.form !== undefined) return [...this.parseForm(this.form.map).pfns];
    return this.bits.refs().map((b) => (b.bitmap / PAGE) as Pfn); // pages this tracker took from the buddy allocator
  }

  /** The pages of the previous kernel's map at `mapPhys`, in the order {@link metadataPfns} lists a serialised map's. */
  incomingMetadataPfns(mapPhys: number): Pfn[] {
    return [...this.parseForm(mapPhys).pfns];
  }

  /**
   * Visits every block of the previous kernel's map at `mapPhys`, in walk order, after checking all of it: the
   * structure (see the subclass), every set bit (a block inside RAM) and the count against `opts.maxBlocks`
   * (E2BIG). Throws KernelError naming the problem before visiting anything.
   */
  walkIncoming(mapPhys: number, visit: (pfn: Pfn, order: Order) => void, opts: IncomingWalkOptions = {}): void {
    const { bitmaps } = this.parseForm(mapPhys);
    const blocks = checkBitmapBlocks(this.ram, bitmaps, this.label);
    if (opts.maxBlocks !== undefined && blocks > opts.maxBlocks) throw tooManyBlocks(this.label, blocks, opts.maxBlocks);
    visitBitmapBlocks(this.ram, bitmaps, visit);
  }

  /** Frees the map, if any, and every bitmap page (the tracker must no longer be needed by anyone). */
  destroy(): void {
    this.cancelSerialize();
    this.bits.clear();
  }

  private busy(what: string, pfn: number, order: number): KernelError {
    return new KernelError(
      Errno.EBUSY,
      `bitmap tracker: ${what} of block ${hex(pfn * PAGE)} order ${order} after serialize (the ${this.compatible} map is final until the update is cancelled)`,
    );
  }
}

/** Block index (pfn / 2^order) of a block, validated. Throws EINVAL naming what is wrong. */
function blockIndex(pfn: number, order: number): number {
  if (order >= 0 && order <= MAX_ORDER && (order | 0) === order) {
    const q = pfn / POW2[order];
    if (q >= 0 && q < POW2[PFN_LIMIT_LOG2 - order] && Math.floor(q) === q) return q;
  }
  return refuseBlock(pfn, order);
}

/** The EINVAL for a block blockIndex refused (kept out of blockIndex, which stays small enough to inline). */
function refuseBlock(pfn: number, order: number): never {
  if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
    throw new KernelError(Errno.EINVAL, `bitmap tracker: order ${order} is out of range (wanted 0..${MAX_PAGE_ORDER})`);
  }
  if (!Number.isInteger(pfn) || pfn < 0 || pfn % 2 ** order !== 0) {
    throw new KernelError(Errno.EINVAL, `bitmap tracker: pfn ${describePfn(pfn)} is not aligned to order ${order}`);
  }
  throw new KernelError(Errno.EINVAL, `bitmap tracker: pfn ${describePfn(pfn)} is beyond the 64-bit physical address space`);
}

/** Visits the set bits of one bitmap, a word at a time. Returns true when a visitor did. */
function walkBitmap(words: Int32Array, basePfn: number, order: Order, visit: BlockVisitor): boolean {
  const step = POW2[order];
  for (let w = 0; w < WORDS; w++) {
    let bits = words[w];
    if (bits === 0) continue;
    const wordBase = basePfn + w * 32 * step;
    do {
      const b = 31 - Math.clz32(bits & -bits);
      bits &= bits - 1;
      // A bit of a checked bitmap (this tracker's, or one checkBitmapBlocks accepted): the cast is free per bit.
      if (visit((wordBase + b * step) as Pfn, order) === true) return true;
    } while (bits !== 0);
  }
  return false;
}

/** The words of a bitmap page of RAM, or undefined for a page never written (all zero). */
function bitmapWords(ram: PhysicalMemory, phys: number): Int32Array | undefined {
  const page = ram.pageIfPresent((phys / PAGE) as Pfn);
  return page ? new Int32Array(page.buffer, page.byteOffset, WORDS) : undefined;
}

function popcount32(v: number): number {
  // No Math.imul: it is slow inside jest's VM context.
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  v = (v + (v >>> 4)) & 0x0f0f0f0f;
  v += v >>> 8;
  v += v >>> 16;
  return v & 0x3f;
}

/**
 * Checks that every set bit of `bitmaps` (checked by a map parser: orders 0..10, aligned `physStart`, bitmap
 * pages in RAM) is a block inside RAM, a whole bitmap or word at a time where RAM allows and bit by bit where it
 * ends. Returns the number of blocks; throws KernelError(EINVAL) `<label>: block … is outside RAM`.
 */
export function checkBitmapBlocks(ram: PhysicalMemory, bitmaps: readonly BitmapRef[], label: string): number {
  let count = 0;
  for (const b of bitmaps) {
    const words = bitmapWords(ram, b.bitmap);
    if (!words) continue;
    const step = POW2[b.order];
    const blockBytes = PAGE * step;
    const basePfn = Number(b.physStart >> 12n); // below 2^52: exact
    const whole = ram.isRam(basePfn * PAGE, BITS * blockBytes);
    for (let w = 0; w < WORDS; w++) {
      let bits = words[w];
      if (bits === 0) continue;
      const wordBase = basePfn + w * 32 * step;
      if (whole || ram.isRam(wordBase * PAGE, 32 * blockBytes)) {
        count += popcount32(bits);
        continue;
      }
      do {
        const pfn = wordBase + (31 - Math.clz32(bits & -bits)) * step;
        bits &= bits - 1;
        if (!ram.spansRam(pfn * PAGE, blockBytes)) {
          throw new KernelError(Errno.EINVAL, `${label}: block ${hex(BigInt(pfn) * BigInt(PAGE))} order ${b.order} (bitmap ${hex(b.bitmap)}) is outside RAM`);
        }
        count++;
      } while (bits !== 0);
    }
  }
  return count;
}

/** Visits every set bit of `bitmaps` (already checked), in order. */
export function visitBitmapBlocks(ram: PhysicalMemory, bitmaps: readonly BitmapRef[], visit: (pfn: Pfn, order: Order) => void): void {
  for (const b of bitmaps) {
    const words = bitmapWords(ram, b.bitmap);
    if (words) walkBitmap(words, Number(b.physStart >> 12n), b.order, (pfn, order) => void visit(pfn, order));
  }
}

/**
 * Checks the set bits of a parsed map (see {@link checkBitmapBlocks}) and reads its blocks into arrays, in walk order;
 * with `opts.crc` the map's pages are checked against it first (EINVAL), with `opts.maxBlocks` a larger map is
 * refused (E2BIG) before any array is made.
 */
export function readIncomingBitmaps(ram: PhysicalMemory, parsed: ParsedBitmapMap, label: string, opts: ReadIncomingOptions = {}): IncomingBitmapBlocks {
  if (opts.crc !== undefined) checkMapCrc(ram, parsed.pfns, opts.crc);
  const count = checkBitmapBlocks(ram, parsed.bitmaps, label);
  if (opts.maxBlocks !== undefined && count > opts.maxBlocks) throw tooManyBlocks(label, count, opts.maxBlocks);
  const pfns = new Array<Pfn>(count).fill(0 as Pfn);
  const orders = new Array<Order>(count).fill(ORDER_0);
  let i = 0;
  visitBitmapBlocks(ram, parsed.bitmaps, (pfn, order) => {
    pfns[i] = pfn;
    orders[i++] = order;
  });
  return { count, pfns, orders, metadataPages: parsed.pfns.length };
}

/**
 * The bookkeeping of a map parser: every page it reaches (checked: inside RAM, page-aligned, never reached
 * twice) in checksum order, and every bitmap (checked: `phys_start` aligned, no second bitmap of an order at the
 * same `phys_start`). Messages start with the parser's label.
 */
export class BitmapMapChecker {
  readonly pfns: Pfn[] = [];
  readonly bitmaps: BitmapRef[] = [];
  private readonly pages = new Set<number>();
  /** Pages that hold small records (several per page): they may be reached many times, but never as a whole page. */
  private readonly recordPages = new Set<number>();
  private readonly starts: Array<Set<bigint>> = Array.from({ length: NR_ORDERS }, () => new Set());

  constructor(
    readonly ram: PhysicalMemory,
    readonly label: string,
  ) {}

  fail(message: string): KernelError {
    return new KernelError(Errno.EINVAL, `${this.label}: ${message}`);
  }

  /**
   * Checks a pointer to a whole page of the map (`what` names it, `via` says where it was found) and records the
   * page. Returns it as a number.
   */
  page(ptr: bigint, what: string, via?: string): number {
    const name = (p: number | bigint): string => `${what} ${hex(p)}${via ? ` (${via})` : ''}`;
    if (ptr >= TWO_53) throw this.fail(`${name(ptr)} is outside RAM`);
    const p = Number(ptr);
    if (p % PAGE !== 0) throw this.fail(`${name(p)} is not page-aligned`);
    if (!this.ram.isRam(p, PAGE)) throw this.fail(`${name(p)} is outside RAM`);
    if (this.pages.has(p) || this.recordPages.has(p)) throw this.fail(`${name(p)} is reached twice (a cycle or a shared page)`);
    this.pages.add(p);
    this.pfns.push((p / PAGE) as Pfn); // checked above: page-aligned RAM
    return p;
  }

  /**
   * Checks a pointer to a `size`-byte record (8-byte aligned, inside one page of RAM, in no whole page of the
   * map) and records its page the first time. Returns it as a number. Reaching one record twice is the caller's
   * to refuse.
   */
  record(ptr: bigint, size: number, what: string, via?: string): number {
    const name = (p: number | bigint): string => `${what} ${hex(p)}${via ? ` (${via})` : ''}`;
    if (ptr >= TWO_53) throw this.fail(`${name(ptr)} is outside RAM`);
    const p = Number(ptr);
    if (p % 8 !== 0) throw this.fail(`${name(p)} is not 8-byte aligned`);
    if (!this.ram.isRam(p, size)) throw this.fail(`${name(p)} is outside RAM`);
    const page = p - (p % PAGE);
    if (p + size > page + PAGE) throw this.fail(`${name(p)} crosses a page boundary`);
    if (this.pages.has(page)) throw this.fail(`${name(p)} lies in page ${hex(page)}, which the map uses as a whole page`);
    if (!this.recordPages.has(page)) {
      this.recordPages.add(page);
      this.pfns.push((page / PAGE) as Pfn); // the page of a record checked above to lie in RAM
    }
    return p;
  }

  /** Checks a bitmap of order `order` (0..10, checked by the caller) named by `where` and records it. */
  bitmap(order: Order, physStart: bigint, bitmap: bigint, where: string): void {
    const log2 = bitmapCoverageLog2(order);
    if ((physStart & ((1n << BigInt(log2)) - 1n)) !== 0n) {
      throw this.fail(
        `${where}: phys_start ${hex(physStart)} is not a multiple of ${hex(2 ** log2)} (the ${formatBytes(2 ** log2)} a bitmap of order ${order} covers)`,
      );
    }
    const starts = this.starts[order];
    if (starts.has(physStart)) throw this.fail(`${where}: a second bitmap of order ${order} at phys_start ${hex(physStart)}`);
    starts.add(physStart);
    const phys = this.page(bitmap, `${where}: bitmap`);
    this.bitmaps.push({ order, physStart, bitmap: phys });
  }

  /** The parsed map. */
  result(): ParsedBitmapMap {
    return { bitmaps: this.bitmaps, pfns: this.pfns };
  }
}
