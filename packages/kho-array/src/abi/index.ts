/**
 * The KHO array (docs/abi/kho.md section 9, "KARR"): a sparse array of u64 entries indexed by u64 positions, kept
 * in one-page chunks of RAM and handed to the next kernel through a 16-byte descriptor. Everything here is a
 * contract with the next kernel (and, for version 0, with the RFC it comes from). This file imports nothing from
 * the implementation.
 *
 * Versioning: the descriptor's `version` field names the page layout. Changing anything about a layout that
 * exists (a field, an offset, a limit, a rule a reader checks) needs a new version number and a reader for it;
 * a change to the descriptor itself needs a new magic. Version 0 is the RFC's and is frozen; version 1 is the
 * project's and is bumped to 2 on any change to the page header or the block format below.
 *
 * Conventions: little-endian; a physical pointer is a u64 phys, 0 = none; pages are PAGE_SIZE (4096) bytes,
 * page-aligned, order 0. A position is any u64 (0..2^64-1); positions strictly increase along the page chain.
 * The layouts are declared once with `@kho/struct` (the `*Struct` constants); code that reads pages in place
 * takes their field offsets from them (`offsetOf`, `offsetTable`).
 */
import { PAGE_SIZE } from '@kho/physmem/abi';
import { array, bits64, reserved, struct, u16, u32, u64big } from '@kho/struct';

/** Bytes in a page. */
export const KHO_ARRAY_PAGE_SIZE = PAGE_SIZE;

// ------------------------------------------------------------------------------------------------ descriptor

/** `magic` of `struct kho_array`: 'KARR'. */
export const KHO_ARRAY_MAGIC = 0x4b415252;
/** The RFC's layout: dense pages of 510 entries at a `startpos` multiple of 510. */
export const KHO_ARRAY_VERSION_0 = 0;
/** The project's sparse layout: pages of blocks of consecutive entries. */
export const KHO_ARRAY_VERSION_1 = 1;
/** The version a writer uses unless told otherwise. */
export const KHO_ARRAY_DEFAULT_VERSION = KHO_ARRAY_VERSION_1;
/** The layouts this reader understands. */
export const KHO_ARRAY_VERSIONS: readonly number[] = [KHO_ARRAY_VERSION_0, KHO_ARRAY_VERSION_1];

/**
 * `struct kho_array` (packed, 16 bytes). The descriptor is the caller's to place (inside its own preserved blob,
 * or an FDT property); the array's pages are the array's.
 */
export const KhoArrayStruct = struct(
  'kho_array',
  {
    /** KHO_ARRAY_MAGIC. */
    magic: u32(),
    /** The page layout (0 or 1). */
    version: u16(),
    reserved: reserved(2),
    /** Phys of the first page, 0 = empty array. */
    first: u64big(),
  },
  16,
);
export const KHO_ARRAY_DESC_SIZE = KhoArrayStruct.size;

/** The fields of a descriptor, as read (nothing checked). `first` is exact: a bigint. */
export interface KhoArrayDescriptor {
  readonly magic: number;
  readonly version: number;
  readonly reserved: number;
  readonly first: bigint;
}

/**
 * Encodes `struct kho_array` for `version` and `first` (phys of the first page, 0 = empty). Returns 16 bytes.
 * Throws EINVAL for a version that is not a u16 or a `first` that is not a u64.
 */
export function encodeKhoArrayDescriptor(version: number, first: number | bigint): Uint8Array {
  return KhoArrayStruct.encode({ magic: KHO_ARRAY_MAGIC, version, first: BigInt(first) });
}

/**
 * Decodes the 16 bytes of `struct kho_array` at the start of `bytes` (which must hold at least 16) without checking
 * them: the reader checks magic and version (EOPNOTSUPP) before the reserved field (EINVAL), so this reads the
 * fields at their declared offsets, the reserved one included, rather than through `KhoArrayStruct.decode`.
 */
