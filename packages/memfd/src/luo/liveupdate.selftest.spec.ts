/**
 * Upstream's LUO selftests (tools/testing/selftests/liveupdate), reproduced against the simulated uAPI:
 * the 15 cases of liveupdate.c (7.2 series, no kexec) and the four kexec tests (luo_kexec_simple,
 * luo_multi_session, luo_stress_sessions, luo_stress_files) with their two-stage harness.
 */
import { Errno } from '@kho/kernel';
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_SESSION_NAME_LENGTH,
  LiveupdateCreateSessionStruct,
  errnoOf,
  luoCreateSession,
  luoGetSessionName,
  luoOpenDevice,
  luoPreserveFd,
  luoRetrieveFd,
  luoRetrieveSession,
  luoSessionFinish,
  SEEK_SET,
  type Process,
} from '@kho/liveupdate';
import { boot, createAndPreserveMemfd, dec, enc, kexec, restoreAndVerifyMemfd, type Booted } from './luo-kit';

// ------------------------------------------------------------------------------------ liveupdate.c (no kexec)

describe('liveupdate.c: the /dev/liveupdate device', () => {
  let b: Booted;
  beforeEach(() => {
    b = boot();
  });
  const createSession = (p: Process, lu: number, name: string): number => {
    try {
      return luoCreateSession(p, lu, name);
    } catch (e) {
      return -errnoOf(() => {
        throw e;
      });
    }
  };
  const preserveFd = (p: Process, s: number, fd: number, token: number): number => 0 - errnoOf(() => luoPreserveFd(p, s, fd, token)) || 0;
  const memfd = (name: string): number => b.fs.memfdCreate(b.proc, name, 0);

  it('1 basic_open_close', () => {
    const fd1 = luoOpenDevice(b.proc);
    expect(fd1).toBeGreaterThanOrEqual(0);
    b.proc.close(fd1);
  });

  it('2 exclusive_open', () => {
    expect(luoOpenDevice(b.proc)).toBeGreaterThanOrEqual(0);
    expect(errnoOf(() => luoOpenDevice(b.proc))).toBe(Errno.EBUSY);
  });

  it('3 create_duplicate_session', () => {
    const lu = luoOpenDevice(b.proc);
    const s1 = createSession(b.proc, lu, 'duplicate-session-test');
    expect(s1).toBeGreaterThanOrEqual(0);
    expect(createSession(b.proc, lu, 'duplicate-session-test')).toBe(-Errno.EEXIST);
    b.proc.close(s1);
  });

  it('4 create_distinct_sessions', () => {
    const lu = luoOpenDevice(b.proc);
    const s1 = createSession(b.proc, lu, 'distinct-session-1');
    const s2 = createSession(b.proc, lu, 'distinct-session-2');
    expect(Math.min(s1, s2)).toBeGreaterThanOrEqual(0);
    b.proc.close(s1);
    b.proc.close(s2);
  });

  it('5 preserve_memfd', () => {
    const lu = luoOpenDevice(b.proc);
    const s = createSession(b.proc, lu, 'preserve-memfd-test');
    const m = memfd('test-memfd');
    expect(b.proc.write(m, enc('hello liveupdate'))).toBe(16);
    expect(preserveFd(b.proc, s, m, 0x1234)).toBe(0);
    b.proc.close(s);
    expect(b.proc.lseek(m, 0, SEEK_SET)).toBe(0);
    expect(dec(b.proc.read(m, 64))).toBe('hello liveupdate');
    b.proc.close(m);
  });

  it('6 preserve_multiple_memfds', () => {
    const lu = luoOpenDevice(b.proc);
    const s = createSession(b.proc, lu, 'preserve-multi-memfd-test');
    const m1 = memfd('test-memfd-1');
    const m2 = memfd('test-memfd-2');
    b.proc.write(m1, enc('data for memfd one'));
    b.proc.write(m2, enc('data for memfd two'));
    expect(preserveFd(b.proc, s, m1, 0xaaaa)).toBe(0);
    expect(preserveFd(b.proc, s, m2, 0xbbbb)).toBe(0);
    b.proc.lseek(m1, 0);
    expect(dec(b.proc.read(m1, 64))).toBe('data for memfd one');
    b.proc.lseek(m2, 0);
    expect(dec(b.proc.read(m2, 64))).toBe('data for memfd two');
    for (const fd of [m1, m2, s]) b.proc.close(fd);
  });

  it('7 preserve_complex_scenario', () => {
    const lu = luoOpenDevice(b.proc);
    const s1 = createSession(b.proc, lu, 'complex-session-1');
    const s2 = createSession(b.proc, lu, 'complex-session-2');
    const d1 = memfd('data1');
    b.proc.write(d1, enc('data for session 1'));
    const e1 = memfd('empty1');
    const d2 = memfd('data2');
    b.proc.write(d2, enc('data for session 2'));
    const e2 = memfd('empty2');
    expect([preserveFd(b.proc, s1, d1, 0x1111), preserveFd(b.proc, s1, e1, 0x2222), preserveFd(b.proc, s2, d2, 0x3333), preserveFd(b.proc, s2, e2, 0x4444)]).toEqual([0, 0, 0, 0]);
    b.proc.lseek(d1, 0);
    expect(dec(b.proc.read(d1, 64))).toBe('data for session 1');
    b.proc.lseek(d2, 0);
    expect(dec(b.proc.read(d2, 64))).toBe('data for session 2');
    b.proc.lseek(e1, 0);
    expect(b.proc.read(e1, 64).length).toBe(0);
    b.proc.lseek(e2, 0);
    expect(b.proc.read(e2, 64).length).toBe(0);
    for (const fd of [d1, e1, d2, e2, s1, s2]) b.proc.close(fd);
  });

  it('8 preserve_unsupported_fd', () => {
    const lu = luoOpenDevice(b.proc);
    const s = createSession(b.proc, lu, 'unsupported-fd-test');
    const nul = b.proc.open('/dev/null');
    expect(preserveFd(b.proc, s, nul, 0xdead)).toBe(-Errno.ENOENT);
    b.proc.close(nul);
    b.proc.close(s);
  });

  it('9 prevent_double_preservation', () => {
    const lu = luoOpenDevice(b.proc);
    const s1 = createSession(b.proc, lu, 'double-preserve-session-1');
    const s2 = createSession(b.proc, lu, 'double-preserve-session-2');
    const m = memfd('test-memfd');
    expect(preserveFd(b.proc, s1, m, 0x1111)).toBe(0);
    expect(preserveFd(b.proc, s2, m, 0x2222)).toBe(-Errno.EBUSY);
    expect(preserveFd(b.proc, s1, m, 0x3333)).toBe(-Errno.EBUSY);
    for (const fd of [m, s1, s2]) b.proc.close(fd);
  });

  it('10 create_session_no_null_termination', () => {
    const lu = luoOpenDevice(b.proc);
    const args = LiveupdateCreateSessionStruct.encode({ size: LiveupdateCreateSessionStruct.size, fd: 0, name: new Uint8Array(LIVEUPDATE_SESSION_NAME_LENGTH).fill(0x58) });
    expect(errnoOf(() => b.proc.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, args))).toBe(Errno.EINVAL);
  });

  it('11 create_session_empty_name', () => {
    expect(createSession(b.proc, luoOpenDevice(b.proc), '')).toBe(-Errno.EINVAL);
  });

  it('12 get_session_name', () => {
    const s = createSession(b.proc, luoOpenDevice(b.proc), 'get-name-test-session');
    expect(luoGetSessionName(b.proc, s)).toBe('get-name-test-session');
    b.proc.close(s);
  });

  it('13 get_session_name_max_length', () => {
    const long = 'A'.repeat(LIVEUPDATE_SESSION_NAME_LENGTH - 1);
    const s = createSession(b.proc, luoOpenDevice(b.proc), long);
    expect(luoGetSessionName(b.proc, s)).toBe(long);
    b.proc.close(s);
  });

  it('14 preserve_many_sessions (2000)', () => {
    const lu = luoOpenDevice(b.proc);
    const fds: number[] = [];
    for (let i = 0; i < 2000; i++) {
      fds.push(createSession(b.proc, lu, `many-session-${i}`));
      expect(fds[i]).toBeGreaterThanOrEqual(0);
    }
    expect(b.luo.status().outgoing.length).toBe(2000);
    for (const fd of fds) b.proc.close(fd);
    expect(b.luo.status().outgoing.length).toBe(0);
  });

  it('15 preserve_many_files (500)', () => {
    const lu = luoOpenDevice(b.proc);
    const s = createSession(b.proc, lu, 'many-files-test');
    const fds: number[] = [];
    for (let i = 0; i < 500; i++) {
      fds.push(memfd('many-file'));
      expect(preserveFd(b.proc, s, fds[i], i)).toBe(0);
    }
    for (const fd of fds) b.proc.close(fd);
    b.proc.close(s);
  });
});

