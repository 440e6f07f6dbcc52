/**
 * Slab preservation (`KhoSlab`): which kmalloc objects survive a kexec. This is a contract between two kernels:
 * change nothing here without a new compatible string (`kho-slab-v2`) and table version. Imports nothing from the
 * implementation.
 *
 * What crosses the kexec is the slab pages themselves (each slab's block of 2^order pages is a preserved folio)
 * and a table that tells the next kernel, from RAM alone, each preserved slab's object size and which of its
 * objects are preserved.
 *
 * - Subtree `kho-slab` of the root FDT; its `preserved-data` is the phys of a one-page FDT (itself preserved):
 *   `/ { compatible = "kho-slab-v1"; slab-table = <u64 LE phys of the first table page>; }`.
 * - Table page (one preserved page of order 0), little-endian: a 16-byte header ({@link KhoSlabHeaderStruct}),
 *   then `nr_entries` entries of 80 bytes ({@link KhoSlabEntryStruct}); every byte after the last entry is zero.
 *   A page is never empty: an emptied page leaves the chain. The fields are declared, with what each holds, in
 *   those two structs.
 *
 * Limits: at most {@link KHO_SLAB_MAX_OBJECTS} objects per slab (kmalloc-8 on one page), {@link KHO_SLAB_ENTRIES_PER_PAGE}
 * entries per page, {@link KHO_SLAB_MAX_TABLE_PAGES} table pages, so {@link KHO_SLAB_MAX_SLABS} preserved slabs.
 * Objects of a preserved slab whose bit is clear come back free in the next kernel: their bytes are not kept.
 * The table is live: it is rewritten in place at every preserve and unpreserve, so a kexec at any moment hands
 * over a complete table. A reader refuses a table with a bad magic or version, counts out of range, non-zero
 * bytes after the last entry, an unknown kind, a misaligned block, a bitmap bit beyond the slab, a wrong
 * nr_preserved, or (checked by the implementation) a block that is not a preserved block of that order, an
 * object size that is not one of its kmalloc caches, overlapping blocks, and a chain that loops or is too long.
 */

import { MAX_PAGE_ORDER, PAGE_SIZE } from '@kho/physmem/abi';
import { bytes, struct, u16, u32, u64big, u8 } from '@kho/struct';

/** Name of the subtree in the root FDT. */
export const KHO_SLAB_SUBTREE = 'kho-slab';
/** Root compatible of the subtree's FDT: the version of this whole format. */
export const KHO_SLAB_COMPATIBLE = 'kho-slab-v1';
/** Property of the subtree's FDT: u64 (little-endian) phys of the first table page. */
export const PROP_SLAB_TABLE = 'slab-table';

/** Magic of a table page: 'KSLB'. */
export const KHO_SLAB_TABLE_MAGIC = 0x4b534c42;
export const KHO_SLAB_TABLE_VERSION = 1;

/** `struct kho_slab_table_header`, the first 16 bytes of a table page. */
export const KhoSlabHeaderStruct = struct(
  'kho_slab_table_header',
  {
    /** KHO_SLAB_TABLE_MAGIC ('KSLB'). */
    magic: u32(),
    /** KHO_SLAB_TABLE_VERSION. */
    version: u16(),
    /** 1..KHO_SLAB_ENTRIES_PER_PAGE. */
    nr_entries: u16(),
    /** Phys of the next table page, 0 for the last. */
    next: u64big(),
  },
  16,
);
export const KHO_SLAB_HEADER_SIZE = KhoSlabHeaderStruct.size;

/** `struct kho_slab_entry`, one preserved slab or large kmalloc (80 bytes). */
export const KhoSlabEntryStruct = struct(
  'kho_slab_entry',
  {
    /** The slab's block (or the large kmalloc's), aligned to PAGE_SIZE << order. */
    phys: u64big(),
    /** A kmalloc cache's object size (8 .. 8192); 0 for a large kmalloc. */
    object_size: u32(),
    /** 0..10: the block's order (the slab's own, which may differ from the next kernel's cache). */
    order: u8(),
    /** KHO_SLAB_KIND_SLAB or KHO_SLAB_KIND_LARGE (the whole block is one object). */
    kind: u8(),
    /** Bits set in the bitmap (at least 1). */
    nr_preserved: u16(),
    /**
     * 512 bits (8 u64 LE words, so bit i is bit i % 8 of byte i / 8): bit i set = object i (at phys + i *
     * object_size) is preserved. A slab holds floor((PAGE_SIZE << order) / object_size) objects and no bit at or
     * above that count may be set; a large kmalloc has exactly bit 0.
     */
    bitmap: bytes(64),
  },
  80,
);
export const KHO_SLAB_ENTRY_SIZE = KhoSlabEntryStruct.size;
export const KHO_SLAB_BITMAP_BYTES = KhoSlabEntryStruct.fields.bitmap.size;

