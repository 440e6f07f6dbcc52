import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineBench } from '@kho/kernel/bench';
import { runCli } from './main';
import { formatBenchTable, runBenches, type BenchLine } from './bench';

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

// Benchmarks of the harness itself: their results follow a script, so every outcome can be pinned.
let script: number[] = [];
defineBench({ name: 'zz-test/lower', target: '<= 10', targets: [{ max: 10 }], run: ({ run }) => ({ value: script[run] ?? 0, unit: 'ns', other: run * 2 }) });
defineBench({ name: 'zz-test/ratio', target: 'ratio >= 2', targets: [{ field: 'ratio', min: 2 }], maxRuns: 1, run: () => ({ value: 7, unit: 'x', ratio: 1.5 }) });
defineBench({ name: 'zz-test/unchecked', target: 'ratio <= 3', targets: [{ field: 'ratio', max: 3 }], run: () => ({ value: 1, unit: 'ns', native: 'skipped: no gcc' }) });

function collect(only: string[], runs: number, baseline?: BenchLine[]): { lines: BenchLine[]; summary: ReturnType<typeof runBenches> } {
  const lines: BenchLine[] = [];
  const summary = runBenches({ only, quick: true, runs, baseline }, (l) => lines.push(l));
  return { lines, summary };
}

describe('kho bench', () => {
  it('--list names every package benchmark, with targets', () => {
    const r = cli('bench', '--list');
    expect(r.code).toBe(0);
    const names = r.out.trim().split('\n').map((l) => l.split('  ')[0]);
    for (const n of ['kernel/boot-kexec', 'physmem/alloc-free-order0', 'physmem/memmap-bytes-per-page', 'radix/dense', 'radix/sparse', 'radix/mixed']) {
      expect(names).toContain(n);
    }
    expect(r.out).toContain('radix/dense  (target: walk <= 10 ns/block, add <= 75 ns/block');
  });

  it('--json prints one JSON object per line; --only selects by prefix; a met target says pass', () => {
    const r = cli('bench', '--only', 'physmem/memmap', '--quick', '--json');
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toEqual([expect.objectContaining({ bench: 'physmem/memmap-bytes-per-page', value: 17.164, unit: 'bytes/page', quick: true, pass: true })]);
  });

  it('refuses a prefix that matches nothing', () => {
    const r = cli('bench', '--only', 'nope/');
    expect(r.code).toBe(2);
    expect(r.err.trim()).toBe("kho: no benchmark matches 'nope/' (kho bench --list shows them)");
  });

  it('reports the median and the spread over runs, and checks the target on the median', () => {
    script = [12, 4, 9];
    const { lines, summary } = collect(['zz-test/lower'], 3);
    expect(lines).toEqual([{ bench: 'zz-test/lower', value: 9, unit: 'ns', runs: 3, min: 4, max: 12, other: 2, quick: true, target: '<= 10', pass: true }]);
    expect(summary.missed).toEqual([]);
    script = [12, 11, 4];
    expect(collect(['zz-test/lower'], 3).lines[0]).toMatchObject({ value: 11, pass: false, missed: ['value 11 > 10'] });
  });

  it('checks a target on another field, runs a benchmark at most maxRuns times, and says unchecked when the figure is missing', () => {
    const { lines, summary } = collect(['zz-test/ratio', 'zz-test/unchecked'], 5);
    expect(lines[0]).toMatchObject({ bench: 'zz-test/ratio', pass: false, missed: ['ratio 1.5 < 2'] });
    expect(lines[0].runs).toBeUndefined();
    expect(lines[1]).toMatchObject({ bench: 'zz-test/unchecked', pass: null, runs: 5 });
    expect(summary.missed).toEqual(['zz-test/ratio']);
  });

  it('flags a regression against a baseline only beyond the spread', () => {
    // The baseline's spread is 2 (7..9): 10 is within it of 8, 11 is not.
    const base = [{ bench: 'zz-test/lower', value: 8, min: 7, max: 9 }];
    script = [11, 11, 11];
    const worse = collect(['zz-test/lower'], 3, base);
    expect(worse.lines[0]).toMatchObject({ baseline: 8, change: 37.5, regression: true });
    expect(worse.summary.regressions).toEqual(['zz-test/lower']);
    script = [10, 10, 10];
    expect(collect(['zz-test/lower'], 3, base).lines[0]).toMatchObject({ baseline: 8, change: 25, regression: false });
    script = [2, 2, 2]; // better is never a regression
    expect(collect(['zz-test/lower'], 3, base).lines[0]).toMatchObject({ baseline: 8, change: -75, regression: false });
  });

  it('--check exits 1 on a missed target and --baseline reads a saved run; without --check a miss exits 0', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kho-bench-'));
    try {
      expect(cli('bench', '--only', 'zz-test/ratio').code).toBe(0);
      const r = cli('bench', '--only', 'zz-test/ratio', '--check');
      expect(r.code).toBe(1);
      expect(r.err).toContain('kho: 1 missed a target: zz-test/ratio');
      const file = join(dir, 'base.jsonl');
      writeFileSync(file, `${JSON.stringify({ bench: 'zz-test/unchecked', value: 0.5 })}\n`);
      const b = cli('bench', '--only', 'zz-test/unchecked', '--baseline', file, '--json');
      expect(JSON.parse(b.out)).toMatchObject({ baseline: 0.5, change: 100 });
      writeFileSync(file, 'not json\n');
      expect(cli('bench', '--only', 'zz-test/unchecked', '--baseline', file).err.trim()).toBe(`kho: baseline ${file} line 1: not JSON (wanted the output of kho bench --json)`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('prints a readable table', () => {
    const t = formatBenchTable([
      { bench: 'a/x', value: 12.5, unit: 'ns', target: '<= 20', pass: true, runs: 3, min: 11, max: 14, extra: 3 },
      { bench: 'a/y', value: 30, unit: 'ns', target: '<= 20', pass: false, missed: ['value 30 > 20'], baseline: 20, change: 50, regression: true },
      { bench: 'b/y', error: 'boom' },
    ]);
    expect(t.split('\n')).toEqual([
      'benchmark  value  unit  spread  target  result                baseline              details',
      '---------  -----  ----  ------  ------  --------------------  --------------------  -------',
      'a/x         12.5  ns    11..14  <= 20   pass                                        extra=3',
      'a/y           30  ns            <= 20   MISS (value 30 > 20)  20 (+50%) REGRESSION',
      'b/y        ERROR  boom',
    ]);
  });
});
