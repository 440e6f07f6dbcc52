import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PAGE_SIZE } from '@kho/physmem';
import { readImageFile, writeImageFile } from '@kho/image';
import { runCli } from '../main';
import { SeededPages } from './pattern';
import { DEFAULT_VMM, runVmm } from './run';

const BIN = resolve(__dirname, '../../bin/kho.js');
const SMALL = ['--guest', '32M', '--ram', '4G', '--seed', '5'];

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kho-vmm-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the guest pattern', () => {
  it('checks what it filled, finds a changed byte, and treats sparse pages as zero', () => {
    const p = new SeededPages(7);
    const page = new Uint8Array(PAGE_SIZE);
    p.fillPage(page, 3);
    expect(p.checkPage(page, 3)).toBe(-1);
    expect(p.checkPage(page, 4)).toBe(0);
    page[1000] ^= 1;
    expect(p.checkPage(page, 3)).toBe(1000);
    const sparse = new SeededPages(7, 512);
    expect([sparse.carries(0), sparse.carries(1), sparse.carries(512)]).toEqual([true, false, true]);
    expect(sparse.checkPage(undefined, 1)).toBe(-1);
    expect(sparse.checkPage(undefined, 512)).toBe(0);
  });
});

describe('kho demo --vmm', () => {
  it('verifies a guest through LUO in one process and reports the blackout by phase', () => {
    const r = runVmm({ ...DEFAULT_VMM, guest: 64 * 2 ** 20, seed: 3 });
    expect(r.second.errors).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.first.guestFolios).toBe(32);
    expect(r.first.folioOrders).toEqual({ 9: 32 });
    expect(r.second.guest).toEqual({ bytes: 64 * 2 ** 20, folios: 32, verified: true });
    expect(r.second.freePagesAfterFinish).toBe(r.second.freePagesColdBoot);
    expect(Object.keys(r.blackout.phases)).toEqual(['freeze', 'serialize', 'kexec', 'boot', 'open', 'retrieve-session', 'retrieve-fds']);
    expect(r.blackout.totalMs).toBeCloseTo(Object.values(r.blackout.phases).reduce((a, b) => a + b, 0), 2);
  });

  it('prints the sessions and files, exit 0; --json is the same report', () => {
    const text = cli('demo', '--vmm', ...SMALL, '--fill', 'sparse');
    expect(text.err).toBe('');
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/session vm0 \(preserved\): 2 files\n {4}token 0x1 memfd-v2: guest memory \(memfd\), 32\.00 MiB in 16 folios/);
    expect(text.out).toMatch(/blackout \(freeze → retrieve complete\): [\d.]+ ms/);
    expect(text.out).toContain('RESULT: every byte of the guest verified after kexec');
    const json = JSON.parse(cli('demo', '--vmm', ...SMALL, '--json').out);
    expect(json.ok).toBe(true);
    expect(json.second.sessions[0].files.map((f: { token: string }) => f.token)).toEqual(['0x1', '0x2']);
  });

  it.each([
    [['demo', '--vmm', '--guest', '3M'], 'kho: --guest 3145728 is not a positive multiple of 2 MiB'],
    [['demo', '--vmm', '--guest', '4G', '--ram', '4G'], 'kho: --guest 4.00 GiB does not fit --ram 4.00 GiB'],
    [['demo', '--vmm', '--fill', 'half'], "kho: --fill 'half' is not allowed (wanted one of full, sparse)"],
  ])('refuses %j with exit 2 and one line', (argv, message) => {
    const r = cli(...argv);
    expect(r.code).toBe(2);
    expect(r.err.split('\n')[0]).toContain(message);
  });

  it('writes an HTML report with the memory maps, the sessions and the blackout', () => {
    const file = join(dir, 'vmm.html');
    expect(cli('demo', '--vmm', ...SMALL, '--fill', 'sparse', '--report', file).code).toBe(0);
    const html = readFileSync(file, 'utf8');
    expect(html).toContain('session vm0, token 0x1');
    expect(html).toContain('blackout total');
    expect(html).toMatch(/<svg[^>]*class="memmap"/);
  });
});

describe('two processes: kho kexec --vmm, kho inspect, kho boot', () => {
  it('boots the guest from the image in another process and verifies every byte; inspect lists the session, files and folios', () => {
    const image = join(dir, 'vmm.kho');
    const env = { ...process.env, FORCE_COLOR: '0' };
    // The first half in this process, the second in another: nothing but the image file connects them.
    const k = cli('kexec', '--vmm', ...SMALL, '--image', image);
    expect(k.err).toBe('');
    expect(k.code).toBe(0);
    const insp = JSON.parse(cli('inspect', image, '--json').out);
    const luo = insp.subtrees.find((s: { name: string }) => s.name === 'LUO').luo;
    expect(luo.errors).toEqual([]);
    expect(luo.sessions.map((s: { name: string }) => s.name)).toEqual(['vm0']);
    const guest = luo.sessions[0].files[0];
    expect(guest).toMatchObject({ compatible: 'memfd-v2', token: '0x1' });
    expect(guest.decoded.nrFolios).toBe(16);
    expect(guest.decoded.folios).toHaveLength(16);
    const blocks = new Map(insp.blocks.map((b: { phys: string; order: number }) => [Number(b.phys), b.order]));
    for (const f of guest.decoded.folios) expect(blocks.get(Number(f.pfn) * PAGE_SIZE)).toBe(9);
    const text = cli('inspect', image).out;
    expect(text).toMatch(/LUO -> 0x[0-9a-f]+, blob-size 32 \(Live Update Orchestrator\)\n {4}luo-v5 \(compatible 'luo-v5'\), live update number 1, 1 sessions/);
    const boot = spawnSync(process.execPath, [BIN, 'boot', '--image', image, '--json'], { env, encoding: 'utf8' });
    expect(boot.stderr).toBe('');
    const r = JSON.parse(boot.stdout);
    expect(r.errors).toEqual([]);
    expect(boot.status).toBe(0);
    expect(r.guest.verified).toBe(true);
    expect(Object.keys(r.blackout.phases)).toContain('freeze');
  }, 120_000);

  it('a guest page changed in the image is found by the next kernel (exit 1)', () => {
    const image = join(dir, 'vmm2.kho');
    expect(cli('kexec', '--vmm', ...SMALL, '--image', image).code).toBe(0);
    const insp = JSON.parse(cli('inspect', image, '--json').out);
    const folio = Number(insp.subtrees.find((s: { name: string }) => s.name === 'LUO').luo.sessions[0].files[0].decoded.folios[3].pfn) * PAGE_SIZE;
    const img = readImageFile(image);
    const seg = img.segments.find((s) => folio >= s.paddr && folio < s.paddr + s.bytes.length)!;
    seg.bytes[folio - seg.paddr + 100] ^= 0xff;
    writeImageFile(image, img);
    const r = cli('boot', '--image', image);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/error: guest memory byte \d+ differs from what the VMM wrote/);
  }, 60_000);
});
