import { runCli } from './main';
import { formatBenchTable } from './bench';

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
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

  it('--json prints one JSON object per line; --only selects by prefix', () => {
    const r = cli('bench', '--only', 'physmem/memmap', '--quick', '--json');
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toEqual([
      expect.objectContaining({ bench: 'physmem/memmap-bytes-per-page', value: 17.164, unit: 'bytes/page', quick: true }),
    ]);
  });

  it('refuses a prefix that matches nothing', () => {
    const r = cli('bench', '--only', 'nope/');
    expect(r.code).toBe(2);
    expect(r.err.trim()).toBe("kho: no benchmark matches 'nope/' (kho bench --list shows them)");
  });

  it('prints a readable table', () => {
    const t = formatBenchTable([
      { bench: 'a/x', value: 12.5, unit: 'ns', target: '<= 20', extra: 3 },
      { bench: 'b/y', error: 'boom' },
    ]);
    expect(t.split('\n')).toEqual([
      'benchmark  value  unit  target  details',
      '---------  -----  ----  ------  -------',
      'a/x         12.5  ns    <= 20   extra=3',
      'b/y        ERROR  boom',
    ]);
  });
});
