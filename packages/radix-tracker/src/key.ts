import { KHO_BITMAP_BITS, KHO_ORDER_0_LOG2, KHO_TABLE_ENTRIES, levelShift } from './abi';

// Keys reach 2^53, past JavaScript's 32-bit shift operators, so the arithmetic below uses exact float
// multiplication and division by powers of two (every key is an integer below 2^53, exact in a double).

const POW2: number[] = Array.from({ length: 64 }, (_, i) => 2 ** i);

/** key of the block of `1 << order` pages at `pfn` (pfn must be aligned to the order). */
export function encodeKey(pfn: number, order: number): number {
  return POW2[KHO_ORDER_0_LOG2 - order] + pfn / POW2[order];
}

/** Order of a key: 52 - floor(log2(key)). Key 0 has no order (returns -1). */
export function keyOrder(key: number): number {
  if (key < 1) return -1;
  const hi = Math.floor(key / 2 ** 32);
  const log2 = hi > 0 ? 63 - Math.clz32(hi) : 31 - Math.clz32(key >>> 0);
  return KHO_ORDER_0_LOG2 - log2;
}

/** Decodes a key into (pfn, order); undefined for key 0 or an order below 0. */
export function decodeKey(key: number): { pfn: number; order: number } | undefined {
  const order = keyOrder(key);
  if (order < 0) return undefined;
  return { pfn: (key - POW2[KHO_ORDER_0_LOG2 - order]) * POW2[order], order };
}

/** Table index of `key` at level 1..5. */
export function tableIndex(key: number, level: number): number {
  return Math.floor(key / POW2[levelShift(level)]) % KHO_TABLE_ENTRIES;
}

/** Leaf bit of `key`. */
export function leafBit(key: number): number {
  return key % KHO_BITMAP_BITS;
}
