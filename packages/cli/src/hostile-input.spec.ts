import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeImage, readImageFile } from '@kho/image';
import { runCli } from './main';

/**
 * Issue 16's table of hostile inputs, one row per row the hostile-input work touches: each builds its input here
 * and checks the command's exit code and its one line on stderr (0 verified, 1 verification or revival failed,
 * 2 bad input), never a stack trace. Rows 1 to 6 and 11 are pinned where they were fixed (kho-core, physmem,
 * kernel).
 */

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const dir = mkdtempSync(join(tmpdir(), 'kho-hostile-'));
const base = join(dir, 'base.kho');
beforeAll(() => {
  expect(cli('kexec', '--ram', '256M', '--mem', '4M', '--cmdline', 'kho_scratch=24M,24M,24M', '--image', base).code).toBe(0);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `depth` brackets around 1: a value nested `depth` levels deep. */
const nested = (depth: number): string => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

/** The base image with an extra machine-note key `key` whose JSON text is `json` (written as is). */
function withMachineKey(name: string, key: string, json: string): string {
  const img = readImageFile(base);
  const filler = 'X'.repeat(json.length - 2);
  (img.machine as Record<string, unknown>)[key] = filler;
  const bytes = encodeImage(img);
  bytes.set(new TextEncoder().encode(json), Buffer.from(bytes).indexOf(`"${filler}"`));
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

/** [row and input, what to run (files are built in the test), exit code, the one stderr line] */
const ROWS: Array<[string, () => string[], number, RegExp]> = [
  [
    'row 12: a YAML scenario whose machine nests 100,000 levels deep',
    () => {
      const f = join(dir, 'deep.yaml');
      writeFileSync(f, `machine:\n  ram: ${nested(100_000)}\ngenerations:\n  - preserve: {}\n`);
      return ['run', f];
    },
    2,
    /^kho: scenario .*deep\.yaml: line 2, column 72: lists and mappings nest more than 64 levels deep \(wanted at most 64\)$/,
  ],
  [
    'row 12: a JSON scenario nested 1,000,000 levels deep',
    () => {
      const f = join(dir, 'deep.json');
      writeFileSync(f, `{"machine": ${'{"a": '.repeat(1_000_000)}1${'}'.repeat(1_000_000)}, "generations": [{"preserve": {}}]}`);
      return ['run', f];
    },
    2,
    /^kho: scenario .*deep\.json: line 1, column \d+: lists and mappings nest more than 64 levels deep \(wanted at most 64\)$/,
  ],
  [
    'row 12: a YAML scenario nested 3,000 levels deep by indentation alone',
    () => {
      const f = join(dir, 'indent.yaml');
      let text = 'machine:\n';
      for (let i = 1; i < 3000; i++) text += `${' '.repeat(i)}a${i}:\n`;
      writeFileSync(f, `${text}${' '.repeat(3000)}x: 1\ngenerations:\n  - preserve: {}\n`);
      return ['run', f];
    },
    2,
    /^kho: scenario .*indent\.yaml: nested too deeply for the YAML parser \(wanted at most 64 levels\)$/,
  ],
  [
    "row 12: an image whose machine note nests 1,000,000 levels deep (kho boot)",
    () => ['boot', '--image', withMachineKey('deep-note.kho', 'vmm', nested(1_000_000))],
    2,
    /^kho: image: machine note nests arrays and objects more than 64 levels deep \(at character \d+; wanted at most 64\)$/,
  ],
  [
    "row 12: the same image (kho inspect)",
    () => ['inspect', withMachineKey('deep-note2.kho', 'demo', nested(1_000_000))],
    2,
    /^kho: image: machine note nests arrays and objects more than 64 levels deep \(at character \d+; wanted at most 64\)$/,
  ],
];

describe("issue 16's hostile inputs: refused in one line, or processed within the documented bound", () => {
  it.each(ROWS)('%s', (_row, argv, code, line) => {
    const r = cli(...argv());
    expect(r.err).toMatch(/^[^\n]*\n$/); // exactly one line
    expect(r.err.trimEnd()).toMatch(line);
    expect(r.code).toBe(code);
  });
});
