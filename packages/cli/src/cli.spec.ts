import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { treeNodePfns } from '@kho/radix-tracker';
import { PROP_PRESERVED_MEMORY_MAP, PROP_PRESERVED_MEMORY_MAP_CRC, decodeKhoData } from '@kho/kho-core';
import { FdtNode, decodeFdt, encodeFdt } from '@kho/fdt';
import { readImageFile, writeImageFile, type HandoverImage } from '@kho/image';
import { runCli } from './main';

const BIN = resolve(__dirname, '../bin/kho.js');
const DEMO = ['--ram', '512M', '--mem', '16M', '--seed', '11'];

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

let dir: string;
let image: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kho-cli-'));
  image = join(dir, 'demo.kho');
  const r = cli('kexec', ...DEMO, '--image', image);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Rewrites the image with `edit` applied to a copy of its RAM at `phys`. */
function corrupt(name: string, edit: (img: HandoverImage, write: (phys: number, bytes: Uint8Array) => void, read: (phys: number, n: number) => Uint8Array) => void): string {
  const img = readImageFile(image);
  const find = (phys: number) => img.segments.find((s) => phys >= s.paddr && phys < s.paddr + s.bytes.length)!;
  const write = (phys: number, bytes: Uint8Array) => {
    const s = find(phys);
    s.bytes.set(bytes, phys - s.paddr);
  };
  const read = (phys: number, n: number) => {
    const s = find(phys);
    return s.bytes.slice(phys - s.paddr, phys - s.paddr + n);
  };
  edit(img, write, read);
  const file = join(dir, `${name}.kho`);
  writeImageFile(file, img);
  return file;
}

function rootFdt(img: HandoverImage, read: (phys: number, n: number) => Uint8Array): { phys: number; fdt: FdtNode } {
  const kd = decodeKhoData(img.khoData);
  if (typeof kd === 'string') throw new Error(kd);
  return { phys: kd.fdtAddr, fdt: decodeFdt(read(kd.fdtAddr, PAGE_SIZE)) };
}

describe('kho demo', () => {
  it('verifies and exits 0; --json gives the same report as data', () => {
    const r = cli('demo', ...DEMO, '--json');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.ok).toBe(true);
    expect(report.second.restore.verified).toBe(true);
    expect(report.first.trackerPages).toBeGreaterThan(5);
    expect(Object.keys(report.first.ms)).toEqual(['boot', 'generate', 'generate.data', 'files', 'prepare', 'serialize', 'kexec']);
    expect(Object.keys(report.second.ms)).toEqual(['boot', 'boot.walk', 'restore', 'restore.verify', 'finish']);
    expect(report.first.ms['generate.data']).toBeLessThanOrEqual(report.first.ms.generate);
    expect(report.second.ms['restore.verify']).toBeLessThanOrEqual(report.second.ms.restore);
    // every kernel phase's time, heard on the machine's bus
    expect(Object.keys(report.first.phases)).toEqual(['boot:early', 'boot:mm', 'boot:late', 'prepare', 'serialize', 'kexec']);
    expect(Object.keys(report.second.phases)).toEqual(['boot:early', 'boot:mm', 'boot:late', 'restore', 'finish']);
    expect(report.second.ms['boot.walk']).toBeCloseTo(report.second.phases['boot:early'] + report.second.phases['boot:mm'], 1);
  });

  it('prints the first kernel and the next as generations 1 and 2, and labels the memfd figures', () => {
    const r = cli('demo', ...DEMO);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^first kernel \(generation 1\): \d+ folios of random order, [\d.]+ MiB; memfd files: 3\.26 MiB written$/m);
    expect(r.out).toMatch(/^next kernel \(generation 2\): KHO boot\n {2}handover: kho-v4; exec from 7\.2\.0-kho-lab \(count 1\)\n {2}memfd: 3 files, 16\.19 MiB of file size \(holes included\) compared byte for byte: verified$/m);
  });
});

