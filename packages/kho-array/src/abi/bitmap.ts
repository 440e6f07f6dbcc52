/**
 * The bitmap trackers of the kho-v1 era (docs/abi/kho.md section 7): per-order bitmaps of one page each,
 * serialised at kexec time either as upstream kho-v1's chunk list or, as the KHO array RFC proposed, as a KHO
 * array of pointers to bitmap records. Everything here is a contract with the next kernel (and, for the chunk
 * list, with Linux 6.16's kho-v1): change nothing here without a new root compatible string. This file imports
 * nothing from the implementation.
 *
 * Conventions: little-endian; a physical pointer is a u64 phys, 0 = none; pages are PAGE_SIZE (4096) bytes,
 * order 0. The layouts are declared once with `@kho/struct` (the `*Struct` constants); code that reads them in
 * place takes their field offsets from them (`offsetOf`, `offsetTable`).
 *
 * - A bitmap is one page of PRESERVE_BITS (32768) bits. Bitmap `i` of order `o` covers the blocks of 2^o pages
 *   from `phys_start = (i * 32768) << (12 + o)`: bit `b` set means the block at `phys_start + (b << (12 + o))`
 *   is preserved. A bitmap therefore covers 128 MiB << o, and its `phys_start` is a multiple of that.
 * - Neither the bitmaps nor their serialised form is preserved: the next kernel reads them while it allocates
 *   from scratch memory only, and afterwards they are ordinary free memory.
 */

import { MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE } from '@kho/physmem/abi';
import { array, nested, reserved, struct, u32, u64big } from '@kho/struct';

/** Root compatible when `preserved-memory-map` points at a chunk list (upstream kho-v1). */
export const KHO_V1_COMPATIBLE = 'kho-v1';
/**
 * Root compatible when `preserved-memory-map` points at a KHO array descriptor whose entries point at
 * {@link KhoserMemBitmapPtrStruct} records (the KHO array RFC's form; the string is the project's, since that
 * form never shipped).
 */
export const KHO_V1_KARR_COMPATIBLE = 'kho-v1-karr';

/** Bits in one bitmap page (upstream `PRESERVE_BITS`, PAGE_SIZE * 8). */
export const PRESERVE_BITS = PAGE_SIZE * 8;
export const PRESERVE_BITS_LOG2 = PAGE_SHIFT + 3;
/** Bytes in a page. */
export const KHO_V1_PAGE_SIZE = PAGE_SIZE;
/** Largest order a recorded block may have (MAX_PAGE_ORDER). */
export const KHO_V1_MAX_ORDER = MAX_PAGE_ORDER;

/** log2 of the bytes a bitmap of `order` covers: 15 + PAGE_SHIFT + order. `phys_start` is a multiple of 2^this. */
export function bitmapCoverageLog2(order: number): number {
  return PRESERVE_BITS_LOG2 + PAGE_SHIFT + order;
}

/** `phys_start` of bitmap `index` of `order`: `(index * 32768) << (12 + order)`, exact (a bigint). */
export function bitmapPhysStart(order: number, index: number | bigint): bigint {
  return BigInt(index) << BigInt(bitmapCoverageLog2(order));
}

// ------------------------------------------------------------------------------------------------ chunk list

/** Chunk header (upstream `struct khoser_mem_chunk_hdr`, 16 bytes). */
export const KhoserMemChunkHdrStruct = struct(
  'khoser_mem_chunk_hdr',
  {
    /** Phys of the next chunk, 0 = last. */
    next: u64big(),
    /** The order of every bitmap of this chunk, 0..10. */
    order: u32(),
    /** Entries used, 0..KHOSER_BITMAP_SIZE. */
    num_elms: u32(),
  },
  16,
);
export const KHOSER_MEM_CHUNK_HDR_SIZE = KhoserMemChunkHdrStruct.size;

/** Chunk entry (upstream `struct khoser_mem_bitmap_ptr`, 16 bytes). */
export const KhoserChunkEntryStruct = struct(
  'khoser_mem_bitmap_ptr',
  {
    /** First byte the bitmap covers, a multiple of 128 MiB << order. */
    phys_start: u64big(),
    /** Phys of the bitmap page. */
    bitmap: u64big(),
  },
  16,
);
export const KHOSER_CHUNK_ENTRY_SIZE = KhoserChunkEntryStruct.size;
/** Entries in a one-page chunk, after its header (upstream `KHOSER_BITMAP_SIZE`): (PAGE_SIZE - 16) / 16 = 255. */
export const KHOSER_BITMAP_SIZE = (KHO_V1_PAGE_SIZE - KHOSER_MEM_CHUNK_HDR_SIZE) / KHOSER_CHUNK_ENTRY_SIZE;

/**
 * The chunk list (upstream `struct khoser_mem_chunk`, one page): a header, then `num_elms` entries; the rest of
 * the page is ignored. `preserved-memory-map` is the phys of the first chunk. A writer starts a new chunk for
 * every order and every KHOSER_BITMAP_SIZE entries; the project's writer lists orders ascending, and bitmaps
 * by ascending `phys_start` within an order. A map with no bitmap at all is one chunk with `num_elms` 0.
 */
