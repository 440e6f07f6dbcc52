import { Errno, KernelError } from './errno';

const SUFFIX: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/**
 * Parses a size the way the kernel's memparse() does: a decimal or 0x-hex number with an optional binary
 * suffix K, M, G, T or P (either case). Returns bytes. Throws EINVAL naming `what` for anything else, and
 * ERANGE for sizes that are not exact integers below 2^53.
 */
export function parseSize(text: string, what = 'size'): number {
  const m = /^(0x[0-9a-f]+|\d+)([kmgtp])?$/i.exec(text.trim());
  if (!m) {
    throw new KernelError(Errno.EINVAL, `${what}: '${text}' is not a size (wanted a number with an optional K, M, G, T or P suffix)`);
  }
  const n = Number(m[1]) * (m[2] ? SUFFIX[m[2].toUpperCase()] : 1);
  if (!Number.isSafeInteger(n)) throw new KernelError(Errno.ERANGE, `${what}: '${text}' is too large (wanted at most 2^53 - 1 bytes)`);
  return n;
}

/** Formats bytes with the largest binary unit that divides it exactly ("256M", "4K", "1536"), memparse's inverse. */
export function formatSizeExact(bytes: number): string {
  for (const s of ['P', 'T', 'G', 'M', 'K']) {
    const u = SUFFIX[s];
    if (bytes >= u && bytes % u === 0) return `${bytes / u}${s}`;
  }
  return String(bytes);
}

/** Formats bytes for people: "1.50 GiB", "4.00 KiB", "12 B". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]}`;
}

/** `0x` followed by lower-case hex digits, as the kernel prints a physical address. */
export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}
