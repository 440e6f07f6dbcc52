import { Errno, KernelError } from '@kho/kernel';
import { BuddyAllocator } from '@kho/physmem';
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LiveupdateCreateSessionStruct,
  LiveupdateSessionGetNameStruct,
  LiveupdateSessionPreserveFdStruct,
  _IO,
} from './abi';
import { errnoOf, luoCreateSession, luoGetSessionName, luoOpenDevice, luoPreserveFd, nameBytes } from './client';
import { LIVEUPDATE_DEV } from './liveupdate';
import { bootLuo } from './luo-test-kit';
import { createTestFile } from './testing';
import type { Process } from './vfs/process';

function setup(cmdline = 'liveupdate=on') {
  const s = bootLuo({ cmdline });
  const proc = s.vfs.spawn('vmm');
  return { ...s, proc };
}

function sessionWith(proc: Process, name = 's'): { dev: number; sfd: number } {
  const dev = luoOpenDevice(proc);
  return { dev, sfd: luoCreateSession(proc, dev, name) };
}

describe('the uAPI numbers and structs (v7.2-rc5)', () => {
  it('pins every command number', () => {
    expect([
      LIVEUPDATE_IOCTL_CREATE_SESSION,
      LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
      LIVEUPDATE_SESSION_PRESERVE_FD,
      LIVEUPDATE_SESSION_RETRIEVE_FD,
      LIVEUPDATE_SESSION_FINISH,
      LIVEUPDATE_SESSION_GET_NAME,
    ]).toEqual([0xba00, 0xba01, 0xba40, 0xba41, 0xba42, 0xba43]);
  });

  it('pins the struct layouts', () => {
    expect(LiveupdateCreateSessionStruct.table.map((f) => [f.name, f.offset, f.size])).toEqual([
      ['size', 0, 4],
      ['fd', 4, 4],
      ['name', 8, 64],
    ]);
    expect(LiveupdateSessionPreserveFdStruct.table.map((f) => [f.name, f.offset, f.size])).toEqual([
      ['size', 0, 4],
      ['fd', 4, 4],
      ['token', 8, 8],
    ]);
    expect(LiveupdateSessionGetNameStruct.table.map((f) => [f.name, f.offset, f.size])).toEqual([
      ['size', 0, 4],
      ['reserved', 4, 4],
      ['name', 8, 64],
    ]);
  });
});

describe('/dev/liveupdate', () => {
  it('does not exist without liveupdate=on (the default is off)', () => {
    const { proc, luo } = setup('');
    expect(errnoOf(() => luoOpenDevice(proc))).toBe(Errno.ENOENT);
    expect(luo.isEnabled()).toBe(false);
  });

  it('has one opener at a time: EBUSY for the second, free again after close', () => {
    const { proc, vfs } = setup();
    const other = vfs.spawn('other');
    const fd = luoOpenDevice(proc);
    expect(errnoOf(() => luoOpenDevice(other))).toBe(Errno.EBUSY);
    expect(errnoOf(() => luoOpenDevice(proc))).toBe(Errno.EBUSY);
    proc.close(fd);
    const again = luoOpenDevice(other);
    expect(other.fdTable()).toEqual([{ fd: again, path: LIVEUPDATE_DEV, cloexec: false }]);
  });

  it('creates sessions as anonymous files, O_CLOEXEC, named by GET_NAME', () => {
    const { proc } = setup();
    const dev = luoOpenDevice(proc);
    const a = luoCreateSession(proc, dev, 'vm0');
    const b = luoCreateSession(proc, dev, 'A'.repeat(63));
    expect(proc.fdTable().slice(1)).toEqual([
      { fd: a, path: 'anon_inode:[luo_session] vm0', cloexec: true },
      { fd: b, path: `anon_inode:[luo_session] ${'A'.repeat(63)}`, cloexec: true },
    ]);
    expect(luoGetSessionName(proc, a)).toBe('vm0');
    expect(luoGetSessionName(proc, b)).toBe('A'.repeat(63));
    // closing /dev/liveupdate does not touch the sessions
    proc.close(dev);
    expect(luoGetSessionName(proc, a)).toBe('vm0');
  });

  it.each<[string, Uint8Array, Errno]>([
    ['an empty name', nameBytes(''), Errno.EINVAL],
    ['64 bytes without a NUL', new Uint8Array(64).fill(0x58), Errno.EINVAL],
    ['bytes that are not UTF-8', Uint8Array.from([0xff, 0xfe, 0]), Errno.EINVAL],
  ])('refuses %s (EINVAL) and installs no fd', (_what, name, errno) => {
    const { proc } = setup();
    const dev = luoOpenDevice(proc);
    const arg = LiveupdateCreateSessionStruct.encode({ size: 72, fd: 0, name: name.length === 64 ? name : Uint8Array.from({ length: 64 }, (_, i) => name[i] ?? 0) });
    expect(errnoOf(() => proc.ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, arg))).toBe(errno);
    expect(proc.openFds).toBe(1);
  });

  it('refuses a duplicate name with EEXIST; distinct names are fine', () => {
    const { proc, luo } = setup();
    const dev = luoOpenDevice(proc);
    luoCreateSession(proc, dev, 'dup');
    luoCreateSession(proc, dev, 'other');
    expect(errnoOf(() => luoCreateSession(proc, dev, 'dup'))).toBe(Errno.EEXIST);
    expect(luo.status().outgoing.map((s) => s.name)).toEqual(['dup', 'other']);
  });

  it('closing a session deletes it: the name is free again', () => {
    const { proc } = setup();
    const dev = luoOpenDevice(proc);
    const s = luoCreateSession(proc, dev, 'x');
    proc.close(s);
    expect(luoCreateSession(proc, dev, 'x')).toBeGreaterThan(0);
  });
});

