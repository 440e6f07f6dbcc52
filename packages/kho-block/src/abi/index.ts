/**
 * kho_block: linked 4 KiB blocks of fixed-size entries (upstream 7.2, `include/linux/kho/abi/block.h`; spec
 * upstream-2026.md section 4). This is a contract with the next kernel: a block is one preserved page, its
 * 16-byte header links it to the next and says how many entries it holds, the entries follow back to back.
 * Upstream versions this layout with the root compatible `kho-v4` (7.2); the RFC's `block-v1` string is kept
 * here for reference and written nowhere. Any change to the header or the limits needs a new version there.
 * This file imports nothing from the implementation.
 */
import { struct, u64 } from '@kho/struct';

/** A block is one page (`KHO_BLOCK_SIZE = PAGE_SIZE`). */
export const KHO_BLOCK_SIZE = 4096;

/**
 * `struct kho_block_header_ser` (packed, 16 bytes): `next` = phys of the next block header (0 = last), `count` =
 * valid entries in this block. Entries start right after it.
 */
export const KhoBlockHeaderStruct = struct('kho_block_header_ser', { next: u64(), count: u64() }, 16);
export const KHO_BLOCK_HEADER_SIZE = KhoBlockHeaderStruct.size;

/** Room for entries in a block: 4080 bytes. */
export const KHO_BLOCK_ENTRY_BYTES = KHO_BLOCK_SIZE - KHO_BLOCK_HEADER_SIZE;

/** Safeguard limit of blocks in one set (about 40 MB): more is refused with ENOSPC (grow, restore). */
export const KHO_MAX_BLOCKS = 10000;

/** The RFC's version string for this layout (linux-mm 8c8e7930); 7.2 versions it through `kho-v4` instead. */
export const KHO_BLOCK_COMPATIBLE = 'block-v1';

/** Entries of `entrySize` bytes that fit in one block: floor(4080 / entrySize); 0 when one does not fit. */
export function entriesPerBlock(entrySize: number): number {
  if (!Number.isInteger(entrySize) || entrySize <= 0) return 0;
  return Math.floor(KHO_BLOCK_ENTRY_BYTES / entrySize);
}
