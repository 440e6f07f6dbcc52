/**
 * KHO binary contracts (spec/kho-abi.md sections 1, 2 and 4). Everything here crosses a kexec: changing a
 * layout or a string here breaks every image written before. The root compatible string is the version: a new
 * layout gets a new string. This file imports nothing from the implementation.
 */

/** x86 setup_data type of `struct kho_data` (upstream SETUP_KHO). */
export const SETUP_KHO = 10;

/**
 * `struct kho_data` (packed, 32 bytes, little-endian u64s), handed to the next kernel as setup_data.
 * fdt_size is always PAGE_SIZE; scratch_size is 16 × the number of scratch areas.
 */
export const KHO_DATA_SIZE = 32;
export const KhoDataLayout = {
  fdt_addr: 0,
  fdt_size: 8,
  scratch_addr: 16,
  scratch_size: 24,
} as const;

/** `struct kho_scratch` (16 bytes): addr u64, size u64. Entry 0 is lowmem, 1 global, 2.. one per node. */
export const KHO_SCRATCH_ENTRY_SIZE = 16;
export const KhoScratchLayout = { addr: 0, size: 8 } as const;

/** Root FDT of the kho-v2 format: one page, root compatible is exactly this single string. */
export const KHO_FDT_COMPATIBLE = 'kho-v2';
/** Root property: u64 (little-endian) phys of the preserved-memory map's root. */
export const PROP_PRESERVED_MEMORY_MAP = 'preserved-memory-map';
/**
 * Root property (a project extension; upstream kernels ignore it): the CRC32C, 4 bytes little-endian, of the
 * tracker's metadata pages in the tracker's order, written at the jump. A next kernel that finds it refuses a
 * tracker whose pages no longer match (a flipped bit in a radix leaf would otherwise reserve a block nobody
 * preserved); an image without it (e.g. written by Linux) is accepted as before.
 */
export const PROP_PRESERVED_MEMORY_MAP_CRC = 'preserved-memory-map-crc';
/** Subtree property: u64 (little-endian) phys of the client's blob. */
export const PROP_SUB_FDT = 'preserved-data';

/** Head-page stamp written by the incoming walk: private = order | (KHO_PAGE_MAGIC << 32) ('KHOP'). */
export const KHO_PAGE_MAGIC = 0x4b484f50;

/** Scratch areas are sized and placed in units of this many bytes (CMA's minimum alignment). */
export const KHO_SCRATCH_ALIGN = 2 * 1024 * 1024;
/** Default `kho_scratch=` scale: 200% of the memory reserved during early boot. */
export const KHO_SCRATCH_DEFAULT_PERCENT = 200;
/** The lowmem scratch area lies below this address. */
export const KHO_LOWMEM_LIMIT = 4 * 1024 * 1024 * 1024;

export interface KhoData {
  readonly fdtAddr: number;
  readonly fdtSize: number;
  readonly scratchAddr: number;
  readonly scratchSize: number;
}

export interface ScratchArea {
  readonly addr: number;
  readonly size: number;
}

/** Encodes `struct kho_data`. */
export function encodeKhoData(d: KhoData): Uint8Array {
  const out = new Uint8Array(KHO_DATA_SIZE);
  const v = new DataView(out.buffer);
  v.setBigUint64(KhoDataLayout.fdt_addr, BigInt(d.fdtAddr), true);
  v.setBigUint64(KhoDataLayout.fdt_size, BigInt(d.fdtSize), true);
  v.setBigUint64(KhoDataLayout.scratch_addr, BigInt(d.scratchAddr), true);
  v.setBigUint64(KhoDataLayout.scratch_size, BigInt(d.scratchSize), true);
  return out;
}

/**
 * Decodes `struct kho_data`. Returns undefined-free numbers; a value at or above 2^53 comes back as
 * Infinity so that every range check refuses it. The caller validates the values.
 */
export function decodeKhoData(bytes: Uint8Array): KhoData | string {
  if (bytes.length !== KHO_DATA_SIZE) return `kho_data is ${bytes.length} bytes (wanted ${KHO_DATA_SIZE})`;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u64 = (off: number): number => {
    const x = v.getBigUint64(off, true);
    return x >= 2n ** 53n ? Infinity : Number(x);
  };
  return {
    fdtAddr: u64(KhoDataLayout.fdt_addr),
    fdtSize: u64(KhoDataLayout.fdt_size),
    scratchAddr: u64(KhoDataLayout.scratch_addr),
    scratchSize: u64(KhoDataLayout.scratch_size),
  };
}

/** Encodes a scratch array (16 bytes per area). */
export function encodeScratchArray(areas: readonly ScratchArea[]): Uint8Array {
  const out = new Uint8Array(areas.length * KHO_SCRATCH_ENTRY_SIZE);
  const v = new DataView(out.buffer);
  areas.forEach((a, i) => {
    v.setBigUint64(i * KHO_SCRATCH_ENTRY_SIZE + KhoScratchLayout.addr, BigInt(a.addr), true);
    v.setBigUint64(i * KHO_SCRATCH_ENTRY_SIZE + KhoScratchLayout.size, BigInt(a.size), true);
  });
  return out;
}

/** Decodes a scratch array; values at or above 2^53 come back as Infinity. */
export function decodeScratchArray(bytes: Uint8Array): ScratchArea[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ScratchArea[] = [];
  for (let off = 0; off + KHO_SCRATCH_ENTRY_SIZE <= bytes.length; off += KHO_SCRATCH_ENTRY_SIZE) {
    const a = v.getBigUint64(off + KhoScratchLayout.addr, true);
    const s = v.getBigUint64(off + KhoScratchLayout.size, true);
    out.push({ addr: a >= 2n ** 53n ? Infinity : Number(a), size: s >= 2n ** 53n ? Infinity : Number(s) });
  }
  return out;
}

export * from './slab';
