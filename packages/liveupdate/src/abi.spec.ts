import { Errno } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { KhoBlockHeaderStruct } from '@kho/kho-block';
import { decodeFdt, encodeFdt } from '@kho/fdt';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { layoutTable } from '@kho/struct';
import { checkGolden, hexBytes } from '@kho/struct/testing';
import {
  LUO_ABI_COMPATIBLE,
  LUO_FLB_MAX,
  LUO_V1_FILE_MAX,
  LUO_V1_SESSION_MAX,
  LuoFileSerStruct,
  LuoFlbHeaderSerStruct,
  LuoFlbSerStruct,
  LuoSerStruct,
  LuoSessionSerStruct,
  LuoV1SessionHeaderSerStruct,
  LiveupdateCreateSessionStruct,
  LiveupdateRetrieveSessionStruct,
  LiveupdateSessionFinishStruct,
  LiveupdateSessionGetNameStruct,
  LiveupdateSessionPreserveFdStruct,
  LiveupdateSessionRetrieveFdStruct,
} from './abi';
import { errnoOf, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession } from './client';
import { bootLuo, luoImage, view } from './luo-test-kit';
import { createTestFile } from './testing';

describe('docs/abi/luo.md is the contract: its layout tables are the declared layouts', () => {
  const doc = readFileSync(join(__dirname, '../../../docs/abi/luo.md'), 'utf8');
  it.each([
    KhoBlockHeaderStruct,
    LuoSerStruct,
    LuoSessionSerStruct,
    LuoFileSerStruct,
    LuoFlbHeaderSerStruct,
    LuoFlbSerStruct,
    LuoV1SessionHeaderSerStruct,
    LiveupdateCreateSessionStruct,
    LiveupdateRetrieveSessionStruct,
    LiveupdateSessionPreserveFdStruct,
    LiveupdateSessionRetrieveFdStruct,
    LiveupdateSessionFinishStruct,
    LiveupdateSessionGetNameStruct,
  ])('%s', (layout) => {
    expect(doc).toContain(`layout: struct ${layout.name}\n${layoutTable(layout)}\n`);
  });
});

describe('luo-v5 records (golden image of spec section 5.12)', () => {
  it('luo_ser: "luo-v5", number 1, sessions 0x12345000, FLB page 0x12346000', () => {
    checkGolden(
      LuoSerStruct,
      { compatible: LUO_ABI_COMPATIBLE, liveupdate_num: 1, sessions_pa: 0x12345000, flbs_pa: 0x12346000 },
      `6c 75 6f 2d 76 35 00 00 | 01 00 00 00 00 00 00 00 | 00 50 34 12 00 00 00 00 | 00 60 34 12 00 00 00 00`,
    );
  });

  it('the session block: header {next 0, count 1}, entry "s1" with files 0x12347000 and count 1', () => {
    checkGolden(KhoBlockHeaderStruct, { next: 0, count: 1 }, '00'.repeat(8) + '01' + '00'.repeat(7));
    checkGolden(LuoSessionSerStruct, { name: 's1', files: 0x12347000, count: 1 }, `73 31 ${'00 '.repeat(62)} 00 70 34 12 00 00 00 00 | 01 00 00 00 00 00 00 00`);
  });

  it('the file block entry: "memfd-v2", data 0x12348000, token 0x1a', () => {
    checkGolden(LuoFileSerStruct, { compatible: 'memfd-v2', data: 0x12348000, token: 0x1an }, `${[...'memfd-v2'].map((c) => c.charCodeAt(0).toString(16)).join(' ')} ${'00 '.repeat(40)} 00 80 34 12 00 00 00 00 | 1a 00 00 00 00 00 00 00`);
  });

  it('the FLB page header {pgcnt 1, count 0}; an FLB entry; 63 entries fit', () => {
    checkGolden(LuoFlbHeaderSerStruct, { pgcnt: 1, count: 0 }, '01' + '00'.repeat(15));
    checkGolden(LuoFlbSerStruct, { name: 'iommu-v1', data: 0x1000, count: 3 }, `${[...'iommu-v1'].map((c) => c.charCodeAt(0).toString(16)).join(' ')} ${'00 '.repeat(40)} 00 10 00 00 00 00 00 00 | 03 ${'00 '.repeat(7)}`);
    expect(LUO_FLB_MAX).toBe(63);
    expect([LUO_V1_SESSION_MAX, LUO_V1_FILE_MAX]).toEqual([819, 128]);
  });

  it('a kernel writes exactly that structure for one session "s1" with one file, token 0x1a', () => {
    const s = bootLuo();
    const proc = s.vfs.spawn('vmm');
    const sfd = luoCreateSession(proc, luoOpenDevice(proc), 's1');
    luoPreserveFd(proc, sfd, createTestFile(proc, 'x'), 0x1a);
    s.k.prepare();
    s.k.serialize();
    const ram = s.ram;
    const root = s.luo.outgoingRoot;
    const ser = LuoSerStruct.read(ram, root);
    expect(ser).toEqual({ compatible: 'luo-v5', liveupdate_num: 1, sessions_pa: expect.any(Number), flbs_pa: expect.any(Number) });
    const blk = ser.sessions_pa;
    const sess = LuoSessionSerStruct.read(ram, blk + 16);
    expect(KhoBlockHeaderStruct.read(ram, blk)).toEqual({ next: 0, count: 1 });
    // the rest of the session block is zero
    expect(ram.read(blk + 16 + 80, PAGE_SIZE - 96).every((b) => b === 0)).toBe(true);
    expect(sess).toEqual({ name: 's1', files: expect.any(Number), count: 1 });
    expect(KhoBlockHeaderStruct.read(ram, sess.files)).toEqual({ next: 0, count: 1 });
    const file = LuoFileSerStruct.read(ram, sess.files + 16);
    expect(file).toEqual({ compatible: 'test-file-v1', data: expect.any(Number), token: 0x1an });
    expect(LuoFlbHeaderSerStruct.read(ram, ser.flbs_pa)).toEqual({ pgcnt: 1, count: 0 });
    // every page above is a preserved order-0 block
    const params = s.k.jump();
    const n = view(s.machine.bootFrom(params, { image: luoImage() }));
    for (const p of [blk, sess.files, ser.flbs_pa, file.data]) expect(n.kho.incomingHandover!.pfns).toContain(p / PAGE_SIZE);
  });

  it('checkGolden catches a moved field (the test can fail)', () => {
    expect(() => checkGolden(LuoSerStruct, { compatible: 'luo-v5', liveupdate_num: 2, sessions_pa: 0, flbs_pa: 0 }, hexBytes('6c 75 6f 2d 76 35 00 00' + ' 01' + ' 00'.repeat(23)))).toThrow(/field liveupdate_num/);
  });
});

