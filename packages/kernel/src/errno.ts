/**
 * Linux errno values used by the simulator. The numbers are the kernel's (include/uapi/asm-generic/errno*.h),
 * so a report can be compared with a real kernel's.
 */
export enum Errno {
  EPERM = 1,
  ENOENT = 2,
  EIO = 5,
  E2BIG = 7,
  ENOMEM = 12,
  EFAULT = 14,
  EBUSY = 16,
  EEXIST = 17,
  EINVAL = 22,
  ENOSPC = 28,
  ERANGE = 34,
  EOPNOTSUPP = 95,
  ECANCELED = 125,
}

/** The symbolic name of an errno value ("ENOMEM"), or "E?<n>" for a number the simulator does not know. */
export function errnoName(errno: Errno): string {
  return Errno[errno] ?? `E?${errno}`;
}

/**
 * An expected failure: carries a Linux errno and a message that names what was found and what was wanted.
 * A broken invariant is not a KernelError; it is a {@link KernelBug}.
 */
export class KernelError extends Error {
  override readonly name = 'KernelError';

  constructor(
    readonly errno: Errno,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${errnoName(errno)}: ${message}`, options);
  }

  /** The errno's symbolic name, e.g. "EINVAL". */
  get code(): string {
    return errnoName(this.errno);
  }
}

/** A broken invariant inside the simulator (the kernel's BUG()). Never thrown for bad input. */
export class KernelBug extends Error {
  override readonly name = 'KernelBug';
}

/** True when `e` is a KernelError, optionally with the given errno. */
export function isKernelError(e: unknown, errno?: Errno): e is KernelError {
  return e instanceof KernelError && (errno === undefined || e.errno === errno);
}
