import { injectable } from 'tsyringe';
import { Errno, KernelError, KernelLog, hex } from '@kho/kernel';
import { BuddyAllocator, MAX_PAGE_ORDER, PAGE_SIZE, PhysicalMemory, describePfn, type Pfn } from '@kho/physmem';
import type { BlockVisitor, Tracker, TrackerStats } from '@kho/kho-core';
import { KHO_BITMAP_BITS, KHO_RADIX_COMPATIBLE, KHO_ROOT_USABLE_ENTRIES, KHO_TABLE_ENTRIES, KHO_TREE_MAX_DEPTH } from './abi';
import { decodeKey, encodeKey, keyOrder, leafBit, tableIndex } from './key';

const ROOT_LEVEL = KHO_TREE_MAX_DEPTH - 1;
const WORDS_PER_LEAF = KHO_BITMAP_BITS / 32;

/**
 * The kho-v2 radix tree, live in simulated RAM: every node is a page from the buddy allocator, edited in place,
 * so a kexec at any moment hands the next kernel exactly what has been recorded. Nothing is serialised.
 */
@injectable()
export class RadixTracker implements Tracker {
  readonly compatible = KHO_RADIX_COMPATIBLE;
  private root = 0;
  private nodes = 0;
  private blocks = 0;
  // The leaf reached by the last lookup: dense runs of adds and dels skip the descent.
  private cachedLeafIndex = -1;
  private cachedLeaf = 0;

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
  ) {}

  /** Allocates the root table (once). Returns its phys, the value of `preserved-memory-map`. Throws ENOMEM. */
  init(): number {
    if (this.root === 0) this.root = this.allocNode();
    return this.root;
  }

  /** Phys of the root table (0 before init). */
  get rootPhys(): number {
    return this.root;
  }

  add(pfn: number, order: number): void {
    checkBlock(pfn, order);
    const key = encodeKey(pfn, order);
    const leaf = this.leafOf(key, true);
    const bit = leafBit(key);
    const addr = leaf + (bit >>> 5) * 4;
    const word = this.ram.readU32(addr);
    const mask = 1 << (bit & 31);
    if ((word & mask) === 0) {
      this.ram.writeU32(addr, (word | mask) >>> 0);
      this.blocks++;
    }
  }

  del(pfn: number, order: number): boolean {
    checkBlock(pfn, order);
    const key = encodeKey(pfn, order);
    const leaf = this.leafOf(key, false);
    if (leaf === 0) {
      this.log.warn('kho', `radix tree: no path for block ${hex(pfn * PAGE_SIZE)} order ${order}; was it preserved?`);
      return false;
    }
    const bit = leafBit(key);
    const addr = leaf + (bit >>> 5) * 4;
    const word = this.ram.readU32(addr);
    const mask = 1 << (bit & 31);
    if ((word & mask) === 0) return false;
    this.ram.writeU32(addr, (word & ~mask) >>> 0);
    this.blocks--;
    return true;
  }

  has(pfn: number, order: number): boolean {
    checkBlock(pfn, order);
    const key = encodeKey(pfn, order);
    const leaf = this.leafOf(key, false);
    if (leaf === 0) return false;
    const bit = leafBit(key);
    return (this.ram.readU32(leaf + (bit >>> 5) * 4) & (1 << (bit & 31))) !== 0;
  }

  walk(visit: BlockVisitor): void {
    if (this.root !== 0) this.walkTable(this.root, ROOT_LEVEL, 0, visit);
  }

  /** The radix tree is live in memory: serialising is returning its root. */
  serialize(): number {
    return this.init();
  }

  cancelSerialize(): void {
    // nothing was built by serialize
  }

  stats(): TrackerStats {
    return { blocks: this.blocks, metadataPages: this.nodes };
  }

  walkIncoming(mapPhys: number, visit: (pfn: number, order: number) => void): void {
    const found = readIncomingTree(this.ram, mapPhys);
    for (let i = 0; i < found.count; i++) visit(found.pfns[i], found.orders[i]);
  }

  /** Frees every node (the tree must no longer be needed by anyone). */
  destroy(): void {
    if (this.root !== 0) this.freeTable(this.root, ROOT_LEVEL);
    this.root = 0;
    this.blocks = 0;
    this.cachedLeafIndex = -1;
  }

  private allocNode(): number {
    const pfn = this.buddy.allocPages(0);
    const phys = pfn * PAGE_SIZE;
    this.ram.fill(phys, PAGE_SIZE, 0);
    this.nodes++;
    return phys;
  }

  private freeNode(phys: number): void {
    this.buddy.freePages((phys / PAGE_SIZE) as Pfn, 0);
    this.nodes--;
  }

  /**
   * The leaf page holding `key`'s bit, or 0 when the path is missing and `alloc` is false. With `alloc`, a
   * missing path is built; on ENOMEM the pages this call allocated are freed and the slot where the new branch
   * began is cleared, so the tree is exactly as before.
   */
  private leafOf(key: number, alloc: boolean): number {
    const leafIndex = Math.floor(key / KHO_BITMAP_BITS);
    if (leafIndex === this.cachedLeafIndex) return this.cachedLeaf;
    if (this.root === 0) {
      if (!alloc) return 0;
      this.init();
    }
    let node = this.root;
    let branchSlot = 0;
    const fresh: number[] = [];
    for (let level = ROOT_LEVEL; level >= 1; level--) {
      const slot = node + tableIndex(key, level) * 8;
      let child = this.ram.readU64n(slot);
      if (child === 0) {
        if (!alloc) return 0;
        try {
          child = this.allocNode();
        } catch (e) {
          for (const p of fresh) this.freeNode(p);
          if (branchSlot !== 0) this.ram.writeU64(branchSlot, 0);
          throw e;
        }
        if (fresh.length === 0) branchSlot = slot;
        fresh.push(child);
        this.ram.writeU64(slot, child);
      }
      node = child;
    }
    this.cachedLeafIndex = leafIndex;
    this.cachedLeaf = node;
    return node;
  }

  private walkTable(table: number, level: number, keyPrefix: number, visit: BlockVisitor): boolean {
    const entries = level === ROOT_LEVEL ? KHO_ROOT_USABLE_ENTRIES : KHO_TABLE_ENTRIES;
    for (let i = 0; i < entries; i++) {
      const child = this.ram.readU64n(table + i * 8);
      if (child === 0) continue;
      const prefix = keyPrefix * KHO_TABLE_ENTRIES + i;
      const stop = level === 1 ? this.walkLeaf(child, prefix, visit) : this.walkTable(child, level - 1, prefix, visit);
      if (stop) return true;
    }
    return false;
  }

  private walkLeaf(leaf: number, leafIndex: number, visit: BlockVisitor): boolean {
    const page = this.ram.pageIfPresent((leaf / PAGE_SIZE) as Pfn);
    if (!page) return false;
    const words = new Uint32Array(page.buffer, page.byteOffset, WORDS_PER_LEAF);
    const firstKey = leafIndex * KHO_BITMAP_BITS;
    const order = keyOrder(firstKey);
    const base = decodeKey(firstKey)!.pfn;
    const step = 2 ** order;
    for (let w = 0; w < WORDS_PER_LEAF; w++) {
      let bits = words[w];
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits & -bits);
        bits &= bits - 1;
        if (visit(base + (w * 32 + b) * step, order) === true) return true;
      }
    }
    return false;
  }

  private freeTable(table: number, level: number): void {
    for (let i = 0; i < KHO_TABLE_ENTRIES; i++) {
      const child = this.ram.readU64n(table + i * 8);
      if (child === 0) continue;
      if (level === 1) this.freeNode(child);
      else this.freeTable(child, level - 1);
    }
    this.freeNode(table);
  }
}

