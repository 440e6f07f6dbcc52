/**
 * KHO binary contracts (docs/abi/kho.md sections 1, 2 and 4). Everything here crosses a kexec: changing a
 * layout or a string here breaks every image written before. The root compatible string is the version: a new
 * layout gets a new string. This file imports nothing from the implementation.
 */

import { char, struct, u32, u64 } from '@kho/struct';
import { PAGE_SIZE } from '@kho/physmem/abi';

/** x86 setup_data type of `struct kho_data` (upstream SETUP_KHO). */
export const SETUP_KHO = 10;

/**
 * `struct kho_data` (packed, 32 bytes, little-endian u64s), handed to the next kernel as setup_data.
 * fdt_size is always PAGE_SIZE; scratch_size is 16 × the number of scratch areas.
 */
export const KhoDataStruct = struct('kho_data', { fdt_addr: u64(), fdt_size: u64(), scratch_addr: u64(), scratch_size: u64() }, 32);
export const KHO_DATA_SIZE = KhoDataStruct.size;

/** `struct kho_scratch` (16 bytes): addr u64, size u64. Entry 0 is lowmem, 1 global, 2.. one per node. */
export const KhoScratchStruct = struct('kho_scratch', { addr: u64(), size: u64() }, 16);
export const KHO_SCRATCH_ENTRY_SIZE = KhoScratchStruct.size;

/** Size of the root FDT: one page, in every generation. */
export const KHO_FDT_SIZE = PAGE_SIZE;
/** Root compatible of the kho-v2 format (the first radix generation). The generations are in `../generations`. */
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
/** Subtree property of kho-v2 and later: u64 (little-endian) phys of the client's blob. */
export const PROP_SUB_FDT = 'preserved-data';
/** Subtree property of kho-v1: u64 (little-endian) phys of the client's FDT. */
export const PROP_SUB_FDT_V1 = 'fdt';
/** Subtree property of kho-v3 and later: u64 (little-endian) size of the client's blob in bytes. */
export const PROP_BLOB_SIZE = 'blob-size';

/** Head-page stamp written by the incoming walk: private = order | (KHO_PAGE_MAGIC << 32) ('KHOP'). */
export const KHO_PAGE_MAGIC = 0x4b484f50;

/** Scratch areas are sized and placed in units of this many bytes (CMA's minimum alignment). */
export const KHO_SCRATCH_ALIGN = 2 * 1024 * 1024;
/** Default `kho_scratch=` scale: 200% of the memory reserved during early boot. */
export const KHO_SCRATCH_DEFAULT_PERCENT = 200;
/** The lowmem scratch area lies below this address. */
export const KHO_LOWMEM_LIMIT = 4 * 1024 * 1024 * 1024;

/** Name of the kexec-metadata subtree (kho-v3 and later). */
export const KHO_KEXEC_METADATA_SUBTREE = 'kexec-metadata';
/** `KHO_KEXEC_METADATA_VERSION`: the only version of the struct. */
export const KHO_KEXEC_METADATA_VERSION = 1;
/** `__NEW_UTS_LEN`: the longest release string; the field has one more byte for its NUL. */
export const NEW_UTS_LEN = 64;
/**
 * `struct kho_kexec_metadata` (packed, 73 bytes): `version` (always the first field, whatever the version),
 * the release of the kernel that wrote it, and the number of kexec boots since the last cold boot.
 */
export const KhoKexecMetadataStruct = struct(
  'kho_kexec_metadata',
  { version: u32(), previous_release: char(NEW_UTS_LEN + 1, { terminated: false }), kexec_count: u32() },
  73,
);

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
  return KhoDataStruct.encode({ fdt_addr: d.fdtAddr, fdt_size: d.fdtSize, scratch_addr: d.scratchAddr, scratch_size: d.scratchSize });
}

/**
 * Decodes `struct kho_data`. A value at or above 2^53 comes back as Infinity so that every range check refuses it.
 * Returns a string saying what is wrong when the blob is not 32 bytes; the caller validates the values.
 */
export function decodeKhoData(bytes: Uint8Array): KhoData | string {
  if (bytes.length !== KHO_DATA_SIZE) return `kho_data is ${bytes.length} bytes (wanted ${KHO_DATA_SIZE})`;
  const d = KhoDataStruct.decode(bytes);
  return { fdtAddr: d.fdt_addr, fdtSize: d.fdt_size, scratchAddr: d.scratch_addr, scratchSize: d.scratch_size };
}

/** Encodes a scratch array (16 bytes per area). */
export function encodeScratchArray(areas: readonly ScratchArea[]): Uint8Array {
  const out = new Uint8Array(areas.length * KHO_SCRATCH_ENTRY_SIZE);
  areas.forEach((a, i) => KhoScratchStruct.encodeInto(out, i * KHO_SCRATCH_ENTRY_SIZE, a));
  return out;
}

/** Decodes a scratch array (whole entries only); values at or above 2^53 come back as Infinity. */
export function decodeScratchArray(bytes: Uint8Array): ScratchArea[] {
  const out: ScratchArea[] = [];
  for (let off = 0; off + KHO_SCRATCH_ENTRY_SIZE <= bytes.length; off += KHO_SCRATCH_ENTRY_SIZE) out.push(KhoScratchStruct.decode(bytes, off));
  return out;
}