describe('handover images', () => {
  it('boots in another process from the image written by another process', () => {
    const file = join(dir, 'xproc.kho');
    const env = { ...process.env, FORCE_COLOR: '0' };
    execFileSync(process.execPath, [BIN, 'kexec', ...DEMO, '--seed', '12', '--image', file], { env, stdio: 'pipe' });
    const boot = spawnSync(process.execPath, [BIN, 'boot', '--image', file, '--json'], { env, encoding: 'utf8' });
    expect(boot.stderr).toBe('');
    expect(boot.status).toBe(0);
    const report = JSON.parse(boot.stdout);
    expect(report.ok).toBe(true);
    expect(report.khoBoot).toBe(true);
    expect(report.restore.checksumActual).toBe(report.restore.checksumExpected);
    expect(report.freePagesAfterFinish).toBe(report.freePagesColdBoot);
  }, 60_000);

  it('a reader that stops early (kho run --json | head) ends the command quietly, without a stack trace', () => {
    // more than a pipe's 64 KiB of output, so the writer is still writing when head has gone
    const scenario = resolve(__dirname, '../../../examples/hundred-updates.yaml');
    const r = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" run "${scenario}" --json | head -1; exit \${PIPESTATUS[0]}`], {
      encoding: 'utf8',
      env: { ...process.env, FORCE_COLOR: '0' },
    });
    expect(r.stdout).toBe('{\n');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 60_000);

  it('is an ELF core file that readelf lists cleanly', () => {
    if (!existsSync('/usr/bin/readelf')) return console.warn('readelf not installed: skipping the readelf check');
    const out = execFileSync('/usr/bin/readelf', ['-l', '-n', '-W', image], { encoding: 'utf8' });
    expect(out).toContain('Elf file type is CORE');
    expect(out).toMatch(/NOTE/);
    expect(out).toMatch(/LOAD\s+0x[0-9a-f]+\s+0x0+\s+0x[0-9a-f]+/);
    expect(out).toContain('KHO');
    expect(out).toMatch(/0x4b484f01/i);
  });

  it('inspect shows the root FDT, scratch, blocks and subtrees; --json blocks match; --dtb-out decompiles with dtc', () => {
    const dtb = join(dir, 'root.dtb');
    const text = cli('inspect', image, '--dtb-out', dtb);
    expect(text.code).toBe(0);
    expect(text.out).toContain('compatible = "kho-v4";');
    expect(text.out).toMatch(/kstate -> 0x[0-9a-f]+, blob-size \d+ \(kstate stream\)/);
    expect(text.out).toMatch(/memfd -> 0x[0-9a-f]+, blob-size \d+ \(memfd file table\)/);
    expect(text.out).toMatch(/kexec-metadata -> 0x[0-9a-f]+, blob-size 73 \(kexec-metadata: exec from 7\.2\.0-kho-lab, count 1\)/);
    expect(text.out).toMatch(/Scratch areas:\n {2}lowmem {2}0x[0-9a-f]+ \+/);
    const json = JSON.parse(cli('inspect', image, '--json').out);
    expect(json.fdt.compatible).toBe('kho-v4');
    expect(json.blocks.length).toBe(json.tracker.blocks);
    expect(json.blocks[0]).toEqual({ phys: expect.stringMatching(/^0x[0-9a-f]+$/), order: expect.any(Number) });
    expect(json.subtrees.map((s: { name: string }) => s.name).sort()).toEqual(['kexec-metadata', 'kstate', 'memblock', 'memfd']);
    // the kstate stream, dumped without the writer's code: the self-test's state
    const stream = json.subtrees.find((s: { name: string }) => s.name === 'kstate').kstate;
    expect(stream.sections.map((x: { id: string }) => x.id).sort()).toEqual(['kho_test']); // reserve_mem regions go in memblock-v1 form
    const test = stream.sections.find((x: { id: string }) => x.id === 'kho_test');
    expect(test.fields.folios.vmalloc.chunks).toEqual([{ phys: expect.stringMatching(/^0x/), entries: 1, firstEntries: [expect.stringMatching(/^0x/)] }]);
    // the log region is in the memblock-v1 FDT (the default reserve_mem handover)
    const memblock = json.subtrees.find((s: { name: string }) => s.name === 'memblock');
    expect(memblock.kind).toBe('memblock reserve_mem regions (memblock-v1 FDT)');
    expect(memblock.memblock).toEqual([{ name: 'kho_test_log', start: expect.stringMatching(/^0x[0-9a-f]+$/), size: 65536 }]);
    const files = json.subtrees.find((s: { name: string }) => s.name === 'memfd').memfd;
    expect(files.map((f: { name: string }) => f.name).sort()).toEqual(['boot.log', 'dense.bin', 'sparse.bin']);
    const blockBytes = json.blocks.reduce((n: number, b: { order: number }) => n + PAGE_SIZE * 2 ** b.order, 0);
    expect(json.tracker.preservedBytes).toBe(blockBytes);
    expect(blockBytes).toBeGreaterThan(16 * 2 ** 20 + 4 * PAGE_SIZE); // the folios, their vmalloc list and chunk, the blob, the FDT, memfd
    expect(statSync(dtb).size).toBeGreaterThan(40);
    if (!existsSync('/usr/bin/dtc')) return console.warn('dtc not installed: skipping the dtc check');
    const dts = execFileSync('/usr/bin/dtc', ['-I', 'dtb', '-O', 'dts', dtb], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(dts).toContain('compatible = "kho-v4";');
    expect(dts).toContain('preserved-memory-map');
    expect(dts).toContain('kstate {');
  });
});