// ------------------------------------------------------------------------------------ hostile handovers

interface Handover {
  readonly machine: ReturnType<typeof bootLuo>['machine'];
  readonly params: ReturnType<ReturnType<typeof bootLuo>['k']['jump']>;
  readonly ram: ReturnType<typeof bootLuo>['ram'];
  /** luo_ser, the first session block, each session record, each session's first file block. */
  readonly ser: number;
  readonly sessionBlock: number;
  readonly sessions: number[];
  readonly fileBlocks: number[];
}

/** Sessions s1 (two files, tokens 1 and 2) and s2 (one file, token 1), handed over and not booted yet. */
function handover(cmdline = 'liveupdate=on'): Handover {
  const s = bootLuo({ cmdline });
  const proc = s.vfs.spawn('vmm');
  const dev = luoOpenDevice(proc);
  const s1 = luoCreateSession(proc, dev, 's1');
  luoPreserveFd(proc, s1, createTestFile(proc, 'one'), 1);
  luoPreserveFd(proc, s1, createTestFile(proc, 'two'), 2);
  const s2 = luoCreateSession(proc, dev, 's2');
  luoPreserveFd(proc, s2, createTestFile(proc, 'three'), 1);
  s.k.prepare();
  s.k.serialize();
  const ser = s.luo.outgoingRoot;
  const params = s.k.jump();
  const ram = s.ram;
  const sessionBlock = ram.readU64(ser + 16);
  const sessions = [sessionBlock + 16, sessionBlock + 96];
  return { machine: s.machine, params, ram, ser, sessionBlock, sessions, fileBlocks: sessions.map((e) => ram.readU64(e + 64)) };
}

function land(h: Handover) {
  const n = view(h.machine.bootFrom(h.params, { image: luoImage(), cmdline: 'liveupdate=on' } as never));
  return { ...n, proc: n.vfs.spawn('vmm') };
}

describe('LUO over the KHO generations', () => {
  it.each(['v2', 'v3', 'v4'])('hands a session over with kho_abi=%s', (g) => {
    const s = bootLuo({ cmdline: `liveupdate=on kho_abi=${g}` });
    const proc = s.vfs.spawn('vmm');
    luoPreserveFd(proc, luoCreateSession(proc, luoOpenDevice(proc), 's1'), createTestFile(proc, 'x'), 1);
    const n = view(s.k.liveUpdate());
    const p = n.vfs.spawn('vmm');
    const sfd = luoRetrieveSession(p, luoOpenDevice(p), 's1');
    expect(new TextDecoder().decode(p.pread(luoRetrieveFd(p, sfd, 1), 0, 1))).toBe('x');
  });

  it('panics on a blob-size below 32 (kho-v3 and later)', () => {
    const s = bootLuo({ cmdline: 'liveupdate=on kho_abi=v3' });
    const root = s.kho.rootFdtPhys;
    const params = s.k.jump();
    const fdt = decodeFdt(s.ram.read(root, PAGE_SIZE));
    fdt.child('LUO')!.setU64LE('blob-size', 16);
    s.ram.write(root, encodeFdt(fdt, { totalSize: PAGE_SIZE }));
    const n = view(s.machine.bootFrom(params, { image: luoImage() }));
    expect(n.luo.status().panic).toBe('EINVAL: LUO state is too small (16 < 32)');
  });
});

