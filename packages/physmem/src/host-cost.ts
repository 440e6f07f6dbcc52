import { MAX_PAGE_ORDER, PAGE_SIZE } from './abi';

/**
 * What a simulated machine costs the host per boot, before any page is written: the figures PhysicalMemory
 * checks a RAM layout against, so that a machine the host cannot hold is refused up front with one line.
 */

/** Pages of a pageblock (2 MiB, order 9): the unit in which the memmap keeps alike pages as one. */
export const PAGEBLOCK_PAGES = 512;
/** Pages of a memmap section (1 GiB): the unit in which the memmap is created on first use. */
export const SECTION_PAGES = 2 ** 18;
/** Bytes of the per-page descriptors of one pageblock whose pages differ: 17 a page. */
export const MEMMAP_BLOCK_BYTES = 17 * PAGEBLOCK_PAGES;
/** Bytes of one present section's per-pageblock part: the first page's 17 bytes, 4 for what the others share. */
export const MEMMAP_SECTION_BYTES = 21 * (SECTION_PAGES / PAGEBLOCK_PAGES);
/** JavaScript objects around a section's buffer (the section, its views), measured roughly. */
const SECTION_OBJECT_BYTES = 1024;
/** A free max-order block is one float64 on its free list, whose storage grows by doubling (so up to 2x). */
const FREE_LIST_BYTES_PER_BLOCK = 16;

/**
 * Host bytes a boot of `ranges` needs for its memmap (every section present, as after the hand-off of all free
 * memory) and the buddy allocator's free lists (all RAM free in max-order blocks), not counting written RAM.
 */
export function bootHostBytes(ranges: ReadonlyArray<{ readonly start: number; readonly size: number }>): number {
  let sections = 0;
  let lastSection = -1;
  let blocks = 0;
  for (const r of [...ranges].sort((a, b) => a.start - b.start)) {
    const first = Math.max(Math.floor(r.start / PAGE_SIZE / SECTION_PAGES), lastSection + 1);
    const last = Math.floor((r.start + r.size - 1) / PAGE_SIZE / SECTION_PAGES);
    if (last >= first) sections += last - first + 1;
    lastSection = Math.max(lastSection, last);
    blocks += Math.ceil(r.size / (PAGE_SIZE * 2 ** MAX_PAGE_ORDER));
  }
  return sections * (MEMMAP_SECTION_BYTES + SECTION_OBJECT_BYTES) + blocks * FREE_LIST_BYTES_PER_BLOCK;
}

/**
 * Host memory a boot's fixed cost may take on a host with `hostMemory` bytes: a quarter, since a live update
 * keeps more than one kernel's memmap alive at once (the outgoing one until it is collected, a cold-boot
 * baseline, the next).
 */
export function hostMemoryBudget(hostMemory: number): number {
  return Math.floor(hostMemory / 4);
}
