import { injectable } from 'tsyringe';
import { Errno, KernelBug, KernelError, KernelLog, hex } from '@kho/kernel';
import { BuddyAllocator, LITTLE_ENDIAN_HOST, PAGE_SIZE, PAGE_WORDS, PhysicalMemory, RAM_CHUNK_PAGES, describePfn, ORDER_0, type Order, type Pfn, type PhysAddr } from '@kho/physmem';
import { checkMapCrc, tooManyBlocks, type BlockVisitor, type IncomingWalkOptions, type ReadIncomingOptions, type Tracker, type TrackerStats } from '@kho/kho-core';
import { KHO_BITMAP_BITS, KHO_BITMAP_SIZE_LOG2, KHO_ORDER_0_LOG2, KHO_RADIX_MAX_ORDER, KHO_ROOT_USABLE_ENTRIES, KHO_TABLE_ENTRIES, KHO_TABLE_SIZE_LOG2, KHO_TREE_MAX_DEPTH } from './abi';
import { decodeKey, keyOrder } from './key';

const ROOT_LEVEL = KHO_TREE_MAX_DEPTH - 1;
/** kho-v4: the generation of Linux 7.2, whose kho_block records LUO's luo-v5 handover uses. */
export const RADIX_DEFAULT_GENERATION = 'v4';
const WORDS_PER_LEAF = KHO_BITMAP_BITS / 32;
const TWO_32 = 2 ** 32;
const POW2: number[] = Array.from({ length: 64 }, (_, i) => 2 ** i);
/** The cache's "no leaf": `key - NaN` is NaN, which fails every range test. */
const NO_LEAF = new Int32Array(0);
/** Entries of the leaf cache (a power of two): as many leaves as a 1 TiB span of order-0 pages has. */
const LEAF_CACHE = 8192;

if (!LITTLE_ENDIAN_HOST) throw new KernelBug('radix tree: node pages are read as host-order words, which needs a little-endian host');

/** First word of page `pfn` in its chunk's words (PhysicalMemory.pageWords). */
function pageBase(pfn: number): number {
  return (pfn & (RAM_CHUNK_PAGES - 1)) * PAGE_WORDS; // a pfn is a non-negative integer: `&` is exact, `%` slow
}

/** The u64 at word `at` of `w` (little-endian words), as a number: exact below 2^53, at least 2^53 above. */
function u64At(w: Int32Array, at: number): number {
  return (w[at + 1] >>> 0) * TWO_32 + (w[at] >>> 0);
}
const NR_ORDERS = KHO_RADIX_MAX_ORDER + 1;
/** Keys covered by one table at level L (index L): 2^(9L + 15). */
const TABLE_SPAN: number[] = Array.from({ length: KHO_TREE_MAX_DEPTH }, (_, level) => 2 ** (level * KHO_TABLE_SIZE_LOG2 + KHO_BITMAP_SIZE_LOG2));

/**
 * The kho-v2 radix tree, live in simulated RAM: every node is a page from the buddy allocator, edited in place,
 * so a kexec at any moment hands the next kernel exactly what has been recorded. Nothing is serialised.
 *
 * Keys are integers below 2^53, exact as numbers. The hot paths keep them as numbers and avoid float modulo:
 * a descent splits the key into its high 21 and low 32 bits, so every table index is 32-bit integer arithmetic.
 */
