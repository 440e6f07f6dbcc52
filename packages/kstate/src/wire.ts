import { Errno, KernelError } from '@kho/kernel';
import type { Fields, Layout, StructValue } from '@kho/struct';

const TWO_32 = 2 ** 32;
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Bytes of `s` in UTF-8. */
export function utf8Bytes(s: string): Uint8Array {
  return utf8.encode(s);
}

/** Bytes `s` takes in UTF-8, without encoding it when it is ASCII. */
export function utf8Length(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return utf8.encode(s).length;
  return s.length;
}

/** Bytes a uleb128 encoding of `v` takes. */
export function ulebSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** What a custom field's save callback writes with (see `custom`). */
export interface FieldWriter {
  u8(v: number): void;
  u16(v: number): void;
  u32(v: number): void;
  /** A u64 from a bigint (any value modulo 2^64) or a non-negative safe integer. */
  u64(v: bigint | number): void;
  /** Raw bytes. */
  bytes(b: Uint8Array): void;
  /** A uleb128 (0 ≤ v < 2^53). */
  uleb(v: number): void;
  /** A UTF-8 string prefixed by its byte length (uleb). */
  string(s: string): void;
}

/** What a custom field's restore callback reads with; every read is bounds-checked (EINVAL past the end). */
export interface FieldReader {
  u8(): number;
  u16(): number;
  u32(): number;
  /** A u64 as a number: exact below 2^53; anything larger comes back as Infinity, so range checks refuse it. */
  u64(): number;
  /** A u64 as a bigint, every value exact. */
  u64n(): bigint;
  bytes(n: number): Uint8Array;
  uleb(): number;
  string(): string;
  /** Bytes not read yet. */
  readonly remaining: number;
}

