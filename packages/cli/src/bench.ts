import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Errno, KernelError, describeError } from '@kho/kernel';
import { registeredBenches, type BenchResult } from '@kho/kernel/bench';

/** One printed benchmark result: `{"bench":"<package>/<name>","value":…,"unit":…, …extras}`. */
export type BenchLine = Record<string, unknown> & { bench: string; value?: number; unit?: string; error?: string };

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

/**
 * Runs the registered benchmarks whose names start with one of `only` (all when empty), one after the other,
 * calling `emit` with each result line. Throws ENOENT when nothing matches. Returns the number that failed.
 */
export function runBenches(opts: { only: readonly string[]; quick: boolean }, emit: (line: BenchLine) => void, onStart?: (name: string, i: number, n: number) => void): number {
  const selected = registeredBenches().filter((b) => opts.only.length === 0 || opts.only.some((p) => b.name.startsWith(p)));
  if (selected.length === 0) {
    throw new KernelError(Errno.ENOENT, `no benchmark matches ${opts.only.map((p) => `'${p}'`).join(', ')} (kho bench --list shows them)`);
  }
  let failed = 0;
  selected.forEach((b, i) => {
    onStart?.(b.name, i, selected.length);
    try {
      const out = b.run({ quick: opts.quick });
      for (const r of Array.isArray(out) ? out : [out]) {
        const { value, unit, bench, ...extra } = r as BenchResult & { bench?: string };
        const line: BenchLine = { bench: bench ?? b.name, value: round(value), unit };
        for (const [k, v] of Object.entries(extra)) line[k] = typeof v === 'number' ? round(v) : v;
        if (b.target) line.target = b.target;
        if (opts.quick) line.quick = true;
        emit(line);
      }
    } catch (e) {
      failed++;
      emit({ bench: b.name, error: describeError(e, { errno: true }) });
    }
  });
  return failed;
}

/** A readable table of bench lines: name, value and unit, target, and the other fields. */
export function formatBenchTable(lines: readonly BenchLine[]): string {
  const rows = lines.map((l) => {
    const { bench, value, unit, target, error, quick: _q, ...extra } = l;
    const rest = Object.entries(extra)
      .map(([k, v]) => `${k}=${typeof v === 'number' ? v : JSON.stringify(v)}`)
      .join(' ');
    return [bench, error ? 'ERROR' : `${value}`, error ? error : (unit ?? ''), (target as string | undefined) ?? '', rest];
  });
  const head = ['benchmark', 'value', 'unit', 'target', 'details'];
  const widths = head.map((h, i) => Math.min(i === 4 ? 200 : 48, Math.max(h.length, ...rows.map((r) => r[i].length))));
  const fmt = (r: string[]) => r.map((c, i) => (i === 1 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [fmt(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)].join('\n');
}
