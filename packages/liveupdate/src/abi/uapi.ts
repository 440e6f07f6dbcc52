/**
 * The `/dev/liveupdate` uAPI (upstream `include/uapi/linux/liveupdate.h`, v7.2-rc5 as copied by systemd
 * `ac33190d`; spec upstream-2026.md section 5.2). A contract with user space: the ioctl numbers and the argument
 * structs are what a real VMM passes. Every struct begins with its `size`; the kernel accepts larger structs whose
 * extra bytes are zero ("extensible structs"), so a field can be added at the end without a new number.
 * This file imports nothing from the implementation.
 */
import { char, pad, struct, u32, u64big, bytes } from '@kho/struct';

/** The ioctl type byte of LUO. */
export const LIVEUPDATE_IOCTL_TYPE = 0xba;
/** Command numbers of `/dev/liveupdate` start here... */
export const LIVEUPDATE_CMD_BASE = 0x00;
/** ...and those of a session fd here. */
export const LIVEUPDATE_CMD_SESSION_BASE = 0x40;

/** `_IO(type, nr)`: direction 0 and size 0 in the number, as every LUO command is declared. */
export function _IO(type: number, nr: number): number {
  return ((type & 0xff) << 8) | (nr & 0xff);
}
/** The number field of an ioctl command (`_IOC_NR`). */
export const _IOC_NR = (cmd: number): number => cmd & 0xff;

export const LIVEUPDATE_IOCTL_CREATE_SESSION = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_BASE + 0); // 0xBA00
export const LIVEUPDATE_IOCTL_RETRIEVE_SESSION = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_BASE + 1); // 0xBA01
export const LIVEUPDATE_SESSION_PRESERVE_FD = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_BASE + 0); // 0xBA40
export const LIVEUPDATE_SESSION_RETRIEVE_FD = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_BASE + 1); // 0xBA41
export const LIVEUPDATE_SESSION_FINISH = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_BASE + 2); // 0xBA42
export const LIVEUPDATE_SESSION_GET_NAME = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_BASE + 3); // 0xBA43

/** Bytes of a session name including its NUL: at most 63 characters. */
export const LIVEUPDATE_SESSION_NAME_LENGTH = 64;

/**
 * `struct liveupdate_ioctl_create_session` (72 bytes): size in, fd out, name in. The name is raw bytes here:
 * the kernel, not the layout, decides what a missing NUL means (EINVAL).
 */
export const LiveupdateCreateSessionStruct = struct('liveupdate_ioctl_create_session', { size: u32(), fd: u32(), name: bytes(LIVEUPDATE_SESSION_NAME_LENGTH) }, 72);
/** `struct liveupdate_ioctl_retrieve_session` (72 bytes): the same layout. */
export const LiveupdateRetrieveSessionStruct = struct('liveupdate_ioctl_retrieve_session', { size: u32(), fd: u32(), name: bytes(LIVEUPDATE_SESSION_NAME_LENGTH) }, 72);
/** `struct liveupdate_session_preserve_fd` (16 bytes): size, fd to preserve, token (u64, 8-aligned). */
export const LiveupdateSessionPreserveFdStruct = struct('liveupdate_session_preserve_fd', { size: u32(), fd: u32(), token: u64big() }, 16);
/** `struct liveupdate_session_retrieve_fd` (16 bytes): size, fd out, token in. */
export const LiveupdateSessionRetrieveFdStruct = struct('liveupdate_session_retrieve_fd', { size: u32(), fd: u32(), token: u64big() }, 16);
/** `struct liveupdate_session_finish` (8 bytes): size, reserved (documented "must be 0", not checked upstream). */
export const LiveupdateSessionFinishStruct = struct('liveupdate_session_finish', { size: u32(), reserved: pad(4) }, 8);
/** `struct liveupdate_session_get_name` (72 bytes, 7.2): size, reserved u32 (must be 0: EINVAL), name out. */
export const LiveupdateSessionGetNameStruct = struct(
  'liveupdate_session_get_name',
  { size: u32(), reserved: u32(), name: char(LIVEUPDATE_SESSION_NAME_LENGTH, { terminated: false }) },
  72,
);

/** `fd` fields are `__s32`: the layouts above carry them as u32; these convert. */
export const fdToU32 = (fd: number): number => fd >>> 0;
export const u32ToFd = (v: number): number => v | 0;