@injectable()
export class RadixTracker implements Tracker {
  readonly kind = 'radix';
  readonly maxOrder = KHO_RADIX_MAX_ORDER;
  readonly defaultGeneration = RADIX_DEFAULT_GENERATION;
  private root = 0;
  private nodes = 0;
  private blocks = 0;
  // Per order, the leaf reached by the last lookup of that order: the first key it covers, the words of its chunk
  // and where the leaf starts in them (PhysicalMemory never replaces a chunk's backing, so the words stay the
  // page's bytes). Runs of adds, dels and lookups that are dense within each order, however the orders
  // interleave, set their bits through it and skip the descent. Valid while the leaf is in the tree: destroy()
  // and reclaim() free leaves, and both empty the cache.
  private readonly leafKey0 = new Float64Array(NR_ORDERS).fill(NaN);
  private readonly leafWords: Int32Array[] = Array.from({ length: NR_ORDERS }, () => NO_LEAF);
  private readonly leafBase = new Int32Array(NR_ORDERS);
  // A direct-mapped cache of leaves by leaf number (key / 32768, unique across orders), consulted when the
  // per-order leaf misses: scattered blocks (a sparse workload revisits each of thousands of leaves) reach their
  // leaf in a few loads instead of a descent. Entries name leaves in the tree: reclaim() drops the entry of the
  // leaf it frees, destroy() all of them.
  private readonly lcLeaf = new Float64Array(LEAF_CACHE).fill(NaN);
  private readonly lcBase = new Int32Array(LEAF_CACHE);
  private readonly lcWords: Int32Array[] = Array.from({ length: LEAF_CACHE }, () => NO_LEAF);
  // The tables met by the last descent, by level 1..4: the first key each covers and its phys. A descent starts
  // at the lowest one that covers its key, so scattered blocks skip the levels they share. Valid while those
  // tables are in the tree: destroy() and reclaim() free tables and forget them, as does a failed descent.
  private readonly tableKey0 = new Float64Array(ROOT_LEVEL).fill(NaN);
  private readonly tablePhys = new Float64Array(ROOT_LEVEL);

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
  ) {}

  /** Allocates the root table (once). Returns its phys, the value of `preserved-memory-map`. Throws ENOMEM. */
  init(): PhysAddr {
    if (this.root === 0) this.root = this.allocNode();
    return this.root as PhysAddr; // a page the buddy allocator gave allocNode
  }

  /** Phys of the root table (0 before init). */
  get rootPhys(): number {
    return this.root;
  }

  /**
   * Records the block of 2^order pages at `pfn` (idempotent). Throws EINVAL for a bad order or a misaligned pfn,
   * and ENOMEM (the tree unchanged) when a node cannot be allocated.
   */
  add(pfn: Pfn, order: Order): void {
    const key = blockKey(pfn, order);
    let bit = key - this.leafKey0[order];
    if (!(bit >= 0 && bit < KHO_BITMAP_BITS)) {
      this.loadLeaf(key, order, true);
      bit = key - this.leafKey0[order];
    }
    const words = this.leafWords[order];
    const i = this.leafBase[order] + (bit >>> 5);
    const mask = 1 << (bit & 31);
    const word = words[i];
    if ((word & mask) === 0) {
      words[i] = word | mask;
      this.blocks++;
    }
  }

  /** Forgets a block. Returns false when it was not recorded (warning when its path is missing). Throws EINVAL like add. */
  del(pfn: Pfn, order: Order): boolean {
    const key = blockKey(pfn, order);
    let bit = key - this.leafKey0[order];
    if (!(bit >= 0 && bit < KHO_BITMAP_BITS)) {
      if (!this.loadLeaf(key, order, false)) {
        this.log.warn('kho', `radix tree: no path for block ${hex(pfn * PAGE_SIZE)} order ${order}; was it preserved?`);
        return false;
      }
      bit = key - this.leafKey0[order];
    }
    const words = this.leafWords[order];
    const base = this.leafBase[order];
    const i = base + (bit >>> 5);
    const mask = 1 << (bit & 31);
    const word = words[i];
    if ((word & mask) === 0) return false;
    words[i] = word & ~mask;
    this.blocks--;
    if (words[i] === 0 && isZero(words, base, base + WORDS_PER_LEAF)) this.reclaim(key);
    return true;
  }

  /** True when the block is recorded. Throws EINVAL like add. */
  has(pfn: Pfn, order: Order): boolean {
    const key = blockKey(pfn, order);
    let bit = key - this.leafKey0[order];
    if (!(bit >= 0 && bit < KHO_BITMAP_BITS)) {
      if (!this.loadLeaf(key, order, false)) return false;
      bit = key - this.leafKey0[order];
    }
    return (this.leafWords[order][this.leafBase[order] + (bit >>> 5)] & (1 << (bit & 31))) !== 0;
  }

  walk(visit: BlockVisitor): void {
    if (this.root !== 0) walkTree(this.ram, this.root, visit);
  }

  /** The radix tree is live in memory: serialising is returning its root. */
  serialize(): PhysAddr {
    return this.init();
  }

  cancelSerialize(): void {
    // nothing was built by serialize
  }

  stats(): TrackerStats {
    return { blocks: this.blocks, metadataPages: this.nodes };
  }

  /** The pfn of every node page (tables and leaves), depth first: parents before children, ascending index. */
  metadataPfns(): Pfn[] {
    return this.root === 0 ? [] : treeNodePfns(this.ram, this.root);
  }

  /**
   * The node pages of the previous kernel's tree at `mapPhys`, in metadataPfns' order, its pointers checked but
   * not its leaves' bits (see {@link incomingTreeNodePfns}).
   */
  incomingMetadataPfns(mapPhys: number): Pfn[] {
    return incomingTreeNodePfns(this.ram, mapPhys);
  }

  /**
   * Visits every block of the previous kernel's tree at `mapPhys`, in walk order, after checking the whole tree
   * (see {@link validateIncomingTree}, whose EINVAL it throws before visiting anything) and its block count
   * against `opts.maxBlocks` (E2BIG).
   */
  walkIncoming(mapPhys: number, visit: (pfn: Pfn, order: Order) => void, opts: IncomingWalkOptions = {}): void {
    const { blocks } = validateIncomingTree(this.ram, mapPhys);
    if (opts.maxBlocks !== undefined && blocks > opts.maxBlocks) throw tooManyBlocks('radix tree', blocks, opts.maxBlocks);
    walkTree(this.ram, mapPhys, (pfn, order) => void visit(pfn, order));
  }

  /** Frees every node (the tree must no longer be needed by anyone). */
  destroy(): void {
    this.leafKey0.fill(NaN);
    this.leafWords.fill(NO_LEAF);
    this.tableKey0.fill(NaN);
    this.lcLeaf.fill(NaN);
    this.lcWords.fill(NO_LEAF);
    if (this.root !== 0) this.freeTable(this.root, ROOT_LEVEL);
    this.root = 0;
    this.blocks = 0;
  }

  private allocNode(): number {
    const pfn = this.buddy.allocPages(0);
    const phys = pfn * PAGE_SIZE;
    this.ram.fill(phys, PAGE_SIZE, 0);
    this.nodes++;
    return phys;
  }

  private freeNode(phys: number): void {
    this.buddy.freePages((phys / PAGE_SIZE) as Pfn, ORDER_0);
    this.nodes--;
  }

  /**
   * Makes the leaf holding `key`'s bit the cached leaf of `order` (the key's order). Returns false (that cache
   * unchanged) when the path is missing and `alloc` is false. With `alloc`, a missing path is built (buildPath).
   */
  private loadLeaf(key: number, order: number, alloc: boolean): boolean {
    if (this.root === 0) {
      if (!alloc) return false;
      this.init();
    }
    const leaf = Math.floor(key / KHO_BITMAP_BITS);
    const slot = leaf & (LEAF_CACHE - 1);
    if (this.lcLeaf[slot] === leaf) {
      this.leafWords[order] = this.lcWords[slot];
      this.leafBase[order] = this.lcBase[slot];
      this.leafKey0[order] = leaf * KHO_BITMAP_BITS;
      return true;
    }
    // Then a walk of an existing path and nothing else: small enough to be inlined into add and has.
    if (this.findLeaf(key, order)) return true;
    if (!alloc) return false;
    this.buildPath(key, order);
    return true;
  }

  /** The lowest table of the last descent that covers `key` (level 1..4), or the root (level 5). */
  private startLevel(key: number): number {
    let level = 1;
    while (level < ROOT_LEVEL && !(key - this.tableKey0[level] >= 0 && key - this.tableKey0[level] < TABLE_SPAN[level])) level++;
    return level;
  }

  /** Descends to the leaf of `key` without allocating; caches it for `order` and returns true, or false at a gap. */
  private findLeaf(key: number, order: number): boolean {
    const hi = Math.floor(key / TWO_32); // below 2^21
    const lo = key >>> 0;
    let level = this.startLevel(key);
    let node = level === ROOT_LEVEL ? this.root : this.tablePhys[level];
    for (; level >= 1; level--) {
      // Tables are read through their chunk's words: no view per node, no access check per entry (every node is
      // a page this tracker took from the buddy allocator).
      const table = node / PAGE_SIZE;
      const child = u64At(this.ram.pageWords(table), pageBase(table) + tableIndexOf(hi, lo, level) * 2);
      if (child === 0) return false;
      node = child;
      if (level > 1) {
        this.tableKey0[level - 1] = Math.floor(key / TABLE_SPAN[level - 1]) * TABLE_SPAN[level - 1];
        this.tablePhys[level - 1] = node;
      }
    }
    this.cacheLeaf(node, key, lo, order);
    return true;
  }

  private cacheLeaf(node: number, key: number, lo: number, order: number): void {
    const page = node / PAGE_SIZE;
    const words = this.ram.pageWords(page, true);
    const base = pageBase(page);
    const key0 = key - (lo & (KHO_BITMAP_BITS - 1));
    this.leafWords[order] = words;
    this.leafBase[order] = base;
    this.leafKey0[order] = key0;
    const leaf = key0 / KHO_BITMAP_BITS;
    const slot = leaf & (LEAF_CACHE - 1);
    this.lcLeaf[slot] = leaf;
    this.lcWords[slot] = words;
    this.lcBase[slot] = base;
  }

  /**
   * Builds the missing part of `key`'s path and caches its leaf for `order`. On ENOMEM the pages this call
   * allocated are freed and the slot where the new branch began is cleared, so the tree is exactly as before.
   */
  private buildPath(key: number, order: number): void {
    const hi = Math.floor(key / TWO_32);
    const lo = key >>> 0;
    let level = this.startLevel(key);
    let node = level === ROOT_LEVEL ? this.root : this.tablePhys[level];
    let branchSlot = 0;
    let fresh: number[] | undefined;
    for (; level >= 1; level--) {
      const index = tableIndexOf(hi, lo, level);
      const table = node / PAGE_SIZE;
      const at = pageBase(table) + index * 2;
      let child = u64At(this.ram.pageWords(table), at);
      if (child === 0) {
        try {
          child = this.allocNode();
        } catch (e) {
          // The tables this call cached may be among the pages it frees.
          this.tableKey0.fill(NaN);
          if (fresh) for (const p of fresh) this.freeNode(p);
          if (branchSlot !== 0) this.ram.writeU64(branchSlot, 0);
          throw e;
        }
        if (!fresh) {
          fresh = [];
          branchSlot = node + index * 8;
        }
        fresh.push(child);
        const words = this.ram.pageWords(table, true);
        words[at] = child; // the low 32 bits (ToInt32)
        words[at + 1] = Math.floor(child / TWO_32);
      }
      node = child;
      if (level > 1) {
        this.tableKey0[level - 1] = Math.floor(key / TABLE_SPAN[level - 1]) * TABLE_SPAN[level - 1];
        this.tablePhys[level - 1] = node;
      }
    }
    this.cacheLeaf(node, key, lo, order);
  }

  /**
   * Frees the now-empty leaf holding `key` and every table above it that this leaves empty (never the root),
   * clearing each parent's slot, so a tree whose blocks are all forgotten costs its root page only. Upstream keeps
   * empty nodes; the layout in memory is the same either way. The lookup caches are reset: they may name a freed
   * page.
   */
  private reclaim(key: number): void {
    const hi = Math.floor(key / TWO_32);
    const lo = key >>> 0;
    const slots: number[] = []; // slots[level] = address of the entry at `level` that leads down
    const nodes: number[] = []; // nodes[level - 1] = the child that entry points at
    let node = this.root;
    for (let level = ROOT_LEVEL; level >= 1; level--) {
      const slot = node + tableIndexOf(hi, lo, level) * 8;
      slots[level] = slot;
      node = this.ram.readU64(slot);
      if (node === 0) return; // nothing to reclaim (cannot happen right after a del)
      nodes[level - 1] = node;
    }
    this.leafKey0.fill(NaN);
    this.leafWords.fill(NO_LEAF);
    this.tableKey0.fill(NaN);
    const leaf = Math.floor(key / KHO_BITMAP_BITS);
    if (this.lcLeaf[leaf & (LEAF_CACHE - 1)] === leaf) {
      this.lcLeaf[leaf & (LEAF_CACHE - 1)] = NaN;
      this.lcWords[leaf & (LEAF_CACHE - 1)] = NO_LEAF;
    }
    for (let level = 1; level <= ROOT_LEVEL; level++) {
      // the node below `level`'s entry is empty: unlink it and free it
      this.ram.writeU64(slots[level], 0);
      this.freeNode(nodes[level - 1]);
      if (level === ROOT_LEVEL) break;
      const parent = nodes[level];
      if (!this.tableIsEmpty(parent)) break;
    }
  }

  private tableIsEmpty(table: number): boolean {
    const base = pageBase(table / PAGE_SIZE);
    return isZero(this.ram.pageWords(table / PAGE_SIZE), base, base + PAGE_WORDS);
  }

  private freeTable(table: number, level: number): void {
    const words = this.ram.pageWords(table / PAGE_SIZE);
    const base = pageBase(table / PAGE_SIZE);
    for (let i = 0; i < KHO_TABLE_ENTRIES; i++) {
      const child = u64At(words, base + i * 2);
      if (child === 0) continue;
      if (level === 1) this.freeNode(child);
      else this.freeTable(child, level - 1);
    }
    this.freeNode(table);
  }
}

