import { injectable } from 'tsyringe';
import { Errno, KernelPlugin, registerPerBoot, type KernelModule } from '@kho/kernel';
import { BuddyAllocator } from '@kho/physmem';
import { errnoOf, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish } from './client';
import { Liveupdate } from './liveupdate';
import { bootLuo, coldFree, idlePages, view, type LuoKernel } from './luo-test-kit';
import { TestFlb, createTestFile } from './testing';

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** One kernel with session `name` holding test files `contents` (tokens 0x1000 + i), still open in its process. */
function withSession(cmdline = 'liveupdate=on', sessions: Record<string, string[]> = { s1: ['hello kexec world'] }) {
  const s = bootLuo({ cmdline });
  const proc = s.vfs.spawn('vmm');
  const dev = luoOpenDevice(proc);
  for (const [name, contents] of Object.entries(sessions)) {
    const sfd = luoCreateSession(proc, dev, name);
    contents.forEach((c, i) => {
      const fd = createTestFile(proc, c);
      luoPreserveFd(proc, sfd, fd, 0x1000 + i);
      proc.close(fd);
    });
  }
  return { ...s, proc };
}

function next(s: LuoKernel): LuoKernel {
  return view(s.k.liveUpdate());
}

describe('one session across a kexec', () => {
  it('retrieves the session and its files by name and token; the bytes are the same; finish frees everything', () => {
    const s = withSession('liveupdate=on', { s1: ['hello kexec world', 'second'] });
    const n = next(s);
    expect(errnoOf(() => s.proc.open('/dev/null'))).toBe(Errno.EINVAL); // the old process is gone with its kernel
    expect(n.luo.status().liveupdateNum).toBe(2);
    const proc = n.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    const sfd = luoRetrieveSession(proc, dev, 's1');
    const fd0 = luoRetrieveFd(proc, sfd, 0x1000);
    const fd1 = luoRetrieveFd(proc, sfd, 0x1001);
    expect(text(proc.pread(fd0, 0, 100))).toBe('hello kexec world');
    expect(text(proc.pread(fd1, 0, 100))).toBe('second');
    // retrieving again gives the same open file
    const again = luoRetrieveFd(proc, sfd, 0x1000);
    expect(proc.fget(again)).toBe(proc.fget(fd0));
    expect(errnoOf(() => luoRetrieveFd(proc, sfd, 0x9999))).toBe(Errno.ENOENT);
    luoSessionFinish(proc, sfd);
    expect(n.handler.calls.filter((c) => c.startsWith('finish'))).toEqual(['finish:1', 'finish:1']);
    luoSessionFinish(proc, sfd); // nothing left: a no-op
    proc.exit();
    n.k.restore();
    const fin = n.k.finish();
    // Nothing is left: LUO's records went with the session, the FLB page once read (upstream keeps that one reserved).
    expect(fin.plugins.kho.report?.unrestoredBlocks).toBe(0);
    expect(idlePages(n.k)).toBe(coldFree(s.machine, 'liveupdate=on'));
  });

  it('RETRIEVE_SESSION: ENOENT for an unknown name, EINVAL the second time', () => {
    const n = next(withSession());
    const proc = n.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    expect(errnoOf(() => luoRetrieveSession(proc, dev, 'nope'))).toBe(Errno.ENOENT);
    luoRetrieveSession(proc, dev, 's1');
    expect(errnoOf(() => luoRetrieveSession(proc, dev, 's1'))).toBe(Errno.EINVAL);
  });

  it('incoming names do not collide with outgoing ones', () => {
    const n = next(withSession());
    const proc = n.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    const out = luoCreateSession(proc, dev, 's1');
    const inc = luoRetrieveSession(proc, dev, 's1');
    expect(out).not.toBe(inc);
  });

  it('finish before any RETRIEVE_FD makes the handler discard the preserved data', () => {
    const s = withSession();
    const n = next(s);
    const proc = n.vfs.spawn('vmm');
    const sfd = luoRetrieveSession(proc, luoOpenDevice(proc), 's1');
    const free = n.k.get(BuddyAllocator).nrFreePages;
    luoSessionFinish(proc, sfd);
    expect(n.handler.calls).toContain('finish:0');
    // the record page and the file block come back
    expect(n.k.get(BuddyAllocator).nrFreePages).toBe(free + 2);
    expect(errnoOf(() => luoRetrieveFd(proc, sfd, 0x1000))).toBe(Errno.ENOENT);
  });

  it('closing a retrieved session fd finishes it', () => {
    const n = next(withSession());
    const proc = n.vfs.spawn('vmm');
    const sfd = luoRetrieveSession(proc, luoOpenDevice(proc), 's1');
    proc.close(sfd);
    expect(n.handler.calls).toContain('finish:0');
    expect(n.luo.status().incoming).toEqual([]);
  });

  it('can_finish vetoes FINISH with EBUSY and changes nothing; a close then keeps the session (retrieved)', () => {
    const n = next(withSession());
    const proc = n.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    const sfd = luoRetrieveSession(proc, dev, 's1');
    n.handler.canFinishResult = false;
    expect(errnoOf(() => luoSessionFinish(proc, sfd))).toBe(Errno.EBUSY);
    expect(n.luo.status().incoming[0].files.length).toBe(1);
    proc.close(sfd);
    expect(n.k.log.filter('warn', 'luo').map((l) => l.message)).toContain('Unable to finish session [s1] on release: EBUSY: FINISH: handler \'test-file-v1\' cannot finish token 0x1000 of session \'s1\' yet');
    expect(errnoOf(() => luoRetrieveSession(proc, dev, 's1'))).toBe(Errno.EINVAL);
  });

  it('a failed retrieve is remembered: the same errno again, without calling the handler', () => {
    const s = withSession();
    const n = view(s.k.liveUpdate());
    const proc = n.vfs.spawn('vmm');
    const sfd = luoRetrieveSession(proc, luoOpenDevice(proc), 's1');
    n.handler.fail.set('retrieve', Errno.EIO);
    expect(errnoOf(() => luoRetrieveFd(proc, sfd, 0x1000))).toBe(Errno.EIO);
    n.handler.fail.clear();
    expect(errnoOf(() => luoRetrieveFd(proc, sfd, 0x1000))).toBe(Errno.EIO);
    expect(n.handler.calls.filter((c) => c.startsWith('retrieve')).length).toBe(1);
    luoSessionFinish(proc, sfd);
    expect(n.handler.calls).toContain(`finish:${-Errno.EIO}`);
  });

  it('sessions and files come back in any order; empty sessions too', () => {
    const s = withSession('liveupdate=on', { a: [], b: ['b0'], c: ['c0', 'c1', 'c2'] });
    const n = next(s);
    const proc = n.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    const c = luoRetrieveSession(proc, dev, 'c');
    const a = luoRetrieveSession(proc, dev, 'a');
    expect(text(proc.pread(luoRetrieveFd(proc, c, 0x1002), 0, 9))).toBe('c2');
    expect(text(proc.pread(luoRetrieveFd(proc, c, 0x1000), 0, 9))).toBe('c0');
    const b = luoRetrieveSession(proc, dev, 'b');
    expect(text(proc.pread(luoRetrieveFd(proc, b, 0x1000), 0, 9))).toBe('b0');
    for (const fd of [a, b, c]) luoSessionFinish(proc, fd);
  });

  it('an incoming session nobody retrieves stays reserved and is not carried on', () => {
    const s = withSession();
    const n = next(s);
    n.k.restore();
    const fin = n.k.finish();
    expect(fin.plugins.liveupdate.report?.unfinishedSessions).toEqual(['s1']);
    const n2 = view(n.k.liveUpdate());
    const proc = n2.vfs.spawn('vmm');
    expect(errnoOf(() => luoRetrieveSession(proc, luoOpenDevice(proc), 's1'))).toBe(Errno.ENOENT);
    expect(n2.luo.status().liveupdateNum).toBe(3);
  });
});