export function decodeKhoArrayDescriptor(bytes: Uint8Array): KhoArrayDescriptor {
  const v = new DataView(bytes.buffer, bytes.byteOffset, KHO_ARRAY_DESC_SIZE);
  return {
    magic: v.getUint32(KhoArrayStruct.offsetOf('magic'), true),
    version: v.getUint16(KhoArrayStruct.offsetOf('version'), true),
    reserved: v.getUint16(KhoArrayStruct.offsetOf('reserved'), true),
    first: v.getBigUint64(KhoArrayStruct.offsetOf('first'), true),
  };
}

// ------------------------------------------------------------------------------------------------ entries

/**
 * An entry is a u64: 0 is an empty slot; an 8-byte-aligned physical pointer (low 3 bits 000); or a tagged value
 * `(v << 1) | 1` for v in 0..2^63-1. Anything else (low bits 010, 100, 110) is malformed.
 */
export const KHO_ARRAY_VALUE_MAX = (1n << 63n) - 1n;

/** The entry that stores value `v` (0..2^63-1): `(v << 1) | 1`. */
export function tagValue(v: bigint): bigint {
  return (v << 1n) | 1n;
}

/** True when `entry` is a tagged value (bit 0 set). */
export function isTaggedValue(entry: bigint): boolean {
  return (entry & 1n) === 1n;
}

/** The value a tagged entry stores: `entry >> 1`. */
export function untagValue(entry: bigint): bigint {
  return entry >> 1n;
}

/** True when `entry` is well formed: empty, a tagged value, or an 8-byte-aligned pointer. */
export function isValidEntry(entry: bigint): boolean {
  return (entry & 1n) === 1n || (entry & 7n) === 0n;
}

// ------------------------------------------------------------------------------------------------ version 0

/** Entries in a version-0 page (the RFC's KA_PAGE_NR_ENTRIES): (PAGE_SIZE - 16) / 8, after `next` and `startpos`. */
export const KA_V0_NR_ENTRIES = (KHO_ARRAY_PAGE_SIZE - 16) / 8;
/**
 * Version 0 page (the RFC's `struct kho_array_page`), one page. Pages are chained in strictly increasing
 * `startpos`. Holes between pages cost nothing; holes inside a page cost 8 bytes per position. Every slot of a
 * page has a u64 position: startpos + 509 <= 2^64 - 1.
 */
export const KaPageV0Struct = struct(
  'kho_array_page',
  {
    /** Phys of the next page, 0 = last. */
    next: u64big(),
    /** Position of entries[0], a multiple of 510. */
    startpos: u64big(),
    /** Entry i has position startpos + i. */
    entries: array(u64big(), KA_V0_NR_ENTRIES),
  },
  KHO_ARRAY_PAGE_SIZE,
);
/** The largest `startpos` a version-0 page may have (so that its last slot is still a u64 position). */
const V0_SLOTS = BigInt(KA_V0_NR_ENTRIES);
export const KA_V0_MAX_STARTPOS = ((2n ** 64n - 1n - (V0_SLOTS - 1n)) / V0_SLOTS) * V0_SLOTS;

// ------------------------------------------------------------------------------------------------ version 1

/**
 * Version 1 page (the project's sparse format), 4096 bytes: a 24-byte header ({@link KaPageV1Struct}), then
 * `used` bytes of blocks, back to back.
 *
 * A block is a header u64 ({@link KaBlockHeaderStruct}: `flags:1 (bit 0) | num_entries:13 (bits 1..13) |
 * pos_increment:50 (bits 14..63)`), then, when flags = 1, a u64 holding the block's absolute first position,
 * then `num_entries` (at least 1) entries at consecutive positions. A block's first position is
 * - for the first block of a page: `first_pos` (its flags and pos_increment are 0);
 * - otherwise, with flags = 0: the previous block's last position + pos_increment (at least 1);
 * - otherwise (flags = 1, written when the distance does not fit in 50 bits; pos_increment is then 0): the
 *   absolute position, which must lie after the previous block's last position.
 * The `nr_blocks` blocks fill exactly `used` bytes; a page's `first_pos` lies after the previous page's last
 * position; a block's last position is at most 2^64 - 1. Entries inside a block may be 0 (empty slots).
 *
 * Cost: dense data takes 8 bytes per entry plus 32 per page (508 entries per page); an isolated entry takes 16
 * bytes, or 24 when its distance needs the absolute form. So at most 24 bytes per entry, plus the page's header
 * and at most 16 bytes left unused at its end (at least 169 entries per page).
 *
 * The project's writer (not part of the format, which any reader must accept as above): the last block of the
 * last page runs to the end of the page in empty slots, so that appending the next position is one store; a
 * block keeps at most one empty slot between two entries, and a larger gap trims it after its last entry and
 * starts a new block.
 */