/**
 * Visits the blocks of the tree rooted at `root` depth-first in ascending index order (higher orders first,
 * ascending addresses within an order) until a visitor returns true. Returns true when one did. The tree is
 * trusted: it is this kernel's own, or an incoming one that validateIncomingTree accepted.
 */
function walkTree(ram: PhysicalMemory, root: number, visit: BlockVisitor): boolean {
  return walkTable(ram, root, ROOT_LEVEL, 0, visit);
}

function walkTable(ram: PhysicalMemory, table: number, level: number, keyPrefix: number, visit: BlockVisitor): boolean {
  const entries = level === ROOT_LEVEL ? KHO_ROOT_USABLE_ENTRIES : KHO_TABLE_ENTRIES;
  const words = ram.pageWords(table / PAGE_SIZE);
  const base = pageBase(table / PAGE_SIZE);
  for (let i = 0; i < entries; i++) {
    // Two words at once: an empty entry costs one test.
    if ((words[base + 2 * i] | words[base + 2 * i + 1]) === 0) continue;
    const child = u64At(words, base + 2 * i);
    const prefix = keyPrefix * KHO_TABLE_ENTRIES + i;
    const stop = level === 1 ? walkLeaf(ram, child, prefix, visit) : walkTable(ram, child, level - 1, prefix, visit);
    if (stop) return true;
  }
  return false;
}