/** A growable little-endian byte buffer. */
export class ByteWriter implements FieldWriter {
  buf: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(initial = 4096) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }

  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
  }

  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
  }

  u64(v: bigint | number): void {
    this.ensure(8);
    if (typeof v === 'bigint') {
      this.view.setBigUint64(this.pos, BigInt.asUintN(64, v), true);
    } else {
      this.view.setUint32(this.pos, v >>> 0, true);
      this.view.setUint32(this.pos + 4, Math.floor(v / TWO_32) >>> 0, true);
    }
    this.pos += 8;
  }

  uleb(v: number): void {
    this.ensure(8);
    while (v >= 128) {
      this.buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A fixed-size struct, as its layout encodes it. Throws EINVAL (from the layout) for a value that does not fit. */
  struct<F extends Fields>(layout: Layout<F>, value: StructValue<F>): void {
    this.ensure(layout.size);
    layout.encodeInto(this.buf, this.pos, value);
    this.pos += layout.size;
  }

  /** `n` zero bytes. */
  zeros(n: number): void {
    this.ensure(n);
    this.buf.fill(0, this.pos, this.pos + n);
    this.pos += n;
  }

  string(s: string): void {
    const n = s.length;
    if (n < 128) {
      // Short ASCII, the usual id or name: one length byte and the characters, no encoder call.
      this.ensure(n + 1);
      const buf = this.buf;
      let p = this.pos + 1;
      let ascii = true;
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) {
          ascii = false;
          break;
        }
        buf[p++] = c;
      }
      if (ascii) {
        buf[this.pos] = n;
        this.pos = p;
        return;
      }
    }
    const b = utf8.encode(s);
    this.uleb(b.length);
    this.bytes(b);
  }

  /** Starts a uleb-length-prefixed body; returns the mark to pass to {@link endLength}. */
  beginLength(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** Ends a body begun at `mark`: writes its length, moving the body when the length needs more than one byte. */
  endLength(mark: number): void {
    const len = this.pos - mark - 1;
    if (len < 128) {
      this.buf[mark] = len;
      return;
    }
    const n = ulebSize(len);
    this.ensure(n - 1);
    this.buf.copyWithin(mark + n, mark + 1, this.pos);
    this.pos += n - 1;
    let v = len;
    for (let i = 0; i < n; i++) {
      this.buf[mark + i] = i < n - 1 ? (v % 128) | 0x80 : v;
      v = Math.floor(v / 128);
    }
  }

  /** A copy of the bytes written. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/**
 * A bounds-checked little-endian reader over `bytes[start, end)`. Every read past `end` throws
 * KernelError(EINVAL) naming `context` and the offset; nothing else is ever thrown.
 */
export class ByteReader implements FieldReader {
  pos: number;
  /** The end of what may be read; a nested record narrows it for its length and restores it. */
  end: number;
  readonly view: DataView;

  /**
   * `context` names what is read in messages; a function is called only when a message is made. `view` may be
   * passed to share one DataView of `bytes_` between readers.
   */
  constructor(
    readonly bytes_: Uint8Array,
    start: number,
    end: number,
    private readonly ctx: string | (() => string),
    view?: DataView,
  ) {
    this.pos = start;
    this.end = end;
    this.view = view ?? new DataView(bytes_.buffer, bytes_.byteOffset, bytes_.byteLength);
  }

  /** What is read, as messages name it. */
  get context(): string {
    return typeof this.ctx === 'string' ? this.ctx : this.ctx();
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  /** Throws EINVAL naming the context and the offset. */
  fail(why: string): never {
    throw new KernelError(Errno.EINVAL, `kstate: ${this.context}: ${why} at byte ${this.pos}`);
  }

  need(n: number): void {
    if (n > this.end - this.pos) this.fail(`truncated: ${n} bytes wanted, ${this.end - this.pos} left`);
  }

  u8(): number {
    this.need(1);
    return this.bytes_[this.pos++];
  }

  /**
   * A fixed-size struct, decoded by its layout. When it does not fit before `end`, fails at the first field that
   * does not, as reading its fields one by one would.
   */
  struct<F extends Fields>(layout: Layout<F>): StructValue<F> {
    if (layout.size > this.end - this.pos) {
      for (const f of layout.table) {
        this.need(f.size);
        this.pos += f.size;
      }
    }
    const v = layout.decode(this.bytes_, this.pos);
    this.pos += layout.size;
    return v;
  }

  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** A u64 as a number: exact below 2^53; anything larger comes back as Infinity, so range checks refuse it. */
  u64(): number {
    this.need(8);
    const lo = this.view.getUint32(this.pos, true);
    const hi = this.view.getUint32(this.pos + 4, true);
    this.pos += 8;
    return hi >= 0x200000 ? Infinity : hi * TWO_32 + lo;
  }

  /** A u64 as a bigint, every value exact. */
  u64n(): bigint {
    this.need(8);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  i8(): number {
    this.need(1);
    return this.view.getInt8(this.pos++);
  }

  i16(): number {
    this.need(2);
    const v = this.view.getInt16(this.pos, true);
    this.pos += 2;
    return v;
  }

  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  i64(): bigint {
    this.need(8);
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** A uleb128 of at most 8 bytes whose value is below 2^53. */
  uleb(): number {
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (v > Number.MAX_SAFE_INTEGER) this.fail(`varint ${v} is not below 2^53`);
        return v;
      }
      scale *= 128;
    }
    return this.fail('varint longer than 8 bytes');
  }

  /** A uleb that is at most `max`, naming `what` when it is not. */
  count(what: string, max: number): number {
    const v = this.uleb();
    if (v > max) this.fail(`${what} ${v} exceeds ${max}`);
    return v;
  }

  bytes(n: number): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0) this.fail(`byte count ${n} is not a non-negative integer`);
    this.need(n);
    const out = this.bytes_.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Valid UTF-8 in `bytes[from, to)`. Short ASCII strings, the usual case, take a fast path. */
  utf8(from: number, to: number): string {
    const b = this.bytes_;
    if (to - from <= 32) {
      let ascii = true;
      for (let i = from; i < to; i++) {
        if (b[i] >= 0x80) {
          ascii = false;
          break;
        }
      }
      if (ascii) {
        let s = '';
        for (let i = from; i < to; i++) s += String.fromCharCode(b[i]);
        return s;
      }
    }
    try {
      return utf8Strict.decode(b.subarray(from, to));
    } catch {
      return this.fail('a string is not valid UTF-8');
    }
  }

  /** A uleb-length-prefixed UTF-8 string of at most `max` bytes. */
  string(max = Number.MAX_SAFE_INTEGER): string {
    const n = this.uleb();
    if (n > max) this.fail(`string of ${n} bytes (wanted at most ${max})`);
    this.need(n);
    const s = this.utf8(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** Skips `n` bytes. */
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
}
