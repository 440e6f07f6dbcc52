import { Errno, KernelError } from '@kho/kernel';
import { KernelFile } from './file';

/** open(2) and fcntl(2) numbers used here (x86-64 values). */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;

/** What opening a path gives: a new file, or the errno thrown. */
export type DeviceOpen = (proc: Process, flags: number) => KernelFile;

/** The part of the VFS a process needs: path lookup, and whether its kernel is still running. */
export interface ProcessHost {
  lookup(path: string): DeviceOpen | undefined;
  readonly generation: number;
  readonly alive: boolean;
}

interface FdEntry {
  readonly file: KernelFile;
  readonly cloexec: boolean;
}

/**
 * A user process, kept small and honest: an fd table whose entries are the kernel's file objects, and the
 * system calls a VMM uses on them. Errors are thrown as the errno the call would return. A process lives in one
 * kernel: nothing of it crosses a kexec (after the jump every call fails), and `exit` closes every fd.
 */
export class Process {
  private readonly fds = new Map<number, FdEntry | 'reserved'>();
  private exited = false;

  constructor(
    readonly pid: number,
    readonly name: string,
    private readonly host: ProcessHost,
  ) {}

  /** Opens a device path (`/dev/liveupdate`, `/dev/null`). Returns the fd. ENOENT for an unknown path, or the device's errno. */
  open(path: string, flags = O_RDWR): number {
    this.alive('open');
    const dev = this.host.lookup(path);
    if (!dev) throw new KernelError(Errno.ENOENT, `open('${path}'): no such file or device`);
    const fd = this.getUnusedFd();
    let file: KernelFile;
    try {
      file = dev(this, flags);
    } catch (e) {
      this.putUnusedFd(fd);
      throw e;
    }
    this.fdInstall(fd, file, (flags & O_CLOEXEC) !== 0);
    return fd;
  }

  /** Closes `fd`: drops its reference to the file (the last one releases it). EBADF for an fd that is not open. */
  close(fd: number): void {
    this.alive('close');
    const e = this.entry(fd, 'close');
    this.fds.delete(fd);
    e.file.put();
  }

  /** ioctl(fd, cmd, arg): `arg` is the user's argument struct (undefined for a NULL pointer). EBADF, ENOTTY, or the file's errno. */
  ioctl(fd: number, cmd: number, arg: Uint8Array | undefined): void {
    this.alive('ioctl');
    const f = this.entry(fd, 'ioctl').file;
    if (!f.ops.ioctl) throw new KernelError(Errno.ENOTTY, `ioctl(${fd}, 0x${cmd.toString(16)}): ${f.path} has no ioctls`);
    f.ops.ioctl(f, cmd, arg, this);
  }

  /** read(2) at the file position, which advances. */
  read(fd: number, len: number): Uint8Array {
    const f = this.fileFor(fd, 'read');
    const out = this.op(f, 'read').call(f.ops, f, f.pos, len);
    f.pos += out.length;
    return out;
  }

  /** write(2) at the file position, which advances. Returns the bytes written. */
  write(fd: number, bytes: Uint8Array): number {
    const f = this.fileFor(fd, 'write');
    const n = this.op(f, 'write').call(f.ops, f, f.pos, bytes);
    f.pos += n;
    return n;
  }

  /** pread(2): the position does not move. */
  pread(fd: number, offset: number, len: number): Uint8Array {
    const f = this.fileFor(fd, 'pread');
    return this.op(f, 'read').call(f.ops, f, checkOffset(offset, 'pread'), len);
  }

  /** pwrite(2): the position does not move. */
  pwrite(fd: number, offset: number, bytes: Uint8Array): number {
    const f = this.fileFor(fd, 'pwrite');
    return this.op(f, 'write').call(f.ops, f, checkOffset(offset, 'pwrite'), bytes);
  }

  /** lseek(2). Returns the new position. EINVAL for a bad whence or a negative result. */
  lseek(fd: number, offset: number, whence = SEEK_SET): number {
    const f = this.fileFor(fd, 'lseek');
    const base = whence === SEEK_SET ? 0 : whence === SEEK_CUR ? f.pos : whence === SEEK_END ? (f.ops.size?.(f) ?? 0) : NaN;
    const pos = base + offset;
    if (!Number.isSafeInteger(pos) || pos < 0) throw new KernelError(Errno.EINVAL, `lseek(${fd}, ${offset}, ${whence}): position ${pos} (wanted a non-negative integer)`);
    f.pos = pos;
    return pos;
  }

  ftruncate(fd: number, size: number): void {
    const f = this.fileFor(fd, 'ftruncate');
    this.op(f, 'truncate').call(f.ops, f, checkOffset(size, 'ftruncate'));
  }

  fallocate(fd: number, offset: number, len: number): void {
    const f = this.fileFor(fd, 'fallocate');
    this.op(f, 'fallocate').call(f.ops, f, checkOffset(offset, 'fallocate'), len);
  }

