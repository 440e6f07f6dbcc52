/**
 * `npm run bench [-- --only PREFIX[,PREFIX…]] [--quick] [--list]`
 *
 * Loads every package's `bench/*.bench.ts`, runs the selected benchmarks one after the other in this process and
 * prints one JSON object per line on stdout:
 *   {"bench":"<package>/<name>","value":<number>,"unit":"<unit>", ...extra fields}
 * Exit codes: 0 all ran, 1 a benchmark threw, 2 bad arguments or no benchmark matched.
 */
import { readdirSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { registeredBenches, type BenchResult } from '@kho/kernel/bench';

interface Args {
  only: string[];
  quick: boolean;
  list: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { only: [], quick: false, list: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') args.quick = true;
    else if (a === '--list') args.list = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      const v = a === '--only' ? argv[++i] : a.slice('--only='.length);
      if (!v) fail('--only needs a benchmark name prefix, e.g. --only physmem/');
      args.only.push(...v.split(',').filter(Boolean));
    } else fail(`unknown argument '${a}' (wanted --only PREFIX, --quick or --list)`);
  }
  return args;
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

function loadBenchFiles(root: string): void {
  const packages = join(root, 'packages');
  for (const pkg of readdirSync(packages).sort()) {
    const dir = join(packages, pkg, 'bench');
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) if (f.endsWith('.bench.ts')) require(join(dir, f));
  }
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  loadBenchFiles(resolve(__dirname, '../..'));
  const selected = registeredBenches().filter((b) => args.only.length === 0 || args.only.some((p) => b.name.startsWith(p)));
  if (selected.length === 0) fail(`no benchmark matches ${args.only.map((p) => `'${p}'`).join(', ')}`);
  if (args.list) {
    for (const b of selected) process.stdout.write(`${b.name}${b.target ? `  (target: ${b.target})` : ''}\n`);
    return;
  }
  let failed = 0;
  for (const b of selected) {
    try {
      const out = b.run({ quick: args.quick });
      for (const r of Array.isArray(out) ? out : [out]) print(b.name, r, b.target, args.quick);
    } catch (e) {
      failed++;
      process.stdout.write(`${JSON.stringify({ bench: b.name, error: e instanceof Error ? e.message : String(e) })}\n`);
    }
  }
  if (failed > 0) {
    process.stderr.write(`bench: ${failed} benchmark(s) failed\n`);
    process.exitCode = 1;
  }
}

function print(name: string, r: BenchResult, target: string | undefined, quick: boolean): void {
  const { value, unit, bench, ...extra } = r as BenchResult & { bench?: string };
  const line: Record<string, unknown> = { bench: bench ?? name, value: round(value), unit };
  for (const [k, v] of Object.entries(extra)) line[k] = typeof v === 'number' ? round(v) : v;
  if (target) line.target = target;
  if (quick) line.quick = true;
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function round(v: number): number {
  return Number.isInteger(v) ? v : Number(v.toPrecision(6));
}

main();
