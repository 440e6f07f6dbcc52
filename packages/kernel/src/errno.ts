/**
 * Linux errno values used by the simulator. The numbers are the kernel's (include/uapi/asm-generic/errno*.h),
 * so a report can be compared with a real kernel's.
 */
export enum Errno {
  EPERM = 1,
  ENOENT = 2,
  EIO = 5,
  E2BIG = 7,
  EBADF = 9,
  ENOMEM = 12,
  EFAULT = 14,
  EBUSY = 16,
  EEXIST = 17,
  ENODEV = 19,
  EINVAL = 22,
  ENOTTY = 25,
  EFBIG = 27,
  ENOSPC = 28,
  ERANGE = 34,
  ENODATA = 61,
  EOVERFLOW = 75,
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

  /**
   * @param errno the Linux errno of the failure
   * @param reason what was found and what was wanted, without the errno (the message is `<ERRNO>: <reason>`)
   */
  constructor(
    readonly errno: Errno,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${errnoName(errno)}: ${reason}`, options);
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

/**
 * The KernelError inside `e`: `e` itself, or the first KernelError in its chain of causes (a dependency-injection
 * container wraps an error thrown by a constructor in errors of its own, which keep it as text or as a cause).
 * Undefined when there is none.
 */
export function findKernelError(e: unknown): KernelError | undefined {
  for (let cur = e, depth = 0; cur !== undefined && cur !== null && depth < 32; depth++) {
    if (cur instanceof KernelError) return cur;
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return undefined;
}

/**
 * One line saying what went wrong, for logs and reports: a KernelError's reason (with `errno: true`, as
 * `<ERRNO>: <reason>`), a KernelBug as `BUG: <message>`, a plain Error as its message, any other Error as
 * `<name>: <message>` (a RangeError's name says something), anything else as text. A KernelError wrapped by a
 * dependency-injection container (as the cause of its errors) is found and described instead of the wrapper.
 */
export function describeError(e: unknown, opts: { errno?: boolean } = {}): string {
  const ke = findKernelError(e);
  if (ke) return opts.errno ? ke.message : ke.reason;
  if (e instanceof KernelBug) return `BUG: ${e.message}`;
  if (e instanceof Error) return e.name === 'Error' ? e.message : `${e.name}: ${e.message}`;
  return String(e);
}

/** True when `e` is a KernelError, optionally with the given errno. */
export function isKernelError(e: unknown, errno?: Errno): e is KernelError {
  return e instanceof KernelError && (errno === undefined || e.errno === errno);
}
