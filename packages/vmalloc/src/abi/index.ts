/**
 * vmalloc preservation (docs/abi/kho.md section 6, upstream `struct kho_vmalloc`). This is a contract with the
 * next kernel and with Linux: the descriptor and the chunk pages are read by a kernel that knows nothing but
 * these bytes. Change nothing here without a new version of the format (the descriptor has no version field, so
 * a new layout needs a new subtree or compatible string in whatever blob carries the descriptor). Imports
 * nothing from the implementation.
 *
 * - `struct kho_vmalloc` (16 bytes, little-endian): `first` u64 (phys of the first chunk page), `total_pages`
 *   u32, `flags` u16 (KHO_VMALLOC_*), `order` u16 (every block holds 2^order pages).
 * - chunk page (4096 bytes): `next` u64 (phys of the next chunk, 0 = last) then `phys[511]` u64, the phys of the
 *   head page of each block in virtual-address order; the list ends at the first 0 or after 511 entries.
 *
 * Naming note: upstream's header calls the number of entries of a chunk KHO_VMALLOC_SIZE; in this project
 * KHO_VMALLOC_SIZE is the size of the descriptor and the entry count is KHO_VMALLOC_CHUNK_ENTRIES.
 */
import { Errno, KernelError } from '@kho/kernel';

/** Bytes of `struct kho_vmalloc`. */
export const KHO_VMALLOC_SIZE = 16;
/** Field offsets of `struct kho_vmalloc`. */
export const KhoVmallocLayout = { first: 0, total_pages: 8, flags: 12, order: 14 } as const;

/** The area was vmalloc'ed (VM_ALLOC). */
export const KHO_VMALLOC_ALLOC = 0x1;
/** The area is mapped with huge blocks of 2^order pages (VM_HUGE_VMAP). */
export const KHO_VMALLOC_HUGE_VMAP = 0x2;
/** Every flag a descriptor may carry; any other bit is refused with EOPNOTSUPP. */
export const KHO_VMALLOC_FLAGS_MASK = KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP;

/** Bytes of a chunk: one page. */
export const KHO_VMALLOC_CHUNK_SIZE = 4096;
/** Block entries in a chunk page after its `next` pointer: (4096 - 8) / 8. */
export const KHO_VMALLOC_CHUNK_ENTRIES = 511;
/** Field offsets of a chunk page: `next`, then `phys[511]`. */
export const KhoVmallocChunkLayout = { next: 0, phys: 8 } as const;

/** `struct kho_vmalloc` as numbers. `first` at or above 2^53 decodes as Infinity, so every range check refuses it. */
export interface KhoVmallocDesc {
  first: number;
  totalPages: number;
  flags: number;
  order: number;
}

/** A decoded chunk page: its `next` pointer and its entries up to the first 0 (at most 511). */
export interface KhoVmallocChunk {
  next: number;
  phys: number[];
}

const TWO_32 = 2 ** 32;

/** Encodes `struct kho_vmalloc`. Throws EINVAL for a field that does not fit its width. */
export function encodeKhoVmalloc(d: KhoVmallocDesc): Uint8Array {
  checkField('first', d.first, Number.MAX_SAFE_INTEGER);
  checkField('total_pages', d.totalPages, 0xffffffff);
  checkField('flags', d.flags, 0xffff);
  checkField('order', d.order, 0xffff);
  const out = new Uint8Array(KHO_VMALLOC_SIZE);
  const v = new DataView(out.buffer);
  setU64(v, KhoVmallocLayout.first, d.first);
  v.setUint32(KhoVmallocLayout.total_pages, d.totalPages, true);
  v.setUint16(KhoVmallocLayout.flags, d.flags, true);
  v.setUint16(KhoVmallocLayout.order, d.order, true);
  return out;
}

/**
 * Decodes `struct kho_vmalloc`. Returns the fields as found (the caller validates them); `first` at or above
 * 2^53 comes back as Infinity. Throws EINVAL when `b` is not 16 bytes.
 */
export function decodeKhoVmalloc(b: Uint8Array): KhoVmallocDesc {
  if (b.length !== KHO_VMALLOC_SIZE) throw new KernelError(Errno.EINVAL, `kho_vmalloc is ${b.length} bytes (wanted ${KHO_VMALLOC_SIZE})`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    first: getU64(v, KhoVmallocLayout.first),
    totalPages: v.getUint32(KhoVmallocLayout.total_pages, true),
    flags: v.getUint16(KhoVmallocLayout.flags, true),
    order: v.getUint16(KhoVmallocLayout.order, true),
  };
}

/**
 * Encodes a chunk page: `next`, then the entries, zero-filled to 4096 bytes. Throws EINVAL for more than 511
 * entries, a 0 entry (it would end the list early) or a value that is not a non-negative safe integer.
 */
export function encodeKhoVmallocChunk(c: KhoVmallocChunk): Uint8Array {
  if (c.phys.length > KHO_VMALLOC_CHUNK_ENTRIES) {
    throw new KernelError(Errno.EINVAL, `kho_vmalloc chunk: ${c.phys.length} entries (wanted at most ${KHO_VMALLOC_CHUNK_ENTRIES})`);
  }
  checkField('chunk next', c.next, Number.MAX_SAFE_INTEGER);
  const out = new Uint8Array(KHO_VMALLOC_CHUNK_SIZE);
  const v = new DataView(out.buffer);
  setU64(v, KhoVmallocChunkLayout.next, c.next);
  c.phys.forEach((p, i) => {
    checkField(`chunk entry ${i}`, p, Number.MAX_SAFE_INTEGER);
    if (p === 0) throw new KernelError(Errno.EINVAL, `kho_vmalloc chunk: entry ${i} is 0 (0 ends the list)`);
    setU64(v, KhoVmallocChunkLayout.phys + 8 * i, p);
  });
  return out;
}

/**
 * Decodes a chunk page: `next` and the entries up to the first 0 or the 511th. Values at or above 2^53 come
 * back as Infinity. Throws EINVAL when `b` is not 4096 bytes.
 */
export function decodeKhoVmallocChunk(b: Uint8Array): KhoVmallocChunk {
  if (b.length !== KHO_VMALLOC_CHUNK_SIZE) {
    throw new KernelError(Errno.EINVAL, `kho_vmalloc chunk is ${b.length} bytes (wanted ${KHO_VMALLOC_CHUNK_SIZE})`);
  }
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const phys: number[] = [];
  for (let i = 0; i < KHO_VMALLOC_CHUNK_ENTRIES; i++) {
    const p = getU64(v, KhoVmallocChunkLayout.phys + 8 * i);
    if (p === 0) break;
    phys.push(p);
  }
  return { next: getU64(v, KhoVmallocChunkLayout.next), phys };
}

function checkField(name: string, value: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new KernelError(Errno.EINVAL, `kho_vmalloc: ${name} ${value} does not fit (wanted an integer in 0..${max})`);
  }
}

function setU64(v: DataView, off: number, x: number): void {
  v.setUint32(off, x % TWO_32, true);
  v.setUint32(off + 4, Math.floor(x / TWO_32), true);
}

function getU64(v: DataView, off: number): number {
  const hi = v.getUint32(off + 4, true);
  // 2^21 * 2^32 = 2^53: anything from there on is not exact as a number.
  return hi >= 2 ** 21 ? Infinity : hi * TWO_32 + v.getUint32(off, true);
}
