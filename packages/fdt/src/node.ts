import { Errno, KernelError } from '@kho/kernel';

const NODE_NAME = /^[A-Za-z0-9,._+-]{1,31}(@[A-Za-z0-9,._+-]{1,31})?$/;
const PROP_NAME = /^[A-Za-z0-9,._+?#-]{1,31}$/;

const U64_MAX = (1n << 64n) - 1n;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** True when `name` is a valid non-root node name: 1..31 characters of [A-Za-z0-9,._+-] and an optional @unit. */
export function isValidNodeName(name: string): boolean {
  return NODE_NAME.test(name);
}

/** True when `name` is a valid property name: 1..31 characters of [A-Za-z0-9,._+?#-]. */
export function isValidPropName(name: string): boolean {
  return PROP_NAME.test(name);
}

/** Throws EINVAL unless `name` is a valid non-root node name. */
export function checkNodeName(name: string): void {
  if (!isValidNodeName(name)) {
    throw new KernelError(
      Errno.EINVAL,
      `FDT: node name ${JSON.stringify(name)} is not valid (wanted 1..31 characters of A-Z a-z 0-9 , . _ + - and an optional @unit)`,
    );
  }
}

/** Throws EINVAL unless `name` is a valid property name. */
export function checkPropName(name: string): void {
  if (!isValidPropName(name)) {
    throw new KernelError(
      Errno.EINVAL,
      `FDT: property name ${JSON.stringify(name)} is not valid (wanted 1..31 characters of A-Z a-z 0-9 , . _ + ? # -)`,
    );
  }
}

/**
 * A node of an in-memory device tree. The root's name is the empty string; every other node has a valid node
 * name. Properties keep their insertion order, which is the order the encoder writes them in. The fields are
 * public for reading and for tests; the helpers validate names and sizes, and the encoder re-validates
 * everything, so a tree edited through the fields cannot produce a bad blob.
 */
export class FdtNode {
  readonly props = new Map<string, Uint8Array>();
  readonly children: FdtNode[] = [];

  /** Creates a detached node; `name` defaults to '' (a root). Throws EINVAL for a non-empty invalid name. */
  constructor(readonly name = '') {
    if (name !== '') checkNodeName(name);
  }

  /** Sets (or replaces, keeping its position) property `name` to a copy of `bytes`. Throws EINVAL for a bad name. */
  setProp(name: string, bytes: Uint8Array): this {
    checkPropName(name);
    this.props.set(name, Uint8Array.from(bytes));
    return this;
  }

  /** Sets property `name` to `s` as UTF-8 with a terminating NUL. Throws EINVAL for a bad name or a NUL in `s`. */
  setString(name: string, s: string): this {
    if (s.includes('\0')) {
      throw new KernelError(Errno.EINVAL, `FDT: string for property '${name}' contains a NUL (wanted none; the NUL terminator is added)`);
    }
    const text = utf8Encoder.encode(s);
    const bytes = new Uint8Array(text.length + 1);
    bytes.set(text);
    return this.setProp(name, bytes);
  }

  /**
   * Sets property `name` to the 8 bytes of `v` as a little-endian u64 (KHO's native-endian values).
   * Throws EINVAL for a bad name or a value that is not an integer in 0..2^64-1 (numbers: 0..2^53-1).
   */
  setU64LE(name: string, v: number | bigint): this {
    if (typeof v === 'number' ? !Number.isSafeInteger(v) || v < 0 : v < 0n || v > U64_MAX) {
      throw new KernelError(Errno.EINVAL, `FDT: value ${String(v)} for property '${name}' is not a u64 (wanted an integer in 0..2^64-1)`);
    }
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(v), true);
    return this.setProp(name, bytes);
  }

  /** The bytes of property `name` (the stored array, not a copy), or undefined when absent. */
  getProp(name: string): Uint8Array | undefined {
    return this.props.get(name);
  }

  /**
   * The value of property `name` as a string, or undefined when absent. Throws EINVAL when present but not
   * one NUL-terminated UTF-8 string without embedded NULs.
   */
  getString(name: string): string | undefined {
    const bytes = this.props.get(name);
    if (bytes === undefined) return undefined;
    const nul = bytes.indexOf(0);
    if (nul < 0 || nul !== bytes.length - 1) {
      const found = nul < 0 ? 'no NUL terminator' : `a NUL at byte ${nul} of ${bytes.length}`;
      throw new KernelError(Errno.EINVAL, `FDT: property '${name}' has ${found} (wanted one NUL-terminated string)`);
    }
    try {
      return utf8.decode(bytes.subarray(0, nul));
    } catch {
      throw new KernelError(Errno.EINVAL, `FDT: property '${name}' is not valid UTF-8 (wanted one NUL-terminated string)`);
    }
  }

  /**
   * The value of property `name` as a little-endian u64, or undefined when absent. Throws EINVAL when present
   * but not exactly 8 bytes.
   */
  getU64LE(name: string): bigint | undefined {
    const bytes = this.props.get(name);
    if (bytes === undefined) return undefined;
    if (bytes.length !== 8) {
      throw new KernelError(Errno.EINVAL, `FDT: property '${name}' is ${bytes.length} bytes long (wanted 8 for a u64)`);
    }
    return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  }

  /** The child named `name`, or undefined. */
  child(name: string): FdtNode | undefined {
    return this.children.find((c) => c.name === name);
  }

  /** Appends and returns a new empty child. Throws EINVAL for a bad name, EEXIST when a child has that name. */
  addChild(name: string): FdtNode {
    checkNodeName(name);
    if (this.child(name)) {
      throw new KernelError(Errno.EEXIST, `FDT: node '${this.name || '/'}' already has a child '${name}' (wanted a new name)`);
    }
    const node = new FdtNode(name);
    this.children.push(node);
    return node;
  }

  /** Removes the child named `name` and returns it, or returns undefined when there is none. */
  removeChild(name: string): FdtNode | undefined {
    const i = this.children.findIndex((c) => c.name === name);
    return i < 0 ? undefined : this.children.splice(i, 1)[0];
  }
}