describe('freeze and its failures', () => {
  it('a failing freeze unfreezes the files frozen before it, cancels the update and leaves LUO usable', () => {
    const s = withSession('liveupdate=on', { s1: ['a', 'b', 'c'] });
    s.handler.fail.set('freeze', Errno.EIO);
    expect(() => s.k.prepare()).toThrow(/live update prepare failed in plugin 'liveupdate': Freeze|test-file freeze told to fail/);
    expect(s.k.state).toBe('running');
    expect(s.handler.calls.filter((c) => c.startsWith('unfreeze')).length).toBe(0); // the first file failed: nothing to unfreeze
    s.handler.fail.clear();
    expect(luoCreateSession(s.proc, 0, 'after-the-failure')).toBeGreaterThan(0);
    const n = next(s);
    const proc = n.vfs.spawn('vmm');
    const sfd = luoRetrieveSession(proc, luoOpenDevice(proc), 's1');
    expect(text(proc.pread(luoRetrieveFd(proc, sfd, 0x1002), 0, 9))).toBe('c');
  });

  it('a freeze failing on a later session unfreezes every earlier session in reverse', () => {
    const s = withSession('liveupdate=on', { s1: ['a', 'b'], s2: ['c'] });
    let n = 0;
    const orig = s.handler.freeze.bind(s.handler);
    s.handler.freeze = (args) => {
      orig(args);
      if (++n === 3) throw new Error('third freeze fails');
    };
    expect(() => s.k.prepare()).toThrow(/third freeze fails/);
    expect(s.handler.calls.filter((c) => c.startsWith('unfreeze')).length).toBe(2);
    expect(s.luo.status().frozen).toBe(false);
  });

  @injectable()
  class FailingSerialize implements KernelPlugin {
    readonly name = 'failing';
    readonly after = ['liveupdate'];
    serialize(): void {
      throw new Error('a later plugin fails');
    }
  }
  const failing: KernelModule = { name: 'failing', register: (c) => registerPerBoot(c, FailingSerialize, { plugin: true }) };

  it('while frozen, session ioctls are EBUSY and closes wait; a later plugin failing unfreezes LUO, then the close runs', () => {
    const s = bootLuo({ extra: [failing] });
    const proc = s.vfs.spawn('vmm');
    const dev = luoOpenDevice(proc);
    const sfd = luoCreateSession(proc, dev, 's1');
    const fd = createTestFile(proc, 'x');
    luoPreserveFd(proc, sfd, fd, 1);
    s.k.prepare();
    expect(s.luo.status().frozen).toBe(true);
    expect(errnoOf(() => luoCreateSession(proc, dev, 's2'))).toBe(Errno.EBUSY);
    expect(errnoOf(() => luoPreserveFd(proc, sfd, createTestFile(proc, 'y'), 2))).toBe(Errno.EBUSY);
    proc.close(sfd);
    expect(s.luo.status().outgoing.length).toBe(1); // the release waits for the lock
    expect(() => s.k.serialize()).toThrow(/a later plugin fails/);
    expect(s.handler.calls.map((c) => c.replace(/:.*/, ''))).toEqual(['preserve', 'freeze', 'unfreeze', 'unpreserve']);
    expect(s.luo.status().frozen).toBe(false);
    expect(s.luo.status().outgoing.length).toBe(0); // the deferred close ran
  });
});

