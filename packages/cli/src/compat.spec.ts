import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KHO_GENERATIONS } from '@kho/kho-core';
import { compareKernels, compatMatrix, kernelFromConfig, kernelFromImage, type CompatResult } from './compat';
import { runCli } from './main';

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const verdict = (r: CompatResult): string => (r.linux === undefined ? (r.lab ? '(ok)' : '(--)') : r.lab && r.linux ? 'ok' : r.lab ? 'lab' : '--');

describe('kho compat --matrix', () => {
  const m = compatMatrix();
  const at = (from: string, to: string): string => verdict(m.find((r) => r.from === from && r.to === to)!);

  it('has every pair of generations', () => {
    expect(m).toHaveLength(KHO_GENERATIONS.length ** 2);
  });

  it.each([
    ['v1', 'v1', 'ok'],
    ['v2', 'v2', 'ok'],
    ['v3', 'v3', 'ok'],
    ['v4', 'v4', 'ok'],
    // the lab reads every generation of its map; Linux accepts only its own string
    ['v2', 'v3', 'lab'],
    ['v3', 'v2', 'lab'],
    ['v3', 'v4', 'lab'],
    ['v4', 'v3', 'lab'],
    // another kind of map: nobody reads it
    ['v1', 'v3', '--'],
    ['v3', 'v1', '--'],
    ['v1', 'v1-karr', '(--)'],
    // the project's and the RFC's forms have no Linux verdict
    ['v1-karr', 'v1-karr', '(ok)'],
    ['v4-composite', 'v3', '(ok)'],
  ])('%s -> %s: %s', (from, to, want) => {
    expect(at(from, to)).toBe(want);
  });

  it('gives the reason per aspect: kho-v2 to kho-v3 fails in Linux on the compatible and on blob-size', () => {
    const r = m.find((x) => x.from === 'v2' && x.to === 'v3')!;
    expect(r.lines.find((l) => l.aspect === 'root FDT')!.linux!.why).toBe("a 'kho-v3' kernel accepts only 'kho-v3' (found 'kho-v2'): revival disabled, cold boot");
    expect(r.lines.find((l) => l.aspect === 'subtrees')!.linux).toEqual({ ok: false, why: 'every subtree is EINVAL (blob-size missing)' });
  });

  it('prints the table and --json', () => {
    const text = cli('compat', '--matrix');
    expect(text.code).toBe(0);
    expect(text.out.split('\n')[0]).toMatch(/^from \\ to +v1 +v1-karr +v2 +v3 +v4 +v4-composite/);
    expect(text.out).toMatch(/^v2 +-- +\(--\) +ok +lab +lab +\(ok\)/m);
    const json = JSON.parse(cli('compat', '--matrix', '--json').out);
    expect(json).toHaveLength(36);
  });
});

describe('kho compat FROM TO', () => {
  let dir: string;
  let image: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kho-compat-'));
    image = join(dir, 'a.kho');
    expect(cli('kexec', '--ram', '512M', '--mem', '16M', '--image', image).code).toBe(0);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a configuration: reserve_mem in kstate form is the lab\'s only', () => {
    const r = compareKernels(kernelFromConfig('kho_abi=v3 reserve_mem_handover=kstate'), kernelFromConfig('kho_abi=v3'));
    expect(r.lab).toBe(true);
    expect(r.linux).toBe(false);
    expect(r.lines.find((l) => l.aspect === 'reserve_mem')!.linux!.why).toMatch(/only from memblock-v1/);
  });

  it('reads an image: its generation, reserve_mem form and kstate sections, each checked against the reader', () => {
    const a = kernelFromImage(image);
    expect(a.generation.id).toBe('v4');
    expect(a.reserveMem).toBe('fdt');
    expect(a.kstate?.map((s) => s.id)).toEqual(['kho_test']);
    const r = compareKernels(a, kernelFromConfig(''));
    expect(r.lab).toBe(true);
    expect(r.linux).toBe(true);
    expect(r.lines.find((l) => l.aspect === 'kstate kho_test v1')!.lab).toEqual({ ok: true, why: 'read by kho_test v1' });
  });

  it('exit 0 when the lab takes it, 1 when it does not, 2 for a bad configuration', () => {
    const ok = cli('compat', image, 'kho_abi=v3');
    expect(ok.code).toBe(0);
    expect(ok.out).toContain("RESULT: the lab's kernel takes this handover; Linux would refuse it");
    expect(cli('compat', image, 'tracker=bitmap-array').code).toBe(1);
    const bad = cli('compat', image, 'kho_abi=v9');
    expect(bad.code).toBe(2);
    expect(bad.err).toBe('kho: kho_abi=v9 is not a KHO generation (wanted one of v1, v1-karr, v2, v3, v4, v4-composite)\n');
    expect(cli('compat', image).code).toBe(2);
  });
});