// ------------------------------------------------------------------------------------ the kexec tests

/**
 * The kexec tests' harness (luo_test_utils.c): each test owns a state session holding a memfd whose text is the
 * next stage. Retrieving the state session fails with ENOENT in stage 1 and works in stage 2.
 */
function stageOf(b: Booted, lu: number, state: string, token: number): { stage: number; sfd?: number } {
  let sfd: number;
  try {
    sfd = luoRetrieveSession(b.proc, lu, state);
  } catch (e) {
    if (errnoOf(() => {
      throw e;
    }) === Errno.ENOENT) return { stage: 1 };
    throw e;
  }
  const fd = luoRetrieveFd(b.proc, sfd, token);
  return { stage: Number(dec(b.proc.pread(fd, 0, 16)).replace(/\0.*$/, '')), sfd };
}

/** Stage 1's end: the state session says 2, /dev/liveupdate is closed (a daemon keeps the session fds), kexec. */
function endStage1(b: Booted, lu: number, state: string, token: number): Booted {
  const sfd = luoCreateSession(b.proc, lu, state);
  createAndPreserveMemfd(b, sfd, token, '2');
  b.proc.close(lu);
  return kexec(b);
}

describe('luo_kexec_simple', () => {
  it('one session with one memfd across a kexec', () => {
    let b = boot();
    let lu = luoOpenDevice(b.proc);
    expect(stageOf(b, lu, 'kexec_simple_state', 999).stage).toBe(1);
    const s = luoCreateSession(b.proc, lu, 'test-session');
    createAndPreserveMemfd(b, s, 0x1a, 'hello kexec world');
    b = endStage1(b, lu, 'kexec_simple_state', 999);

    lu = luoOpenDevice(b.proc);
    const st = stageOf(b, lu, 'kexec_simple_state', 999);
    expect(st.stage).toBe(2);
    const s2 = luoRetrieveSession(b.proc, lu, 'test-session');
    restoreAndVerifyMemfd(b, s2, 0x1a, 'hello kexec world');
    luoSessionFinish(b.proc, s2);
    luoSessionFinish(b.proc, st.sfd!);
  });
});