/** Page size of the format (PAGE_SIZE of the machine, spec conventions). */
export const KHO_SLAB_PAGE_SIZE = PAGE_SIZE;
/** The largest block order of an entry (MAX_PAGE_ORDER). */
export const KHO_SLAB_MAX_ORDER = MAX_PAGE_ORDER;
/** Bits in an entry's bitmap: the most objects a preserved slab may hold. */
export const KHO_SLAB_MAX_OBJECTS = KHO_SLAB_BITMAP_BYTES * 8;
/** Entries in one table page: (PAGE_SIZE - 16) / 80. */
export const KHO_SLAB_ENTRIES_PER_PAGE = Math.floor((KHO_SLAB_PAGE_SIZE - KHO_SLAB_HEADER_SIZE) / KHO_SLAB_ENTRY_SIZE);
/** Table pages a chain may have. */
export const KHO_SLAB_MAX_TABLE_PAGES = 1024;
/** Preserved slabs (and large kmallocs) the table can describe. */
export const KHO_SLAB_MAX_SLABS = KHO_SLAB_ENTRIES_PER_PAGE * KHO_SLAB_MAX_TABLE_PAGES;

/** `kind` of an entry. */
export const KHO_SLAB_KIND_SLAB = 1;
export const KHO_SLAB_KIND_LARGE = 2;

/** One preserved slab or large kmalloc, as the table describes it. */
export interface KhoSlabEntry {
  readonly phys: number;
  readonly order: number;
  readonly kind: 'slab' | 'large';
  /** The cache's object size; 0 for a large kmalloc. */
  readonly objectSize: number;
  /** Indices of the preserved objects, ascending ([0] for a large kmalloc). */
  readonly preserved: readonly number[];
}

/** One decoded table page. */
export interface KhoSlabTablePage {
  readonly next: number;
  readonly entries: readonly KhoSlabEntry[];
}

/** Objects a slab block of `order` holds for objects of `objectSize` bytes. */
export function slabObjectCount(order: number, objectSize: number): number {
  return Math.floor((KHO_SLAB_PAGE_SIZE * 2 ** order) / objectSize);
}

/** Encodes a table page header. */
export function encodeSlabTableHeader(nrEntries: number, next: number): Uint8Array {
  return KhoSlabHeaderStruct.encode({ magic: KHO_SLAB_TABLE_MAGIC, version: KHO_SLAB_TABLE_VERSION, nr_entries: nrEntries, next: BigInt(next) });
}

/** Encodes an entry (the caller gives valid values: indices below KHO_SLAB_MAX_OBJECTS, no duplicates). */
export function encodeSlabTableEntry(e: KhoSlabEntry): Uint8Array {
  const bitmap = new Uint8Array(KHO_SLAB_BITMAP_BYTES);
  for (const i of e.preserved) bitmap[i >> 3] |= 1 << (i & 7);
  return KhoSlabEntryStruct.encode({
    phys: BigInt(e.phys),
    object_size: e.objectSize,
    order: e.order,
    kind: e.kind === 'slab' ? KHO_SLAB_KIND_SLAB : KHO_SLAB_KIND_LARGE,
    nr_preserved: e.preserved.length,
    bitmap,
  });
}

/** Encodes a whole table page (header, entries, zeros). */
export function encodeSlabTablePage(page: KhoSlabTablePage): Uint8Array {
  const out = new Uint8Array(KHO_SLAB_PAGE_SIZE);
  out.set(encodeSlabTableHeader(page.entries.length, page.next), 0);
  page.entries.forEach((e, i) => out.set(encodeSlabTableEntry(e), KHO_SLAB_HEADER_SIZE + i * KHO_SLAB_ENTRY_SIZE));
  return out;
}

/**
 * Decodes and checks one table page read from RAM (hostile): everything this layout alone can check (see the
 * file's comment). Returns the page, or a string saying what is wrong. A u64 at or above 2^53 is refused.
 */
