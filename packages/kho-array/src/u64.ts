/**
 * u64 numbers at the API: a position or an entry is a JavaScript number when it is below 2^53 (exact, the fast
 * path) and a bigint from 2^53 on. Every u64 this package returns is in that canonical form, so `===` compares
 * two of them; inputs may be either type. Inside, a u64 in RAM is two u32 words (lo, hi).
 */
export type U64 = number | bigint;

export const TWO_32 = 4294967296;
/** 2^53: numbers below it are exact. */
export const SAFE = 9007199254740992;
const SAFE_N = 9007199254740992n;
/** hi words below this make a value below 2^53. */
const SAFE_HI = 0x200000;
export const U64_MAX = 0xffffffffffffffffn;

/** The canonical form of a bigint in 0..2^64-1. */
export function canon(v: bigint): U64 {
  return v < SAFE_N ? Number(v) : v;
}

/** `v` in canonical form, or undefined when it is not an integer in 0..2^64-1 (a number must also be below 2^53). */
export function toU64(v: unknown): U64 | undefined {
  if (typeof v === 'number') return v >= 0 && v < SAFE && v % 1 === 0 ? v + 0 : undefined;
  if (typeof v === 'bigint') return v >= 0n && v <= U64_MAX ? canon(v) : undefined;
  return undefined;
}

/** The u64 made of two u32 words. */
export function fromWords(lo: number, hi: number): U64 {
  return hi < SAFE_HI ? hi * TWO_32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

/** `v` as a bigint. */
export function big(v: U64): bigint {
  return typeof v === 'number' ? BigInt(v) : v;
}

/** The low u32 word of a canonical u64. */
export function loWord(v: U64): number {
  return typeof v === 'number' ? v >>> 0 : Number(v & 0xffffffffn);
}

/** The high u32 word of a canonical u64. */
export function hiWord(v: U64): number {
  return typeof v === 'number' ? (v - (v >>> 0)) / TWO_32 : Number(v >> 32n);
}

/** a + n for a small non-negative integer n; undefined when the sum passes 2^64 - 1. */
export function addSmall(a: U64, n: number): U64 | undefined {
  if (typeof a === 'number') {
    const r = a + n;
    if (r < SAFE) return r;
  }
  const r = big(a) + BigInt(n);
  return r <= U64_MAX ? canon(r) : undefined;
}

/** a - b for a >= b, in canonical form. */
export function sub(a: U64, b: U64): U64 {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return canon(big(a) - big(b));
}

/** a - b as a number, for a >= b known to be close (an index within a page or block). */
export function diffSmall(a: U64, b: U64): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return Number(big(a) - big(b));
}

/** `0x…` for a u64. */
export function hexU64(v: U64): string {
  return `0x${v.toString(16)}`;
}
