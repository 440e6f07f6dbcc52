/**
 * LUO's handover records (spec upstream-2026.md sections 5.7, 5.9 and 5.12; findings section 5). This is a
 * contract with the next kernel: it finds subtree `LUO` in the KHO root FDT and reads nothing but these bytes.
 * The version is the compatible string: `luo-v5` (7.2, raw `luo_ser` + kho_block sets) is the default; `luo-v1`
 * (6.19-era FDT form, with the `luo-flb` node of the later luo-v1 headers) is the older generation. A change to
 * any layout below needs a new string. This file imports nothing from the implementation.
 */
import { char, struct, u64, u64big } from '@kho/struct';
import { PAGE_SIZE } from '@kho/physmem';

/** The KHO subtree (root FDT child node) LUO registers under. */
export const LUO_KHO_ENTRY_NAME = 'LUO';

// ------------------------------------------------------------------------------------ luo-v5 (7.2, raw)

/** 7.2's LUO ABI string. */
export const LUO_ABI_COMPATIBLE = 'luo-v5';
/** Bytes of the compatible array in `luo_ser`: sizeof("luo-v5") rounded up to 8. */
export const LUO_ABI_COMPAT_LEN = 8;

/**
 * `struct luo_ser` (packed, 32 bytes): the blob of subtree `LUO`, added with blob-size 32. `compatible` is a
 * bounded copy (strncmp over 8 bytes on read), `liveupdate_num` counts live updates since the last cold boot,
 * `sessions_pa` is the first session block (0 = no sessions), `flbs_pa` the FLB page.
 */
export const LuoSerStruct = struct('luo_ser', { compatible: char(LUO_ABI_COMPAT_LEN, { terminated: false }), liveupdate_num: u64(), sessions_pa: u64(), flbs_pa: u64() }, 32);

/** Bytes of a session name in the records (and in the uAPI): 63 characters and a NUL. */
export const LUO_SESSION_NAME_LEN = 64;
/**
 * `struct luo_session_ser` (packed, 80 bytes): the name, then `file_set_ser` = {files: phys of the session's
 * first file block (luo-v5) or its file area (luo-v1), 0 when empty; count: files}. The name is read raw: a
 * name without its NUL is refused by the reader, not the layout.
 */
export const LuoSessionSerStruct = struct('luo_session_ser', { name: char(LUO_SESSION_NAME_LEN, { terminated: false }), files: u64(), count: u64() }, 80);

/** Bytes of a handler's compatible string (`LIVEUPDATE_HNDL_COMPAT_LENGTH`), NUL included. */
export const LIVEUPDATE_HNDL_COMPAT_LENGTH = 48;
/**
 * `struct luo_file_ser` (packed, 64 bytes): the handler's compatible, `data` = the handler's handle (memfd: the
 * phys of its record), `token` = the user's u64.
 */
export const LuoFileSerStruct = struct('luo_file_ser', { compatible: char(LIVEUPDATE_HNDL_COMPAT_LENGTH, { terminated: false }), data: u64(), token: u64big() }, 64);

/** Bytes of an FLB's compatible (`LIVEUPDATE_FLB_COMPAT_LENGTH`). */
export const LIVEUPDATE_FLB_COMPAT_LENGTH = 48;
/** `struct luo_flb_header_ser` (16 bytes) at the start of the FLB page: pgcnt (1), count of entries. */
export const LuoFlbHeaderSerStruct = struct('luo_flb_header_ser', { pgcnt: u64(), count: u64() }, 16);
/** `struct luo_flb_ser` (64 bytes): the FLB's compatible, its data handle, the dependent files at serialisation. */
export const LuoFlbSerStruct = struct('luo_flb_ser', { name: char(LIVEUPDATE_FLB_COMPAT_LENGTH, { terminated: false }), data: u64(), count: u64() }, 64);
/** Pages of the FLB area. */
export const LUO_FLB_PGCNT = 1;
/** FLB entries in the page: (4096 − 16) / 64 = 63; also the most FLBs that may be registered. */
export const LUO_FLB_MAX = Math.floor((LUO_FLB_PGCNT * PAGE_SIZE - LuoFlbHeaderSerStruct.size) / LuoFlbSerStruct.size);

// ------------------------------------------------------------------------------------ luo-v1 (6.19-era FDT)

/** Root compatible of the FDT form. */
export const LUO_V1_COMPATIBLE = 'luo-v1';
/** Root property: u64 LE, the live-update number. */
export const LUO_V1_PROP_LIVEUPDATE_NUM = 'liveupdate-number';
/** Session node, its compatible and its property (u64 LE phys of the session area). */
export const LUO_V1_SESSION_NODE = 'luo-session';
export const LUO_V1_SESSION_COMPATIBLE = 'luo-session-v2';
export const LUO_V1_SESSION_HEADER = 'luo-session-header';
/** FLB node, its compatible and its property (u64 LE phys of the FLB page). */
export const LUO_V1_FLB_NODE = 'luo-flb';
export const LUO_V1_FLB_COMPATIBLE = 'luo-flb-v1';
export const LUO_V1_FLB_HEADER = 'luo-flb-header';
/** The LUO FDT is one page. */
export const LUO_V1_FDT_SIZE = PAGE_SIZE;
/** The session area: 16 pages (one order-4 preserved folio), `{count u64}` then 80-byte entries from offset 8. */
export const LUO_V1_SESSION_PGCNT = 16;
export const LuoV1SessionHeaderSerStruct = struct('luo_session_header_ser', { count: u64() }, 8);
/** Sessions the area holds: (65536 − 8) / 80 = 819 (the source comment says 744); the 820th create is ENOMEM. */
export const LUO_V1_SESSION_MAX = Math.floor((LUO_V1_SESSION_PGCNT * PAGE_SIZE - LuoV1SessionHeaderSerStruct.size) / LuoSessionSerStruct.size);
/** A session's file area: 2 pages (an order-1 folio) of 64-byte entries, no header: 128 files, the 129th is ENOSPC. */
export const LUO_V1_FILE_PGCNT = 2;
export const LUO_V1_FILE_MAX = (LUO_V1_FILE_PGCNT * PAGE_SIZE) / LuoFileSerStruct.size;