function checkBlock(pfn: number, order: number): void {
  if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
    throw new KernelError(Errno.EINVAL, `radix tree: order ${order} is out of range (wanted 0..${MAX_PAGE_ORDER})`);
  }
  if (!Number.isInteger(pfn) || pfn < 0 || pfn % 2 ** order !== 0) {
    throw new KernelError(Errno.EINVAL, `radix tree: pfn ${describePfn(pfn)} is not aligned to order ${order}`);
  }
}

/** Blocks found in an incoming tree, in walk order. */
export interface IncomingBlocks {
  count: number;
  pfns: number[];
  orders: number[];
  /** Tree pages visited (tables and leaves). */
  nodes: number;
}

/**
 * Reads the previous kernel's radix tree rooted at `mapPhys`, treating every byte as hostile: every node pointer
 * must be a page-aligned RAM page reached only once, root entries past 3 must be empty, a set bit must decode
 * to a key with an order in 0..MAX_PAGE_ORDER and a block inside RAM. The whole tree is checked before anything
 * is returned. Throws KernelError(EINVAL) naming the node and what was wrong.
 */
export function readIncomingTree(ram: PhysicalMemory, mapPhys: number): IncomingBlocks {
  const out: IncomingBlocks = { count: 0, pfns: [], orders: [], nodes: 0 };
  const seen = new Set<number>();
  const checkNode = (phys: number, what: string): void => {
    if (!Number.isFinite(phys) || phys % PAGE_SIZE !== 0) {
      throw new KernelError(Errno.EINVAL, `radix tree: ${what} ${hexOrInf(phys)} is not page-aligned`);
    }
    if (!ram.isRam(phys, PAGE_SIZE)) throw new KernelError(Errno.EINVAL, `radix tree: ${what} ${hex(phys)} is outside RAM`);
    if (seen.has(phys)) throw new KernelError(Errno.EINVAL, `radix tree: ${what} ${hex(phys)} is reached twice (a cycle or shared node)`);
    seen.add(phys);
    out.nodes++;
  };
  checkNode(mapPhys, 'root');
  for (let i = KHO_ROOT_USABLE_ENTRIES; i < KHO_TABLE_ENTRIES; i++) {
    if (ram.readU64n(mapPhys + i * 8) !== 0) {
      throw new KernelError(Errno.EINVAL, `radix tree: root entry ${i} is not empty (keys are below 2^53, so only entries 0..3 are usable)`);
    }
  }
  const visitTable = (table: number, level: number, prefix: number): void => {
    const entries = level === ROOT_LEVEL ? KHO_ROOT_USABLE_ENTRIES : KHO_TABLE_ENTRIES;
    for (let i = 0; i < entries; i++) {
      const child = ram.readU64n(table + i * 8);
      if (child === 0) continue;
      const childPrefix = prefix * KHO_TABLE_ENTRIES + i;
      checkNode(child, `level-${level - 1} node (entry ${i} of ${hex(table)})`);
      if (level === 1) visitLeaf(child, childPrefix);
      else visitTable(child, level - 1, childPrefix);
    }
  };
  const visitLeaf = (leaf: number, leafIndex: number): void => {
    const page = ram.pageIfPresent((leaf / PAGE_SIZE) as Pfn);
    if (!page) return;
    const words = new Uint32Array(page.buffer, page.byteOffset, WORDS_PER_LEAF);
    const firstKey = leafIndex * KHO_BITMAP_BITS;
    const order = keyOrder(firstKey === 0 ? 1 : firstKey);
    for (let w = 0; w < WORDS_PER_LEAF; w++) {
      let bits = words[w];
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits & -bits);
        bits &= bits - 1;
        const key = firstKey + w * 32 + b;
        if (key === 0) throw new KernelError(Errno.EINVAL, `radix tree: leaf ${hex(leaf)} has bit 0 of key 0 set (no block has key 0)`);
        if (order > MAX_PAGE_ORDER) {
          throw new KernelError(Errno.EINVAL, `radix tree: leaf ${hex(leaf)} holds a block of order ${keyOrder(key)} (wanted 0..${MAX_PAGE_ORDER})`);
        }
        const { pfn } = decodeKey(key)!;
        const phys = pfn * PAGE_SIZE;
        if (!ram.isRam(phys, PAGE_SIZE << order)) {
          throw new KernelError(Errno.EINVAL, `radix tree: block ${hex(phys)} order ${order} (leaf ${hex(leaf)}) is outside RAM`);
        }
        out.pfns.push(pfn);
        out.orders.push(order);
        out.count++;
      }
    }
  };
  visitTable(mapPhys, ROOT_LEVEL, 0);
  return out;
}

function hexOrInf(n: number): string {
  return Number.isFinite(n) ? hex(n) : '>= 2^53';
}