/** Visits the set bits of one leaf a word at a time: empty words cost one load, each set bit one visit. */
function walkLeaf(ram: PhysicalMemory, leaf: number, leafIndex: number, visit: BlockVisitor): boolean {
  const words = ram.pageWords(leaf / PAGE_SIZE);
  const at = pageBase(leaf / PAGE_SIZE);
  const firstKey = leafIndex * KHO_BITMAP_BITS;
  // The tree is trusted (this kernel's, or one validateIncomingTree accepted): its leaves decode to valid blocks,
  // so the brands below are bare casts, free in the per-bit loop.
  const order = keyOrder(firstKey) as Order;
  const base = decodeKey(firstKey)!.pfn;
  const step = POW2[order];
  for (let w = 0; w < WORDS_PER_LEAF; w += 2) {
    // Two words at once: a sparse leaf is mostly empty pairs.
    if ((words[at + w] | words[at + w + 1]) === 0) continue;
    for (let k = w; k < w + 2; k++) {
      let bits = words[at + k];
      if (bits === 0) continue;
      const wordBase = base + k * 32 * step;
      do {
        const b = 31 - Math.clz32(bits & -bits);
        bits &= bits - 1;
        if (visit((wordBase + b * step) as Pfn, order) === true) return true;
      } while (bits !== 0);
    }
  }
  return false;
}

