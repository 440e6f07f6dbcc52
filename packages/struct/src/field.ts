import { Errno, KernelError } from '@kho/kernel';

/**
 * One field of a layout: its byte size and how its value is written and read. Fields carry no offset: a layout
 * places its fields one after another (packed), so padding is declared where the C struct has it (`pad`).
 */
export interface Field<T> {
  /** What the field is, for layout tables and messages: 'u32', 'be32', 'char[64]', 'struct kho_vmalloc', … */
  readonly type: string;
  readonly size: number;
  /** True for fields that hold no value (reserved and padding bytes): they are left out of the decoded object. */
  readonly hidden: boolean;
  /**
   * Writes `value` at `at` of `view`. Throws EINVAL (the message names `path`) when the value does not fit the
   * field. Hidden fields write zeros whatever they are given.
   */
  write(view: DataView, at: number, value: T, path: string): void;
  /** Reads the field at `at`. Throws EINVAL (naming `path`) for bytes the field refuses (non-zero reserved bytes, a string without its NUL). */
  read(view: DataView, at: number, path: string): T;
}

/** The decoded value of a field. */
export type ValueOf<F> = F extends Field<infer T> ? T : never;

const TWO_32 = 2 ** 32;
const TWO_64N = 1n << 64n;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

function misfit(path: string, value: unknown, what: string): KernelError {
  return new KernelError(Errno.EINVAL, `${path} = ${String(value)} does not fit (wanted ${what})`);
}

function intField(type: string, size: 1 | 2 | 4, little: boolean): Field<number> {
  const max = 2 ** (8 * size) - 1;
  return {
    type,
    size,
    hidden: false,
    write(view, at, value, path) {
      if (!Number.isInteger(value) || value < 0 || value > max) throw misfit(path, value, `an integer in 0..${max}`);
      if (size === 1) view.setUint8(at, value);
      else if (size === 2) view.setUint16(at, value, little);
      else view.setUint32(at, value, little);
    },
    read(view, at) {
      return size === 1 ? view.getUint8(at) : size === 2 ? view.getUint16(at, little) : view.getUint32(at, little);
    },
  };
}

/** Unsigned little-endian integers of 1, 2 and 4 bytes. */
export const u8 = (): Field<number> => intField('u8', 1, true);
export const u16 = (): Field<number> => intField('u16', 2, true);
export const u32 = (): Field<number> => intField('u32', 4, true);
/** Unsigned big-endian integers (the DTB header and tokens). */
export const be16 = (): Field<number> => intField('be16', 2, false);
export const be32 = (): Field<number> => intField('be32', 4, false);

/**
 * A u64 read as a number: exact below 2^53; a larger value reads as Infinity, so every range check against
 * memory refuses it (no RAM of the simulated machine lies there). Writing takes a safe non-negative integer.
 * Physical addresses, sizes and counts use it; a field whose full 64 bits matter uses {@link u64big}.
 */
export function u64(little = true): Field<number> {
  return {
    type: little ? 'u64' : 'be64',
    size: 8,
    hidden: false,
    write(view, at, value, path) {
      if (!Number.isSafeInteger(value) || value < 0) throw misfit(path, value, 'an integer in 0..2^53-1');
      const lo = value % TWO_32;
      const hi = Math.floor(value / TWO_32);
      view.setUint32(at + (little ? 0 : 4), lo, little);
      view.setUint32(at + (little ? 4 : 0), hi, little);
    },
    read(view, at) {
      const lo = view.getUint32(at + (little ? 0 : 4), little);
      const hi = view.getUint32(at + (little ? 4 : 0), little);
      // 2^21 * 2^32 = 2^53: from there on a number is not exact.
      return hi >= 2 ** 21 ? Infinity : hi * TWO_32 + lo;
    },
  };
}

/** A big-endian u64 read as a number (see {@link u64}). */
export const be64 = (): Field<number> => u64(false);

/** A little-endian u64 as a bigint: all 64 bits exact (tokens, feature masks). */
export function u64big(): Field<bigint> {
  return {
    type: 'u64',
    size: 8,
    hidden: false,
    write(view, at, value, path) {
      if (typeof value !== 'bigint' || value < 0n || value >= TWO_64N) throw misfit(path, value, 'a bigint in 0..2^64-1');
      view.setBigUint64(at, value, true);
    },
    read(view, at) {
      return view.getBigUint64(at, true);
    },
  };
}

/**
 * A fixed `char[n]` holding a NUL-terminated UTF-8 string, zero-padded. Decoding stops at the first NUL and
 * refuses `n` bytes without one (`terminated`, the default: a reader must never run past the array); with
 * `terminated: false` a string of exactly `n` bytes is allowed (a bounded copy). Encoding refuses a string that
 * does not fit (with its NUL when terminated) or that holds a NUL.
 */
