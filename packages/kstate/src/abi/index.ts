/**
 * The kstate stream, format version 1 (KSTATE_FORMAT_VERSION). A contract between two kernels: the previous
 * kernel writes it into preserved memory at `prepare`; the next kernel, and any tool that has none of the
 * writer's code (`dumpStream`, `kho inspect`), reads it from these rules alone. Any change to a layout, a tag or
 * a kind code below needs a new KSTATE_FORMAT_VERSION; readers refuse a version they do not know before reading
 * anything else. This file imports nothing from the implementation.
 *
 * All integers are little-endian. `uleb` is an unsigned LEB128 number of at most 8 bytes whose value is below
 * 2^53. Strings are UTF-8 (valid UTF-8 required), prefixed by their byte length as a uleb.
 *
 * 1. Segments. The stream lives in one or more segments; each is a preserved block of 2^order pages
 *    (order 0..10) starting with a 48-byte header, `struct kstate_segment` ({@link KStateSegmentStruct}: its
 *    fields and what each holds are declared there).
 *
 *    The root segment is what the `kstate` subtree of the root FDT points at (`preserved-data`); it may lie at
 *    phys 0, no other segment can (next = 0 ends the chain), so a writer puts a block at 0 first. A reader checks
 *    magic, then version, then everything else; it follows `next` at most nr_segments - 1 times, refuses a
 *    segment reached twice or overlapping another, and requires the payload lengths to add up to total_len.
 *
 * 2. Records. The logical stream (the segments' payloads, concatenated in index order) is a sequence of
 *    records, each a 12-byte header (`struct kstate_record`, {@link KStateRecordStruct}) and its body. Every
 *    SCHEMA record comes first, then every SECTION record, then exactly one END record, which ends at total_len.
 *
 * 3. Keys (KStateKeyTag). A description id is UINT (uleb) or STRING (uleb length 1..255, UTF-8). An instance
 *    id is UINT, STRING, or NAMED: u32 hash (CRC32C of the UTF-8 name) then the name as a STRING is; a reader
 *    refuses a NAMED key whose hash does not match its name.
 *
 * 4. SCHEMA body: one description, stored once per stream:
 *    `key id`, `string name`, `u16 version`, `u16 min_version`, `u16 oldest_reader`, `uleb nr_fields`, then
 *    per field: `string name`, `u8 kind` (KStateKind), `u8 flags` (bit 0: since present, bit 1: until
 *    present, others 0), `uleb size` (bytes of a fixed-size value, the element size for an array of scalars,
 *    0 when the value is length-prefixed), `u16 since` if flagged, `u16 until` if flagged; for `array`:
 *    `u8 elem` (a scalar kind, or STRUCT for an array of records); for `struct`, `ptr` and an array of
 *    records: `key ref` (the nested description's id); then `uleb nr_subsections` and one `key` per
 *    subsection description. A field with `until` is deprecated: it is described, never written.
 *
 * 5. SECTION body: `key id`, `key instance`, `record`. A record is the description's written fields (those
 *    without `until`) in schema order, then `uleb nr_subsections` and, per subsection written, `key id`,
 *    `uleb len`, `record` (of that subsection's description). Field values:
 *    - u8 u16 u32 u64 i8 i16 i32 i64 phys: their width; bool: one byte, 0 or 1;
 *    - str[N]: N bytes of UTF-8, zero-padded (no NUL inside); bytes[N]: N bytes;
 *    - struct: `uleb len`, `record`; ptr: `u8 present` (0 or 1), then if present `uleb len`, `record`;
 *    - array: `uleb count`, then count fixed-size scalars, or count times `uleb len`, `record`;
 *    - folio: `struct kstate_folio` ({@link KStateFolioStruct}; all 16 bytes 0: no folio);
 *    - vmalloc: the 16-byte `struct kho_vmalloc` of `@kho/vmalloc/abi` (first = 0: no buffer);
 *    - physRange: `struct kstate_phys_range` ({@link KStatePhysRangeStruct}; all 0: no range; pages preserved
 *      with the KHO page split);
 *    - custom: `uleb len`, then the bytes the writer's save callback produced.
 *
 * 6. END body: `struct kstate_end` ({@link KStateEndStruct}), its counts equal to the records before it.
 */
import { reserved, struct, u16, u32, u64, u64big, u8 } from '@kho/struct';

/** 'KSTA' as a little-endian u32: the first four bytes of every segment. */
export const KSTATE_MAGIC = 0x4154534b;
/** The stream format this code writes and the only one it reads. */
export const KSTATE_FORMAT_VERSION = 1;
/** Name of the root FDT subtree whose `preserved-data` is the phys of the root segment. */
export const KSTATE_SUBTREE = 'kstate';

/**
 * `struct kstate_segment`, the header of every segment (48 bytes). A reader checks magic, then version, then
 * everything else.
 */
