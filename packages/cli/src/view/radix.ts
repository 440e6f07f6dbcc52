import { hex } from '@kho/kernel';
import { PAGE_SIZE, type PhysicalMemory } from '@kho/physmem';
import {
  KHO_BITMAP_BITS,
  KHO_ORDER_0_LOG2,
  KHO_RADIX_MAX_ORDER,
  KHO_ROOT_USABLE_ENTRIES,
  KHO_TABLE_ENTRIES,
  KHO_TREE_MAX_DEPTH,
  decodeKey,
  keyOrder,
  levelShift,
} from '@kho/radix-tracker';

const ROOT_LEVEL = KHO_TREE_MAX_DEPTH - 1;

/** One page of the radix tree: a table (level 1..5: its non-empty entries) or a leaf bitmap (level 0: its set bits). */
export interface RadixNode {
  readonly phys: number;
  readonly level: number;
  /** Table: [index, child phys] of every non-empty entry. */
  readonly entries?: ReadonlyArray<readonly [number, number]>;
  /** Leaf: how many bits are set, and the first key the leaf covers. */
  readonly bits?: number;
  readonly firstKey?: number;
}

/** What {@link readRadixLenient} found. */
export interface RadixContents {
  /** Every node page, depth first, parents before children (the order KHO checksums them in). */
  readonly nodes: RadixNode[];
  /** The first problems found (at most {@link RADIX_MAX_PROBLEMS}); `moreProblems` counts the rest. */
  readonly problems: Array<{ where: string; message: string }>;
  readonly moreProblems: number;
  /** Blocks the valid bits of the leaves stand for (a bit of a bad order or outside RAM is a problem instead). */
  readonly count: number;
}

/** Most problems {@link readRadixLenient} lists: a page of bad bits would otherwise list 32,768. */
export const RADIX_MAX_PROBLEMS = 64;

/** Where the valid blocks of one leaf start and how far they step, or undefined for a leaf of mixed or bad orders. */
function leafShape(leafIndex: number): { order: number; base: number; step: number } | undefined {
  const firstKey = leafIndex * KHO_BITMAP_BITS;
  if (firstKey === 0) return undefined; // leaf 0 holds the keys of orders 38..52 and key 0
  const order = keyOrder(firstKey);
  if (order > KHO_RADIX_MAX_ORDER) return undefined;
  return { order, base: decodeKey(firstKey)!.pfn, step: 2 ** order };
}

/**
 * Visits the valid blocks of a leaf (bits of a good order, inside RAM) in walk order, and reports every other
 * set bit to `bad`. A leaf whose span is all RAM is read a word at a time, with no check per bit.
 */
function leafBlocks(
  ram: PhysicalMemory,
  phys: number,
  leafIndex: number,
  visit: (pfn: number, order: number) => void,
  bad: (message: string) => void,
): void {
  const page = ram.pageIfPresent(phys / PAGE_SIZE);
  if (!page) return;
  const words = new Uint32Array(page.buffer, page.byteOffset, KHO_BITMAP_BITS / 32);
  const firstKey = leafIndex * KHO_BITMAP_BITS;
  const shape = leafShape(leafIndex);
  const whole = shape !== undefined && ram.isRam(shape.base * PAGE_SIZE, KHO_BITMAP_BITS * shape.step * PAGE_SIZE);
  for (let w = 0; w < words.length; w++) {
    for (let x = words[w]; x !== 0; x &= x - 1) {
      const bit = w * 32 + (31 - Math.clz32(x & -x));
      if (whole) {
        visit(shape.base + bit * shape.step, shape.order);
        continue;
      }
      const b = decodeKey(firstKey + bit);
      if (!b || b.order > KHO_RADIX_MAX_ORDER) {
        bad(`radix tree: leaf ${hex(phys)} bit ${bit} is a block of order ${b ? b.order : 'none'} (wanted 0..${KHO_RADIX_MAX_ORDER})`);
      } else if (!ram.isRam(b.pfn * PAGE_SIZE, PAGE_SIZE * 2 ** b.order)) {
        bad(`radix tree: block ${hex(b.pfn * PAGE_SIZE)} order ${b.order} (leaf ${hex(phys)}) is outside RAM (wanted a block of RAM)`);
      } else {
        visit(b.pfn, b.order);
      }
    }
  }
}

