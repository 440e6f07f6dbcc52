import fc from 'fast-check';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { luoCreateSession, luoOpenDevice, luoPreserveFd } from './client';
import { decodeLuo } from './decode';
import { bootLuo } from './luo-test-kit';
import { createTestFile } from './testing';

function handedOver(cmdline = 'liveupdate=on') {
  const s = bootLuo({ cmdline });
  const proc = s.vfs.spawn('vmm');
  const dev = luoOpenDevice(proc);
  const a = luoCreateSession(proc, dev, 'vm0');
  luoPreserveFd(proc, a, createTestFile(proc, 'guest'), 0x1a);
  luoPreserveFd(proc, a, createTestFile(proc, 'dev'), 0x1b);
  luoCreateSession(proc, dev, 'empty');
  s.k.prepare();
  s.k.serialize();
  return { ram: s.ram, root: s.luo.outgoingRoot };
}

describe('decodeLuo', () => {
  it.each(['liveupdate=on', 'liveupdate=on luo_abi=luo-v1'])('lists sessions, files and FLBs of a handover (%s)', (cmdline) => {
    const { ram, root } = handedOver(cmdline);
    const seen: number[] = [];
    const d = decodeLuo(ram, root, { fileDecoders: { 'test-file-v1': (_r, data) => (seen.push(data), { bytes: Number(ram.readU64(data)) }) } });
    expect(d.errors).toEqual([]);
    expect(d.format).toBe(cmdline.includes('luo-v1') ? 'luo-v1' : 'luo-v5');
    expect(d.liveupdateNum).toBe(1);
    expect(d.sessions.map((s) => [s.name, s.fileCount, s.files.map((f) => [f.compatible, f.token, f.decoded])])).toEqual([
      ['vm0', 2, [['test-file-v1', '0x1a', { bytes: 5 }], ['test-file-v1', '0x1b', { bytes: 3 }]]],
      ['empty', 0, []],
    ]);
    expect(d.flbs).toMatchObject({ pgcnt: 1, entries: [] });
    expect(seen.length).toBe(2);
    expect(JSON.parse(JSON.stringify(d))).toEqual(d);
  });

  it('records damage instead of throwing: a loop, a count past the block, a name without NUL', () => {
    const { ram, root } = handedOver();
    const blk = ram.readU64(root + 16);
    ram.write(blk + 16 + 80, new Uint8Array(64).fill(0x41));
    const files = ram.readU64(blk + 16 + 64);
    ram.writeU64(files, files);
    const d = decodeLuo(ram, root);
    expect(d.errors).toEqual([
      `session record at 0x${(blk + 16).toString(16)}: file blocks: block 0x${files.toString(16)} is reached twice (a loop)`,
      `session record at 0x${(blk + 96).toString(16)}: the name has no NUL in its 64 bytes`,
    ]);
    ram.writeU64(blk + 8, 52);
    expect(decodeLuo(ram, root).errors).toEqual([`session blocks: block at 0x${blk.toString(16)} holds count 52 (wanted 1..51)`]);
  });

  it('never throws on random bytes anywhere in the handover (property)', () => {
    const { ram, root } = handedOver();
    const pages = [root, ram.readU64(root + 16), ram.readU64(root + 24)];
    const blk = pages[1];
    pages.push(ram.readU64(blk + 16 + 64));
    const snapshot = pages.map((p) => ram.read(p - (p % PAGE_SIZE), PAGE_SIZE));
    fc.assert(
      fc.property(fc.array(fc.record({ page: fc.nat({ max: pages.length - 1 }), off: fc.nat({ max: PAGE_SIZE - 8 }), v: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }), { minLength: 1, maxLength: 8 }), (muts) => {
        pages.forEach((p, i) => ram.write(p - (p % PAGE_SIZE), snapshot[i]));
        for (const m of muts) ram.writeU64(pages[m.page] - (pages[m.page] % PAGE_SIZE) + m.off, m.v);
        const d = decodeLuo(ram, root);
        expect(Array.isArray(d.sessions)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('says what is not RAM', () => {
    const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 2 ** 20, node: 0 }] });
    expect(decodeLuo(ram, 2 ** 30).errors).toEqual(['LUO blob at 0x40000000 is not RAM']);
  });
});