describe('FLB objects', () => {
  function withFlb(cmdline = 'liveupdate=on') {
    const s = bootLuo({ cmdline });
    const flb = new TestFlb(s.kho, s.ram);
    s.luo.registerFlb(s.handler, flb);
    return { ...s, flb, proc: s.vfs.spawn('vmm') };
  }

  it('registration rules: EEXIST twice on one handler, EEXIST for a clashing compatible, EINVAL for an unknown handler', () => {
    const s = withFlb();
    expect(errnoOf(() => s.luo.registerFlb(s.handler, s.flb))).toBe(Errno.EEXIST);
    expect(errnoOf(() => s.luo.registerFlb(s.handler, new TestFlb(s.kho, s.ram)))).toBe(Errno.EEXIST);
    expect(errnoOf(() => s.luo.registerFlb({ ...s.handler, compatible: 'other' } as never, new TestFlb(s.kho, s.ram, 'x')))).toBe(Errno.EINVAL);
  });

  it('is preserved with the first dependent file and unpreserved with the last, shared across sessions', () => {
    const s = withFlb();
    const dev = luoOpenDevice(s.proc);
    const s1 = luoCreateSession(s.proc, dev, 's1');
    const s2 = luoCreateSession(s.proc, dev, 's2');
    luoPreserveFd(s.proc, s1, createTestFile(s.proc, 'a'), 1);
    luoPreserveFd(s.proc, s2, createTestFile(s.proc, 'b'), 1);
    expect(s.flb.calls).toEqual(['preserve']);
    expect(s.luo.flbs.states[0].outgoing.count).toBe(2);
    s.proc.close(s1);
    expect(s.flb.calls).toEqual(['preserve']);
    s.proc.close(s2);
    expect(s.flb.calls).toEqual(['preserve', 'unpreserve']);
  });

  it('a failing FLB preserve fails PRESERVE_FD and undoes it', () => {
    const s = withFlb();
    s.flb.failPreserve = Errno.ENOMEM;
    const sfd = luoCreateSession(s.proc, luoOpenDevice(s.proc), 's1');
    expect(errnoOf(() => luoPreserveFd(s.proc, sfd, createTestFile(s.proc, 'a'), 1))).toBe(Errno.ENOMEM);
    expect(s.luo.status().outgoing[0].files).toEqual([]);
    expect(s.handler.calls).toEqual([]);
  });

  it('crosses the kexec: retrieved on first use, finished with the last dependent file', () => {
    const s = withFlb();
    const dev = luoOpenDevice(s.proc);
    const s1 = luoCreateSession(s.proc, dev, 's1');
    luoPreserveFd(s.proc, s1, createTestFile(s.proc, 'a'), 1);
    luoPreserveFd(s.proc, s1, createTestFile(s.proc, 'b'), 2);
    const k2 = s.k.liveUpdate();
    const n = view(k2);
    const flb2 = new TestFlb(n.kho, n.ram);
    n.luo.registerFlb(n.handler, flb2);
    const proc = n.vfs.spawn('vmm');
    const sfd = luoRetrieveSession(proc, luoOpenDevice(proc), 's1');
    const obj = n.luo.flbGetIncoming(flb2) as { magic: number };
    expect(obj.magic).toBe(0x51ab);
    expect(n.luo.flbs.states[0].incoming.count).toBe(3); // 2 files + this reference
    n.luo.flbPutIncoming(flb2);
    luoRetrieveFd(proc, sfd, 1);
    luoSessionFinish(proc, sfd);
    expect(flb2.calls.map((c) => c.replace(/:.*/, ''))).toEqual(['retrieve', 'finish']);
    expect(errnoOf(() => n.luo.flbGetIncoming(flb2))).toBe(Errno.ENODATA);
  });

  it('is EOPNOTSUPP while live update is off', () => {
    const s = bootLuo({ cmdline: '' });
    expect(errnoOf(() => s.luo.registerFlb(s.handler, new TestFlb(s.kho, s.ram)))).toBe(Errno.EOPNOTSUPP);
    expect(errnoOf(() => s.luo.flbGetOutgoing(new TestFlb(s.kho, s.ram)))).toBe(Errno.EOPNOTSUPP);
  });
});

describe('file handler registration', () => {
  it('EEXIST for a compatible registered twice, EINVAL for a missing op or a compatible over 47 bytes', () => {
    const s = bootLuo();
    expect(errnoOf(() => s.luo.registerFileHandler(s.handler))).toBe(Errno.EEXIST);
    expect(errnoOf(() => s.luo.registerFileHandler({ ...s.handler, compatible: 'x', finish: undefined } as never))).toBe(Errno.EINVAL);
    expect(errnoOf(() => s.luo.registerFileHandler({ ...s.handler, canPreserve: () => false, compatible: 'y'.repeat(48) } as never))).toBe(Errno.EINVAL);
    expect(s.k.get(Liveupdate).handlers.map((h) => h.compatible)).toEqual(['test-file-v1']);
  });
});
