import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Errno, KernelError, describeError } from '@kho/kernel';
import { betterOf, registeredBenches, type BenchDefinition, type BenchResult, type BenchTarget } from '@kho/kernel/bench';

/**
 * One printed benchmark result: `{"bench":"<package>/<name>","value":…,"unit":…, …extras}`. With several runs,
 * every number is the median over the runs and `min`/`max` give the spread of `value`; with targets, `pass` says
 * whether the median met them (null when a figure needed for the check could not be measured, e.g. no gcc for
 * the native reference) and `missed` lists what it missed; against a baseline, `baseline` is the saved value and
 * `regression` whether the change is worse than the spread.
 */
export type BenchLine = Record<string, unknown> & {
  bench: string;
  value?: number;
  unit?: string;
  error?: string;
  pass?: boolean | null;
  missed?: string[];
  regression?: boolean;
};

/** The workspace root (where packages/*\/bench live), or undefined outside a kho-lab checkout. */
export function workspaceRoot(): string | undefined {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'packages')) && existsSync(join(dir, 'nx.json'))) return dir;
    dir = dirname(dir);
  }
  return undefined;
}

/** Loads every package's `bench/*.bench.ts` (each registers its benchmarks with defineBench). */
export function loadBenchFiles(root: string): void {
  const packages = join(root, 'packages');
  for (const pkg of readdirSync(packages).sort()) {
    const dir = join(packages, pkg, 'bench');
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) if (f.endsWith('.bench.ts')) require(join(dir, f));
  }
}

function round(v: number): number {
  return Number.isInteger(v) ? v : Number(v.toPrecision(6));
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** What a run of the benchmarks found. */
export interface BenchSummary {
  /** Benchmarks that threw. */
  readonly failed: number;
  /** Lines that missed a target. */
  readonly missed: readonly string[];
  /** Lines worse than the baseline beyond the spread. */
  readonly regressions: readonly string[];
}

export interface BenchOptions {
  readonly only: readonly string[];
  readonly quick: boolean;
  /** Runs of each benchmark (at most its maxRuns); default 1. */
  readonly runs?: number;
  /** Lines of an earlier `--json` run to compare with. */
  readonly baseline?: readonly BenchLine[];
}

/**
 * Runs the registered benchmarks whose names start with one of `only` (all when empty), one after the other,
 * each `runs` times, calling `emit` with each aggregated line. Throws ENOENT when nothing matches.
 */
export function runBenches(opts: BenchOptions, emit: (line: BenchLine) => void, onStart?: (name: string, i: number, n: number) => void): BenchSummary {
  const selected = registeredBenches().filter((b) => opts.only.length === 0 || opts.only.some((p) => b.name.startsWith(p)));
  if (selected.length === 0) {
    throw new KernelError(Errno.ENOENT, `no benchmark matches ${opts.only.map((p) => `'${p}'`).join(', ')} (kho bench --list shows them)`);
  }
  const baseline = new Map((opts.baseline ?? []).map((l) => [l.bench, l]));
  let failed = 0;
  const missed: string[] = [];
  const regressions: string[] = [];
  selected.forEach((b, i) => {
    onStart?.(b.name, i, selected.length);
    const runs = Math.max(1, Math.min(opts.runs ?? 1, b.maxRuns ?? Infinity));
    const byLine = new Map<string, BenchResult[]>();
    try {
      for (let r = 0; r < runs; r++) {
        const out = b.run({ quick: opts.quick, run: r });
        for (const res of Array.isArray(out) ? out : [out]) {
          const name = (res as { bench?: string }).bench ?? b.name;
          byLine.set(name, [...(byLine.get(name) ?? []), res]);
        }
      }
    } catch (e) {
      failed++;
      emit({ bench: b.name, error: describeError(e, { errno: true }) });
      return;
    }
    for (const [name, results] of byLine) {
      const line = aggregate(name, results, opts.quick);
      if (b.target) line.target = b.target;
      judge(line, b.targets ?? []);
      if (line.pass === false) missed.push(name);
      const base = baseline.get(name);
      if (base && compare(line, base, (line.better as 'lower' | 'higher' | undefined) ?? betterOf(b))) regressions.push(name);
      emit(line);
    }
  });
  return { failed, missed, regressions };
}

/** One line from the runs of one result: medians of the numbers, the spread of `value`, the rest from the last run. */
function aggregate(name: string, results: readonly BenchResult[], quick: boolean): BenchLine {
  const last = results[results.length - 1];
  const { value: _v, unit, bench: _b, ...extra } = last as BenchResult & { bench?: string };
  const values = results.map((r) => r.value);
  const line: BenchLine = { bench: name, value: round(median(values)), unit };
  if (results.length > 1) {
    line.runs = results.length;
    line.min = round(Math.min(...values));
    line.max = round(Math.max(...values));
  }
  for (const [k, v] of Object.entries(extra)) {
    if (typeof v === 'number') {
      const all = results.map((r) => r[k]).filter((x): x is number => typeof x === 'number');
      line[k] = round(median(all));
    } else line[k] = v;
  }
  if (quick) line.quick = true;
  return line;
}

/** Sets `pass` and `missed` from the targets (pass null when a target's figure is missing from the line). */
function judge(line: BenchLine, targets: readonly BenchTarget[]): void {
  if (targets.length === 0 || line.error) return;
  const missed: string[] = [];
  let unchecked = false;
  for (const t of targets) {
    const field = t.field ?? 'value';
    const v = line[field];
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      unchecked = true;
      continue;
    }
    if (t.max !== undefined && v > t.max) missed.push(`${field} ${round(v)} > ${t.max}`);
    if (t.min !== undefined && v < t.min) missed.push(`${field} ${round(v)} < ${t.min}`);
  }
  line.pass = missed.length > 0 ? false : unchecked ? null : true;
  if (missed.length > 0) line.missed = missed;
}

