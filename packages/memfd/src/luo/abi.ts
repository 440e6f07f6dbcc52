/**
 * memfd preservation through LUO (upstream `include/linux/kho/abi/memfd.h`, memfd-v2 final layout; spec
 * upstream-2026.md section 6.4). A contract with the next kernel: LUO's file record names the handler
 * (`memfd-v2`) and holds the phys of a `memfd_luo_ser`; that record points (through a `kho_vmalloc` descriptor)
 * at a vmalloc'ed array of 16-byte folio entries. A change here needs a new handler string. This is not the
 * example plugin's own `memfd-v1` table (src/abi), which is a different format under subtree `memfd`.
 * This file imports nothing from the implementation; `struct kho_vmalloc`, embedded in the record, is
 * @kho/vmalloc's declaration.
 */
import { bits64, nested, struct, u32, u64 } from '@kho/struct';
import { KhoVmallocStruct } from '@kho/vmalloc/abi';

/** The handler's compatible string (final memfd-v2: `u32 seals; u32 flags`). */
export const MEMFD_LUO_COMPATIBLE = 'memfd-v2';

/**
 * `struct memfd_luo_ser` (packed, 48 bytes): file position, i_size, seals (F_SEAL_* bits), flags (0), the number
 * of folio entries and the kho_vmalloc descriptor of their array.
 */
export const MemfdLuoSerStruct = struct('memfd_luo_ser', { pos: u64(), size: u64(), seals: u32(), flags: u32(), nr_folios: u64(), folios: nested(KhoVmallocStruct) }, 48);

/** `struct memfd_luo_folio_ser` (16 bytes): pfn in bits 0..51 and flags in 52..63 of one u64, then the page index. */
export const MemfdLuoFolioSerStruct = struct('memfd_luo_folio_ser', { pfn_flags: bits64({ pfn: 52, flags: 12 }), index: u64() }, 16);

/** Folio flags in an entry. */
export const MEMFD_LUO_FOLIO_DIRTY = 1;
export const MEMFD_LUO_FOLIO_UPTODATE = 2;

/** The uAPI seals (`F_SEAL_*`). */
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;
export const F_SEAL_FUTURE_WRITE = 0x10;
export const F_SEAL_EXEC = 0x20;
/** Every seal memfd-v2 preserves (`MEMFD_LUO_ALL_SEALS`); any other bit is EOPNOTSUPP on both sides. */
export const MEMFD_LUO_ALL_SEALS = 0x3f;

/** memfd_create(2) flags. */
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;
export const MFD_HUGETLB = 0x4;

/** Pages a memfd-v2 file may have (its page count is a u32 upstream): more is EFBIG. */
export const MEMFD_LUO_MAX_PAGES = 2 ** 32 - 1;
