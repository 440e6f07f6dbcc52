import { Errno, KernelError } from '@kho/kernel';
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_NAME_LENGTH,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LiveupdateCreateSessionStruct,
  LiveupdateRetrieveSessionStruct,
  LiveupdateSessionFinishStruct,
  LiveupdateSessionGetNameStruct,
  LiveupdateSessionPreserveFdStruct,
  LiveupdateSessionRetrieveFdStruct,
  u32ToFd,
} from './abi';
import { LIVEUPDATE_DEV } from './liveupdate';
import { O_RDWR, type Process } from './vfs/process';

/*
 * The user side of the uAPI, as a VMM (or upstream's selftest helpers) writes it: each call fills the argument
 * struct with its size, issues the ioctl and reads the reply. They throw the KernelError the ioctl returns.
 */

/** The name as the struct's 64 bytes (a bounded copy: a 64-byte name has no NUL). EINVAL for more than 64 bytes. */
export function nameBytes(name: string): Uint8Array {
  const b = new TextEncoder().encode(name);
  if (b.length > LIVEUPDATE_SESSION_NAME_LENGTH) throw new KernelError(Errno.EINVAL, `session name of ${b.length} bytes (at most ${LIVEUPDATE_SESSION_NAME_LENGTH})`);
  const out = new Uint8Array(LIVEUPDATE_SESSION_NAME_LENGTH);
  out.set(b);
  return out;
}

/** open("/dev/liveupdate", O_RDWR). Returns the fd. */
export function luoOpenDevice(proc: Process): number {
  return proc.open(LIVEUPDATE_DEV, O_RDWR);
}

/** LIVEUPDATE_IOCTL_CREATE_SESSION. Returns the session fd. */
export function luoCreateSession(proc: Process, devFd: number, name: string): number {
  const arg = LiveupdateCreateSessionStruct.encode({ size: LiveupdateCreateSessionStruct.size, fd: 0, name: nameBytes(name) });
  proc.ioctl(devFd, LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
  return u32ToFd(LiveupdateCreateSessionStruct.decode(arg).fd);
}

/** LIVEUPDATE_IOCTL_RETRIEVE_SESSION. Returns the session fd. */
export function luoRetrieveSession(proc: Process, devFd: number, name: string): number {
  const arg = LiveupdateRetrieveSessionStruct.encode({ size: LiveupdateRetrieveSessionStruct.size, fd: 0, name: nameBytes(name) });
  proc.ioctl(devFd, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg);
  return u32ToFd(LiveupdateRetrieveSessionStruct.decode(arg).fd);
}

/** LIVEUPDATE_SESSION_PRESERVE_FD. */
export function luoPreserveFd(proc: Process, sessionFd: number, fd: number, token: bigint | number): void {
  const arg = LiveupdateSessionPreserveFdStruct.encode({ size: LiveupdateSessionPreserveFdStruct.size, fd: fd >>> 0, token: BigInt(token) });
  proc.ioctl(sessionFd, LIVEUPDATE_SESSION_PRESERVE_FD, arg);
}

/** LIVEUPDATE_SESSION_RETRIEVE_FD. Returns the new fd. */
export function luoRetrieveFd(proc: Process, sessionFd: number, token: bigint | number): number {
  const arg = LiveupdateSessionRetrieveFdStruct.encode({ size: LiveupdateSessionRetrieveFdStruct.size, fd: 0, token: BigInt(token) });
  proc.ioctl(sessionFd, LIVEUPDATE_SESSION_RETRIEVE_FD, arg);
  return u32ToFd(LiveupdateSessionRetrieveFdStruct.decode(arg).fd);
}

/** LIVEUPDATE_SESSION_FINISH. */
export function luoSessionFinish(proc: Process, sessionFd: number): void {
  proc.ioctl(sessionFd, LIVEUPDATE_SESSION_FINISH, LiveupdateSessionFinishStruct.encode({ size: LiveupdateSessionFinishStruct.size }));
}

/** LIVEUPDATE_SESSION_GET_NAME. Returns the name. */
export function luoGetSessionName(proc: Process, sessionFd: number): string {
  const arg = LiveupdateSessionGetNameStruct.encode({ size: LiveupdateSessionGetNameStruct.size, reserved: 0, name: '' });
  proc.ioctl(sessionFd, LIVEUPDATE_SESSION_GET_NAME, arg);
  return LiveupdateSessionGetNameStruct.decode(arg).name;
}

/** The errno a call threw, or 0 when it returned (what a C test reads from errno). Rethrows anything that is not a KernelError. */
export function errnoOf(fn: () => unknown): number {
  try {
    fn();
    return 0;
  } catch (e) {
    if (e instanceof KernelError) return e.errno;
    throw e;
  }
}