describe('a damaged LUO handover (panic at boot: a fatal boot report, every open EIO)', () => {
  it.each<[string, (h: Handover) => void, RegExp]>([
    ['a compatible that is not luo-v5', (h) => h.ram.write(h.ser, new TextEncoder().encode('luo-v9')), /LUO state is incompatible with 'luo-v5' \(found 'luo-v9'\)/],
    ['a session chain that loops', (h) => h.ram.writeU64(h.sessionBlock, h.sessionBlock), /luo: incoming sessions: the block chain at 0x[0-9a-f]+ is corrupted: it loops/],
    ['a session chain outside RAM', (h) => h.ram.writeU64(h.ser + 16, 2 ** 45), /the head is not a page of RAM/],
    ['a session block claiming 52 entries', (h) => h.ram.writeU64(h.sessionBlock + 8, 52), /block 0 at 0x[0-9a-f]+ holds entry count 52 \(wanted 1..51\)/],
    ['a session block with count 0', (h) => h.ram.writeU64(h.sessionBlock + 8, 0), /holds entry count 0 \(wanted 1..51\)/],
  ])('%s', (_what, damage, why) => {
    const h = handover();
    damage(h);
    const n = land(h);
    const st = n.luo.status();
    expect(st.panic).toMatch(why);
    expect(n.k.log.filter('error', 'luo')[0].message).toMatch(/^PANIC: The incoming tree failed to initialize properly \[EINVAL: .*\], disabling live update$/);
    expect(errnoOf(() => luoOpenDevice(n.proc))).toBe(Errno.EIO);
    // the rest of the kernel runs; nothing of LUO's was restored: KHO names every block at finish
    n.k.restore();
    expect(Number(n.k.finish().plugins.kho.report?.unrestoredBlocks)).toBeGreaterThanOrEqual(5);
  });
});

