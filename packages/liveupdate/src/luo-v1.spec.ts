import { Errno } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE } from '@kho/physmem';
import { FdtNode, decodeFdt, encodeFdt } from '@kho/fdt';
import { LUO_V1_FILE_MAX, LUO_V1_SESSION_MAX, LuoFileSerStruct, LuoSessionSerStruct } from './abi';
import { errnoOf, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish } from './client';
import { bootLuo, luoImage, view } from './luo-test-kit';
import { createTestFile } from './testing';

const V1 = 'liveupdate=on luo_abi=luo-v1';
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

describe('luo-v1 (the 6.19-era FDT form, luo_abi=luo-v1)', () => {
  it('writes a one-page FDT: compatible, liveupdate-number, luo-session and luo-flb nodes', () => {
    const s = bootLuo({ cmdline: V1 });
    expect(s.luo.abi).toBe('luo-v1');
    const fdt = decodeFdt(s.ram.read(s.luo.outgoingRoot, PAGE_SIZE));
    expect(fdt.getString('compatible')).toBe('luo-v1');
    expect(fdt.getU64LE('liveupdate-number')).toBe(1n);
    expect(fdt.child('luo-session')!.getString('compatible')).toBe('luo-session-v2');
    expect(fdt.child('luo-flb')!.getString('compatible')).toBe('luo-flb-v1');
    expect(fdt.child('luo-session')!.getProp('luo-session-header')!.length).toBe(8);
  });

  it('hands sessions over in the 16-page area and files in 2-page areas', () => {
    const s = bootLuo({ cmdline: V1 });
    const proc = s.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    const a = luoCreateSession(proc, dev, 'a');
    luoCreateSession(proc, dev, 'empty');
    luoPreserveFd(proc, a, createTestFile(proc, 'alpha'), 7);
    luoPreserveFd(proc, a, createTestFile(proc, 'beta'), 8);
    s.k.prepare();
    const fdt = decodeFdt(s.ram.read(s.luo.outgoingRoot, PAGE_SIZE));
    const area = Number(fdt.child('luo-session')!.getU64LE('luo-session-header'));
    expect(s.ram.readU64(area)).toBe(2);
    const rec = LuoSessionSerStruct.read(s.ram, area + 8);
    expect(rec).toMatchObject({ name: 'a', count: 2 });
    expect(LuoSessionSerStruct.read(s.ram, area + 88)).toEqual({ name: 'empty', files: 0, count: 0 });
    expect(LuoFileSerStruct.read(s.ram, rec.files + 64)).toMatchObject({ compatible: 'test-file-v1', token: 8n });
    s.k.serialize();
    const n = view(s.k.kexec());
    const p = n.vfs.spawn('vmm');
    const d = luoOpenDevice(p);
    const sa = luoRetrieveSession(p, d, 'a');
    expect(text(p.pread(luoRetrieveFd(p, sa, 8), 0, 9))).toBe('beta');
    luoSessionFinish(p, sa);
    luoSessionFinish(p, luoRetrieveSession(p, d, 'empty'));
    n.k.restore();
    // 6.19 keeps the incoming FDT and FLB page reserved; the lab gives them back once read
    expect(n.k.finish().plugins.kho.report?.unrestoredBlocks).toBe(0);
  });

  it('holds 819 sessions: the 820th create is ENOMEM', () => {
    const s = bootLuo({ cmdline: V1 });
    const proc = s.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    for (let i = 0; i < LUO_V1_SESSION_MAX; i++) luoCreateSession(proc, dev, `s${i}`);
    expect(errnoOf(() => luoCreateSession(proc, dev, 'one-more'))).toBe(Errno.ENOMEM);
  });

  it('holds 128 files a session: the 129th preserve is ENOSPC; the area goes when the last file does', () => {
    const s = bootLuo({ cmdline: V1 });
    const proc = s.vfs.spawn('vmm');
    const sfd = luoCreateSession(proc, luoOpenDevice(proc), 's');
    const free = s.k.get(BuddyAllocator).nrFreePages;
    for (let i = 0; i < LUO_V1_FILE_MAX; i++) luoPreserveFd(proc, sfd, createTestFile(proc, `${i}`), i);
    expect(errnoOf(() => luoPreserveFd(proc, sfd, createTestFile(proc, 'x'), 999))).toBe(Errno.ENOSPC);
    proc.close(sfd);
    expect(s.k.get(BuddyAllocator).nrFreePages).toBe(free);
  });

  it('a luo-v5 kernel refuses a luo-v1 handover, and a luo-v1 kernel a luo-v5 one (both panic, as upstream)', () => {
    for (const [from, to, why] of [
      [V1, 'liveupdate=on', /LUO state is incompatible with 'luo-v5'/],
      ['liveupdate=on', V1, /LUO FDT at 0x[0-9a-f]+ is not a valid FDT/],
    ] as const) {
      const s = bootLuo({ cmdline: from });
      const n = view(s.k.liveUpdate({ cmdline: to }));
      expect(n.luo.status().panic).toMatch(why);
      expect(errnoOf(() => luoOpenDevice(n.vfs.spawn('p')))).toBe(Errno.EIO);
    }
  });

  it('a luo-v1 FDT without the luo-flb node (the first luo-v1 kernels) panics an FLB-aware reader with ENOENT', () => {
    const s = bootLuo({ cmdline: V1 });
    const root = s.luo.outgoingRoot;
    const fdt = decodeFdt(s.ram.read(root, PAGE_SIZE));
    const old = new FdtNode('');
    old.setString('compatible', 'luo-v1');
    old.setProp('liveupdate-number', fdt.getProp('liveupdate-number')!);
    old.addChild('luo-session').setString('compatible', 'luo-session-v2').setProp('luo-session-header', fdt.child('luo-session')!.getProp('luo-session-header')!);
    const params = s.k.jump();
    s.ram.write(root, encodeFdt(old, { totalSize: PAGE_SIZE }));
    const n = view(s.machine.bootFrom(params, { image: luoImage() }));
    expect(n.luo.status().panic).toMatch(/^ENOENT: Unable to get FLB node: \[luo-flb\]/);
  });
});