/** Set bits in a 32-bit word. */
function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** How many valid blocks a leaf holds ({@link leafBlocks}' visits), a word at a time when its span is all RAM. */
function leafCount(ram: PhysicalMemory, phys: number, leafIndex: number, bad: (message: string) => void): number {
  const shape = leafShape(leafIndex);
  const page = ram.pageIfPresent(phys / PAGE_SIZE);
  if (page && shape !== undefined && ram.isRam(shape.base * PAGE_SIZE, KHO_BITMAP_BITS * shape.step * PAGE_SIZE)) {
    const words = new Uint32Array(page.buffer, page.byteOffset, KHO_BITMAP_BITS / 32);
    let n = 0;
    for (let w = 0; w < words.length; w++) n += popcount(words[w]);
    return n;
  }
  let n = 0;
  leafBlocks(ram, phys, leafIndex, () => void n++, bad);
  return n;
}

/**
 * Reads a kho-v2 radix tree from RAM as far as it can, without listing its blocks: a bad pointer (unaligned,
 * outside RAM, reached twice) or a bad leaf bit (a block of an impossible order, outside RAM) is a problem, and
 * the walk goes on with the rest. Its cost is the tree's pages, not its blocks; {@link radixBlocks} lists them.
 * The constants and the key are the ABI's (radix-tracker/abi): key = 2^(52 - order) + pfn / 2^order; the index
 * at table level L is floor(key / 2^((L - 1) * 9 + 15)) mod 512; the leaf bit is key mod 32768.
 */
export function readRadixLenient(ram: PhysicalMemory, root: number): RadixContents {
  const nodes: RadixNode[] = [];
  const problems: Array<{ where: string; message: string }> = [];
  let moreProblems = 0;
  let count = 0;
  const problem = (where: string, message: string): void => {
    if (problems.length < RADIX_MAX_PROBLEMS) problems.push({ where, message });
    else moreProblems++;
  };
  const seen = new Set<number>();
  const nodeOk = (phys: number, what: string): boolean => {
    const bad = (m: string): boolean => {
      problem(what, m);
      return false;
    };
    if (!Number.isSafeInteger(phys) || phys % PAGE_SIZE !== 0) return bad(`radix tree: ${what} ${Number.isFinite(phys) ? hex(phys) : '>= 2^53'} is not page-aligned (wanted a page of RAM)`);
    if (!ram.isRam(phys, PAGE_SIZE)) return bad(`radix tree: ${what} ${hex(phys)} is outside RAM (wanted a page of RAM)`);
    if (seen.has(phys)) return bad(`radix tree: ${what} ${hex(phys)} is reached twice (wanted a tree: no cycle, no shared node)`);
    seen.add(phys);
    return true;
  };
  const table = (phys: number, level: number, prefix: number): void => {
    const entries: Array<[number, number]> = [];
    nodes.push({ phys, level, entries });
    const usable = level === ROOT_LEVEL ? KHO_ROOT_USABLE_ENTRIES : KHO_TABLE_ENTRIES;
    const bytes = ram.read(phys, PAGE_SIZE);
    const view = new DataView(bytes.buffer, bytes.byteOffset, PAGE_SIZE);
    for (let i = 0; i < KHO_TABLE_ENTRIES; i++) {
      const v = view.getBigUint64(i * 8, true);
      if (v === 0n) continue;
      const child = v >= 2n ** 53n ? Infinity : Number(v);
      if (i >= usable) {
        problem(`root ${hex(phys)}`, `radix tree: root entry ${i} is not empty (wanted entries 0..${usable - 1} only: keys are below 2^53)`);
        continue;
      }
      const what = `level-${level - 1} node (entry ${i} of ${hex(phys)})`;
      if (!nodeOk(child, what)) continue;
      entries.push([i, child]);
      const childPrefix = prefix * KHO_TABLE_ENTRIES + i;
      if (level === 1) {
        const bits = leafCount(ram, child, childPrefix, (m) => problem(`leaf ${hex(child)}`, m));
        nodes.push({ phys: child, level: 0, bits, firstKey: childPrefix * KHO_BITMAP_BITS });
        count += bits;
      } else {
        table(child, level - 1, childPrefix);
      }
    }
  };
  if (nodeOk(root, 'root')) table(root, ROOT_LEVEL, 0);
  return { nodes, problems, moreProblems, count };
}

/**
 * The valid blocks of the leaves among `nodes` (as {@link readRadixLenient} read them; `count` is its count), in
 * walk order, in two typed arrays: 9 bytes a block.
 */
export function radixBlocks(ram: PhysicalMemory, nodes: readonly RadixNode[], count: number): { pfns: Float64Array; orders: Uint8Array } {
  const pfns = new Float64Array(count);
  const orders = new Uint8Array(count);
  let i = 0;
  for (const n of nodes) {
    if (n.level !== 0 || !n.bits) continue;
    leafBlocks(
      ram,
      n.phys,
      n.firstKey! / KHO_BITMAP_BITS,
      (pfn, order) => {
        pfns[i] = pfn;
        orders[i++] = order;
      },
      () => undefined,
    );
  }
  return { pfns, orders };
}

/** The radix ABI's numbers the explorer page needs to walk from the root to a block's bit. */
export const RADIX_WALK_CONSTANTS = {
  order0Log2: KHO_ORDER_0_LOG2,
  rootLevel: ROOT_LEVEL,
  tableEntries: KHO_TABLE_ENTRIES,
  bitmapBits: KHO_BITMAP_BITS,
  shifts: Array.from({ length: ROOT_LEVEL }, (_, i) => levelShift(i + 1)),
} as const;
