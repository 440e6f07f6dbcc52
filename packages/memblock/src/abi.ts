/**
 * memblock's reserve_mem handover in upstream's format (docs/abi/kho.md section 8, `memblock-v1`), a contract
 * with the next kernel and with Linux: subtree `memblock` of the root FDT points at a one-page FDT whose root
 * compatible is "memblock-v1", with one child per region named by the region's name, each with compatible
 * "reserve-mem-v1" and little-endian u64 properties `start` and `size`. A new layout needs new compatible
 * strings. Imports nothing from the implementation.
 */
export const MEMBLOCK_SUBTREE = 'memblock';
export const MEMBLOCK_COMPATIBLE = 'memblock-v1';
export const RESERVE_MEM_COMPATIBLE = 'reserve-mem-v1';
export const PROP_RESERVE_MEM_START = 'start';
export const PROP_RESERVE_MEM_SIZE = 'size';
/** At most this many `reserve_mem=` regions, with names of 1..15 characters. */
export const RESERVE_MEM_MAX = 8;
export const RESERVE_MEM_NAME_MAX = 15;
