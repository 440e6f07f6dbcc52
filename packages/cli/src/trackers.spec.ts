import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { PROP_PRESERVED_MEMORY_MAP, decodeKhoData, readableGenerations } from '@kho/kho-core';
import { decodeFdt } from '@kho/fdt';
import { readImageFile, writeImageFile } from '@kho/image';
import { parseBitmapArray } from '@kho/kho-array';
import { DEFAULT_DEMO, runDemo, type DemoOptions } from './demo/run';
import { runCli } from './main';
import { parseScenario } from './scenario/schema';
import { runScenario } from './scenario/run';
import { splitWanted } from './view/problems';
import { TRACKERS, TRACKER_KINDS, type TrackerKind } from './registry';

const MiB = 2 ** 20;
const SMALL: DemoOptions = { ...DEFAULT_DEMO, ram: 512 * MiB, mem: 16 * MiB, seed: 11 };
const DEMO = ['--ram', '512M', '--mem', '16M', '--seed', '11'];
const COMPATIBLE: Record<TrackerKind, string> = { radix: 'kho-v4', 'bitmap-chunks': 'kho-v1', 'bitmap-array': 'kho-v1-karr' };

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

let dir: string;
const images = {} as Record<TrackerKind, string>;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kho-trackers-'));
  for (const t of TRACKER_KINDS) {
    images[t] = join(dir, `${t}.kho`);
    const r = cli('kexec', ...DEMO, '--tracker', t, '--image', images[t]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
  }
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the flagship live update with each tracker', () => {
  it.each(TRACKER_KINDS)('%s: every folio and file comes back verified; nothing leaks', (tracker) => {
    const r = runDemo({ ...SMALL, tracker });
    expect(r.second.errors).toEqual([]);
    expect(r.second.khoBoot).toBe(true);
    expect(r.first.tracker).toBe(tracker);
    expect(r.second.restore?.folios).toBe(r.first.folios);
    expect(r.second.restore?.ordersMatch).toBe(true);
    expect(r.second.restore?.checksumActual).toBe(r.second.restore?.checksumExpected);
    expect(r.second.files?.verified).toBe(true);
    expect(r.second.freePagesAfterFinish).toBe(r.second.freePagesColdBoot);
    expect(r.ok).toBe(true);
  });

  it('kho demo --tracker names the tracker; an unknown one is refused (exit 2)', () => {
    const r = cli('demo', ...DEMO, '--tracker', 'bitmap-array');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ {2}tracker: bitmap-array \(kho-v1 bitmaps, serialised at the jump as KHO array records\), \d+ pages of metadata/m);
    const bad = cli('demo', ...DEMO, '--tracker', 'btree');
    expect(bad.code).toBe(2);
    expect(bad.err).toBe("kho: --tracker 'btree' is not allowed (wanted one of radix, bitmap-chunks, bitmap-array)\n");
  });
});

