/**
 * Page-size constants and the number types of physical memory. These are the facts every layout written into
 * RAM depends on (a pfn in a handover table is `address >> PAGE_SHIFT`), so they live apart from the
 * implementation and import nothing from it. Changing any of them changes every binary format in the project.
 *
 * Physical addresses and page frame numbers are plain JavaScript numbers, exact below 2^53. The simulated
 * machine never has RAM above 2^50 (see PhysicalMemory), so arithmetic on them is exact and hot paths never
 * need bigint; u64 fields in RAM are still read and written as full 64-bit little-endian values.
 */

import { Errno, KernelBug, KernelError } from '@kho/kernel';

/** log2 of the page size (the kernel's PAGE_SHIFT on x86-64 and arm64 with 4K pages). */
export const PAGE_SHIFT = 12;
/** Bytes in a page. */
export const PAGE_SIZE = 4096;
/** The largest buddy order: blocks of 2^10 pages (4 MiB). The kernel's MAX_PAGE_ORDER. */
export const MAX_PAGE_ORDER = 10;
/** Orders 0..MAX_PAGE_ORDER. The kernel's NR_PAGE_ORDERS. */
export const NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1;

/** A page frame number: a physical address divided by PAGE_SIZE. */
export type Pfn = number & { readonly __brand: 'Pfn' };
/** A physical address in bytes. */
export type PhysAddr = number & { readonly __brand: 'PhysAddr' };
/** A buddy order: a block of 2^order pages. */
export type Order = number & { readonly __brand: 'Order' };

/*
 * Where the brands are applied: a raw number becomes a Pfn, PhysAddr or Order where it is checked (a value read
 * from RAM or given by the user is validated for range and alignment, then branded) or where it is derived from
 * values already branded. pfn() and phys() are bare casts so hot loops pay nothing for them; toOrder() checks,
 * because an order is small, rarely built in a loop, and a bad one (negative, fractional) is a simulator bug.
 */

/** Brands `n` as a page frame number (no check: use where the value is known to be one). */
export function pfn(n: number): Pfn {
  return n as Pfn;
}

/** Brands `n` as a physical address (no check). */
export function phys(n: number): PhysAddr {
  return n as PhysAddr;
}

/**
 * Brands an address read from RAM, an image or a caller that may be wrong: throws KernelError(EINVAL) naming `what`
 * when `n` is not an integer in [0, 2^53) (a u64 at or above 2^53 reads as Infinity). Alignment and whether RAM lies
 * there are for the receiver to check: KHO's restore calls refuse an unaligned address or one that is not RAM.
 */
export function toPhysAddr(n: number, what: string): PhysAddr {
  if (!isPhysAddr(n)) {
    throw new KernelError(Errno.EINVAL, `${what}: ${Number.isFinite(n) ? n : 'a u64 >= 2^53'} is not a physical address (wanted an integer in [0, 2^53))`);
  }
  return n as PhysAddr;
}

/** True when `n` is an integer in [0, 2^53), a number that can be an address; brands it for the code it guards. */
export function isPhysAddr(n: number): n is PhysAddr {
  return Number.isSafeInteger(n) && n >= 0;
}

/** The address of the first byte of page frame `p`. */
export function pfnToPhys(p: Pfn): PhysAddr {
  return (p * PAGE_SIZE) as PhysAddr;
}

/**
 * Brands `n` as a buddy order. Throws KernelBug when it is not a non-negative integer: orders from RAM or the user
 * are range-checked (with a KernelError) by whoever reads them before they get here.
 */
export function toOrder(n: number): Order {
  if (!Number.isSafeInteger(n) || n < 0) throw new KernelBug(`order ${n} is not a non-negative integer`);
  return n as Order;
}

/** Order 0: a single page, the order most frees and adopts name. */
export const ORDER_0 = 0 as Order;

/** The pfn `n` pages after `p` (a derived value: no check). */
export function pfnAdd(p: Pfn, n: number): Pfn {
  return (p + n) as Pfn;
}

/** The page frame holding address `a` (rounds down). */
export function physToPfn(a: PhysAddr): Pfn {
  return Math.floor(a / PAGE_SIZE) as Pfn;
}