describe('PRESERVE_FD', () => {
  it('preserves files with unique tokens; EEXIST for a used token, EBADF for a bad fd, ENOENT for /dev/null', () => {
    const { proc, luo } = setup();
    const { sfd } = sessionWith(proc);
    const f1 = createTestFile(proc, 'one');
    const f2 = createTestFile(proc, 'two');
    luoPreserveFd(proc, sfd, f1, 0x1a);
    expect(errnoOf(() => luoPreserveFd(proc, sfd, f2, 0x1a))).toBe(Errno.EEXIST);
    expect(errnoOf(() => luoPreserveFd(proc, sfd, 99, 0x2b))).toBe(Errno.EBADF);
    const nul = proc.open('/dev/null');
    expect(errnoOf(() => luoPreserveFd(proc, sfd, nul, 0xdead))).toBe(Errno.ENOENT);
    luoPreserveFd(proc, sfd, f2, 2n ** 64n - 1n);
    expect(luo.status().outgoing[0].files.map((f) => f.token)).toEqual(['0x1a', '0xffffffffffffffff']);
  });

  it('refuses to preserve a file twice, in the same or another session (EBUSY)', () => {
    const { proc } = setup();
    const dev = luoOpenDevice(proc);
    const s1 = luoCreateSession(proc, dev, 's1');
    const s2 = luoCreateSession(proc, dev, 's2');
    const f = createTestFile(proc, 'x');
    luoPreserveFd(proc, s1, f, 0x1111);
    expect(errnoOf(() => luoPreserveFd(proc, s2, f, 0x2222))).toBe(Errno.EBUSY);
    expect(errnoOf(() => luoPreserveFd(proc, s1, f, 0x3333))).toBe(Errno.EBUSY);
  });

  it('keeps the file alive after the user closes it; closing the session unpreserves everything and frees its memory', () => {
    const { proc, k, handler } = setup();
    const buddy = k.get(BuddyAllocator);
    const free0 = buddy.nrFreePages;
    const { sfd } = sessionWith(proc);
    const fds = [createTestFile(proc, 'a'), createTestFile(proc, 'b'), createTestFile(proc, 'c')];
    fds.forEach((fd, i) => luoPreserveFd(proc, sfd, fd, i));
    for (const fd of fds) proc.close(fd);
    expect(buddy.nrFreePages).toBeLessThan(free0);
    proc.close(sfd);
    expect(handler.calls.filter((c) => c.startsWith('unpreserve')).length).toBe(3);
    expect(buddy.nrFreePages).toBe(free0);
  });

  it('undoes everything when the handler fails (the file can be preserved again after)', () => {
    const { proc, handler, k } = setup();
    const buddy = k.get(BuddyAllocator);
    const { sfd } = sessionWith(proc);
    const f = createTestFile(proc, 'x');
    const free0 = buddy.nrFreePages;
    handler.fail.set('preserve', Errno.ENOMEM);
    expect(errnoOf(() => luoPreserveFd(proc, sfd, f, 1))).toBe(Errno.ENOMEM);
    expect(buddy.nrFreePages).toBe(free0);
    handler.fail.clear();
    luoPreserveFd(proc, sfd, f, 1);
  });
});

