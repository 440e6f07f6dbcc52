/**
 * The flattened device tree blob (DTB), version 17: the standard format of the Devicetree Specification,
 * as written by dtc and read by libfdt. This is a contract with every outside tool (`dtc -I dtb` must read
 * what we write), so nothing here is the project's to change; a KHO-specific change belongs in the
 * compatible strings of the trees, never in this layout.
 *
 * Layout of a blob, in the order we write it:
 *
 *   header (40 bytes)  | memory reservation block (8-aligned) | structure block (4-aligned) | strings block
 *
 * Every header field and every structure-block token is a **big-endian** u32, as the standard requires.
 * KHO property VALUES are the writer's bytes: KHO stores native-endian (little-endian) u64 values in them
 * (upstream does the same), which is a choice about the bytes of a value, not about the blob's structure.
 *
 * The three fixed layouts (header, reservation entry, property header) are declared once with `@kho/struct`
 * (`FdtHeaderStruct`, …); `FDT_HEADER`, `FDT_RESERVE_ENTRY` and `FDT_PROP_HEADER` are their fields' offsets and
 * sizes. Imports nothing from the implementation.
 */
import { be32, be64, struct, type Fields, type Layout } from '@kho/struct';

/** A field of a fixed layout: byte offset and size. Every FDT field is a big-endian unsigned integer. */
export interface FdtField {
  readonly offset: number;
  readonly size: 4 | 8;
}

/** Each field's offset and size, from a layout's declaration. */
function fieldsOf<F extends Fields>(layout: Layout<F>): { readonly [K in keyof F]: FdtField } {
  return Object.fromEntries(layout.table.map((f) => [f.name, { offset: f.offset, size: f.size as 4 | 8 }])) as { [K in keyof F]: FdtField };
}

/** `fdt_header.magic`. */
export const FDT_MAGIC = 0xd00dfeed;

/** Structure-block tokens (big-endian u32, 4-byte aligned). */
export const FDT_BEGIN_NODE = 0x1;
export const FDT_END_NODE = 0x2;
export const FDT_PROP = 0x3;
export const FDT_NOP = 0x4;
export const FDT_END = 0x9;

/** Alignment of structure-block tokens and of the data that follows them. */
export const FDT_TAGSIZE = 4;

/** The version we write, and the oldest version a reader of our blobs must understand. */
export const FDT_VERSION = 17;
export const FDT_LAST_COMP_VERSION = 16;
/** The oldest version we read: v16 drops the unit-path root name and the 8-byte prop alignment of v<16. */
export const FDT_FIRST_SUPPORTED_VERSION = 16;

/** Depth (levels, the root counting as one) beyond which a reader gives up, as libfdt's FDT_MAX_DEPTH. */
export const FDT_MAX_DEPTH = 32;
/** Node names and property names are at most 31 characters (Devicetree Specification 2.2.1, 2.2.4). */
export const FDT_MAX_NAME_LEN = 31;

/** `struct fdt_header`, 40 bytes for version 17 (`size_dt_struct` is absent before v17). */
export const FdtHeaderStruct = struct(
  'fdt_header',
  {
    magic: be32(),
    totalsize: be32(),
    off_dt_struct: be32(),
    off_dt_strings: be32(),
    off_mem_rsvmap: be32(),
    version: be32(),
    last_comp_version: be32(),
    boot_cpuid_phys: be32(),
    size_dt_strings: be32(),
    size_dt_struct: be32(),
  },
  40,
);
export const FDT_HEADER = fieldsOf(FdtHeaderStruct);
export const FDT_HEADER_SIZE = FdtHeaderStruct.size;

/** `struct fdt_reserve_entry`, 16 bytes, 8-byte aligned; a list ended by an all-zero entry. */
export const FdtReserveEntryStruct = struct('fdt_reserve_entry', { address: be64(), size: be64() }, 16);
export const FDT_RESERVE_ENTRY = fieldsOf(FdtReserveEntryStruct);
export const FDT_RESERVE_ENTRY_SIZE = FdtReserveEntryStruct.size;
export const FDT_RESERVE_ALIGN = 8;

/** `struct fdt_property` after its FDT_PROP token: value length, then the name's offset in the strings block. */
export const FdtPropHeaderStruct = struct('fdt_property', { len: be32(), nameoff: be32() }, 8);
export const FDT_PROP_HEADER = fieldsOf(FdtPropHeaderStruct);
export const FDT_PROP_HEADER_SIZE = FdtPropHeaderStruct.size;
