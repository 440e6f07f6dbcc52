/**
 * The bitmap trackers of the kho-v1 era (docs/abi/kho.md section 7): per-order bitmaps of one page each,
 * serialised at kexec time either as upstream kho-v1's chunk list or, as the KHO array RFC proposed, as a KHO
 * array of pointers to bitmap records. Everything here is a contract with the next kernel (and, for the chunk
 * list, with Linux 6.16's kho-v1): change nothing here without a new root compatible string. This file imports
 * nothing from the implementation.
 *
 * Conventions: little-endian; a physical pointer is a u64 phys, 0 = none; pages are 4096 bytes, order 0.
 *
 * - A bitmap is one page of PRESERVE_BITS (32768) bits. Bitmap `i` of order `o` covers the blocks of 2^o pages
 *   from `phys_start = (i * 32768) << (12 + o)`: bit `b` set means the block at `phys_start + (b << (12 + o))`
 *   is preserved. A bitmap therefore covers 128 MiB << o, and its `phys_start` is a multiple of that.
 * - Neither the bitmaps nor their serialised form is preserved: the next kernel reads them while it allocates
 *   from scratch memory only, and afterwards they are ordinary free memory.
 */

/** Root compatible when `preserved-memory-map` points at a chunk list (upstream kho-v1). */
export const KHO_V1_COMPATIBLE = 'kho-v1';
/**
 * Root compatible when `preserved-memory-map` points at a KHO array descriptor whose entries point at
 * {@link KhoserMemBitmapPtrLayout} records (the KHO array RFC's form; the string is the project's, since that
 * form never shipped).
 */
export const KHO_V1_KARR_COMPATIBLE = 'kho-v1-karr';

/** Bits in one bitmap page (upstream `PRESERVE_BITS`, 512 * 64). */
export const PRESERVE_BITS = 32768;
export const PRESERVE_BITS_LOG2 = 15;
/** Bytes in a page (spec conventions; repeated here so the contract stands alone). */
export const KHO_V1_PAGE_SIZE = 4096;
/** Largest order a recorded block may have (spec conventions: MAX_PAGE_ORDER). */
export const KHO_V1_MAX_ORDER = 10;

/** log2 of the bytes a bitmap of `order` covers: 15 + 12 + order. `phys_start` is a multiple of 2^this. */
export function bitmapCoverageLog2(order: number): number {
  return PRESERVE_BITS_LOG2 + 12 + order;
}

/** `phys_start` of bitmap `index` of `order`: `(index * 32768) << (12 + order)`, exact (a bigint). */
export function bitmapPhysStart(order: number, index: number | bigint): bigint {
  return BigInt(index) << BigInt(bitmapCoverageLog2(order));
}

// ------------------------------------------------------------------------------------------------ chunk list

/**
 * Chunk header (upstream `struct khoser_mem_chunk_hdr`, 16 bytes):
 *
 * | off | size | field |
 * |---|---|---|
 * | 0 | 8 | next: phys of the next chunk, 0 = last |
 * | 8 | 4 | order: the order of every bitmap of this chunk, 0..10 |
 * | 12 | 4 | num_elms: entries used, 0..KHOSER_BITMAP_SIZE |
 */
export const KhoserMemChunkHdrLayout = { next: 0, order: 8, numElms: 12 } as const;
export const KHOSER_MEM_CHUNK_HDR_SIZE = 16;

/**
 * Chunk entry (upstream `struct khoser_mem_bitmap_ptr`, 16 bytes):
 *
 * | off | size | field |
 * |---|---|---|
 * | 0 | 8 | phys_start: first byte the bitmap covers, a multiple of 128 MiB << order |
 * | 8 | 8 | bitmap: phys of the bitmap page |
 */
export const KhoserChunkEntryLayout = { physStart: 0, bitmap: 8 } as const;
export const KHOSER_CHUNK_ENTRY_SIZE = 16;
/** Entries in a one-page chunk, after its header: (4096 - 16) / 16 = 255 (upstream `KHOSER_BITMAP_SIZE`). */
export const KHOSER_BITMAP_SIZE = (KHO_V1_PAGE_SIZE - KHOSER_MEM_CHUNK_HDR_SIZE) / KHOSER_CHUNK_ENTRY_SIZE;

/**
 * The chunk list (upstream `struct khoser_mem_chunk`, one page): a header, then `num_elms` entries; the rest of
 * the page is ignored. `preserved-memory-map` is the phys of the first chunk. A writer starts a new chunk for
 * every order and every KHOSER_BITMAP_SIZE entries; the project's writer lists orders ascending, and bitmaps
 * by ascending `phys_start` within an order. A map with no bitmap at all is one chunk with `num_elms` 0.
 */
export interface KhoserMemChunkHdr {
  readonly next: bigint;
  readonly order: number;
  readonly numElms: number;
}

/** Encodes a chunk header (16 bytes). */
export function encodeKhoserChunkHdr(h: KhoserMemChunkHdr): Uint8Array {
  const out = new Uint8Array(KHOSER_MEM_CHUNK_HDR_SIZE);
  const v = new DataView(out.buffer);
  v.setBigUint64(KhoserMemChunkHdrLayout.next, h.next, true);
  v.setUint32(KhoserMemChunkHdrLayout.order, h.order, true);
  v.setUint32(KhoserMemChunkHdrLayout.numElms, h.numElms, true);
  return out;
}

