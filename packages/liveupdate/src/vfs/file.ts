import { Errno, KernelBug, KernelError } from '@kho/kernel';
import type { Process } from './process';

/**
 * What a kind of file can do (a small `struct file_operations`). Every operation is optional; a process calling
 * one the file lacks gets the errno Linux gives (ENOTTY for ioctl, EINVAL for the others).
 */
export interface FileOperations {
  /** The last reference went (every fd closed and every kernel reference dropped): free what the file holds. */
  release?(file: KernelFile): void;
  /** An ioctl from `proc` with the user's argument struct (undefined: a NULL pointer). Throws the errno. */
  ioctl?(file: KernelFile, cmd: number, arg: Uint8Array | undefined, proc: Process): void;
  /** Up to `len` bytes at `offset` (fewer at the end). */
  read?(file: KernelFile, offset: number, len: number): Uint8Array;
  /** Writes `bytes` at `offset`; returns the bytes written. */
  write?(file: KernelFile, offset: number, bytes: Uint8Array): number;
  /** The file's size, for SEEK_END and fstat. */
  size?(file: KernelFile): number;
  truncate?(file: KernelFile, size: number): void;
  fallocate?(file: KernelFile, offset: number, len: number): void;
  /** fcntl(F_ADD_SEALS) and fcntl(F_GET_SEALS). */
  addSeals?(file: KernelFile, seals: number): void;
  getSeals?(file: KernelFile): number;
  /** The page at `index` of a shared mapping, as a writable view of RAM (a hole is filled first). */
  mapPage?(file: KernelFile, index: number): Uint8Array;
}

let nextFileId = 1;

/**
 * An open file (`struct file`): operations, the object behind them (`privateData`: an inode, a session, a
 * device) and a reference count. A process's fd holds one reference; the kernel may hold others (LUO keeps one
 * on every preserved file). The last `put` releases it.
 */
export class KernelFile {
  /** The file position (read/write without an offset, lseek). */
  pos = 0;
  /** Unique per simulator run, for messages. */
  readonly id = nextFileId++;
  private refs = 1;

  constructor(
    /** What /proc/<pid>/fd would show: a path, `memfd:<name>`, `anon_inode:[luo_session] <name>`. */
    readonly path: string,
    readonly ops: FileOperations,
    public privateData: unknown,
  ) {}

  /** References held (fds and kernel references). */
  get refcount(): number {
    return this.refs;
  }

  get released(): boolean {
    return this.refs === 0;
  }

  /** Takes a reference (`get_file`). Returns this file. */
  get(): this {
    if (this.refs === 0) throw new KernelError(Errno.EBADF, `${this.path}: the file was released`);
    this.refs++;
    return this;
  }

  /** Drops a reference (`fput`); the last one runs `release`. */
  put(): void {
    if (this.refs === 0) throw new KernelBug(`${this.path}: put of a released file`);
    if (--this.refs === 0) this.ops.release?.(this);
  }
}