  /** fcntl(2) for F_ADD_SEALS and F_GET_SEALS (returns the seals). EINVAL for other commands or files without seals. */
  fcntl(fd: number, cmd: number, arg = 0): number {
    const f = this.fileFor(fd, 'fcntl');
    if (cmd === F_ADD_SEALS) {
      this.op(f, 'addSeals').call(f.ops, f, arg);
      return 0;
    }
    if (cmd === F_GET_SEALS) return this.op(f, 'getSeals').call(f.ops, f);
    throw new KernelError(Errno.EINVAL, `fcntl(${fd}, ${cmd}): not a command this simulator knows`);
  }

  /** The size of the file (fstat's st_size). */
  fsize(fd: number): number {
    const f = this.fileFor(fd, 'fstat');
    return f.ops.size?.(f) ?? 0;
  }

  /**
   * A shared mapping of the file (mmap with MAP_SHARED): `page(i)` is page `i` of the file as a writable view of
   * RAM. EINVAL for a file that cannot be mapped. The mapping keeps a reference to the file until `unmap`.
   */
  mmap(fd: number): Mapping {
    const f = this.fileFor(fd, 'mmap');
    const mapPage = this.op(f, 'mapPage');
    f.get();
    let mapped = true;
    return {
      page: (i: number) => {
        if (!mapped) throw new KernelError(Errno.EFAULT, `mapping of ${f.path} was unmapped`);
        return mapPage.call(f.ops, f, i);
      },
      unmap: () => {
        if (!mapped) return;
        mapped = false;
        f.put();
      },
    };
  }

  /** The file behind `fd` with a new reference (`fget`); the caller puts it. EBADF when `fd` is not open. */
  fget(fd: number): KernelFile {
    this.alive('fget');
    return this.entry(fd, 'fget').file.get();
  }

  /** Reserves the lowest free fd number (`get_unused_fd_flags`). */
  getUnusedFd(): number {
    this.alive('get_unused_fd');
    let fd = 0;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, 'reserved');
    return fd;
  }

  /** Gives back a reserved fd number (`put_unused_fd`). */
  putUnusedFd(fd: number): void {
    if (this.fds.get(fd) === 'reserved') this.fds.delete(fd);
  }

  /** Installs `file` at a reserved fd (`fd_install`); the fd takes over the caller's reference. */
  fdInstall(fd: number, file: KernelFile, cloexec = false): void {
    if (this.fds.get(fd) !== 'reserved') throw new KernelError(Errno.EBADF, `fd_install(${fd}): not a reserved fd`);
    this.fds.set(fd, { file, cloexec });
  }

  /** Installs `file` at the lowest free fd, taking over the caller's reference. Returns the fd. */
  installFile(file: KernelFile, cloexec = false): number {
    const fd = this.getUnusedFd();
    this.fdInstall(fd, file, cloexec);
    return fd;
  }

  /** The open fds and what they refer to (like `ls -l /proc/<pid>/fd`). */
  fdTable(): Array<{ fd: number; path: string; cloexec: boolean }> {
    const out: Array<{ fd: number; path: string; cloexec: boolean }> = [];
    for (const [fd, e] of [...this.fds].sort((a, b) => a[0] - b[0])) if (e !== 'reserved') out.push({ fd, path: e.file.path, cloexec: e.cloexec });
    return out;
  }

  /** Number of open fds. */
  get openFds(): number {
    let n = 0;
    for (const e of this.fds.values()) if (e !== 'reserved') n++;
    return n;
  }

  /** exit(2): closes every fd, highest first. */
  exit(): void {
    if (this.exited) return;
    for (const fd of [...this.fds.keys()].sort((a, b) => b - a)) {
      const e = this.fds.get(fd)!;
      this.fds.delete(fd);
      if (e !== 'reserved' && this.host.alive) e.file.put();
    }
    this.exited = true;
  }

  get hasExited(): boolean {
    return this.exited;
  }

  private fileFor(fd: number, what: string): KernelFile {
    this.alive(what);
    return this.entry(fd, what).file;
  }

  private entry(fd: number, what: string): FdEntry {
    const e = this.fds.get(fd);
    if (!e || e === 'reserved') throw new KernelError(Errno.EBADF, `${what}(${fd}): not an open fd of process '${this.name}'`);
    return e;
  }

  private op<K extends keyof KernelFile['ops']>(f: KernelFile, name: K): NonNullable<KernelFile['ops'][K]> {
    const fn = f.ops[name];
    if (!fn) throw new KernelError(Errno.EINVAL, `${name}: ${f.path} does not support it`);
    return fn as NonNullable<KernelFile['ops'][K]>;
  }

  private alive(what: string): void {
    if (this.exited) throw new KernelError(Errno.EINVAL, `${what}: process '${this.name}' (pid ${this.pid}) has exited`);
    if (!this.host.alive) {
      throw new KernelError(Errno.EINVAL, `${what}: process '${this.name}' (pid ${this.pid}) belonged to kernel generation ${this.host.generation}, which is gone (nothing of a process crosses a kexec)`);
    }
  }
}

/** A shared mapping made by {@link Process.mmap}. */
export interface Mapping {
  /** Page `i` of the file as a writable view of RAM. */
  page(i: number): Uint8Array;
  /** munmap: drops the mapping's file reference. */
  unmap(): void;
}

function checkOffset(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new KernelError(Errno.EINVAL, `${what}: offset ${n} (wanted a non-negative integer)`);
  return n;
}
