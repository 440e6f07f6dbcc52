/**
 * The memfd handover format, version MEMFD_VERSION (`kho-lab-memfd-v1`, the project's own: upstream's LUO memfd
 * handler calls its different record layout `memfd-v1`/`memfd-v2`): the file table the outgoing kernel leaves in
 * preserved memory, found by the next kernel through subtree 'memfd' of the root FDT (its `preserved-data` is the
 * phys of the table). It is a contract between two kernels: any change to a layout below bumps MEMFD_VERSION,
 * and the reader then accepts or refuses the older version explicitly. Every field is little-endian; reserved
 * fields and bits are written as zero and checked on read. This file imports nothing from the implementation.
 *
 * The table is one block from `kho.allocPreserve` (a power of two pages, at most MEMFD_TABLE_MAX_SIZE):
 *
 *   header                       MEMFD_HEADER_SIZE bytes
 *   file entries[nr_files]       MEMFD_FILE_SIZE bytes each, in the order the files' folio runs appear
 *   folio entries[nr_folios]     MEMFD_FOLIO_SIZE bytes each; file i owns entries
 *                                [first_folio, first_folio + nr_folios), and the runs tile the array in order
 *   (zero up to the end of the block)
 *
 * `table_size` is exactly 32 + 80 × nr_files + 16 × nr_folios, and `crc32` (IEEE 802.3, as zlib's crc32) covers
 * the bytes [MEMFD_HEADER_SIZE, table_size). The outgoing kernel writes the table at `prepare` with crc32 = 0 and
 * writes crc32 at `serialize`: a table whose checksum does not match was never sealed, or was damaged.
 */
import { MAX_PAGE_ORDER, PAGE_SIZE } from '@kho/physmem/abi';
import { char, reserved, struct, u32, u16, u64big } from '@kho/struct';

/** Node name of the subtree in the root FDT. */
export const MEMFD_SUBTREE = 'memfd';
/** First u32 of the table; its bytes read 'MEMF' in a hex dump. */
export const MEMFD_MAGIC = 0x464d454d;
/** Version of the layouts below. */
export const MEMFD_VERSION = 1;
/** The name of this format (the example plugin's own; not upstream's LUO memfd, whose handler is `memfd-v2`). */
export const MEMFD_COMPATIBLE = 'kho-lab-memfd-v1';

/** Header (32 bytes). */
export const MemfdHeaderStruct = struct(
  'memfd_header',
  {
    magic: u32(),
    version: u16(),
    reserved0: reserved(2),
    nr_files: u32(),
    nr_folios: u32(),
    table_size: u32(),
    crc32: u32(),
    reserved1: reserved(8),
  },
  32,
);
export const MEMFD_HEADER_SIZE = MemfdHeaderStruct.size;

/**
 * File entry (80 bytes): name (UTF-8, 1..MEMFD_NAME_MAX bytes, NUL-terminated, zero after the NUL), size in
 * bytes, then the file's folio entries (ascending by offset): first_folio and nr_folios.
 */
export const MemfdFileStruct = struct('memfd_file', { name: char(64), size: u64big(), first_folio: u32(), nr_folios: u32() }, 80);
export const MEMFD_FILE_SIZE = MemfdFileStruct.size;
/** Bytes of the name field; a name holds at most MEMFD_NAME_MAX bytes and its terminating NUL. */
export const MEMFD_NAME_FIELD = MemfdFileStruct.fields.name.size;
export const MEMFD_NAME_MAX = MEMFD_NAME_FIELD - 1;

/**
 * Folio entry (16 bytes): offset (byte offset of the folio in its file: a multiple of the folio's size, below the
 * file size), phys_order (`phys | order`: phys is aligned to the folio's size, so its low 12 bits are free; bits
 * 0..3 hold the order, 0..MEMFD_MAX_FOLIO_ORDER; bits 4..11 are reserved, zero). Both are read as bigints: a
 * reader compares them before they become numbers.
 */
export const MemfdFolioStruct = struct('memfd_folio', { offset: u64big(), phys_order: u64big() }, 16);
export const MEMFD_FOLIO_SIZE = MemfdFolioStruct.size;
/** Mask of the order bits and of the reserved bits in phys_order. */
export const MEMFD_ORDER_MASK = 0xf;
export const MEMFD_RESERVED_MASK = 0xff0;

/** Largest folio the page cache allocates (2 MiB, the PMD size of x86-64): orders 0..9. */
export const MEMFD_MAX_FOLIO_ORDER = 9;
/** Files that may exist at once in a kernel (create: ENOSPC), and so the most a table holds. */
export const MEMFD_MAX_FILES = 256;
/** Largest file size (write, truncate: E2BIG): 1 GiB. */
export const MEMFD_MAX_FILE_SIZE = 2 ** 30;
/** Largest table: the largest block `kho.allocPreserve` gives (order MAX_PAGE_ORDER, 4 MiB). prepare: E2BIG. */
export const MEMFD_TABLE_MAX_SIZE = PAGE_SIZE * 2 ** MAX_PAGE_ORDER;
/** Most folio entries a table can hold (with no file entry at all). */
export const MEMFD_MAX_FOLIOS = Math.floor((MEMFD_TABLE_MAX_SIZE - MEMFD_HEADER_SIZE) / MEMFD_FOLIO_SIZE);
