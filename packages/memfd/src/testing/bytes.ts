import { seededBytes } from '@kho/kernel';

/** Test helpers for byte contents (used by this package's tests). */

/** `n` seeded bytes from `seed` (any integer; taken modulo 2^32): the workspace's SeededByteStream. */
export function bytesOf(seed: number, n: number): Uint8Array {
  return seededBytes(seed >>> 0, n);
}

/**
 * Where two byte arrays first differ: -1 when they are equal, the shorter length when only the lengths differ.
 * Compare with this rather than toEqual, which walks a typed array element by element (seconds for a few MiB).
 */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}