describe('the generic ioctl rules', () => {
  function devAndSession() {
    const { proc } = setup();
    const { dev, sfd } = sessionWith(proc);
    return { proc, dev, sfd };
  }
  const create = (size: number, extra = 0) => {
    const b = new Uint8Array(72 + extra);
    b.set(LiveupdateCreateSessionStruct.encode({ size, fd: 0, name: nameBytes('n') }));
    return b;
  };

  it.each<[string, number, (d: number) => Uint8Array | undefined, Errno]>([
    ['a number beyond the table', _IO(0xba, 2), () => create(72), Errno.EINVAL],
    ['a NULL argument', LIVEUPDATE_IOCTL_CREATE_SESSION, () => undefined, Errno.EFAULT],
    ['an argument of 3 bytes', LIVEUPDATE_IOCTL_CREATE_SESSION, () => new Uint8Array(3), Errno.EFAULT],
    ['another type byte', _IO(0xbb, 0), () => create(72), Errno.ENOTTY],
    ['a size below the struct', LIVEUPDATE_IOCTL_CREATE_SESSION, () => create(71), Errno.EINVAL],
    ['a size past the memory it points at', LIVEUPDATE_IOCTL_CREATE_SESSION, () => create(80), Errno.EFAULT],
    ['a larger struct with a non-zero tail', LIVEUPDATE_IOCTL_CREATE_SESSION, () => { const b = create(80, 8); b[79] = 1; return b; }, Errno.E2BIG],
  ])('on /dev/liveupdate: %s', (_what, cmd, arg, errno) => {
    const { proc, dev } = devAndSession();
    expect(errnoOf(() => proc.ioctl(dev, cmd, arg(dev)))).toBe(errno);
    expect(proc.openFds).toBe(2);
  });

  it('accepts a larger struct whose tail is zero, and replies only what the user sized', () => {
    const { proc, dev } = devAndSession();
    const b = create(80, 8);
    b.fill(0xee, 72);
    b.fill(0, 72, 80);
    proc.ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, b);
    expect(new DataView(b.buffer).getInt32(4, true)).toBe(2);
  });

  it.each<[string, number, () => Uint8Array, Errno]>([
    ['a number below the session range', _IO(0xba, 0x3f), () => new Uint8Array(16).fill(0).map((_, i) => (i === 0 ? 16 : 0)), Errno.EINVAL],
    ['a number above it', _IO(0xba, 0x44), () => Uint8Array.from({ length: 16 }, (_, i) => (i === 0 ? 16 : 0)), Errno.EINVAL],
    ['RETRIEVE_FD on an outgoing session', LIVEUPDATE_SESSION_RETRIEVE_FD, () => Uint8Array.from({ length: 16 }, (_, i) => (i === 0 ? 16 : 0)), Errno.EINVAL],
    ['FINISH on an outgoing session', LIVEUPDATE_SESSION_FINISH, () => Uint8Array.from({ length: 8 }, (_, i) => (i === 0 ? 8 : 0)), Errno.EINVAL],
    ['GET_NAME with reserved set', LIVEUPDATE_SESSION_GET_NAME, () => { const b = LiveupdateSessionGetNameStruct.encode({ size: 72, reserved: 0, name: '' }); b[4] = 1; return b; }, Errno.EINVAL],
    ['PRESERVE_FD with a short size', LIVEUPDATE_SESSION_PRESERVE_FD, () => Uint8Array.from({ length: 16 }, (_, i) => (i === 0 ? 15 : 0)), Errno.EINVAL],
    ['a session command on another type byte', _IO(0xbc, 0x43), () => LiveupdateSessionGetNameStruct.encode({ size: 72, reserved: 0, name: '' }), Errno.ENOTTY],
  ])('on a session fd: %s', (_what, cmd, arg, errno) => {
    const { proc, sfd } = devAndSession();
    expect(errnoOf(() => proc.ioctl(sfd, cmd, arg()))).toBe(errno);
  });

  it('ENOTTY on a file without ioctls, EBADF on a closed fd', () => {
    const { proc } = devAndSession();
    const f = createTestFile(proc, 'x');
    expect(errnoOf(() => proc.ioctl(f, LIVEUPDATE_SESSION_GET_NAME, new Uint8Array(72)))).toBe(Errno.ENOTTY);
    expect(errnoOf(() => proc.ioctl(77, LIVEUPDATE_SESSION_GET_NAME, new Uint8Array(72)))).toBe(Errno.EBADF);
  });

  it('names what was wrong in one line', () => {
    const { proc, dev } = devAndSession();
    const b = create(71);
    expect(() => proc.ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, b)).toThrow(new KernelError(Errno.EINVAL, '/dev/liveupdate: LIVEUPDATE_IOCTL_CREATE_SESSION size 71 (wanted at least 72)'));
  });
});