describe('kho kexec --tracker, kho boot and kho inspect', () => {
  it.each(TRACKER_KINDS)('%s: the image records the tracker; kho boot uses it by default and verifies', (tracker) => {
    expect(readImageFile(images[tracker]).machine.tracker).toBe(tracker);
    const r = cli('boot', '--image', images[tracker], '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ ok: true, khoBoot: true });
    expect(cli('boot', '--image', images[tracker], '--tracker', tracker).code).toBe(0);
  });

  const pairs = TRACKER_KINDS.flatMap((from) => TRACKER_KINDS.filter((to) => to !== from).map((to) => [from, to] as const));
  it.each(pairs)('an image written with %s, booted with --tracker %s: refused, nothing restored, exit 1 with one reason', (from, to) => {
    const reads = readableGenerations(to).map((g) => `'${g.compatible}'`).join(', ');
    const reason = `root FDT compatible is '${COMPATIBLE[from]}\\0', a ${from} handover (wanted one this kernel reads: ${reads})`;
    const text = cli('boot', '--image', images[from], '--tracker', to);
    expect(text.code).toBe(1);
    expect(text.out.split('\n').filter((l) => l.includes('revival refused'))).toEqual([`next kernel (generation 2): cold boot (revival refused: ${reason})`]);
    const json = cli('boot', '--image', images[from], '--tracker', to, '--json');
    expect(json.code).toBe(1);
    const report = JSON.parse(json.out);
    expect(report).toMatchObject({ ok: false, khoBoot: false, revivalError: reason, unrestoredBlocks: 0 });
    expect(report.restore).toBeUndefined();
    expect(report.files).toBeUndefined();
  });

  it('inspect decodes an image of any tracker: its kind, metadata pages and bytes per block', () => {
    const found = TRACKER_KINDS.map((t) => {
      const r = cli('inspect', images[t], '--json');
      expect(r.code).toBe(0);
      const json = JSON.parse(r.out);
      expect(json.fdt.compatible).toBe(COMPATIBLE[t]);
      expect(json.tracker.name).toBe(t);
      expect(json.blocks.length).toBe(json.tracker.blocks);
      expect(json.tracker.metadataPages).toBeGreaterThan(0);
      expect(json.tracker.bytesPerBlock).toBe(Math.round(((json.tracker.metadataPages * PAGE_SIZE) / json.tracker.blocks) * 100) / 100);
      // kho-v3 and later preserve one more page of KHO's own: the kexec-metadata blob
      return { ...json.tracker, demoBytes: json.tracker.preservedBytes - (json.subtrees.some((s: { name: string }) => s.name === 'kexec-metadata') ? PAGE_SIZE : 0) };
    });
    // the same demo preserves the same amount of memory whichever tracker records it
    expect(new Set(found.map((t) => t.demoBytes)).size).toBe(1);
    expect(found.map((t) => t.kind)).toEqual(TRACKERS.map((t) => t.title)); // every title comes from the registry
    const text = cli('inspect', images['bitmap-chunks']);
    expect(text.out).toMatch(/^Tracker: kho-v1 bitmaps, serialised at the jump as a chunk list \(bitmap-chunks\), \d+ metadata pages \([\d.]+ KiB\), \d+ blocks, /m);
  });
});

describe('hostile kho-v1 images: kho boot refuses revival (exit 1, one reason), kho inspect refuses (exit 2, one line)', () => {
  /** Writes a copy of `tracker`'s image with `edit` applied to its RAM; `edit` returns the reason the kernel must give. */
  function corrupt(name: string, tracker: TrackerKind, edit: (ram: PhysicalMemory, map: number) => string): { file: string; reason: string } {
    const img = readImageFile(images[tracker]);
    const ram = new PhysicalMemory({ ranges: img.machine.ram });
    for (const s of img.segments) ram.write(s.paddr, s.bytes);
    const kd = decodeKhoData(img.khoData);
    if (typeof kd === 'string') throw new Error(kd);
    const map = Number(decodeFdt(ram.read(kd.fdtAddr, PAGE_SIZE)).getU64LE(PROP_PRESERVED_MEMORY_MAP));
    const reason = edit(ram, map);
    for (const s of img.segments) s.bytes = ram.read(s.paddr, s.bytes.length);
    const file = join(dir, `${name}.kho`);
    writeImageFile(file, img);
    return { file, reason };
  }
  const hex = (n: number): string => `0x${n.toString(16)}`;
  const lastChunk = (ram: PhysicalMemory, map: number): number => {
    let c = map;
    while (ram.readU64(c) !== 0) c = ram.readU64(c);
    return c;
  };

  it.each<[string, TrackerKind, (ram: PhysicalMemory, map: number) => string]>([
    [
      'a chunk pointer outside RAM',
      'bitmap-chunks',
      (ram, map) => {
        const last = lastChunk(ram, map);
        ram.writeU64(last, 0x7_0000_0000);
        return `bitmap chunks: chunk 0x700000000 (next of chunk ${hex(last)}) is outside RAM`;
      },
    ],
    [
      'a cycle',
      'bitmap-chunks',
      (ram, map) => {
        const last = lastChunk(ram, map);
        ram.writeU64(last, map);
        return `bitmap chunks: chunk ${hex(map)} (next of chunk ${hex(last)}) is reached twice (a cycle or a shared page)`;
      },
    ],
    ['num_elms above 255', 'bitmap-chunks', (ram, map) => (ram.writeU32(map + 12, 300), `bitmap chunks: chunk ${hex(map)} has num_elms 300 (wanted at most 255)`)],
    ['order 11', 'bitmap-chunks', (ram, map) => (ram.writeU32(map + 8, 11), `bitmap chunks: chunk ${hex(map)} has order 11 (wanted 0..10)`)],
    [
      'a bitmap pointer not page-aligned',
      'bitmap-chunks',
      (ram, map) => {
        const bm = ram.readU64(map + 24) + 0x40;
        ram.writeU64(map + 24, bm);
        return `bitmap chunks: chunk ${hex(map)} entry 0: bitmap ${hex(bm)} is not page-aligned`;
      },
    ],
    [
      'a record with reserved not 0',
      'bitmap-array',
      (ram, map) => {
        const rec = parseBitmapArray(ram, map).pfns[2] * PAGE_SIZE; // descriptor page, array page, first record page
        ram.writeU32(rec + 12, 7);
        return `bitmap array: record ${hex(rec)} (position 0) has reserved 0x7 (wanted 0)`;
      },
    ],
    [
      'a KHO-array entry that is not a valid pointer',
      'bitmap-array',
      (ram, map) => {
        const page = parseBitmapArray(ram, map).pfns[1] * PAGE_SIZE;
        const entry = ram.readU64(page + 40) + 4; // entry 1, low bits 100: neither a pointer nor a tagged value
        ram.writeU64(page + 40, entry);
        return `bitmap array: kho array: entry ${hex(entry)} at position 1 (page ${hex(page)}) is neither a tagged value nor an 8-byte-aligned pointer`;
      },
    ],
    [
      'a KHO-array entry pointing outside RAM',
      'bitmap-array',
      (ram, map) => {
        const page = parseBitmapArray(ram, map).pfns[1] * PAGE_SIZE;
        ram.writeU64(page + 32, 0x7_0000_0000);
        return 'bitmap array: record 0x700000000 (position 0) is outside RAM';
      },
    ],
  ])('%s (%s)', (name, tracker, edit) => {
    const { file, reason } = corrupt(name.replace(/\W+/g, '-'), tracker, edit);
    const boot = cli('boot', '--image', file, '--json');
    expect(boot.code).toBe(1);
    const report = JSON.parse(boot.out);
    expect(report).toMatchObject({ ok: false, khoBoot: false, revivalError: reason, unrestoredBlocks: 0 });
    expect(report.restore).toBeUndefined();
    const text = cli('boot', '--image', file);
    expect(text.out).toContain(`next kernel (generation 2): cold boot (revival refused: ${reason})`);
    // kho inspect --strict refuses as the next kernel does; plain kho inspect decodes the rest and lists the problem
    const strict = cli('inspect', '--strict', file);
    expect(strict.code).toBe(2);
    expect(strict.err).toBe(`kho: ${reason}\n`);
    const inspect = cli('inspect', file);
    expect(inspect.code).toBe(2);
    expect(inspect.err).toBe(`kho: image ${file}: tracker: ${splitWanted(reason, 'a valid structure').what} (wanted ${splitWanted(reason, 'a valid structure').wanted})\n`);
    expect(inspect.out).toMatch(/\nSubtrees: 3\n {2}memblock -> 0x[0-9a-f]+ \(memblock reserve_mem regions \(memblock-v1 FDT\)\)\n(?: {4}.*\n)+ {2}kstate -> 0x[0-9a-f]+ \(kstate stream\)/);
    expect(inspect.out).toContain(`\nProblems: 1 (the next kernel would refuse this handover or part of it)\n  tracker: ${reason.replace(/ \(wanted .*\)$/, '')}`);
  });
});

describe('scenarios: tracker', () => {
  it.each(['bitmap-chunks', 'bitmap-array'] as const)('a chain with %s: every generation boots with it, restores and serialises a new map', (tracker) => {
    const s = parseScenario(
      `machine: { ram: 512M }\ncmdline: kho_scratch=32M,32M,32M\ntracker: ${tracker}\ngenerations:\n  - preserve: { folios: { total: 8M } }\n  - preserve: { folios: { total: 4M, maxOrder: 2 } }\n  - preserve: { folios: { total: 2M } }\n  - preserve: {}`,
      'x.yaml',
    );
    expect(s.tracker).toBe(tracker);
    const r = runScenario(s);
    expect(r.errors).toEqual([]);
    expect(r.generations.map((g) => g.restoredByNext?.verified ?? null)).toEqual([true, true, true, null]);
    for (const g of r.generations) expect(g.preserved.trackerPages).toBeGreaterThan(1); // bitmaps and their serialised map
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
    expect(r.ok).toBe(true);
  });

  it('refuses an unknown tracker, naming the three', () => {
    expect(() => parseScenario('tracker: btree\ngenerations: [{ preserve: {} }]', 'bad.yaml')).toThrow(
      'EINVAL: scenario bad.yaml: tracker: Invalid input: expected "radix", "bitmap-chunks", "bitmap-array"',
    );
  });
});