describe('luo_multi_session', () => {
  it('two empty sessions and two with memfds; all four retrievable; three contents match', () => {
    let b = boot();
    let lu = luoOpenDevice(b.proc);
    const e1 = luoCreateSession(b.proc, lu, 'multi-test-empty-1');
    const e2 = luoCreateSession(b.proc, lu, 'multi-test-empty-2');
    const f1 = luoCreateSession(b.proc, lu, 'multi-test-files-1');
    const f2 = luoCreateSession(b.proc, lu, 'multi-test-files-2');
    createAndPreserveMemfd(b, f1, 0x1001, 'Data for session 1');
    createAndPreserveMemfd(b, f2, 0x2002, 'First file for session 2');
    createAndPreserveMemfd(b, f2, 0x3003, 'Second file for session 2');
    expect([e1, e2].every((fd) => fd > 0)).toBe(true);
    b = endStage1(b, lu, 'kexec_multi_state', 998);

    lu = luoOpenDevice(b.proc);
    const st = stageOf(b, lu, 'kexec_multi_state', 998);
    expect(st.stage).toBe(2);
    const r = Object.fromEntries(['multi-test-empty-1', 'multi-test-empty-2', 'multi-test-files-1', 'multi-test-files-2'].map((n) => [n, luoRetrieveSession(b.proc, lu, n)]));
    restoreAndVerifyMemfd(b, r['multi-test-files-1'], 0x1001, 'Data for session 1');
    restoreAndVerifyMemfd(b, r['multi-test-files-2'], 0x2002, 'First file for session 2');
    restoreAndVerifyMemfd(b, r['multi-test-files-2'], 0x3003, 'Second file for session 2');
    for (const fd of [...Object.values(r), st.sfd!]) luoSessionFinish(b.proc, fd);
  });
});

describe('luo_stress_sessions', () => {
  it('2000 empty sessions plus the state session (40 session blocks), each retrieved and finished', () => {
    let b = boot();
    let lu = luoOpenDevice(b.proc);
    for (let i = 0; i < 2000; i++) luoCreateSession(b.proc, lu, `many-test-${i}`);
    b = endStage1(b, lu, 'kexec_many_state', 999);
    lu = luoOpenDevice(b.proc);
    const st = stageOf(b, lu, 'kexec_many_state', 999);
    expect(st.stage).toBe(2);
    for (let i = 0; i < 2000; i++) luoSessionFinish(b.proc, luoRetrieveSession(b.proc, lu, `many-test-${i}`));
    luoSessionFinish(b.proc, st.sfd!);
  });
});

describe('luo_stress_files', () => {
  it('one session with 500 memfds (8 file blocks), every one restored and verified', () => {
    let b = boot();
    let lu = luoOpenDevice(b.proc);
    const s = luoCreateSession(b.proc, lu, 'many_files_session');
    for (let i = 0; i < 500; i++) createAndPreserveMemfd(b, s, i, `file-data-${i}`);
    b = endStage1(b, lu, 'kexec_many_files_state', 9999);
    lu = luoOpenDevice(b.proc);
    const st = stageOf(b, lu, 'kexec_many_files_state', 9999);
    expect(st.stage).toBe(2);
    const s2 = luoRetrieveSession(b.proc, lu, 'many_files_session');
    for (let i = 0; i < 500; i++) b.proc.close(restoreAndVerifyMemfd(b, s2, i, `file-data-${i}`));
    luoSessionFinish(b.proc, s2);
    luoSessionFinish(b.proc, st.sfd!);
  });
});