describe('bad images: one-line reasons, non-zero exits, never a stack trace', () => {
  function expectOneLine(r: { code: number; err: string }, code: number, pattern: RegExp): void {
    expect(r.code).toBe(code);
    expect(r.err.trim()).toMatch(pattern);
    expect(r.err.trim().split('\n')).toHaveLength(1);
  }

  it('a truncated image', () => {
    const file = join(dir, 'trunc.kho');
    writeFileSync(file, readFileSync(image));
    truncateSync(file, Math.floor(statSync(image).size / 2));
    expectOneLine(cli('boot', '--image', file), 2, /^kho: image: truncated/);
    expectOneLine(cli('inspect', '--strict', file), 2, /^kho: image: truncated/);
    // without --strict: the headers are whole, so what the file still holds is decoded and the loss is listed
    const r = cli('inspect', file);
    expectOneLine(r, 2, /^kho: image .*trunc\.kho: image file: PT_LOAD \d+ \(paddr 0x[0-9a-f]+\) ends at offset 0x[0-9a-f]+ but the file has 0x[0-9a-f]+ bytes: \d+ of its \d+ bytes kept \(wanted the whole file\)/);
    expect(r.out).toMatch(/^Handover image .*: \d+ segments/);
    expect(r.out).toMatch(/\nProblems: \d+ .*\n {2}image file: PT_LOAD/);
  });

  it('a file that is not an image, and a missing file', () => {
    const file = join(dir, 'junk.kho');
    writeFileSync(file, 'hello, not an ELF file at all; '.repeat(10));
    expectOneLine(cli('inspect', file), 2, /^kho: image: /);
    expectOneLine(cli('boot', '--image', join(dir, 'missing.kho')), 2, /^kho: .*missing\.kho/);
  });

  it('a wrong root compatible: boot refuses revival and fails, inspect refuses', () => {
    const file = corrupt('compat', (img, write, read) => {
      const { phys, fdt } = rootFdt(img, read);
      fdt.setString('compatible', 'kho-v9');
      write(phys, encodeFdt(fdt, { totalSize: PAGE_SIZE }));
    });
    const boot = cli('boot', '--image', file);
    expect(boot.code).toBe(1);
    expect(boot.out).toContain("cold boot (revival refused: root FDT compatible is 'kho-v9\\0' (wanted one this kernel reads: 'kho-v2', 'kho-v3', 'kho-v4', 'kho-v4;radix-v1;vmalloc-v1'))");
    expectOneLine(cli('inspect', '--strict', file), 2, /^kho: root FDT compatible is 'kho-v9\\0'/);
    // without --strict: everything that does not need the tracker is decoded, and the problem is listed
    const r = cli('inspect', file);
    expectOneLine(r, 2, /^kho: image .*compat\.kho: root FDT: root FDT compatible is 'kho-v9\\0' \(wanted one this kernel reads: 'kho-v1', 'kho-v1-karr', 'kho-v2', 'kho-v3', 'kho-v4', 'kho-v4;radix-v1;vmalloc-v1'\)$/);
    expect(r.out).toMatch(/kstate -> 0x[0-9a-f]+ \(kstate stream\)/);
    expect(r.out).toMatch(/memfd -> 0x[0-9a-f]+ \(memfd file table\)/);
    expect(r.out).toContain("\nProblems: 1 (the next kernel would refuse this handover or part of it)\n  root FDT: root FDT compatible is 'kho-v9\\0'");
  });

  it('a tracker pointer outside RAM', () => {
    const file = corrupt('map', (img, write, read) => {
      const { fdt } = rootFdt(img, read);
      const root = Number(fdt.getU64LE(PROP_PRESERVED_MEMORY_MAP));
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, 0x7_0000_0000n, true);
      write(root + 2 * 8, b);
    });
    const boot = cli('boot', '--image', file, '--json');
    expect(boot.code).toBe(1);
    expect(JSON.parse(boot.out).revivalError).toMatch(/^radix tree: level-4 node \(entry 2 of 0x[0-9a-f]+\) 0x700000000 is outside RAM$/);
    expectOneLine(cli('inspect', '--strict', file), 2, /^kho: radix tree: level-4 node .* is outside RAM$/);
    const r = cli('inspect', file, '--json');
    expect(r.code).toBe(2);
    const json = JSON.parse(r.out);
    // the bad pointer is one problem; the rest of the tree and every subtree are still decoded, but the blocks of a
    // map that fails its checksum (the pointer changed a tree page) are not listed: the next kernel refuses them
    expect(json.problems[0]).toEqual({ where: expect.stringMatching(/^radix tree level-4 node/), what: expect.stringMatching(/^radix tree: level-4 node \(entry 2 of 0x[0-9a-f]+\) 0x700000000 is outside RAM$/), wanted: 'a page of RAM' });
    expect(json.subtrees.map((x: { name: string }) => x.name).sort()).toEqual(['kexec-metadata', 'kstate', 'memblock', 'memfd']);
    expect(json.problems.map((p: { what: string }) => p.what)).toContainEqual(expect.stringMatching(/^the tracker's pages fail their checksum/));
    expect(json.tracker).toMatchObject({ listed: false, blocks: 0 });
    expect(json.tracker.metadataPages).toBeGreaterThan(4);
    expect(json.blocks).toEqual([]);
  });

  it('a bit flipped in a radix leaf: the tracker checksum refuses it, though the block it adds would be valid RAM', () => {
    const file = corrupt('leaf', (img, write, read) => {
      const { fdt } = rootFdt(img, read);
      expect(fdt.getProp(PROP_PRESERVED_MEMORY_MAP_CRC)?.length).toBe(4);
      const ram = new PhysicalMemory({ ranges: img.machine.ram });
      for (const sg of img.segments) ram.write(sg.paddr, sg.bytes);
      const nodes = treeNodePfns(ram, Number(fdt.getU64LE(PROP_PRESERVED_MEMORY_MAP)));
      const leaf = nodes[nodes.length - 1] * PAGE_SIZE; // depth first: the last node is a leaf
      const words = new Uint32Array(read(leaf, PAGE_SIZE).buffer);
      const w = words.findIndex((x) => x !== 0 && x !== 0xffffffff);
      const bit = 31 - Math.clz32(words[w]); // the highest set bit; the one above it is clear
      words[w] |= 2 ** (bit + 1);
      write(leaf, new Uint8Array(words.buffer));
    });
    const boot = cli('boot', '--image', file, '--json');
    expect(boot.code).toBe(1);
    expect(JSON.parse(boot.out).revivalError).toMatch(/^the tracker's pages fail their checksum \(crc32c 0x[0-9a-f]+, wanted 0x[0-9a-f]+\): the preserved-memory map was damaged$/);
  });

  it('a corrupted root FDT header', () => {
    const file = corrupt('fdt', (img, write) => {
      const kd = decodeKhoData(img.khoData);
      if (typeof kd === 'string') throw new Error(kd);
      write(kd.fdtAddr, Uint8Array.of(0xde, 0xad, 0xbe, 0xef));
    });
    const boot = cli('boot', '--image', file, '--json');
    expect(boot.code).toBe(1);
    expect(JSON.parse(boot.out).revivalError).toMatch(/^FDT: /);
    expectOneLine(cli('inspect', '--strict', file), 2, /^kho: FDT: /);
    const r = cli('inspect', file);
    expectOneLine(r, 2, /^kho: image .*: root FDT at 0x[0-9a-f]+: FDT: /);
    expect(r.out).toMatch(/Scratch areas:\n {2}lowmem {2}0x[0-9a-f]+ \+/); // the scratch array does not depend on the FDT
  });
});