/**
 * Table index at `level` (1..5) of the key hi * 2^32 + lo: (key >> ((level - 1) * 9 + 15)) & 511, in 32-bit
 * integer operations (the level-2 index straddles the two halves).
 */
function tableIndexOf(hi: number, lo: number, level: number): number {
  switch (level) {
    case 1:
      return (lo >>> 15) & 511;
    case 2:
      return ((hi & 1) << 8) | (lo >>> 24);
    case 3:
      return (hi >>> 1) & 511;
    case 4:
      return (hi >>> 10) & 511;
    default:
      return (hi >>> 19) & 511;
  }
}

/**
 * The key of a block, validating it on the way: the quotient pfn / 2^order is computed once, and it is both the
 * alignment test and the key's low part. Throws EINVAL naming what is wrong.
 */
/** Every node page of the tree at `root`, depth first (parents before children, ascending index). The tree is trusted. */
export function treeNodePfns(ram: PhysicalMemory, root: number): Pfn[] {
  // Node addresses are pages this tracker allocated or validateIncomingTree checked (aligned RAM).
  const out: Pfn[] = [];
  const visit = (table: number, level: number): void => {
    out.push((table / PAGE_SIZE) as Pfn);
    const entries = level === ROOT_LEVEL ? KHO_ROOT_USABLE_ENTRIES : KHO_TABLE_ENTRIES;
    for (let i = 0; i < entries; i++) {
      const child = ram.readU64(table + i * 8);
      if (child === 0) continue;
      if (level === 1) out.push((child / PAGE_SIZE) as Pfn);
      else visit(child, level - 1);
    }
  };
  visit(root, ROOT_LEVEL);
  return out;
}

