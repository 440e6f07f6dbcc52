/**
 * The kho-v2 preserved-memory map (docs/abi/kho.md section 3, upstream "Make KHO Stateless"): a radix tree of
 * one-page nodes in RAM. This is a contract with the next kernel and with Linux: change nothing here without a
 * new root compatible string. Imports nothing from the implementation.
 *
 * - key of a block (phys, order) = (1 << (52 - order)) | (phys >> (12 + order)); every key is below 2^53.
 * - levels 5..1 are tables of 512 u64 entries (phys of the child page, 0 = empty); level 0 is a leaf bitmap of
 *   32768 bits. Index at table level L: (key >> ((L - 1) * 9 + 15)) & 511; leaf bit: key & 32767.
 * - a leaf covers 32768 consecutive keys, which all have the same order.
 */
/** The first root compatible whose map is this tree; kho-v3 and kho-v4 carry the same tree. */
export const KHO_RADIX_COMPATIBLE = 'kho-v2';
/**
 * The largest order a key can encode for a block inside a 64-bit address space: key = 2^(52 - order) | pfn >> order
 * is below 2^53 for orders 0..52, and order 52 could only be the block at 0 covering all of it, so 51.
 */
export const KHO_RADIX_MAX_ORDER = 51;
export const KHO_ORDER_0_LOG2 = 52;
export const KHO_TABLE_SIZE_LOG2 = 9;
export const KHO_BITMAP_SIZE_LOG2 = 15;
export const KHO_TREE_MAX_DEPTH = 6;
export const KHO_TABLE_ENTRIES = 1 << KHO_TABLE_SIZE_LOG2;
export const KHO_BITMAP_BITS = 1 << KHO_BITMAP_SIZE_LOG2;
/** Only root entries 0..3 can be used: keys are below 2^53. */
export const KHO_ROOT_USABLE_ENTRIES = 4;

/** Shift of the table index at level L (1..5): (L - 1) * 9 + 15. */
export function levelShift(level: number): number {
  return (level - 1) * KHO_TABLE_SIZE_LOG2 + KHO_BITMAP_SIZE_LOG2;
}
