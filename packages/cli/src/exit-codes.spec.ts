import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readImageFile, writeImageFile } from '@kho/image';
import { decodeKhoData } from '@kho/kho-core';
import { ownerHue } from './explore/colours';
import { runCli } from './main';

/**
 * The exit-code contract, one row per row of issue 15's table: 0 verified, 1 verification failed, 2 bad input
 * with exactly one line `kho: <reason>` on stderr naming the option or file and what was wanted, checked before
 * the run where it can be.
 */

const BIN = resolve(__dirname, '../bin/kho.js');
const ROOT = resolve(__dirname, '../../..');

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

// made when the module loads: the table below names files in it
const dir = mkdtempSync(join(tmpdir(), 'kho-exit-'));
beforeAll(() => {
  mkdirSync(join(dir, 'a-folder'));
  writeFileSync(join(dir, 'empty.yaml'), '');
  writeFileSync(join(dir, 'comments.yaml'), '# nothing but a comment\n');
  writeFileSync(join(dir, 'bad.json'), '{\n  "generations": [\n    { "preserve": {} },,\n  ]\n}\n');
  writeFileSync(join(dir, 'bad.yaml'), 'generations:\n  - preserve: {}\n  bad: [\n');
  writeFileSync(join(dir, 'list.yaml'), '- a\n- b\n');
  writeFileSync(join(dir, 'too-big.yaml'), 'machine: { ram: 256M }\ngenerations:\n  - preserve: { folios: { total: 512M } }\n');
  // fits the machine on paper, not once the kernel, scratch and the memmap have their share
  writeFileSync(join(dir, 'over.yaml'), 'machine: { ram: 256M }\ncmdline: kho_scratch=24M,24M,24M\ngenerations:\n  - preserve: {}\n  - preserve: { folios: { total: 200M } }\n');
  writeFileSync(join(dir, 'ok.yaml'), 'machine: { ram: 256M }\ncmdline: kho_scratch=24M,24M,24M\ngenerations:\n  - preserve: { folios: { total: 4M } }\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** [row of the table, argv, exit code, the one stderr line (a RegExp or exact text)] */
const ROWS: Array<[string, () => string[], number, RegExp | string]> = [
  ['kho demo --mem 0', () => ['demo', '--mem', '0'], 2, 'kho: --mem 0 preserves nothing (wanted at least one page, 4096 bytes)'],
  [
    'kho demo --ram 99T --mem 8M (the host cannot hold the machine)',
    () => ['demo', '--ram', '99T', '--mem', '8M'],
    2,
    /^kho: --ram 99T needs [\d.]+ GiB of page descriptors on this host, which has [\d.]+ GiB of memory \(wanted at most \d+G of simulated RAM\)$/,
  ],
  [
    '--ram 64M --mem 4K (no room for scratch)',
    () => ['demo', '--ram', '64M', '--mem', '4K'],
    2,
    /^kho: the first kernel cannot run KHO: cannot place the scratch areas \(ENOMEM: memblock_alloc: no room for [\d.]+ MiB for kho-scratch below 0x4000000\); KHO disabled \(wanted more RAM, or smaller scratch areas with kho_scratch= on the command line\)$/,
  ],
  [
    '--cmdline kho_scratch=zzz',
    () => ['demo', '--cmdline', 'kho_scratch=zzz'],
    2,
    "kho: --cmdline 'kho_scratch=zzz': kho_scratch=zzz (wanted N% or <lowmem>,<global>,<pernode> with K/M/G suffixes)",
  ],
  [
    '--cmdline kho_scratch too small for the next kernel',
    () => ['demo', '--ram', '64M', '--mem', '1M', '--cmdline', 'kho_scratch=4M,4M,4M'],
    2,
    "kho: --cmdline 'kho_scratch=4M,4M,4M': scratch of 4M + 4M + 4M cannot hold the next kernel, which boots in scratch alone (wanted one area of at least 16M for its image, and 17.00 MiB in all with its page descriptors)",
  ],
  ['--cmdline kho=maybe', () => ['demo', '--cmdline', 'kho=maybe'], 2, "kho: --cmdline 'kho=maybe': command line: kho='maybe' is not a boolean (wanted on/off, 1/0, y/n)"],
  ['--report to a folder', () => ['demo', '--report', join(dir, 'a-folder')], 2, `kho: --report ${join(dir, 'a-folder')} is a folder (wanted a file name)`],
  [
    '--report into a missing folder',
    () => ['run', join(dir, 'ok.yaml'), '--report', join(dir, 'nope', 'r.html')],
    2,
    `kho: --report ${join(dir, 'nope', 'r.html')}: the folder ${join(dir, 'nope')} does not exist (wanted a file in an existing folder)`,
  ],
  ['--image into a missing folder', () => ['kexec', '--image', join(dir, 'nope', 'a.kho')], 2, /^kho: --image .*a\.kho: the folder .*nope does not exist \(wanted a file in an existing folder\)$/],
  ['--ram 1K', () => ['demo', '--ram', '1K'], 2, 'kho: --ram 1K is too small (wanted at least 64M)'],
  ['--ram 1K --mem 0 (the machine is named first)', () => ['demo', '--ram', '1K', '--mem', '0'], 2, 'kho: --ram 1K is too small (wanted at least 64M)'],
  ['--ram not a whole number of nodes', () => ['demo', '--ram', '100M', '--nodes', '3'], 2, 'kho: --ram 100M does not split into --nodes 3 of whole 4M (wanted a multiple of 12M)'],
  ['--mem above half of --ram', () => ['demo', '--ram', '256M', '--mem', '200M'], 2, 'kho: --mem 200M is more than half of --ram 256M (wanted at most 128M: scratch and the kernel need the rest)'],
  ['unknown option', () => ['demo', '--frob'], 2, "kho: unknown option '--frob' for kho demo (wanted one listed by kho demo --help)"],
  ['unknown option, close to a real one', () => ['demo', '--seeds', '3'], 2, "kho: unknown option '--seeds' for kho demo (wanted --seed)"],
  [
    'kho kexec with a generation the tracker cannot write',
    () => ['kexec', '--ram', '256M', '--mem', '2M', '--cmdline', 'kho_abi=v1', '--image', join(dir, 'v1.kho')],
    2,
    "kho: the first kernel cannot run KHO: kho_abi=v1 (kho-v1) carries the bitmap-chunks map, but this kernel's tracker is radix (wanted one of v2, v3, v4, v4-composite); KHO disabled",
  ],
  ['unknown command', () => ['frobnicate'], 2, "kho: unknown command 'frobnicate' (wanted one of demo, kexec, boot, run, bench, fuzz, sweep, soak, inspect, explore, compat; see kho --help)"],
  ['a bad choice of argument', () => ['sweep', 'sideways'], 2, "kho: kho sweep <sweep> 'sideways' is not allowed (wanted one of anytime, faults)"],
  ['a bad size', () => ['demo', '--mem', '12Q'], 2, "kho: --mem: '12Q' is not a size (wanted a number with an optional K, M, G, T or P suffix)"],
  ['a bad integer', () => ['demo', '--seed', 'x'], 2, "kho: --seed 'x' (wanted an integer 0..4294967295)"],
  ['a bad choice', () => ['demo', '--tracker', 'btree'], 2, "kho: --tracker 'btree' is not allowed (wanted one of radix, bitmap-chunks, bitmap-array)"],
  ['a missing option', () => ['kexec'], 2, 'kho: kho kexec needs --image <file> (wanted where to write the handover image; see kho kexec --help)'],
  ['a missing argument', () => ['run'], 2, 'kho: kho run needs its <file> argument (wanted a scenario file, JSON or YAML (see examples/); see kho run --help)'],
  ['an extra argument', () => ['demo', 'now'], 2, 'kho: kho demo takes no arguments (got 1; see kho demo --help)'],
  ['an empty scenario file', () => ['run', join(dir, 'empty.yaml')], 2, `kho: scenario ${join(dir, 'empty.yaml')}: the file is empty (wanted a YAML object with at least 'generations')`],
  ['a scenario of comments only', () => ['run', join(dir, 'comments.yaml')], 2, `kho: scenario ${join(dir, 'comments.yaml')}: the file is empty (wanted a YAML object with at least 'generations')`],
  ['a scenario that is a list', () => ['run', join(dir, 'list.yaml')], 2, `kho: scenario ${join(dir, 'list.yaml')}: the file holds a list (wanted an object with at least 'generations')`],
  ['invalid JSON: line and column', () => ['run', join(dir, 'bad.json')], 2, `kho: scenario ${join(dir, 'bad.json')}: not valid JSON: line 3, column 24: Unexpected token ','`],
  [
    'invalid YAML: line and column, no code frame',
    () => ['run', join(dir, 'bad.yaml')],
    2,
    /^kho: scenario .*bad\.yaml: not valid YAML: line \d+, column \d+: [A-Z][^:\n]*[^:]$/,
  ],
  ['a missing scenario', () => ['run', join(dir, 'missing.yaml')], 2, `kho: scenario ${join(dir, 'missing.yaml')}: cannot read it (ENOENT)`],
  [
    'a scenario that preserves more than the machine has (before the run)',
    () => ['run', join(dir, 'too-big.yaml')],
    2,
    `kho: scenario ${join(dir, 'too-big.yaml')}: generation 1 preserves 512M, more than the machine's 256M of RAM (wanted less to preserve, or more machine.ram)`,
  ],
  [
    'a scenario that over-allocates (during the run): scenario and generation named',
    () => ['run', join(dir, 'over.yaml')],
    2,
    new RegExp(`^kho: scenario ${join(dir, 'over.yaml').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: generation 2 asks for more memory than the machine has left \\(allocPages: no free normal block of order \\d+ .*; wanted less to preserve, or more machine\\.ram\\)$`),
  ],
  ['an image that is not there', () => ['inspect', join(dir, 'none.kho')], 2, /^kho: image: cannot open .*none\.kho: ENOENT/],
];

describe('one exit-code contract: every row of the table', () => {
  it.each(ROWS)('%s', (_row, argv, code, line) => {
    const r = cli(...argv());
    expect(r.code).toBe(code);
    const lines = r.err.split('\n');
    expect(lines).toHaveLength(2); // exactly one line, and its newline
    if (typeof line === 'string') expect(lines[0]).toBe(line);
    else expect(lines[0]).toMatch(line);
    expect(r.err).not.toMatch(/^\s+at /m);
  });

  it('bad input is refused before the run: a bad --report costs no demo', () => {
    const t0 = performance.now();
    expect(cli('demo', '--report', join(dir, 'a-folder')).code).toBe(2);
    // the default demo takes seconds; a refusal before it starts takes milliseconds
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  it('0 when everything verified, 1 when verification failed', () => {
    const ok = cli('run', join(dir, 'ok.yaml'));
    expect([ok.code, ok.err]).toEqual([0, '']);
    const image = join(dir, 'a.kho');
    expect(cli('kexec', '--ram', '256M', '--mem', '4M', '--cmdline', 'kho_scratch=24M,24M,24M', '--image', image).code).toBe(0);
    const refused = cli('boot', '--image', image, '--tracker', 'bitmap-chunks');
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('RESULT: FAILED');
  });

  it('kho inspect of a damaged image decodes what it can, lists each problem, exits 2 with one line; --strict refuses', () => {
    const image = join(dir, 'b.kho');
    expect(cli('kexec', '--ram', '256M', '--mem', '4M', '--cmdline', 'kho_scratch=24M,24M,24M', '--image', image).code).toBe(0);
    const img = readImageFile(image);
    const kd = decodeKhoData(img.khoData);
    if (typeof kd === 'string') throw new Error(kd);
    const seg = img.segments.find((s) => kd.scratchAddr >= s.paddr && kd.scratchAddr < s.paddr + s.bytes.length)!;
    // the scratch array's first area made unaligned: one problem; the FDT, the tracker and the subtrees still decode
    seg.bytes[kd.scratchAddr - seg.paddr] |= 1;
    const bad = join(dir, 'b-damaged.kho');
    writeImageFile(bad, img);
    const r = cli('inspect', bad);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^kho: image .*b-damaged\.kho: scratch array: scratch area 0x[0-9a-f]+\+0x[0-9a-f]+ is not page-aligned RAM \(wanted page-aligned RAM\)\n$/);
    expect(r.out).toMatch(/\nProblems: 1 .*\n {2}scratch array: /);
    expect(r.out).toContain('compatible = "kho-v4";');
    expect(r.out).toMatch(/kstate -> 0x[0-9a-f]+, blob-size \d+ \(kstate stream\)/);
    expect(r.out).toMatch(/Preserved blocks \(phys, order\):\n {2}0x/);
    const strict = cli('inspect', '--strict', bad);
    expect(strict.code).toBe(2);
    expect(strict.err).toMatch(/^kho: scratch area 0x[0-9a-f]+\+0x[0-9a-f]+ is not page-aligned RAM \(wanted page-aligned RAM\)\n$/);
    // the explorer of the same image draws what decoded and lists the problem
    const page = join(dir, 'b-damaged.html');
    const explore = cli('explore', bad, '--out', page);
    expect([explore.code, explore.out]).toEqual([0, `explorer: ${page} (1 problem listed on the page)\n`]);
    const data = JSON.parse(/<script id="kho-data" type="application\/json">(.*?)<\/script>/s.exec(readFileSync(page, 'utf8'))![1]);
    expect(data.problems).toEqual([{ where: 'scratch array', what: expect.stringMatching(/^scratch area 0x[0-9a-f]+\+0x[0-9a-f]+ is not page-aligned RAM$/), wanted: 'page-aligned RAM' }]);
    expect(data.resultText).toBe('1 problem found');
    expect(data.kexecs[0].handover.subtrees.map((x: { name: string }) => x.name)).toEqual(['kexec-metadata', 'memblock', 'kstate', 'memfd']);
  });

  it("the report's command runs as it is written, sizes as typed", () => {
    const page = join(dir, 'r.html');
    expect(cli('demo', '--ram', '256M', '--mem', '4M', '--cmdline', 'kho_scratch=24M,24M,24M', '--report', page).code).toBe(0);
    const command = /<code id="command">kho ([^<]*)<\/code>/.exec(readFileSync(page, 'utf8'))![1];
    expect(command).toBe('demo --seed 1 --mem 4M --ram 256M --nodes 1 --cmdline kho_scratch=24M,24M,24M');
    expect(cli(...command.split(' ')).code).toBe(0);
  });

  it('--help shows default sizes as they are typed', () => {
    const r = cli('demo', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\(default:\s+256M\)/);
    expect(r.out).toMatch(/\(default: 4G\)/);
    expect(r.out).not.toMatch(/268435456|4294967296/);
  });

  it('kho boot names the generation the image boots, as kho demo does', () => {
    const image = join(dir, 'g.kho');
    expect(cli('kexec', '--ram', '256M', '--mem', '4M', '--cmdline', 'kho_scratch=24M,24M,24M', '--image', image).code).toBe(0);
    const boot = cli('boot', '--image', image, '--json');
    expect(JSON.parse(boot.out).generation).toBe(2);
    const demo = cli('demo', '--ram', '256M', '--mem', '4M', '--cmdline', 'kho_scratch=24M,24M,24M', '--json');
    expect(JSON.parse(demo.out).second.generation).toBe(2);
  });

  it('owner colours are the same in every report: a hue from the owner name alone', () => {
    expect(['kho', 'memfd', 'kstate', 'kho-test', 'some-new-subsystem'].map(ownerHue)).toEqual([0, 35, 200, 280, ownerHue('some-new-subsystem')]);
    expect(ownerHue('some-new-subsystem')).toBe(ownerHue(String('some-new-subsystem')));
  });

  it('the Nx test target hashes what the browser test depends on: chromium and CI', () => {
    const project = JSON.parse(readFileSync(join(__dirname, '../project.json'), 'utf8'));
    const inputs = JSON.stringify(project.targets.test.inputs);
    expect(inputs).toContain('{"env":"CI"}');
    expect(inputs).toMatch(/"runtime":"[^"]*chromium/);
  });
});

describe('runs anywhere', () => {
  it('the bin works from a temporary directory', () => {
    const cwd = mkdtempSync(join(tmpdir(), 'kho-cwd-'));
    try {
      const version = spawnSync(process.execPath, [BIN, '--version'], { cwd, encoding: 'utf8' });
      expect([version.status, version.stdout, version.stderr]).toEqual([0, '0.1.0\n', '']);
      const demo = spawnSync(process.execPath, [BIN, 'demo', '--ram', '256M', '--mem', '2M', '--cmdline', 'kho_scratch=24M,24M,24M', '--json'], { cwd, encoding: 'utf8' });
      expect(demo.stderr).toBe('');
      expect(demo.status).toBe(0);
      expect(JSON.parse(demo.stdout).ok).toBe(true);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  }, 60_000);

  // `script` (util-linux, in every Debian) gives the command a terminal, so that it draws its progress bar
  const haveScript = existsSync('/usr/bin/script');
  (haveScript ? it : it.skip)(
    'Ctrl-C during a progress bar shows the cursor again and exits 130',
    async () => {
      const p = spawn('/usr/bin/script', ['-qfec', `"${process.execPath}" "${BIN}" demo --ram 2G --mem 1G`, '/dev/null'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let sent = false;
      const code = await new Promise<number | null>((done) => {
        p.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          // the bar is drawn: press Ctrl-C (the terminal turns it into SIGINT for the command)
          if (!sent && /\d+%/.test(out)) {
            sent = true;
            p.stdin.write('\x03');
          }
        });
        p.on('exit', (c) => done(c));
      });
      expect(sent).toBe(true);
      expect(code).toBe(130);
      const hidden = out.lastIndexOf('\x1b[?25l');
      expect(hidden).toBeGreaterThanOrEqual(0);
      expect(out.lastIndexOf('\x1b[?25h')).toBeGreaterThan(hidden);
    },
    60_000,
  );
});

