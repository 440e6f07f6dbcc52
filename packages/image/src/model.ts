import { Errno, KernelError, hex } from '@kho/kernel';
import { IMAGE_PAGE_SIZE } from './abi';

/**
 * One RAM range of the machine: physical start and size in bytes (page aligned) and its NUMA node.
 * Other keys of a range are not written to the image.
 */
export interface ImageRamRange {
  start: number;
  size: number;
  node: number;
}

/** The machine description carried in the NT_KHO_MACHINE note; keys other than pageSize and ram are kept as-is. */
export interface ImageMachine {
  pageSize: number;
  ram: ImageRamRange[];
  [key: string]: unknown;
}

/** A run of populated pages: page-aligned physical address and a non-zero multiple of 4096 bytes. */
export interface ImageSegment {
  paddr: number;
  bytes: Uint8Array;
}

/**
 * What a handover image holds. Physical addresses are numbers: the simulated machine has none above 2^53.
 * `segments` are ascending and disjoint; pages in none of them read as zero.
 */
export interface HandoverImage {
  /** The 32-byte `struct kho_data` boot parameter (docs/abi/kho.md section 1). */
  khoData: Uint8Array;
  machine: ImageMachine;
  segments: ImageSegment[];
}

/** A half-open physical interval [start, end). */
export interface Interval {
  start: number;
  end: number;
}

/** Returns KernelError(EINVAL, 'image: <message>'), the one error of this codec's input checks. */
export function invalid(message: string): KernelError {
  return new KernelError(Errno.EINVAL, `image: ${message}`);
}

/** Returns a short rendering (at most 40 characters) of an untrusted value for a message. Throws nothing. */
export function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const page = IMAGE_PAGE_SIZE;

/**
 * Checks an untrusted machine description (from a caller or from a note) and returns its RAM as sorted,
 * merged intervals, so that a segment crossing from one node's range into an adjacent one is inside RAM.
 * Throws EINVAL naming the first bad field.
 */
export function checkMachine(m: unknown): Interval[] {
  if (!isObject(m)) throw invalid(`machine is ${show(m)} (wanted an object {"pageSize":4096,"ram":[...]})`);
  if (m.pageSize !== page) throw invalid(`machine pageSize is ${show(m.pageSize)} (wanted ${page})`);
  if (!Array.isArray(m.ram)) throw invalid(`machine ram is ${show(m.ram)} (wanted an array of {"start","size","node"})`);
  const ranges: Interval[] = [];
  m.ram.forEach((r: unknown, i: number) => {
    if (!isObject(r)) throw invalid(`machine ram[${i}] is ${show(r)} (wanted {"start","size","node"})`);
    for (const key of ['start', 'size', 'node']) {
      const v = r[key];
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
        throw invalid(`machine ram[${i}].${key} is ${show(v)} (wanted a non-negative integer)`);
      }
    }
    const { start, size } = r as unknown as ImageRamRange;
    if (start % page !== 0) throw invalid(`machine ram[${i}].start ${hex(start)} is not page aligned (wanted a multiple of ${page})`);
    if (size === 0 || size % page !== 0) throw invalid(`machine ram[${i}].size ${hex(size)} is not a positive multiple of ${page}`);
    if (!Number.isSafeInteger(start + size)) throw invalid(`machine ram[${i}] ends beyond 2^53 (wanted addresses below 2^53)`);
    ranges.push({ start, end: start + size });
  });
  ranges.sort((a, b) => a.start - b.start);
  const merged: Interval[] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r.start < last.end) {
      throw invalid(`machine ram ranges [${hex(last.start)}, ${hex(last.end)}) and [${hex(r.start)}, ${hex(r.end)}) overlap (wanted disjoint ranges)`);
    }
    if (last && r.start === last.end) last.end = r.end;
    else merged.push({ ...r });
  }
  return merged;
}

/**
 * Checks segments given as (paddr, length) in ascending order: page aligned, non-empty, disjoint and inside `ram`.
 * `label(i)` names segment i in messages. Throws EINVAL naming the first bad segment.
 */
export function checkSegments(segs: ReadonlyArray<{ paddr: number; size: number }>, label: (i: number) => string, ram: Interval[]): void {
  let prevEnd = 0;
  segs.forEach(({ paddr, size }, i) => {
    if (!Number.isSafeInteger(paddr) || paddr < 0 || paddr % page !== 0) {
      throw invalid(`${label(i)} at paddr ${show(paddr)} is not page aligned (wanted a multiple of ${page})`);
    }
    if (size === 0 || size % page !== 0) throw invalid(`${label(i)} is ${size} bytes long (wanted a non-zero multiple of ${page})`);
    const end = paddr + size;
    if (i > 0 && paddr < prevEnd) {
      throw invalid(`${label(i)} at ${hex(paddr)} starts below the end ${hex(prevEnd)} of ${label(i - 1)} (wanted ascending, disjoint segments)`);
    }
    // ram is sorted and merged: the only candidate is the last interval starting at or below paddr
    let lo = 0;
    let hi = ram.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ram[mid].start <= paddr) lo = mid + 1;
      else hi = mid;
    }
    const r = ram[lo - 1];
    if (!r || end > r.end) {
      throw invalid(`${label(i)} [${hex(paddr)}, ${hex(end)}) is outside RAM (wanted inside a range of the machine's ram)`);
    }
    prevEnd = end;
  });
}

/** The longest segment {@link pagesToSegments} makes: a longer run of pages becomes several adjacent segments. */
export const IMAGE_MAX_SEGMENT = 1 << 30;

/**
 * Returns the populated pages `pfns` (any order) as segments: consecutive pfns merged into one run (split every
 * `maxSegment` bytes, default {@link IMAGE_MAX_SEGMENT}), each page's bytes copied from `pageBytes(pfn)`. Throws EINVAL for a pfn that
 * is not a non-negative integer, a pfn listed twice, or a page that is not 4096 bytes.
 */
export function pagesToSegments(pfns: readonly number[], pageBytes: (pfn: number) => Uint8Array, maxSegment = IMAGE_MAX_SEGMENT): ImageSegment[] {
  const sorted = [...pfns].sort((a, b) => a - b);
  for (let i = 0; i < sorted.length; i++) {
    const pfn = sorted[i];
    if (!Number.isSafeInteger(pfn) || pfn < 0 || !Number.isSafeInteger(pfn * page)) {
      throw invalid(`pfn ${show(pfn)} is not a page frame number (wanted an integer in 0..2^41-1)`);
    }
    if (i > 0 && sorted[i - 1] === pfn) throw invalid(`pfn ${hex(pfn)} is listed twice (wanted each page once)`);
  }
  const segments: ImageSegment[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i + 1;
    while (j < sorted.length && sorted[j] === sorted[j - 1] + 1 && (j - i) * page < maxSegment) j++;
    const bytes = new Uint8Array((j - i) * page);
    for (let k = i; k < j; k++) {
      const b = pageBytes(sorted[k]);
      if (!(b instanceof Uint8Array) || b.length !== page) {
        throw invalid(`page at pfn ${hex(sorted[k])} has ${b instanceof Uint8Array ? b.length : show(b)} bytes (wanted ${page})`);
      }
      bytes.set(b, (k - i) * page);
    }
    segments.push({ paddr: sorted[i] * page, bytes });
    i = j;
  }
  return segments;
}