/** Decodes the chunk header at the start of `bytes` (at least 16) without checking it. */
export function decodeKhoserChunkHdr(bytes: Uint8Array): KhoserMemChunkHdr {
  const v = new DataView(bytes.buffer, bytes.byteOffset, KHOSER_MEM_CHUNK_HDR_SIZE);
  return {
    next: v.getBigUint64(KhoserMemChunkHdrLayout.next, true),
    order: v.getUint32(KhoserMemChunkHdrLayout.order, true),
    numElms: v.getUint32(KhoserMemChunkHdrLayout.numElms, true),
  };
}

/** A chunk entry's fields. */
export interface KhoserChunkEntry {
  readonly physStart: bigint;
  readonly bitmap: bigint;
}

/** Encodes a chunk entry (16 bytes). */
export function encodeKhoserChunkEntry(e: KhoserChunkEntry): Uint8Array {
  const out = new Uint8Array(KHOSER_CHUNK_ENTRY_SIZE);
  const v = new DataView(out.buffer);
  v.setBigUint64(KhoserChunkEntryLayout.physStart, e.physStart, true);
  v.setBigUint64(KhoserChunkEntryLayout.bitmap, e.bitmap, true);
  return out;
}

/** Decodes the chunk entry at the start of `bytes` (at least 16) without checking it. */
export function decodeKhoserChunkEntry(bytes: Uint8Array): KhoserChunkEntry {
  const v = new DataView(bytes.buffer, bytes.byteOffset, KHOSER_CHUNK_ENTRY_SIZE);
  return { physStart: v.getBigUint64(KhoserChunkEntryLayout.physStart, true), bitmap: v.getBigUint64(KhoserChunkEntryLayout.bitmap, true) };
}

// ------------------------------------------------------------------------------------------------ KHO-array form

/**
 * Bitmap record of the KHO-array form (the RFC's `struct khoser_mem_bitmap_ptr`, which carries its order,
 * 24 bytes, 8-byte aligned, never crossing a page boundary):
 *
 * | off | size | field |
 * |---|---|---|
 * | 0 | 8 | phys_start: first byte the bitmap covers, a multiple of 128 MiB << order |
 * | 8 | 4 | order: 0..10 |
 * | 12 | 4 | reserved: 0, checked on read |
 * | 16 | 8 | bitmap: phys of the bitmap page |
 *
 * `preserved-memory-map` is the phys of a 16-byte `struct kho_array` descriptor (section 9) at the start of a
 * page; every non-empty entry of that array is a physical pointer to one record. The project's writer uses
 * array version {@link KHO_V1_KARR_ARRAY_VERSION} (recorded in the descriptor, so a reader accepts either
 * version), puts record i at position i, lists orders ascending and `phys_start` ascending within an order, and
 * packs records {@link KHOSER_BITMAP_PTRS_PER_PAGE} to a page.
 */
export const KhoserMemBitmapPtrLayout = { physStart: 0, order: 8, reserved: 12, bitmap: 16 } as const;
export const KHOSER_MEM_BITMAP_PTR_SIZE = 24;
/** Records the project's writer packs into a page: floor(4096 / 24) = 170. */
export const KHOSER_BITMAP_PTRS_PER_PAGE = Math.floor(KHO_V1_PAGE_SIZE / KHOSER_MEM_BITMAP_PTR_SIZE);
/** The KHO array version the project's writer uses for the kho-v1-karr map. */
export const KHO_V1_KARR_ARRAY_VERSION = 1;

/** A bitmap record's fields. */
export interface KhoserMemBitmapPtr {
  readonly physStart: bigint;
  readonly order: number;
  readonly reserved: number;
  readonly bitmap: bigint;
}

/** Encodes a bitmap record (24 bytes). */
export function encodeKhoserMemBitmapPtr(r: KhoserMemBitmapPtr): Uint8Array {
  const out = new Uint8Array(KHOSER_MEM_BITMAP_PTR_SIZE);
  const v = new DataView(out.buffer);
  v.setBigUint64(KhoserMemBitmapPtrLayout.physStart, r.physStart, true);
  v.setUint32(KhoserMemBitmapPtrLayout.order, r.order, true);
  v.setUint32(KhoserMemBitmapPtrLayout.reserved, r.reserved, true);
  v.setBigUint64(KhoserMemBitmapPtrLayout.bitmap, r.bitmap, true);
  return out;
}

/** Decodes the bitmap record at the start of `bytes` (at least 24) without checking it. */
export function decodeKhoserMemBitmapPtr(bytes: Uint8Array): KhoserMemBitmapPtr {
  const v = new DataView(bytes.buffer, bytes.byteOffset, KHOSER_MEM_BITMAP_PTR_SIZE);
  return {
    physStart: v.getBigUint64(KhoserMemBitmapPtrLayout.physStart, true),
    order: v.getUint32(KhoserMemBitmapPtrLayout.order, true),
    reserved: v.getUint32(KhoserMemBitmapPtrLayout.reserved, true),
    bitmap: v.getBigUint64(KhoserMemBitmapPtrLayout.bitmap, true),
  };
}