export const KStateSegmentStruct = struct(
  'kstate_segment',
  {
    /** KSTATE_MAGIC ('KSTA'). */
    magic: u32(),
    /** KSTATE_FORMAT_VERSION. */
    version: u16(),
    /** 48, the size of this header. */
    header_size: u16(),
    /** 0 for the root, +1 for each following segment. */
    index: u32(),
    /** The same in every segment. */
    nr_segments: u32(),
    /** Phys of the next segment, 0 in the last. */
    next: u64(),
    /** Bytes of the logical stream, the same in every segment (a bigint: a reader names a bad value exactly). */
    total_len: u64big(),
    /** Bytes of the logical stream this segment holds, after its header. */
    payload_len: u32(),
    /** Order of this segment's block. */
    order: u8(),
    reserved: reserved(7),
    /** CRC32C of the header's bytes before this field. */
    header_crc: u32(),
  },
  48,
);
/** Bytes of a segment header. */
export const KSTATE_SEGMENT_HEADER_SIZE = KStateSegmentStruct.size;
/** Bytes of the segment header covered by header_crc: everything before it. */
export const KSTATE_SEGMENT_CRC_SPAN = KStateSegmentStruct.offsetOf('header_crc');

/** `struct kstate_record`, the header of every record (12 bytes); its body follows. */
export const KStateRecordStruct = struct(
  'kstate_record',
  {
    /** KStateRecordType. */
    type: u8(),
    reserved0: reserved(1),
    reserved1: reserved(2),
    /** Bytes of the body. */
    body_len: u32(),
    /** CRC32C of the header's bytes before this field, followed by the body. */
    crc: u32(),
  },
  12,
);
/** Bytes of a record header. */
export const KSTATE_RECORD_HEADER_SIZE = KStateRecordStruct.size;

/** Record types. */
export const KStateRecordType = { SCHEMA: 1, SECTION: 2, END: 3 } as const;
/** `struct kstate_end`, the END record's body: how many SCHEMA and SECTION records come before it. */
export const KStateEndStruct = struct('kstate_end', { nr_schemas: u32(), nr_sections: u32() }, 8);
/** Bytes of the END record's body. */
export const KSTATE_END_BODY_SIZE = KStateEndStruct.size;

/** Key tags. */
export const KStateKeyTag = { UINT: 1, STRING: 2, NAMED: 3 } as const;

/** Field kind codes. */
export const KStateKind = {
  u8: 1,
  u16: 2,
  u32: 3,
  u64: 4,
  i8: 5,
  i16: 6,
  i32: 7,
  i64: 8,
  bool: 9,
  phys: 10,
  str: 11,
  bytes: 12,
  struct: 13,
  ptr: 14,
  array: 15,
  folio: 16,
  vmalloc: 17,
  physRange: 18,
  custom: 19,
} as const;

/** Schema field flags. */
export const KSTATE_FIELD_HAS_SINCE = 0x1;
export const KSTATE_FIELD_HAS_UNTIL = 0x2;

/** Folio flag: a folio is present (phys 0 is a valid address, so presence is a flag). */
export const KSTATE_PRESENT = 0x1;

/** `struct kstate_folio`, a folio value: its phys, its order and KSTATE_PRESENT in flags (all 0: no folio). */
export const KStateFolioStruct = struct('kstate_folio', { phys: u64(), order: u32(), flags: u32() }, 16);
/** Bytes of a folio value. */
export const KSTATE_FOLIO_SIZE = KStateFolioStruct.size;
/**
 * `struct kstate_phys_range`, a physRange value: a page-aligned range preserved as pages (all 0: no range). A
 * vmalloc value is `struct kho_vmalloc`, declared by `@kho/vmalloc/abi`.
 */
export const KStatePhysRangeStruct = struct('kstate_phys_range', { start: u64(), size: u64() }, 16);
/** Bytes of a physRange value. */
export const KSTATE_PHYS_RANGE_SIZE = KStatePhysRangeStruct.size;

/** Bounds every reader enforces (a writer never exceeds them). */
export const KSTATE_LIMITS = {
  /** Segments in a stream. */
  maxSegments: 65536,
  /** Bytes of the logical stream (2 GiB - 1: one host buffer). */
  maxStreamBytes: 0x7fffffff,
  /** Bytes of a name, id or string instance. */
  maxNameBytes: 255,
  /** Fields of one description. */
  maxFields: 1024,
  /** Subsections of one description. */
  maxSubsections: 256,
  /** Nesting of records (struct, ptr, array elements, subsections) inside a section. */
  maxDepth: 32,
  /** Bytes of a str[N] or bytes[N] field. */
  maxFixedBytes: 65535,
  /** Versions are u16. */
  maxVersion: 0xffff,
} as const;