export const KaPageV1Struct = struct(
  'kho_array_page_v1',
  {
    /** Phys of the next page, 0 = last. */
    next: u64big(),
    /** Position of the first entry of the page's first block. */
    first_pos: u64big(),
    /** Blocks in the page, at least 1. */
    nr_blocks: u16(),
    /** Bytes of blocks after the header, a multiple of 8 in 16..KA_V1_BLOCK_SPACE. */
    used: u16(),
    reserved: reserved(4),
  },
  24,
);
/** Bytes of a version-1 page header. */
export const KA_V1_HEADER_SIZE = KaPageV1Struct.size;
/** Bytes a version-1 page has for blocks. */
export const KA_V1_BLOCK_SPACE = KHO_ARRAY_PAGE_SIZE - KA_V1_HEADER_SIZE;
/** The bit fields of a block header, lowest first. */
const KA_V1_BLOCK_BITS = { flags: 1, num_entries: 13, pos_increment: 50 } as const;
/** A version-1 block header: one little-endian u64 of bit fields. */
export const KaBlockHeaderStruct = struct('kho_array_block_header', { header: bits64(KA_V1_BLOCK_BITS) }, 8);
/** Bits and limits of a block header (from {@link KaBlockHeaderStruct}'s bit fields). */
export const KA_V1_FLAG_ABSOLUTE = 1;
export const KA_V1_NUM_ENTRIES_SHIFT = KA_V1_BLOCK_BITS.flags;
export const KA_V1_NUM_ENTRIES_BITS = KA_V1_BLOCK_BITS.num_entries;
export const KA_V1_MAX_ENTRIES = 2 ** KA_V1_NUM_ENTRIES_BITS - 1;
export const KA_V1_POS_INCREMENT_SHIFT = KA_V1_NUM_ENTRIES_SHIFT + KA_V1_NUM_ENTRIES_BITS;
export const KA_V1_POS_INCREMENT_BITS = KA_V1_BLOCK_BITS.pos_increment;
/** The largest pos_increment a header holds; a larger distance takes the absolute form. */
export const KA_V1_MAX_POS_INCREMENT = 2 ** KA_V1_POS_INCREMENT_BITS - 1;

/** The fields of a version-1 block header. */
export interface KaBlockHeader {
  readonly absolute: boolean;
  readonly numEntries: number;
  readonly posIncrement: number;
}

/** Encodes a version-1 block header as a u64. Fields are masked to their widths. */
export function encodeKaBlockHeader(h: KaBlockHeader): bigint {
  return (
    (h.absolute ? 1n : 0n) |
    ((BigInt(h.numEntries) & BigInt(KA_V1_MAX_ENTRIES)) << BigInt(KA_V1_NUM_ENTRIES_SHIFT)) |
    ((BigInt(h.posIncrement) & BigInt(KA_V1_MAX_POS_INCREMENT)) << BigInt(KA_V1_POS_INCREMENT_SHIFT))
  );
}

/** Decodes a version-1 block header u64 (nothing checked). */
export function decodeKaBlockHeader(word: bigint): KaBlockHeader {
  return {
    absolute: (word & 1n) === 1n,
    numEntries: Number((word >> BigInt(KA_V1_NUM_ENTRIES_SHIFT)) & BigInt(KA_V1_MAX_ENTRIES)),
    posIncrement: Number(word >> BigInt(KA_V1_POS_INCREMENT_SHIFT)),
  };
}

export * from './bitmap';
