import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runCli } from '../main';
import { parseScenario } from './schema';
import { runScenario } from './run';

const EXAMPLES = resolve(__dirname, '../../../../examples');

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

describe('scenario files', () => {
  it.each([
    ['generations: []', 'generations: Too small: expected array to have >=1 items'],
    ['generations:\n  - preserve: { folios: { total: 12Q } }', "generations[0].preserve.folios.total: '12Q' is not a size"],
    ['generations:\n  - preserve: { folios: { total: 5000 } }', 'generations[0].preserve.folios.total: must be a multiple of the page size (4096)'],
    ['generations:\n  - preserve: { folios: { total: 4M, minOrder: 5, maxOrder: 2 } }', 'generations[0].preserve.folios.minOrder: minOrder must not be above maxOrder'],
    ['generations:\n  - preserve: { folios: { total: 4M, maxOrder: 11 } }', 'generations[0].preserve.folios.maxOrder: Too big: expected number to be <=10'],
    ['tracker: btree\ngenerations: [{ preserve: {} }]', 'tracker: Invalid input: expected "radix"'],
    ['machine: { ram: 1G, ranges: [{ start: 0, size: 1G, node: 0 }] }\ngenerations: [{ preserve: {} }]', 'machine: give either ranges or ram/nodes, not both'],
    ['generations: [{ preserve: { files: 3 } }]', 'generations[0].preserve: Unrecognized key: "files"'],
    ['seed: -1\ngenerations: [{ preserve: {} }]', 'seed: Too small: expected number to be >=0'],
    ['{"generations": [ {"preserve": {}} ', 'not valid JSON'],
    ['generations: [ { preserve: {} }', 'not valid YAML'],
  ])('refuses %j naming the path and what was expected', (text, message) => {
    const source = text.startsWith('{') ? 'bad.json' : 'bad.yaml';
    expect(() => parseScenario(text, source)).toThrow(message);
  });

  it('a bad scenario file: exit 2 and one line naming the field', () => {
    const r = cli('run', join(__dirname, 'no-such-file.yaml'));
    expect(r.code).toBe(2);
    expect(r.err.trim()).toMatch(/^kho: scenario .*no-such-file\.yaml: cannot read it \(ENOENT\)$/);
  });

  it('applies defaults', () => {
    const s = parseScenario('generations: [{ preserve: { folios: { total: 8M } } }]', 'x.yaml');
    expect(s).toEqual({
      seed: 1,
      machine: {},
      cmdline: '',
      tracker: 'radix',
      generations: [{ preserve: { folios: { total: 8 * 2 ** 20, minOrder: 0, maxOrder: 10 } } }],
    });
  });

  it('runs a chain, verifying every generation, and catches a generation that cannot verify', () => {
    const s = parseScenario(
      'machine: { ram: 512M }\ncmdline: kho_scratch=32M,32M,32M\ngenerations:\n  - preserve: { folios: { total: 8M } }\n  - preserve: { folios: { total: 4M, maxOrder: 2 } }\n  - preserve: {}',
      'x.yaml',
    );
    const ok = runScenario(s);
    expect(ok.errors).toEqual([]);
    expect(ok.generations.map((g) => g.restoredByNext?.verified ?? null)).toEqual([true, true, null]);
    expect(ok.freePagesAtEnd).toBe(ok.freePagesColdBoot);

    // a next kernel with KHO disabled cannot verify what generation 1 preserved
    const off = runScenario({ ...s, generations: [{ ...s.generations[0], cmdline: 'kho=off' }] });
    expect(off.ok).toBe(false);
    expect(off.errors[0]).toBe('generation 2 did not boot from the handover: KHO disabled');
  });
});

describe('kho run --report', () => {
  it('draws the memory map before and after every kexec', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kho-run-'));
    try {
      const html = join(dir, 'chain.html');
      const r = cli('run', join(EXAMPLES, 'chain-of-updates.yaml'), '--report', html);
      expect(r.code).toBe(0);
      const page = readFileSync(html, 'utf8');
      expect(page.match(/<section class="kexec"/g)).toHaveLength(5);
      expect(page.match(/<svg /g)).toHaveLength(10);
      expect(page).toContain('kexec 5: generation 5 → generation 6');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the examples in examples/', () => {
  // vm-host.yaml holds 784 GiB of guest memory on a 1 TiB machine: a benchmark (kho bench --only host/vm-host,
  // about half a minute), not a test; guests.spec.ts reads it and runs the same shape small.
  const BENCH_SCALE = ['vm-host.yaml'];
  const files = readdirSync(EXAMPLES).filter((f) => /\.(ya?ml|json)$/.test(f) && !BENCH_SCALE.includes(f));
  it('exist', () => expect(files.length).toBeGreaterThanOrEqual(3));
  it.each(files)('%s runs and verifies', (f) => {
    const r = cli('run', join(EXAMPLES, f), '--json');
    expect(r.err).toBe('');
    const result = JSON.parse(r.out);
    expect(result.errors).toEqual([]);
    expect(r.code).toBe(0);
  });
});
