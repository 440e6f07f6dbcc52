import type { Memmap, Order, Pfn } from '@kho/physmem';
import { KHO_PAGE_MAGIC } from './abi';

/**
 * The head-page stamp: the incoming walk sets a preserved block's head descriptor's private word to
 * `order | KHO_PAGE_MAGIC << 32` (upstream's union of order and magic), and restore consumes it. These functions
 * are the one way to read and write it; owners of preserved memory ask KHO, never the memmap directly.
 */

/** The order stamped on the head page `pfn`, or undefined when it carries no KHO stamp. */
export function stampOrder(memmap: Memmap, pfn: Pfn): Order | undefined {
  // Only writeStamp writes the magic, with an order the incoming walk validated: an Order.
  return memmap.privateHi(pfn) === KHO_PAGE_MAGIC ? (memmap.privateLo(pfn) as Order) : undefined;
}

/** True when `pfn` is the head of a preserved block of exactly `order` that nobody restored yet. */
export function hasStamp(memmap: Memmap, pfn: Pfn, order: Order): boolean {
  return memmap.privateHi(pfn) === KHO_PAGE_MAGIC && memmap.privateLo(pfn) === order;
}

/** Stamps the head page of a preserved block (the incoming walk). */
export function writeStamp(memmap: Memmap, pfn: Pfn, order: Order): void {
  memmap.setPrivate(pfn, order, KHO_PAGE_MAGIC);
}

/** Consumes a stamp: a second restore of the block fails. */
export function clearStamp(memmap: Memmap, pfn: Pfn): void {
  memmap.setPrivate(pfn, 0, 0);
}
