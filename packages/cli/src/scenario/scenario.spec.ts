import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runCli } from '../main';
import { parseScenario } from './schema';
import { runScenario } from './run';
import { jsonErrorOffset } from './schema';
import fc from 'fast-check';

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
  it('puts every kexec of the chain in the explorer: both maps, the handover, every generation on the timeline', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kho-run-'));
    try {
      const html = join(dir, 'chain.html');
      const r = cli('run', join(EXAMPLES, 'chain-of-updates.yaml'), '--report', html);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/\nreport: .*chain\.html \([\d.]+ KiB written\)\n$/);
      const page = readFileSync(html, 'utf8');
      const data = JSON.parse(/<script id="kho-data" type="application\/json">(.*?)<\/script>/s.exec(page)![1]);
      expect(data.kexecs.map((k: { title: string }) => k.title)).toEqual([1, 2, 3, 4, 5].map((g) => `kexec ${g}: generation ${g} → generation ${g + 1}`));
      for (const k of data.kexecs) {
        expect(k.maps.map((m: { id: string }) => m.id)).toEqual(['before', 'after']);
        expect(k.handover.compatible).toBe('kho-v4');
        expect(k.handover.problems).toEqual([]);
        expect(k.verified).toBe(true);
      }
      expect(data.generations.map((g: { g: number }) => g.g)).toEqual([1, 2, 3, 4, 5, 6]);
      // the --json result carries the same phases, heard on the bus by the runner
      const json = JSON.parse(cli('run', join(EXAMPLES, 'chain-of-updates.yaml'), '--json').out);
      expect(Object.keys(json.generations[1].phases)).toEqual(['boot:early', 'boot:mm', 'boot:late', 'restore', 'finish', 'prepare', 'serialize', 'kexec']);
      // every generation's phases came from the bus
      for (const g of data.generations) expect(Object.keys(g.phases)).toEqual(expect.arrayContaining(['boot:early', 'boot:mm', 'boot:late']));
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
    // kexec-metadata counts the chain: the last kernel is the n-th kexec since the cold boot
    expect(result.lastKernel).toMatchObject({ compatible: 'kho-v4', previousRelease: '7.2.0-kho-lab', kexecCount: result.generations.length });
  });
});

describe('where a JSON scenario stops being JSON', () => {
  it('is nowhere for valid JSON, and somewhere for every text JSON.parse refuses', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => expect(jsonErrorOffset(JSON.stringify(v, null, 1))).toBe(-1)));
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (t) => {
        let ok = true;
        try {
          JSON.parse(t);
        } catch {
          ok = false;
        }
        expect(jsonErrorOffset(t) === -1).toBe(ok);
      }),
      { numRuns: 2000 },
    );
  });

  it.each([
    ['{"a": 1,}', 8],
    ['[1, 2', 5],
    ['{"a" 1}', 5],
    ['"\\x"', 2],
    ['nul', 3],
    ['{} x', 3],
  ])('%s: at %d', (text, at) => expect(jsonErrorOffset(text)).toBe(at));
});
