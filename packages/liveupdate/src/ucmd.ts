import { Errno, KernelError, hex } from '@kho/kernel';

/**
 * One ioctl's user command (upstream `struct luo_ucmd`): the user's argument struct (undefined: a NULL pointer),
 * the size it claims, and the kernel's copy of it, zero-extended to the kernel's struct size.
 */
export interface Ucmd {
  readonly user: Uint8Array;
  readonly userSize: number;
  /** The kernel's struct (its size), filled from the user's per the extensible-struct rules. */
  readonly cmd: Uint8Array;
}

/** One entry of an ioctl table (upstream `struct luo_ioctl_op`). */
export interface IoctlOp<K> {
  /** The full command number the table accepts. */
  readonly num: number;
  readonly name: string;
  /** The kernel's struct size and the end of its last mandatory field. */
  readonly size: number;
  readonly minSize: number;
  /** Session ioctls: which sessions it applies to. */
  readonly kind?: K;
  execute(u: Ucmd): void;
}

/** get_user of the leading u32 `size`: EFAULT for a NULL pointer or fewer than 4 bytes. */
export function getUserSize(arg: Uint8Array | undefined, what: string): number {
  if (!arg) throw new KernelError(Errno.EFAULT, `${what}: the argument pointer is NULL`);
  if (arg.length < 4) throw new KernelError(Errno.EFAULT, `${what}: the argument has ${arg.length} bytes (cannot read its u32 size)`);
  return new DataView(arg.buffer, arg.byteOffset, 4).getUint32(0, true);
}

/**
 * copy_struct_from_user: a user struct of `userSize` bytes into a kernel struct of `ksize` bytes. A larger user
 * struct must be zero past `ksize` (E2BIG otherwise); a smaller one is zero-extended. EFAULT when the user memory
 * holds fewer than `userSize` bytes.
 */
export function copyStructFromUser(ksize: number, arg: Uint8Array, userSize: number, what: string): Uint8Array {
  if (arg.length < userSize) throw new KernelError(Errno.EFAULT, `${what}: size says ${userSize} bytes but the argument holds ${arg.length}`);
  const out = new Uint8Array(ksize);
  out.set(arg.subarray(0, Math.min(ksize, userSize)));
  for (let i = ksize; i < userSize; i++) {
    if (arg[i] !== 0) throw new KernelError(Errno.E2BIG, `${what}: byte ${i} past the ${ksize}-byte struct is ${hex(arg[i])} (unknown fields must be zero)`);
  }
  return out;
}

/** luo_ucmd_respond: copies min(user size, `n`) bytes of the kernel struct back to the user. */
export function respond(u: Ucmd, n: number): void {
  u.user.set(u.cmd.subarray(0, Math.min(u.userSize, n, u.cmd.length)));
}

/**
 * Runs one ioctl against a table with upstream's generic rules, in order: the number out of the table → EINVAL;
 * the size → EFAULT; the full command ≠ the table's → ENOTTY (the kernel's ENOIOCTLCMD); `check` (the session
 * kind) → its errno; size below the minimum → EINVAL; the extensible-struct copy → E2BIG / EFAULT; then `execute`.
 */
export function dispatch<K>(
  table: ReadonlyArray<IoctlOp<K>>,
  base: number,
  cmd: number,
  arg: Uint8Array | undefined,
  what: string,
  check?: (op: IoctlOp<K>) => void,
): void {
  const nr = cmd & 0xff;
  const index = nr - base;
  if (!Number.isInteger(cmd) || index < 0 || index >= table.length) {
    throw new KernelError(Errno.EINVAL, `${what}: ioctl 0x${(cmd >>> 0).toString(16)} has number 0x${nr.toString(16)} (wanted 0x${base.toString(16)}..0x${(base + table.length - 1).toString(16)})`);
  }
  const userSize = getUserSize(arg, what);
  const op = table[index];
  if (op.num !== cmd) throw new KernelError(Errno.ENOTTY, `${what}: ioctl 0x${(cmd >>> 0).toString(16)} is not ${op.name} (0x${op.num.toString(16)})`);
  check?.(op);
  if (userSize < op.minSize) throw new KernelError(Errno.EINVAL, `${what}: ${op.name} size ${userSize} (wanted at least ${op.minSize})`);
  const cmdBuf = copyStructFromUser(op.size, arg!, userSize, `${what}: ${op.name}`);
  op.execute({ user: arg!, userSize, cmd: cmdBuf });
}