export function char(n: number, opts: { terminated?: boolean } = {}): Field<string> {
  const terminated = opts.terminated ?? true;
  const room = terminated ? n - 1 : n;
  return {
    type: `char[${n}]`,
    size: n,
    hidden: false,
    write(view, at, value, path) {
      if (typeof value !== 'string') throw misfit(path, value, 'a string');
      const bytes = utf8Encoder.encode(value);
      if (bytes.length > room || bytes.includes(0)) {
        throw new KernelError(Errno.EINVAL, `${path} = ${JSON.stringify(value)} does not fit (wanted at most ${room} bytes without NUL)`);
      }
      const dst = new Uint8Array(view.buffer, view.byteOffset + at, n);
      dst.fill(0);
      dst.set(bytes);
    },
    read(view, at, path) {
      const src = new Uint8Array(view.buffer, view.byteOffset + at, n);
      let len = src.indexOf(0);
      if (len < 0) {
        if (terminated) throw new KernelError(Errno.EINVAL, `${path} has no NUL terminator in its ${n} bytes`);
        len = n;
      }
      try {
        return utf8.decode(src.subarray(0, len));
      } catch {
        throw new KernelError(Errno.EINVAL, `${path} is not valid UTF-8`);
      }
    },
  };
}

/** `n` opaque bytes (decoded as a copy). */
export function bytes(n: number): Field<Uint8Array> {
  return {
    type: `u8[${n}]`,
    size: n,
    hidden: false,
    write(view, at, value, path) {
      if (!(value instanceof Uint8Array) || value.length !== n) throw misfit(path, value instanceof Uint8Array ? `${value.length} bytes` : value, `${n} bytes`);
      new Uint8Array(view.buffer, view.byteOffset + at, n).set(value);
    },
    read(view, at) {
      return new Uint8Array(view.buffer, view.byteOffset + at, n).slice();
    },
  };
}

function zeroField(type: string, n: number, check: boolean): Field<undefined> {
  return {
    type,
    size: n,
    hidden: true,
    write(view, at) {
      new Uint8Array(view.buffer, view.byteOffset + at, n).fill(0);
    },
    read(view, at, path) {
      if (!check) return undefined;
      const src = new Uint8Array(view.buffer, view.byteOffset + at, n);
      const i = src.findIndex((b) => b !== 0);
      if (i >= 0) throw new KernelError(Errno.EINVAL, `${path} byte ${i} is 0x${src[i].toString(16)} (wanted 0: reserved)`);
      return undefined;
    },
  };
}

/** Reserved bytes: written as zero, and a reader refuses any that are not zero. */
export const reserved = (n: number): Field<undefined> => zeroField(`reserved[${n}]`, n, true);
/**
 * Padding or a reserved field the format documents as zero but whose readers do not check it (e.g. upstream
 * LUO's `session_finish.reserved`): written as zero, ignored on read.
 */
export const pad = (n: number): Field<undefined> => zeroField(`pad[${n}]`, n, false);

/** `count` consecutive fields of one kind (a C array). */
export function array<T>(field: Field<T>, count: number): Field<T[]> {
  return {
    type: `${field.type}[${count}]`,
    size: field.size * count,
    hidden: false,
    write(view, at, value, path) {
      if (!Array.isArray(value) || value.length !== count) {
        throw misfit(path, Array.isArray(value) ? `${value.length} elements` : value, `${count} elements`);
      }
      value.forEach((v, i) => field.write(view, at + i * field.size, v, `${path}[${i}]`));
    },
    read(view, at, path) {
      const out: T[] = [];
      for (let i = 0; i < count; i++) out.push(field.read(view, at + i * field.size, `${path}[${i}]`));
      return out;
    },
  };
}

/**
 * Named bit fields packed into one little-endian u64, lowest bits first (C bit fields on x86-64 and arm64):
 * `bits64({ pfn: 52, flags: 12 })`. Each part is a number (every width is at most 52 bits, so values are exact).
 */
export function bits64<const P extends Record<string, number>>(parts: P): Field<{ [K in keyof P]: number }> {
  const entries = Object.entries(parts);
  let total = 0;
  for (const [name, w] of entries) {
    if (!Number.isInteger(w) || w < 1 || w > 52) throw new KernelError(Errno.EINVAL, `bits64: part '${name}' is ${w} bits (wanted 1..52)`);
    total += w;
  }
  if (total > 64) throw new KernelError(Errno.EINVAL, `bits64: parts take ${total} bits (wanted at most 64)`);
  return {
    type: `u64{${entries.map(([n, w]) => `${n}:${w}`).join(',')}}`,
    size: 8,
    hidden: false,
    write(view, at, value, path) {
      let word = 0n;
      let shift = 0n;
      for (const [name, w] of entries) {
        const v = (value as Record<string, number>)[name];
        if (!Number.isInteger(v) || v < 0 || v >= 2 ** w) throw misfit(`${path}.${name}`, v, `an integer in 0..2^${w}-1`);
        word |= BigInt(v) << shift;
        shift += BigInt(w);
      }
      view.setBigUint64(at, word, true);
    },
    read(view, at) {
      const word = view.getBigUint64(at, true);
      const out: Record<string, number> = {};
      let shift = 0n;
      for (const [name, w] of entries) {
        out[name] = Number((word >> shift) & ((1n << BigInt(w)) - 1n));
        shift += BigInt(w);
      }
      return out as { [K in keyof P]: number };
    },
  };
}