describe('damaged records found at the first open (every open fails with EIO, as upstream)', () => {
  it.each<[string, (h: Handover) => void, RegExp]>([
    ['a session name without its NUL', (h) => h.ram.write(h.sessions[1], new Uint8Array(64).fill(0x58)), /session record at 0x[0-9a-f]+: the name has no NUL in its 64 bytes/],
    ['two sessions with one name', (h) => h.ram.write(h.sessions[1], new TextEncoder().encode('s1')), /EEXIST: session record at 0x[0-9a-f]+: a second session named 's1'/],
    ['a file chain that loops', (h) => h.ram.writeU64(h.fileBlocks[0], h.fileBlocks[0]), /files of session 's1': the block chain at 0x[0-9a-f]+ is corrupted: it loops/],
    ['a file block claiming 64 entries', (h) => h.ram.writeU64(h.fileBlocks[1] + 8, 64), /files of session 's2': block 0 at 0x[0-9a-f]+ holds entry count 64 \(wanted 1..63\)/],
    ['a record of an unknown handler', (h) => h.ram.write(h.fileBlocks[0] + 16 + 64, new TextEncoder().encode('other-v1\0')), /ENOENT: file record 1 of session 's1' at 0x[0-9a-f]+: No registered handler for compatible 'other-v1'/],
    ['a compatible without its NUL', (h) => h.ram.write(h.fileBlocks[1] + 16, new Uint8Array(48).fill(0x61)), /file record 0 of session 's2' at 0x[0-9a-f]+: the compatible has no NUL in its 48 bytes/],
    ['a token used twice', (h) => h.ram.writeU64(h.fileBlocks[0] + 16 + 64 + 56, 1), /file record 1 of session 's1' at 0x[0-9a-f]+: token 0x1 is used twice/],
    ['a file count that does not match the records', (h) => h.ram.writeU64(h.sessions[0] + 72, 3), /session 's1': File count mismatch: expected 3, found 2/],
  ])('%s', (_what, damage, why) => {
    const h = handover();
    damage(h);
    const n = land(h);
    expect(n.luo.status().panic).toBeUndefined();
    let err: Error | undefined;
    try {
      luoOpenDevice(n.proc);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toMatch(/^EIO: open\(\/dev\/liveupdate\): the incoming sessions could not be rebuilt: /);
    expect(err?.message).toMatch(why);
    // every later open fails the same way (the first error is kept)
    expect(errnoOf(() => luoOpenDevice(n.proc))).toBe(Errno.EIO);
    expect(n.luo.status().deserializeError).toMatch(why);
  });
});

describe('damaged handler data: only that file fails, the rest stays retrievable', () => {
  it("a record whose data is outside RAM fails that RETRIEVE_FD; the session's other file and session s2 are fine", () => {
    const h = handover();
    h.ram.writeU64(h.fileBlocks[0] + 16 + 48, 2 ** 45);
    const n = land(h);
    const dev = luoOpenDevice(n.proc);
    const s1 = luoRetrieveSession(n.proc, dev, 's1');
    expect(errnoOf(() => luoRetrieveFd(n.proc, s1, 1))).toBe(Errno.EINVAL);
    expect(new TextDecoder().decode(n.proc.pread(luoRetrieveFd(n.proc, s1, 2), 0, 9))).toBe('two');
    const s2 = luoRetrieveSession(n.proc, dev, 's2');
    expect(new TextDecoder().decode(n.proc.pread(luoRetrieveFd(n.proc, s2, 1), 0, 9))).toBe('three');
  });
});

describe('FLB records', () => {
  it('an FLB count that does not match its dependent files refuses that FLB; the sessions stay retrievable', () => {
    const h = handover();
    // Hand-make an FLB entry naming the test FLB with count 5 (the sessions hold 3 files of its handler).
    const flbPage = h.ram.readU64(h.ser + 24);
    LuoFlbHeaderSerStruct.write(h.ram, flbPage, { pgcnt: 1, count: 1 });
    LuoFlbSerStruct.write(h.ram, flbPage + 16, { name: 'test-flb-v1', data: 0, count: 5 });
    const n = land(h);
    const { TestFlb } = jest.requireActual('./testing') as typeof import('./testing');
    const flb = new TestFlb(n.kho, n.ram);
    n.luo.registerFlb(n.handler, flb);
    const dev = luoOpenDevice(n.proc);
    expect(n.k.log.filter('error', 'luo').map((l) => l.message)).toEqual([
      "refusing incoming FLB 'test-flb-v1' has count 5 (wanted 3, its dependent files in the incoming sessions)",
    ]);
    expect(errnoOf(() => n.luo.flbGetIncoming(flb))).toBe(Errno.EINVAL);
    const s1 = luoRetrieveSession(n.proc, dev, 's1');
    luoRetrieveFd(n.proc, s1, 1);
    expect(flb.calls).toEqual([]);
  });

  it('an FLB page with pgcnt 2 or a count past 63 is refused (no incoming FLB data); sessions are fine', () => {
    for (const damage of [(p: number, r: Handover['ram']) => r.writeU64(p, 2), (p: number, r: Handover['ram']) => r.writeU64(p + 8, 64)]) {
      const h = handover();
      damage(h.ram.readU64(h.ser + 24), h.ram);
      const n = land(h);
      const dev = luoOpenDevice(n.proc);
      expect(n.k.log.filter('error', 'luo')[0].message).toMatch(/^refusing the incoming FLB page: EINVAL: FLB page 0x[0-9a-f]+: (pgcnt 2 \(wanted 1\)|count 64 \(wanted at most 63\))$/);
      luoRetrieveSession(n.proc, dev, 's2');
    }
  });
});

describe("upstream 7.2's stale empty session block (spec section 8, item 9), reproduced", () => {
  it('EEXIST at the 52nd create leaves an empty second block; the next kernel refuses the chain (panic)', () => {
    const s = bootLuo();
    const proc = s.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    for (let i = 0; i < 51; i++) luoCreateSession(proc, dev, `s${i}`);
    expect(errnoOf(() => luoCreateSession(proc, dev, 's0'))).toBe(Errno.EEXIST);
    const n = view(s.k.liveUpdate());
    expect(n.luo.status().panic).toMatch(/block 1 at 0x[0-9a-f]+ holds entry count 0 \(wanted 1..51\)/);
  });

  it('a close after the EEXIST drops the empty block again, and the handover is fine', () => {
    const s = bootLuo();
    const proc = s.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    const fds = Array.from({ length: 51 }, (_, i) => luoCreateSession(proc, dev, `s${i}`));
    expect(errnoOf(() => luoCreateSession(proc, dev, 's0'))).toBe(Errno.EEXIST);
    proc.close(fds[50]);
    const n = view(s.k.liveUpdate());
    expect(n.luo.status().panic).toBeUndefined();
    const p2 = n.vfs.spawn('vmm');
    const d2 = luoOpenDevice(p2);
    expect(luoRetrieveSession(p2, d2, 's49')).toBeGreaterThan(0);
    expect(errnoOf(() => luoRetrieveSession(p2, d2, 's50'))).toBe(Errno.ENOENT);
  });
});