export function decodeSlabTablePage(bytes: Uint8Array): KhoSlabTablePage | string {
  if (bytes.length !== KHO_SLAB_PAGE_SIZE) return `table page is ${bytes.length} bytes (wanted ${KHO_SLAB_PAGE_SIZE})`;
  // The header's fields are read as they are and checked in order (magic first) below; decoding cannot fail.
  const { magic, version, nr_entries: nr, next } = KhoSlabHeaderStruct.decode(bytes);
  if (magic !== KHO_SLAB_TABLE_MAGIC) return `magic 0x${magic.toString(16)} (wanted 0x${KHO_SLAB_TABLE_MAGIC.toString(16)})`;
  if (version !== KHO_SLAB_TABLE_VERSION) return `version ${version} (wanted ${KHO_SLAB_TABLE_VERSION})`;
  if (nr < 1 || nr > KHO_SLAB_ENTRIES_PER_PAGE) return `nr_entries ${nr} (wanted 1..${KHO_SLAB_ENTRIES_PER_PAGE})`;
  if (next >= 2n ** 53n) return `next 0x${next.toString(16)} is beyond any RAM`;
  const end = KHO_SLAB_HEADER_SIZE + nr * KHO_SLAB_ENTRY_SIZE;
  for (let off = end; off < KHO_SLAB_PAGE_SIZE; off++) {
    if (bytes[off] !== 0) return `byte ${off} after the last of ${nr} entries is 0x${bytes[off].toString(16)} (wanted 0)`;
  }
  const entries: KhoSlabEntry[] = [];
  for (let i = 0; i < nr; i++) {
    const e = decodeEntry(bytes, KHO_SLAB_HEADER_SIZE + i * KHO_SLAB_ENTRY_SIZE);
    if (typeof e === 'string') return `entry ${i}: ${e}`;
    entries.push(e);
  }
  return { next: Number(next), entries };
}

function decodeEntry(bytes: Uint8Array, at: number): KhoSlabEntry | string {
  const { phys: phys64, object_size: objectSize, order, kind: kindCode, nr_preserved: nrPreserved, bitmap } = KhoSlabEntryStruct.decode(bytes, at);
  if (kindCode !== KHO_SLAB_KIND_SLAB && kindCode !== KHO_SLAB_KIND_LARGE) {
    return `kind ${kindCode} (wanted ${KHO_SLAB_KIND_SLAB} slab or ${KHO_SLAB_KIND_LARGE} large)`;
  }
  if (order > KHO_SLAB_MAX_ORDER) return `order ${order} (wanted 0..${KHO_SLAB_MAX_ORDER})`;
  if (phys64 >= 2n ** 53n) return `phys 0x${phys64.toString(16)} is beyond any RAM`;
  const phys = Number(phys64);
  const blockSize = KHO_SLAB_PAGE_SIZE * 2 ** order;
  if (phys % blockSize !== 0) return `phys 0x${phys.toString(16)} is not aligned to its order ${order}`;
  const preserved: number[] = [];
  for (let b = 0; b < KHO_SLAB_BITMAP_BYTES; b++) {
    const byte = bitmap[b];
    for (let k = 0; k < 8; k++) if (byte & (1 << k)) preserved.push(b * 8 + k);
  }
  if (kindCode === KHO_SLAB_KIND_LARGE) {
    if (objectSize !== 0) return `a large kmalloc with object_size ${objectSize} (wanted 0)`;
    if (preserved.length !== 1 || preserved[0] !== 0 || nrPreserved !== 1) return 'a large kmalloc whose bitmap is not exactly bit 0 with nr_preserved 1';
    return { phys, order, kind: 'large', objectSize: 0, preserved };
  }
  if (objectSize === 0 || objectSize % 8 !== 0) return `object_size ${objectSize} (wanted a positive multiple of 8)`;
  const nrObjects = slabObjectCount(order, objectSize);
  if (nrObjects < 1 || nrObjects > KHO_SLAB_MAX_OBJECTS) {
    return `an order-${order} slab of ${objectSize}-byte objects holds ${nrObjects} (wanted 1..${KHO_SLAB_MAX_OBJECTS})`;
  }
  const beyond = preserved.find((i) => i >= nrObjects);
  if (beyond !== undefined) return `bit ${beyond} is set, beyond the slab's ${nrObjects} objects`;
  if (preserved.length === 0 || preserved.length !== nrPreserved) {
    return `nr_preserved ${nrPreserved} with ${preserved.length} bits set (wanted equal and at least 1)`;
  }
  return { phys, order, kind: 'slab', objectSize, preserved };
}