export const KhoserMemChunkStruct = struct(
  'khoser_mem_chunk',
  { hdr: nested(KhoserMemChunkHdrStruct), bitmaps: array(nested(KhoserChunkEntryStruct), KHOSER_BITMAP_SIZE) },
  KHO_V1_PAGE_SIZE,
);

/** A chunk header's fields. */
export interface KhoserMemChunkHdr {
  readonly next: bigint;
  readonly order: number;
  readonly numElms: number;
}

/** Encodes a chunk header (16 bytes). Throws EINVAL for a field that does not fit. */
export function encodeKhoserChunkHdr(h: KhoserMemChunkHdr): Uint8Array {
  return KhoserMemChunkHdrStruct.encode({ next: h.next, order: h.order, num_elms: h.numElms });
}

/** Decodes the chunk header at the start of `bytes` (at least 16) without checking it. */
export function decodeKhoserChunkHdr(bytes: Uint8Array): KhoserMemChunkHdr {
  const h = KhoserMemChunkHdrStruct.decode(bytes);
  return { next: h.next, order: h.order, numElms: h.num_elms };
}

/** A chunk entry's fields. */
export interface KhoserChunkEntry {
  readonly physStart: bigint;
  readonly bitmap: bigint;
}

/** Encodes a chunk entry (16 bytes). Throws EINVAL for a field that does not fit. */
export function encodeKhoserChunkEntry(e: KhoserChunkEntry): Uint8Array {
  return KhoserChunkEntryStruct.encode({ phys_start: e.physStart, bitmap: e.bitmap });
}

/** Decodes the chunk entry at the start of `bytes` (at least 16) without checking it. */
export function decodeKhoserChunkEntry(bytes: Uint8Array): KhoserChunkEntry {
  const e = KhoserChunkEntryStruct.decode(bytes);
  return { physStart: e.phys_start, bitmap: e.bitmap };
}

// ------------------------------------------------------------------------------------------------ KHO-array form

/**
 * Bitmap record of the KHO-array form (the RFC's `struct khoser_mem_bitmap_ptr`, which carries its order; named
 * `khoser_mem_bitmap_ptr_karr` here to tell it from kho-v1's chunk entry): 24 bytes, 8-byte aligned, never
 * crossing a page boundary.
 *
 * `preserved-memory-map` is the phys of a 16-byte `struct kho_array` descriptor (section 9) at the start of a
 * page; every non-empty entry of that array is a physical pointer to one record. The project's writer uses
 * array version {@link KHO_V1_KARR_ARRAY_VERSION} (recorded in the descriptor, so a reader accepts either
 * version), puts record i at position i, lists orders ascending and `phys_start` ascending within an order, and
 * packs records {@link KHOSER_BITMAP_PTRS_PER_PAGE} to a page.
 */
export const KhoserMemBitmapPtrStruct = struct(
  'khoser_mem_bitmap_ptr_karr',
  {
    /** First byte the bitmap covers, a multiple of 128 MiB << order. */
    phys_start: u64big(),
    /** 0..10. */
    order: u32(),
    reserved: reserved(4),
    /** Phys of the bitmap page. */
    bitmap: u64big(),
  },
  24,
);
export const KHOSER_MEM_BITMAP_PTR_SIZE = KhoserMemBitmapPtrStruct.size;
/** Records the project's writer packs into a page: floor(PAGE_SIZE / 24) = 170. */
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

/**
 * Encodes a bitmap record (24 bytes). `reserved` is written as given (the project's writer gives 0), so that a
 * reader's check of it can be exercised. Throws EINVAL for a field that does not fit.
 */
export function encodeKhoserMemBitmapPtr(r: KhoserMemBitmapPtr): Uint8Array {
  const out = KhoserMemBitmapPtrStruct.encode({ phys_start: r.physStart, order: r.order, bitmap: r.bitmap });
  new DataView(out.buffer).setUint32(KhoserMemBitmapPtrStruct.offsetOf('reserved'), r.reserved, true);
  return out;
}

/**
 * Decodes the bitmap record at the start of `bytes` (at least 24) without checking it: the reserved field is read
 * as it is (the reader refuses it after the order, with its own message), at its declared offset.
 */
export function decodeKhoserMemBitmapPtr(bytes: Uint8Array): KhoserMemBitmapPtr {
  const v = new DataView(bytes.buffer, bytes.byteOffset, KHOSER_MEM_BITMAP_PTR_SIZE);
  return {
    physStart: v.getBigUint64(KhoserMemBitmapPtrStruct.offsetOf('phys_start'), true),
    order: v.getUint32(KhoserMemBitmapPtrStruct.offsetOf('order'), true),
    reserved: v.getUint32(KhoserMemBitmapPtrStruct.offsetOf('reserved'), true),
    bitmap: v.getBigUint64(KhoserMemBitmapPtrStruct.offsetOf('bitmap'), true),
  };
}
