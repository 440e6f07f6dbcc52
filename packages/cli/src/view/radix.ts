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
  readonly pfns: number[];
  readonly orders: number[];
  /** Every node page, depth first, parents before children (the order KHO checksums them in). */
  readonly nodes: RadixNode[];
  readonly problems: Array<{ where: string; message: string }>;
}

/**
 * Reads a kho-v2 radix tree from RAM as far as it can: a bad pointer (unaligned, outside RAM, reached twice) or a
 * bad leaf (blocks of an impossible order, outside RAM) is a problem, and the walk goes on with the rest. The
 * constants and the key are the ABI's (radix-tracker/abi): key = 2^(52 - order) + pfn / 2^order; the index at
 * table level L is floor(key / 2^((L - 1) * 9 + 15)) mod 512; the leaf bit is key mod 32768.
 */
export function readRadixLenient(ram: PhysicalMemory, root: number): RadixContents {
  const out: RadixContents = { pfns: [], orders: [], nodes: [], problems: [] };
  const seen = new Set<number>();
  const nodeOk = (phys: number, what: string): boolean => {
    const bad = (m: string): boolean => {
      out.problems.push({ where: what, message: m });
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
    const node: RadixNode = { phys, level, entries };
    out.nodes.push(node);
    const usable = level === ROOT_LEVEL ? KHO_ROOT_USABLE_ENTRIES : KHO_TABLE_ENTRIES;
    const bytes = ram.read(phys, PAGE_SIZE);
    const view = new DataView(bytes.buffer, bytes.byteOffset, PAGE_SIZE);
    for (let i = 0; i < KHO_TABLE_ENTRIES; i++) {
      const v = view.getBigUint64(i * 8, true);
      if (v === 0n) continue;
      const child = v >= 2n ** 53n ? Infinity : Number(v);
      if (i >= usable) {
        out.problems.push({ where: `root ${hex(phys)}`, message: `radix tree: root entry ${i} is not empty (wanted entries 0..${usable - 1} only: keys are below 2^53)` });
        continue;
      }
      const what = `level-${level - 1} node (entry ${i} of ${hex(phys)})`;
      if (!nodeOk(child, what)) continue;
      entries.push([i, child]);
      const childPrefix = prefix * KHO_TABLE_ENTRIES + i;
      if (level === 1) leaf(child, childPrefix);
      else table(child, level - 1, childPrefix);
    }
  };
  const leaf = (phys: number, leafIndex: number): void => {
    const firstKey = leafIndex * KHO_BITMAP_BITS;
    const page = ram.pageIfPresent(phys / PAGE_SIZE);
    let bits = 0;
    if (page) {
      const words = new Uint32Array(page.buffer, page.byteOffset, KHO_BITMAP_BITS / 32);
      for (let w = 0; w < words.length; w++) {
        for (let x = words[w]; x !== 0; x &= x - 1) {
          const key = firstKey + w * 32 + (31 - Math.clz32(x & -x));
          const b = decodeKey(key);
          if (!b || b.order > KHO_RADIX_MAX_ORDER) {
            out.problems.push({ where: `leaf ${hex(phys)}`, message: `radix tree: leaf ${hex(phys)} bit ${key % KHO_BITMAP_BITS} is a block of order ${b ? b.order : 'none'} (wanted 0..${KHO_RADIX_MAX_ORDER})` });
            continue;
          }
          if (!ram.isRam(b.pfn * PAGE_SIZE, PAGE_SIZE * 2 ** b.order)) {
            out.problems.push({ where: `leaf ${hex(phys)}`, message: `radix tree: block ${hex(b.pfn * PAGE_SIZE)} order ${b.order} (leaf ${hex(phys)}) is outside RAM (wanted a block of RAM)` });
            continue;
          }
          out.pfns.push(b.pfn);
          out.orders.push(b.order);
          bits++;
        }
      }
    }
    out.nodes.push({ phys, level: 0, bits, firstKey });
  };
  if (nodeOk(root, 'root')) table(root, ROOT_LEVEL, 0);
  return out;
}

/** The radix ABI's numbers the explorer page needs to walk from the root to a block's bit. */
export const RADIX_WALK_CONSTANTS = {
  order0Log2: KHO_ORDER_0_LOG2,
  rootLevel: ROOT_LEVEL,
  tableEntries: KHO_TABLE_ENTRIES,
  bitmapBits: KHO_BITMAP_BITS,
  shifts: Array.from({ length: ROOT_LEVEL }, (_, i) => levelShift(i + 1)),
} as const;
