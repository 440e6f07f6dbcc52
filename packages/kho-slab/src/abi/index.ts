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
 * - Table page (one preserved page of order 0), little-endian:
 *
 *   | off | size | field |
 *   |---|---|---|
 *   | 0 | 4 | magic = 0x4b534c42 ('KSLB') |
 *   | 4 | 2 | version = 1 |
 *   | 6 | 2 | nr_entries: 1..51 (a page is never empty: an emptied page leaves the chain) |
 *   | 8 | 8 | next: phys of the next table page, 0 for the last |
 *   | 16 + 80 i | 80 | entry i, for i < nr_entries; every byte after the last entry is zero |
 *
 * - Entry (80 bytes):
 *
 *   | off | size | field |
 *   |---|---|---|
 *   | 0 | 8 | phys: the slab's block (or the large kmalloc's), aligned to PAGE_SIZE << order |
 *   | 8 | 4 | object_size: a kmalloc cache's object size (8 .. 8192); 0 for a large kmalloc |
 *   | 12 | 1 | order: 0..10, the block's order (the slab's own, which may differ from the next kernel's cache) |
 *   | 13 | 1 | kind: 1 = slab, 2 = large kmalloc (the whole block is one object) |
 *   | 14 | 2 | nr_preserved: number of bits set in the bitmap (at least 1) |
 *   | 16 | 64 | bitmap: 512 bits as 8 u64 LE words; bit i set = object i (at phys + i * object_size) is preserved. A slab holds floor((PAGE_SIZE << order) / object_size) objects; no bit at or above that count may be set. A large kmalloc has exactly bit 0. |
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

/** Name of the subtree in the root FDT. */
export const KHO_SLAB_SUBTREE = 'kho-slab';
/** Root compatible of the subtree's FDT: the version of this whole format. */
export const KHO_SLAB_COMPATIBLE = 'kho-slab-v1';
/** Property of the subtree's FDT: u64 (little-endian) phys of the first table page. */
export const PROP_SLAB_TABLE = 'slab-table';

/** Magic of a table page: 'KSLB'. */
export const KHO_SLAB_TABLE_MAGIC = 0x4b534c42;
export const KHO_SLAB_TABLE_VERSION = 1;

/** Table page header (16 bytes). */
export const KHO_SLAB_HEADER_SIZE = 16;
export const KhoSlabHeaderLayout = { magic: 0, version: 4, nr_entries: 6, next: 8 } as const;

/** Table entry (80 bytes). */
export const KHO_SLAB_ENTRY_SIZE = 80;
export const KhoSlabEntryLayout = { phys: 0, object_size: 8, order: 12, kind: 13, nr_preserved: 14, bitmap: 16 } as const;
export const KHO_SLAB_BITMAP_BYTES = 64;

/** Page size of the format (PAGE_SIZE of the machine, spec conventions). */
export const KHO_SLAB_PAGE_SIZE = 4096;
/** The largest block order of an entry (MAX_PAGE_ORDER). */
export const KHO_SLAB_MAX_ORDER = 10;
/** Bits in an entry's bitmap: the most objects a preserved slab may hold. */
export const KHO_SLAB_MAX_OBJECTS = KHO_SLAB_BITMAP_BYTES * 8;
/** Entries in one table page: (4096 - 16) / 80. */
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
  const out = new Uint8Array(KHO_SLAB_HEADER_SIZE);
  const v = new DataView(out.buffer);
  v.setUint32(KhoSlabHeaderLayout.magic, KHO_SLAB_TABLE_MAGIC, true);
  v.setUint16(KhoSlabHeaderLayout.version, KHO_SLAB_TABLE_VERSION, true);
  v.setUint16(KhoSlabHeaderLayout.nr_entries, nrEntries, true);
  v.setBigUint64(KhoSlabHeaderLayout.next, BigInt(next), true);
  return out;
}

/** Encodes an entry (the caller gives valid values: indices below KHO_SLAB_MAX_OBJECTS, no duplicates). */
export function encodeSlabTableEntry(e: KhoSlabEntry): Uint8Array {
  const out = new Uint8Array(KHO_SLAB_ENTRY_SIZE);
  const v = new DataView(out.buffer);
  v.setBigUint64(KhoSlabEntryLayout.phys, BigInt(e.phys), true);
  v.setUint32(KhoSlabEntryLayout.object_size, e.objectSize, true);
  v.setUint8(KhoSlabEntryLayout.order, e.order);
  v.setUint8(KhoSlabEntryLayout.kind, e.kind === 'slab' ? KHO_SLAB_KIND_SLAB : KHO_SLAB_KIND_LARGE);
  v.setUint16(KhoSlabEntryLayout.nr_preserved, e.preserved.length, true);
  for (const i of e.preserved) out[KhoSlabEntryLayout.bitmap + (i >> 3)] |= 1 << (i & 7);
  return out;
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
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = v.getUint32(KhoSlabHeaderLayout.magic, true);
  if (magic !== KHO_SLAB_TABLE_MAGIC) return `magic 0x${magic.toString(16)} (wanted 0x${KHO_SLAB_TABLE_MAGIC.toString(16)})`;
  const version = v.getUint16(KhoSlabHeaderLayout.version, true);
  if (version !== KHO_SLAB_TABLE_VERSION) return `version ${version} (wanted ${KHO_SLAB_TABLE_VERSION})`;
  const nr = v.getUint16(KhoSlabHeaderLayout.nr_entries, true);
  if (nr < 1 || nr > KHO_SLAB_ENTRIES_PER_PAGE) return `nr_entries ${nr} (wanted 1..${KHO_SLAB_ENTRIES_PER_PAGE})`;
  const next = v.getBigUint64(KhoSlabHeaderLayout.next, true);
  if (next >= 2n ** 53n) return `next 0x${next.toString(16)} is beyond any RAM`;
  const end = KHO_SLAB_HEADER_SIZE + nr * KHO_SLAB_ENTRY_SIZE;
  for (let off = end; off < KHO_SLAB_PAGE_SIZE; off++) {
    if (bytes[off] !== 0) return `byte ${off} after the last of ${nr} entries is 0x${bytes[off].toString(16)} (wanted 0)`;
  }
  const entries: KhoSlabEntry[] = [];
  for (let i = 0; i < nr; i++) {
    const e = decodeEntry(bytes, v, KHO_SLAB_HEADER_SIZE + i * KHO_SLAB_ENTRY_SIZE);
    if (typeof e === 'string') return `entry ${i}: ${e}`;
    entries.push(e);
  }
  return { next: Number(next), entries };
}

function decodeEntry(bytes: Uint8Array, v: DataView, at: number): KhoSlabEntry | string {
  const L = KhoSlabEntryLayout;
  const phys64 = v.getBigUint64(at + L.phys, true);
  const objectSize = v.getUint32(at + L.object_size, true);
  const order = v.getUint8(at + L.order);
  const kindCode = v.getUint8(at + L.kind);
  const nrPreserved = v.getUint16(at + L.nr_preserved, true);
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
    const byte = bytes[at + L.bitmap + b];
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
