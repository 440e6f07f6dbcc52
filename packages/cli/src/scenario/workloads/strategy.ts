import { describeError, type Unwind } from '@kho/kernel';
import type { ScenarioWorkloadConfig, WorkloadCheck, WorkloadState } from './model';

/**
 * A workload strategy: one kind of item the scenario makes in one kernel, hands over, and verifies and frees in
 * the next. ScenarioWorkload runs them in a fixed order (vmalloc, reserve_mem, kstate objects, memfd) for each
 * step; each strategy reads only the part of the handover state that is its own.
 */
export interface WorkloadStrategy<Preserved, Made, Check extends WorkloadCheck = WorkloadCheck> {
  /**
   * Makes this generation's items, fills them with seeded bytes and lists them in `run.state`, pushing the undo
   * of every step on `run.unwind`. Returns what it hands over and what it made. Throws what an allocation or a
   * service throws.
   */
  generate(run: GenerateRun): { readonly preserved: Preserved; readonly made: Made };
  /**
   * Verifies every item of its kind that `state` lists, keeping what came back for {@link free}. Problems are
   * collected in the result, not thrown, so that every item is checked.
   */
  verify(state: WorkloadState): Check;
  /** Frees what {@link verify} took back, appending one line per failure to `errors`. Returns how many items it had. */
  free(errors: string[]): number;
}

/** One generate call: the configuration, the state being written, and the ladder of undo steps. */
export interface GenerateRun {
  readonly config: ScenarioWorkloadConfig;
  readonly state: WorkloadState;
  readonly unwind: Unwind;
}

/** Bytes generated and compared at a time. */
export const CHUNK = 2 ** 20;

/** Counts what a verification found. */
export class Tally {
  listed = 0;
  verified = 0;
  bytes = 0;
  readonly problems: string[] = [];
  done(): WorkloadCheck {
    return { listed: this.listed, verified: this.verified, bytes: this.bytes, problems: this.problems };
  }
}

/** The first index where `got` and `want` differ, or -1. */
export function firstDiff(got: Uint8Array, want: Uint8Array): number {
  if (got.length === want.length && Buffer.compare(got, want) === 0) return -1;
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) return i;
  return n;
}

/** A byte as the problems show it (`0x3c`), or `missing`. */
export const byte = (b: number | undefined): string => (b === undefined ? 'missing' : `0x${b.toString(16).padStart(2, '0')}`);

/**
 * Compares `size` bytes read chunk by chunk through `read(offset, len)` with `expected(offset, len)`. Returns a
 * problem naming the first byte that differs, or undefined.
 */
export function compareBytes(size: number, read: (off: number, len: number) => Uint8Array, expected: (off: number, len: number) => Uint8Array): string | undefined {
  for (let off = 0; off < size; off += CHUNK) {
    const len = Math.min(CHUNK, size - off);
    const got = read(off, len);
    const want = expected(off, len);
    const d = firstDiff(got, want);
    if (d >= 0) return `byte ${off + d} is ${byte(got[d])} (wanted ${byte(want[d])})`;
  }
  return undefined;
}

/** Frees each of `items` and empties the list, appending a line to `errors` for each that fails. Returns how many there were. */
export function freeEach<T>(items: T[], free: (x: T) => void, errors: string[]): number {
  const n = items.length;
  for (const x of items) {
    try {
      free(x);
    } catch (e) {
      errors.push(describeError(e, { errno: true }));
    }
  }
  items.length = 0;
  return n;
}
