import { KernelBug } from '../errno';

/**
 * The benchmark harness: a bench file calls {@link defineBench} for each benchmark; the runner (`kho bench`,
 * `npm run bench`) loads every package's bench files, filters them by `--only PREFIX`, runs each N times and
 * prints one JSON object per line: `{"bench":"<package>/<name>","value":<number>,"unit":"<unit>",...}`, with
 * the spread over the runs and, for a benchmark with targets, whether it met them.
 */
export interface BenchResult {
  readonly value: number;
  readonly unit: string;
  readonly [extra: string]: unknown;
}

export interface BenchContext {
  /** True for the short CI run (`--quick`): use smaller sizes, same code paths. */
  readonly quick: boolean;
  /** Which run this is (0-based) when the runner repeats a benchmark to report its spread. */
  readonly run: number;
}

/**
 * One checkable target: the result's `field` (default `value`) must be at most `max` and/or at least `min`.
 * Checked on the median over the runs.
 */
export interface BenchTarget {
  readonly field?: string;
  readonly max?: number;
  readonly min?: number;
}

export interface BenchDefinition {
  /** `<package>/<name>`, e.g. `physmem/alloc-free-order0`. */
  readonly name: string;
  /** The target in words, printed with the result; a benchmark with one must give `targets` to check it by. */
  readonly target?: string;
  /** The checks behind `target`: the line passes when every one holds (never asserted in tests). */
  readonly targets?: readonly BenchTarget[];
  /** Which way `value` improves, for comparisons with a baseline (default: from the first target, else none). */
  readonly better?: 'lower' | 'higher';
  /** At most this many runs however many are asked for (for benchmarks that take minutes). */
  readonly maxRuns?: number;
  run(ctx: BenchContext): BenchResult | BenchResult[];
}

const registry: BenchDefinition[] = [];

/** Registers a benchmark. Returns its definition. Throws KernelBug (a mistake in a bench file) for a bad name, a duplicate, or a target with no checks. */
export function defineBench(def: BenchDefinition): BenchDefinition {
  if (!/^[a-z0-9-]+\/[a-z0-9/.-]+$/.test(def.name)) throw new KernelBug(`benchmark name '${def.name}' is not '<package>/<name>'`);
  if (registry.some((b) => b.name === def.name)) throw new KernelBug(`benchmark '${def.name}' is defined twice`);
  if (def.target !== undefined && !(def.targets && def.targets.length > 0)) throw new KernelBug(`benchmark '${def.name}' has a target but no targets to check it by`);
  for (const t of def.targets ?? []) {
    if (t.max === undefined && t.min === undefined) throw new KernelBug(`benchmark '${def.name}': a target needs max or min`);
  }
  registry.push(def);
  return def;
}

/** Every registered benchmark, in registration order. */
export function registeredBenches(): readonly BenchDefinition[] {
  return registry;
}

/** Which way a definition's `value` improves: its own `better`, else the direction of its first target on `value`. */
export function betterOf(def: BenchDefinition): 'lower' | 'higher' | undefined {
  if (def.better) return def.better;
  const t = def.targets?.find((x) => (x.field ?? 'value') === 'value');
  return t ? (t.max !== undefined ? 'lower' : 'higher') : undefined;
}

/** Runs `fn` repeatedly for at least `minMs` (and at least once); returns nanoseconds per call of `fn`'s unit of work. */
export function timeNs(fn: () => number, minMs: number): { nsPerOp: number; ops: number; ms: number } {
  let ops = 0;
  const t0 = performance.now();
  let t = t0;
  do {
    ops += fn();
    t = performance.now();
  } while (t - t0 < minMs);
  return { nsPerOp: ((t - t0) * 1e6) / ops, ops, ms: t - t0 };
}

/** A small deterministic PRNG (mulberry32) for benchmark inputs. Returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export { nativeReference, runNative, type NativeRun } from './native';