function isZero(words: Int32Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (words[i] !== 0) return false;
  return true;
}

function blockKey(pfn: number, order: number): number {
  if (order >= 0 && order <= KHO_RADIX_MAX_ORDER && (order | 0) === order) {
    const q = pfn / POW2[order];
    if (q >= 0 && q < POW2[KHO_ORDER_0_LOG2 - order] && Math.floor(q) === q) return POW2[KHO_ORDER_0_LOG2 - order] + q;
  }
  return refuseBlock(pfn, order);
}

function refuseBlock(pfn: number, order: number): never {
  if (!Number.isInteger(order) || order < 0 || order > KHO_RADIX_MAX_ORDER) {
    throw new KernelError(Errno.EINVAL, `radix tree: order ${order} is out of range (wanted 0..${KHO_RADIX_MAX_ORDER})`);
  }
  if (!Number.isInteger(pfn) || pfn < 0 || pfn % 2 ** order !== 0) {
    throw new KernelError(Errno.EINVAL, `radix tree: pfn ${describePfn(pfn)} is not aligned to order ${order}`);
  }
  throw new KernelError(Errno.EINVAL, `radix tree: pfn ${describePfn(pfn)} is beyond the 64-bit physical address space`);
}

/** What {@link validateIncomingTree} found. */
export interface IncomingTreeShape {
  /** Blocks recorded. */
  blocks: number;
  /** Tree pages visited (tables and leaves). */
  nodes: number;
}

