import * as zlib from 'node:zlib';

/**
 * Seeded bytes and a data checksum for large views: the one generator of test data for the workspace.
 *
 * The stream is four interleaved xorshift32 generators (Marsaglia's 13/17/5 triple), one per 32-bit lane of
 * each 16-byte group, written as little-endian words. The four lanes are independent chains, so the compiler
 * keeps them in registers and runs them side by side: this fills memory at several GB/s from JavaScript, with
 * no allocation and no copy. Lane seeds come from the seed through splitmix32, so seeds that differ in one bit
 * give unrelated streams. The bytes depend only on the seed and the offset in the stream: the same seed gives
 * the same bytes on every machine, however the stream is cut into calls.
 */

const GROUP = 16;

/** splitmix32's finaliser: a bijective mix of a 32-bit value. */
function mix32(v: number): number {
  let z = v | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) | 0;
}

/** True on a big-endian host, where typed-array words must be byte-swapped to keep the stream's bytes. */
const BIG_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 0;

/** A deterministic stream of bytes from a 32-bit seed (see the module comment). */
export class SeededByteStream {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  /** The current 16-byte group, when a call stopped inside it, and how many of its bytes are used. */
  private readonly group = new Uint8Array(GROUP);
  private groupUsed = GROUP;
  private offset = 0;

  /** Throws RangeError for a seed that is not an integer in 0..2^32-1. */
  constructor(readonly seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed ${seed} is not an integer in 0..2^32-1`);
    // A lane state must never be 0 (xorshift's fixed point); mix32 is a bijection, so only one input maps to 0.
    const lane = (k: number): number => mix32((seed + Math.imul(k + 1, 0x9e3779b9)) | 0) || 0x6d2b79f5;
    this.a = lane(0);
    this.b = lane(1);
    this.c = lane(2);
    this.d = lane(3);
  }

  /** Bytes produced so far. */
  get position(): number {
    return this.offset;
  }

  /** Fills `out` with the next `out.length` bytes of the stream. */
  fill(out: Uint8Array): void {
    const len = out.length;
    let i = 0;
    while (i < len && this.groupUsed < GROUP) out[i++] = this.group[this.groupUsed++];
    const whole = (len - i) & ~(GROUP - 1);
    if (whole > 0) {
      if ((out.byteOffset + i) % 4 === 0 && !BIG_ENDIAN) this.words(new Int32Array(out.buffer, out.byteOffset + i, whole / 4));
      else {
        const tmp = new Int32Array(whole / 4);
        this.words(tmp);
        out.set(new Uint8Array(tmp.buffer), i);
      }
      i += whole;
    }
    if (i < len) {
      this.nextGroup();
      while (i < len) out[i++] = this.group[this.groupUsed++];
    }
    this.offset += len;
  }

  /** The next `len` bytes, in a new array. */
  next(len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.fill(out);
    return out;
  }

  /** Skips `len` bytes (as fast as producing them into scratch space, without the memory traffic). */
  skip(len: number): void {
    const scratch = new Uint8Array(Math.min(len, 1 << 16));
    for (let left = len; left > 0; left -= scratch.length) this.fill(left >= scratch.length ? scratch : scratch.subarray(0, left));
  }

  /** Writes whole groups into `w` (a multiple of 4 words); on a big-endian host, byte-swapped to little-endian. */
  private words(w: Int32Array): void {
    let a = this.a;
    let b = this.b;
    let c = this.c;
    let d = this.d;
    const n = w.length;
    for (let j = 0; j < n; j += 4) {
      a ^= a << 13;
      a ^= a >>> 17;
      a ^= a << 5;
      b ^= b << 13;
      b ^= b >>> 17;
      b ^= b << 5;
      c ^= c << 13;
      c ^= c >>> 17;
      c ^= c << 5;
      d ^= d << 13;
      d ^= d >>> 17;
      d ^= d << 5;
      w[j] = a;
      w[j + 1] = b;
      w[j + 2] = c;
      w[j + 3] = d;
    }
    this.a = a;
    this.b = b;
    this.c = c;
    this.d = d;
    if (BIG_ENDIAN) for (let j = 0; j < n; j++) w[j] = swap32(w[j]);
  }

  private nextGroup(): void {
    const w = new Int32Array(4);
    this.words(w);
    this.group.set(new Uint8Array(w.buffer));
    this.groupUsed = 0;
  }
}

function swap32(v: number): number {
  return ((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
}

/** The first `len` bytes of the stream of `seed`. */
export function seededBytes(seed: number, len: number): Uint8Array {
  return new SeededByteStream(seed).next(len);
}

/**
 * Seeded 32-bit words for small draws (a folio's order, a choice), not for data (that is SeededByteStream's job):
 * one xorshift32 chain (the same 13/17/5 triple) started from `seed ^ 0x9e3779b9`. Its sequence is fixed: the
 * demo's folio orders, and the memory-map picture drawn from them, depend on it.
 */
export class SeededWords {
  private state: number;

  constructor(seed: number) {
    this.state = (seed ^ 0x9e3779b9) >>> 0 || 1; // never 0, xorshift's fixed point
  }

  /** The next word, an unsigned 32-bit integer. */
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }

  /** The next word as a float in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }
}

// ------------------------------------------------------------------------------------------ checksum

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** zlib's CRC-32 (Node >= 20.15), which runs at memory speed; the table version below gives the same values. */
const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

/** CRC-32 (the zlib / ISO-HDLC one) with a byte table: the fallback where zlib has none, and the reference in tests. */
export function crc32Portable(bytes: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/**
 * The CRC-32 (zlib's, polynomial 0xedb88320) of `bytes`, continuing from `crc` (the checksum of the bytes just
 * before, or 0 to start): the checksum for data at memory speed (several GB/s through zlib). Returns an unsigned
 * 32-bit number. Not the CRC32C of the handover formats (see crc32c).
 */
export function crc32(bytes: Uint8Array, crc = 0): number {
  return nativeCrc32 ? nativeCrc32(bytes, crc) >>> 0 : crc32Portable(bytes, crc);
}

const ZEROS = new Uint8Array(1 << 16);

/** crc32 continued over `len` zero bytes (memory that was never written), without a buffer of that size. */
export function crc32Zeros(len: number, crc = 0): number {
  let c = crc;
  for (let left = len; left > 0; left -= ZEROS.length) c = crc32(left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left), c);
  return c;
}