/**
 * Marks `line` against its baseline: `baseline` (the saved value), `change` (%) and `regression`, true when the
 * value moved the wrong way by more than the larger spread of the two runs (and at least 2% of the baseline, so
 * that single runs do not flag noise). Returns whether it regressed.
 */
function compare(line: BenchLine, base: BenchLine, better: 'lower' | 'higher' | undefined): boolean {
  if (typeof line.value !== 'number' || typeof base.value !== 'number') return false;
  line.baseline = base.value;
  line.change = base.value === 0 ? 0 : round(((line.value - base.value) / Math.abs(base.value)) * 100);
  if (!better) return false;
  const spread = (l: BenchLine): number => (typeof l.max === 'number' && typeof l.min === 'number' ? l.max - l.min : 0);
  const tolerance = Math.max(spread(line), spread(base), 0.02 * Math.abs(base.value));
  const worse = better === 'lower' ? line.value - base.value : base.value - line.value;
  line.regression = worse > tolerance;
  return line.regression;
}

/** Reads the JSON lines of an earlier `kho bench --json` run. Throws EINVAL/ENOENT naming the file and line. */
export function readBaseline(file: string): BenchLine[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new KernelError(Errno.ENOENT, `baseline ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return text
    .split('\n')
    .map((l, i) => [l.trim(), i + 1] as const)
    .filter(([l]) => l.length > 0)
    .map(([l, n]) => {
      let v: unknown;
      try {
        v = JSON.parse(l);
      } catch {
        throw new KernelError(Errno.EINVAL, `baseline ${file} line ${n}: not JSON (wanted the output of kho bench --json)`);
      }
      if (typeof v !== 'object' || v === null || typeof (v as BenchLine).bench !== 'string') {
        throw new KernelError(Errno.EINVAL, `baseline ${file} line ${n}: no "bench" name (wanted the output of kho bench --json)`);
      }
      return v as BenchLine;
    });
}

function fmt(v: unknown): string {
  return typeof v === 'number' ? `${v}` : JSON.stringify(v);
}

/** A readable table of bench lines: name, value and unit, spread, target and result, baseline, the other fields. */
export function formatBenchTable(lines: readonly BenchLine[]): string {
  const rows = lines.map((l) => {
    const { bench, value, unit, target, error, quick: _q, pass, missed, runs: _r, min, max, baseline, change, regression, ...extra } = l;
    const rest = Object.entries(extra)
      .map(([k, v]) => `${k}=${fmt(v)}`)
      .join(' ');
    if (error) return [bench, 'ERROR', error, '', '', '', '', ''];
    const result = pass === true ? 'pass' : pass === false ? `MISS (${(missed ?? []).join(', ')})` : pass === null ? 'unchecked' : '';
    const spread = min !== undefined ? `${fmt(min)}..${fmt(max)}` : '';
    const vs = baseline !== undefined ? `${fmt(baseline)} (${(change as number) >= 0 ? '+' : ''}${fmt(change)}%)${regression ? ' REGRESSION' : ''}` : '';
    return [bench, `${value}`, unit ?? '', spread, (target as string | undefined) ?? '', result, vs, rest];
  });
  const head = ['benchmark', 'value', 'unit', 'spread', 'target', 'result', 'baseline', 'details'];
  const used = head.map((_, i) => i < 3 || i === 7 || rows.some((r) => r[i] !== ''));
  const cols = head.map((h, i) => [h, ...rows.map((r) => r[i])]).filter((_, i) => used[i]);
  const widths = cols.map((c, i) => Math.min(i === cols.length - 1 ? 200 : 60, Math.max(...c.map((x) => x.length))));
  const fmtRow = (r: string[]) => r.map((c, i) => (i === 1 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  const table = [head, ...rows].map((r) => r.filter((_, i) => used[i]));
  return [fmtRow(table[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...table.slice(1).map(fmtRow)].join('\n');
}

export type { BenchDefinition };