/**
 * Checks the previous kernel's radix tree rooted at `mapPhys`, treating every byte as hostile: every node
 * pointer must be a page-aligned RAM page reached only once, root entries past 3 must be empty, a set bit must
 * decode to a key with an order in 0..KHO_RADIX_MAX_ORDER (any order: upstream's preserve_pages has no cap) and a block inside RAM. Reads the whole tree and stores
 * nothing per block. Returns its counts; throws KernelError(EINVAL) naming the node and what was wrong.
 */
export function validateIncomingTree(ram: PhysicalMemory, mapPhys: number): IncomingTreeShape {
  let blocks = 0;
  const { nodes } = checkTreeNodes(ram, mapPhys, (leaf, leafIndex) => void (blocks += checkLeaf(ram, leaf, leafIndex)));
  return { blocks, nodes: nodes.length };
}

/**
 * The node pages of the previous kernel's radix tree rooted at `mapPhys` (pfns, depth first: parents before
 * children, ascending index, as {@link treeNodePfns} lists a trusted tree), checking every pointer it follows
 * (page-aligned, inside RAM, reached once) and that root entries past 3 are empty, but not the leaves' bits:
 * what KHO checksums before it walks any block. Throws KernelError(EINVAL) naming the node and what was wrong.
 */
export function incomingTreeNodePfns(ram: PhysicalMemory, mapPhys: number): Pfn[] {
  return checkTreeNodes(ram, mapPhys).nodes;
}

/** Walks the tree's pointers with every check of {@link validateIncomingTree}; `leaf` sees each leaf page. */
function checkTreeNodes(ram: PhysicalMemory, mapPhys: number, leaf?: (phys: number, leafIndex: number) => void): { nodes: Pfn[] } {
  const seen = new Set<number>();
  const nodes: Pfn[] = [];
  const checkNode = (phys: number, what: string): void => {
    if (!Number.isFinite(phys) || phys % PAGE_SIZE !== 0) {
      throw new KernelError(Errno.EINVAL, `radix tree: ${what} ${hexOrInf(phys)} is not page-aligned`);
    }
    if (!ram.isRam(phys, PAGE_SIZE)) throw new KernelError(Errno.EINVAL, `radix tree: ${what} ${hex(phys)} is outside RAM`);
    if (seen.has(phys)) throw new KernelError(Errno.EINVAL, `radix tree: ${what} ${hex(phys)} is reached twice (a cycle or shared node)`);
    seen.add(phys);
    nodes.push((phys / PAGE_SIZE) as Pfn); // checked just above: aligned RAM
  };
  checkNode(mapPhys, 'root');
  for (let i = KHO_ROOT_USABLE_ENTRIES; i < KHO_TABLE_ENTRIES; i++) {
    if (ram.readU64(mapPhys + i * 8) !== 0) {
      throw new KernelError(Errno.EINVAL, `radix tree: root entry ${i} is not empty (keys are below 2^53, so only entries 0..3 are usable)`);
    }
  }
  const visitTable = (table: number, level: number, prefix: number): void => {
    const entries = level === ROOT_LEVEL ? KHO_ROOT_USABLE_ENTRIES : KHO_TABLE_ENTRIES;
    for (let i = 0; i < entries; i++) {
      const child = ram.readU64(table + i * 8);
      if (child === 0) continue;
      const childPrefix = prefix * KHO_TABLE_ENTRIES + i;
      checkNode(child, `level-${level - 1} node (entry ${i} of ${hex(table)})`);
      if (level === 1) leaf?.(child, childPrefix);
      else visitTable(child, level - 1, childPrefix);
    }
  };
  visitTable(mapPhys, ROOT_LEVEL, 0);
  return { nodes };
}

