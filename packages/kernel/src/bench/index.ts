/**
 * The benchmark harness: a bench file calls {@link defineBench} for each benchmark; the runner
 * (tools/scripts/bench.ts, `npm run bench`) loads every package's bench files, filters them by `--only PREFIX`
 * and prints one JSON object per line: `{"bench":"<package>/<name>","value":<number>,"unit":"<unit>",...}`.
 */
export interface BenchResult {
  readonly value: number;
  readonly unit: string;
  readonly [extra: string]: unknown;
}

export interface BenchContext {
  /** True for the short CI run (`--quick`): use smaller sizes, same code paths. */
  readonly quick: boolean;
}

export interface BenchDefinition {
  /** `<package>/<name>`, e.g. `physmem/alloc-free-order0`. */
  readonly name: string;
  /** A target the result is measured against, printed with it (never asserted in tests). */
  readonly target?: string;
  run(ctx: BenchContext): BenchResult | BenchResult[];
}

const registry: BenchDefinition[] = [];

/** Registers a benchmark. Returns its definition. */
export function defineBench(def: BenchDefinition): BenchDefinition {
  if (!/^[a-z0-9-]+\/[a-z0-9/.-]+$/.test(def.name)) throw new Error(`benchmark name '${def.name}' is not '<package>/<name>'`);
  if (registry.some((b) => b.name === def.name)) throw new Error(`benchmark '${def.name}' is defined twice`);
  registry.push(def);
  return def;
}

/** Every registered benchmark, in registration order. */
export function registeredBenches(): readonly BenchDefinition[] {
  return registry;
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
