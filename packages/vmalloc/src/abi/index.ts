/**
 * vmalloc preservation (docs/abi/kho.md section 6, upstream `struct kho_vmalloc`). This is a contract with the
 * next kernel and with Linux: the descriptor and the chunk pages are read by a kernel that knows nothing but
 * these bytes. Change nothing here without a new version of the format (the descriptor has no version field, so
 * a new layout needs a new subtree or compatible string in whatever blob carries the descriptor). Imports
 * nothing from the implementation.
 *
 * Naming note: upstream's header calls the number of entries of a chunk KHO_VMALLOC_SIZE; in this project
 * KHO_VMALLOC_SIZE is the size of the descriptor and the entry count is KHO_VMALLOC_CHUNK_ENTRIES.
 */
import { Errno, KernelError } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem/abi';
import { array, struct, u16, u32, u64, type Field } from '@kho/struct';

/**
 * `struct kho_vmalloc` (16 bytes): `first` is the phys of the first chunk page, `flags` holds KHO_VMALLOC_*, and
 * every block of the area holds 2^`order` pages. The caller hands these 16 bytes over inside its own blob.
 */
export const KhoVmallocStruct = struct('kho_vmalloc', { first: u64(), total_pages: u32(), flags: u16(), order: u16() }, 16);
/** Bytes of `struct kho_vmalloc`. */
export const KHO_VMALLOC_SIZE = KhoVmallocStruct.size;

/** The area was vmalloc'ed (VM_ALLOC). */
export const KHO_VMALLOC_ALLOC = 0x1;
/** The area is mapped with huge blocks of 2^order pages (VM_HUGE_VMAP). */
export const KHO_VMALLOC_HUGE_VMAP = 0x2;
/** Every flag a descriptor may carry; any other bit is refused with EOPNOTSUPP. */
export const KHO_VMALLOC_FLAGS_MASK = KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP;

/** Bytes of a chunk: one page. */
export const KHO_VMALLOC_CHUNK_SIZE = PAGE_SIZE;
/** Block entries in a chunk page after its 8-byte `next` pointer (upstream's KHO_VMALLOC_SIZE): (PAGE_SIZE - 8) / 8 = 511. */
export const KHO_VMALLOC_CHUNK_ENTRIES = (PAGE_SIZE - 8) / 8;
/**
 * A chunk page (upstream `struct kho_vmalloc_chunk`, one page): `next` is the phys of the next chunk, 0 in the
 * last; `phys` holds the phys of the head page of each block, in virtual-address order, and the list ends at the
 * first 0 or after the last entry.
 */
export const KhoVmallocChunkStruct = struct('kho_vmalloc_chunk', { next: u64(), phys: array(u64(), KHO_VMALLOC_CHUNK_ENTRIES) }, KHO_VMALLOC_CHUNK_SIZE);

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

/** Encodes `struct kho_vmalloc`. Throws EINVAL for a field that does not fit its width. */
export function encodeKhoVmalloc(d: KhoVmallocDesc): Uint8Array {
  const f = KhoVmallocStruct.fields;
  checkField('first', d.first, maxOf(f.first));
  checkField('total_pages', d.totalPages, maxOf(f.total_pages));
  checkField('flags', d.flags, maxOf(f.flags));
  checkField('order', d.order, maxOf(f.order));
  return KhoVmallocStruct.encode({ first: d.first, total_pages: d.totalPages, flags: d.flags, order: d.order });
}

/**
 * Decodes `struct kho_vmalloc`. Returns the fields as found (the caller validates them); `first` at or above
 * 2^53 comes back as Infinity. Throws EINVAL when `b` is not 16 bytes.
 */
export function decodeKhoVmalloc(b: Uint8Array): KhoVmallocDesc {
  if (b.length !== KHO_VMALLOC_SIZE) throw new KernelError(Errno.EINVAL, `kho_vmalloc is ${b.length} bytes (wanted ${KHO_VMALLOC_SIZE})`);
  const d = KhoVmallocStruct.decode(b);
  return { first: d.first, totalPages: d.total_pages, flags: d.flags, order: d.order };
}

/**
 * Encodes a chunk page: `next`, then the entries, zero-filled to 4096 bytes. Throws EINVAL for more than 511
 * entries, a 0 entry (it would end the list early) or a value that is not a non-negative safe integer.
 */
export function encodeKhoVmallocChunk(c: KhoVmallocChunk): Uint8Array {
  if (c.phys.length > KHO_VMALLOC_CHUNK_ENTRIES) {
    throw new KernelError(Errno.EINVAL, `kho_vmalloc chunk: ${c.phys.length} entries (wanted at most ${KHO_VMALLOC_CHUNK_ENTRIES})`);
  }
  const max = maxOf(KhoVmallocChunkStruct.fields.next);
  checkField('chunk next', c.next, max);
  const phys = new Array<number>(KHO_VMALLOC_CHUNK_ENTRIES).fill(0);
  c.phys.forEach((p, i) => {
    checkField(`chunk entry ${i}`, p, max);
    if (p === 0) throw new KernelError(Errno.EINVAL, `kho_vmalloc chunk: entry ${i} is 0 (0 ends the list)`);
    phys[i] = p;
  });
  return KhoVmallocChunkStruct.encode({ next: c.next, phys });
}

/**
 * Decodes a chunk page: `next` and the entries up to the first 0 or the 511th. Values at or above 2^53 come
 * back as Infinity. Throws EINVAL when `b` is not 4096 bytes.
 */
export function decodeKhoVmallocChunk(b: Uint8Array): KhoVmallocChunk {
  if (b.length !== KHO_VMALLOC_CHUNK_SIZE) {
    throw new KernelError(Errno.EINVAL, `kho_vmalloc chunk is ${b.length} bytes (wanted ${KHO_VMALLOC_CHUNK_SIZE})`);
  }
  const { next, phys } = KhoVmallocChunkStruct.decode(b);
  const end = phys.indexOf(0);
  return { next, phys: end < 0 ? phys : phys.slice(0, end) };
}

/** The largest value a field holds as a number: its width, or 2^53 - 1 for a u64. */
function maxOf(f: Field<number>): number {
  return f.size >= 8 ? Number.MAX_SAFE_INTEGER : 2 ** (8 * f.size) - 1;
}

function checkField(name: string, value: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new KernelError(Errno.EINVAL, `kho_vmalloc: ${name} ${value} does not fit (wanted an integer in 0..${max})`);
  }
}