/** Checks the set bits of one incoming leaf (see validateIncomingTree). Returns how many there are. */
function checkLeaf(ram: PhysicalMemory, leaf: number, leafIndex: number): number {
  const page = ram.pageIfPresent((leaf / PAGE_SIZE) as Pfn);
  if (!page) return 0;
  const words = new Int32Array(page.buffer, page.byteOffset, WORDS_PER_LEAF);
  const firstKey = leafIndex * KHO_BITMAP_BITS;
  const order = keyOrder(firstKey === 0 ? 1 : firstKey);
  // A leaf's keys all have one order; when it is valid, blocks are checked against RAM a whole leaf or word at
  // a time, and bit by bit only in a word where RAM ends.
  const valid = firstKey !== 0 && order <= KHO_RADIX_MAX_ORDER;
  const step = POW2[order];
  const base = valid ? decodeKey(firstKey)!.pfn : 0;
  const blockBytes = PAGE_SIZE * step;
  const leafInRam = valid && ram.isRam(base * PAGE_SIZE, KHO_BITMAP_BITS * blockBytes);
  let count = 0;
  for (let w = 0; w < WORDS_PER_LEAF; w++) {
    let bits = words[w];
    if (bits === 0) continue;
    if (!valid) refuseLeaf(leaf, firstKey + w * 32 + 31 - Math.clz32(bits & -bits));
    const wordBase = base + w * 32 * step;
    if (leafInRam || ram.isRam(wordBase * PAGE_SIZE, 32 * blockBytes)) {
      count += popcount32(bits);
      continue;
    }
    do {
      const pfn = wordBase + (31 - Math.clz32(bits & -bits)) * step;
      bits &= bits - 1;
      if (!ram.spansRam(pfn * PAGE_SIZE, blockBytes)) {
        throw new KernelError(Errno.EINVAL, `radix tree: block ${hex(pfn * PAGE_SIZE)} order ${order} (leaf ${hex(leaf)}) is outside RAM`);
      }
      count++;
    } while (bits !== 0);
  }
  return count;
}

function popcount32(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) | 0;
}

/** Blocks found in an incoming tree, in walk order. */
export interface IncomingBlocks {
  count: number;
  pfns: Pfn[];
  orders: Order[];
  /** Tree pages visited (tables and leaves). */
  nodes: number;
}

/**
 * Reads the previous kernel's radix tree rooted at `mapPhys` into arrays, in walk order. The whole tree is
 * checked first ({@link validateIncomingTree}): throws its KernelError(EINVAL) before returning anything; with
 * `opts.crc` its node pages are checked against that checksum before that (EINVAL), and with `opts.maxBlocks`
 * a tree of more blocks is refused (E2BIG) before any array is made.
 */
export function readIncomingTree(ram: PhysicalMemory, mapPhys: number, opts: ReadIncomingOptions = {}): IncomingBlocks {
  if (opts.crc !== undefined) checkMapCrc(ram, incomingTreeNodePfns(ram, mapPhys), opts.crc);
  const { blocks, nodes } = validateIncomingTree(ram, mapPhys);
  if (opts.maxBlocks !== undefined && blocks > opts.maxBlocks) throw tooManyBlocks('radix tree', blocks, opts.maxBlocks);
  // Sized up front: growing two arrays by push costs more than reading the tree twice.
  const pfns = new Array<Pfn>(blocks).fill(0 as Pfn);
  const orders = new Array<Order>(blocks).fill(ORDER_0);
  let i = 0;
  walkTree(ram, mapPhys, (pfn, order) => {
    pfns[i] = pfn;
    orders[i++] = order;
  });
  return { count: blocks, pfns, orders, nodes };
}

/**
 * Throws for the first set bit `key` of leaf 0, the one leaf whose keys have mixed orders (38..52): key 0 is no
 * block, and every other key there is a block of at least 2^50 bytes, more than any machine's RAM.
 */
function refuseLeaf(leaf: number, key: number): never {
  if (key === 0) throw new KernelError(Errno.EINVAL, `radix tree: leaf ${hex(leaf)} has bit 0 of key 0 set (no block has key 0)`);
  throw new KernelError(Errno.EINVAL, `radix tree: leaf ${hex(leaf)} holds key ${key}, a block of order ${keyOrder(key)}: larger than any RAM`);
}

function hexOrInf(n: number): string {
  return Number.isFinite(n) ? hex(n) : '>= 2^53';
}

