import { z } from 'zod';
import { Errno, KernelError, describeError, errnoName, formatBytes, parseSize, type Kernel } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import {
  F_ADD_SEALS,
  Liveupdate,
  Vfs,
  errnoOf,
  luoCreateSession,
  luoOpenDevice,
  luoPreserveFd,
  luoRetrieveFd,
  luoRetrieveSession,
  luoSessionFinish,
  type Process,
} from '@kho/liveupdate';
import { TestFileHandler, createTestFile, testFileBytes } from '@kho/liveupdate/testing';
import { F_SEAL_EXEC, F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE, MFD_ALLOW_SEALING, MFD_HUGETLB, MemfdFs } from '@kho/memfd';
import { SeededPages } from '../vmm/pattern';

/*
 * LUO steps of a scenario generation: sessions of memfds preserved by a user process through /dev/liveupdate,
 * misuse checks with the errno upstream returns, and failures to inject. What the next kernel must find crosses
 * the kexec inside LUO itself, as upstream's selftests do it: a state session (`scenario-luo-state`, token 999)
 * holds a memfd with the manifest (sessions, tokens, sizes, seeds); the next generation retrieves it first, then
 * every session it lists, verifies every byte from the seeds, and finishes them.
 */

/** The state session and its token (upstream's selftests use one state session per test, token 999). */
export const LUO_STATE_SESSION = 'scenario-luo-state';
export const LUO_STATE_TOKEN = 999n;
/** Most sessions (with repeats) and files a generation may make: upstream's stress counts and some room. */
export const LUO_MAX_SESSIONS = 5000;
export const LUO_MAX_FILES = 5000;

const SEALS = { seal: F_SEAL_SEAL, shrink: F_SEAL_SHRINK, grow: F_SEAL_GROW, write: F_SEAL_WRITE, 'future-write': F_SEAL_FUTURE_WRITE, exec: F_SEAL_EXEC } as const;
const ERRNOS = ['EPERM', 'ENOENT', 'EIO', 'E2BIG', 'EBADF', 'ENOMEM', 'EFAULT', 'EBUSY', 'EEXIST', 'ENODEV', 'EINVAL', 'ENOTTY', 'EFBIG', 'ENOSPC', 'ENODATA', 'EOPNOTSUPP'] as const;
type ErrnoName = (typeof ERRNOS)[number];

const size = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  try {
    return parseSize(v, 'size');
  } catch {
    ctx.addIssue({ code: 'custom', message: `'${v}' is not a size (wanted bytes, or a number with a K, M or G suffix)` });
    return z.NEVER;
  }
});
const token = z.union([z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER), z.string().regex(/^0x[0-9a-fA-F]{1,16}$/, { message: 'must be an integer or a 0x hex string of at most 64 bits' })]).transform((v) => BigInt(v));
const errno = z.enum(ERRNOS);
const expectation = z.union([errno, z.literal('success')]);
const sessionName = z.string().refine((n) => new TextEncoder().encode(n).length <= 63 && !n.includes('\0'), { message: 'must be at most 63 bytes without NUL' });

const fileSpec = z
  .object({
    token,
    /** Bytes of the memfd (0: empty), filled with seeded bytes. */
    size: size.refine((n) => n <= 2 ** 30, { message: 'must be at most 1G' }).default(PAGE_SIZE),
    /** Only every other 64 KiB written: holes (which preservation fills). */
    sparse: z.boolean().default(false),
    seals: z.array(z.enum(Object.keys(SEALS) as [keyof typeof SEALS, ...Array<keyof typeof SEALS>])).optional(),
  })
  .strict();

const sessionSpec = z
  .object({
    /** With `repeat`, `{i}` is replaced by 0, 1, ... */
    name: sessionName.refine((n) => n.length > 0, { message: 'must not be empty' }),
    repeat: z.number().int().min(1).max(LUO_MAX_SESSIONS).default(1),
    /** memfds: a list, or `count` alike (tokens 0..count-1). */
    files: z.union([z.array(fileSpec).max(LUO_MAX_FILES), z.object({ count: z.number().int().min(1).max(LUO_MAX_FILES), size: fileSpec.shape.size, sparse: z.boolean().default(false) }).strict()]).default([]),
  })
  .strict();

const fileRef = z.union([z.enum(['memfd', 'devnull', 'hugetlb']), z.object({ sameAs: z.object({ session: sessionName, token }).strict() }).strict()]);

const check = z.discriminatedUnion('do', [
  z.object({ do: z.literal('open-twice'), expect: expectation }).strict(),
  z.object({ do: z.literal('create-session'), name: z.string(), expect: expectation }).strict(),
  z.object({ do: z.literal('preserve'), session: sessionName, token, file: fileRef.default('memfd'), expect: expectation }).strict(),
  z.object({ do: z.literal('retrieve-session'), name: z.string(), expect: expectation }).strict(),
  z.object({ do: z.literal('retrieve-fd'), session: sessionName, token, expect: expectation }).strict(),
  z.object({ do: z.literal('finish'), session: sessionName, expect: expectation }).strict(),
]);

/** A generation's `luo:` block. */
export const LuoGenerationSchema = z
  .object({
    sessions: z.array(sessionSpec).max(LUO_MAX_SESSIONS).default([]),
    /** Misuse checks. create-session, preserve, open-twice: in this kernel, after its sessions are made. retrieve-session, retrieve-fd, finish: on the sessions this kernel received, while they are open. */
    checks: z.array(check).max(200).default([]),
    /**
     * Failures to inject, through one test file (`test-file-v1`, token 0xfa17) added to the first session:
     * `freeze` fails the kexec with that errno (LUO must unfreeze; the kexec is then retried without it);
     * `retrieve` fails that file's RETRIEVE_FD in the next kernel (the session's other files must still come back).
     */
    inject: z.object({ freeze: errno.optional(), retrieve: errno.optional() }).strict().optional(),
  })
  .strict()
  .superRefine((g, ctx) => {
    const names = new Set<string>();
    let sessions = 0;
    let files = 0;
    g.sessions.forEach((s, i) => {
      if (s.repeat > 1 && !s.name.includes('{i}')) ctx.addIssue({ code: 'custom', message: "a repeated session's name must hold {i}", path: ['sessions', i, 'name'] });
      for (let r = 0; r < s.repeat; r++) {
        const n = s.name.replace('{i}', String(r));
        if (names.has(n) || n === LUO_STATE_SESSION) ctx.addIssue({ code: 'custom', message: `session '${n}' is listed twice (or is the state session)`, path: ['sessions', i, 'name'] });
        names.add(n);
      }
      sessions += s.repeat;
      const list = Array.isArray(s.files) ? s.files : [];
      const tokens = new Set(list.map((f) => f.token));
      if (tokens.size !== list.length) ctx.addIssue({ code: 'custom', message: 'tokens must be unique in a session', path: ['sessions', i, 'files'] });
      files += s.repeat * (Array.isArray(s.files) ? s.files.length : s.files.count);
    });
    if (sessions > LUO_MAX_SESSIONS) ctx.addIssue({ code: 'custom', message: `${sessions} sessions (at most ${LUO_MAX_SESSIONS})`, path: ['sessions'] });
    if (files > LUO_MAX_FILES) ctx.addIssue({ code: 'custom', message: `${files} files (at most ${LUO_MAX_FILES})`, path: ['sessions'] });
    if (g.inject && g.sessions.length === 0) ctx.addIssue({ code: 'custom', message: 'inject needs a session to hold its test file', path: ['inject'] });
  });

export type LuoGeneration = z.output<typeof LuoGenerationSchema>;

// ------------------------------------------------------------------------------------ the manifest (crosses the kexec)

interface ManifestFile {
  token: string;
  kind: 'memfd' | 'test';
  size: number;
  sparse: boolean;
  seals: number;
  seed: number;
}
interface Manifest {
  generation: number;
  sessions: Array<{ name: string; files: ManifestFile[] }>;
  injectRetrieve?: ErrnoName;
}

/** The test file the injections use. */
const INJECT_TOKEN = 0xfa17n;

/** What a generation made and handed over. */
export interface LuoMade {
  readonly sessions: number;
  readonly files: number;
  readonly bytes: number;
  /** Check results (`do … → ERRNO`), the failing ones as errors. */
  readonly checks: readonly string[];
  /** The injected freeze failure, as the kexec reported it. */
  readonly refusedKexec?: string;
}

/** What the next generation found. */
export interface LuoVerified {
  readonly sessions: number;
  readonly files: number;
  readonly bytes: number;
  readonly verified: boolean;
  readonly checks: readonly string[];
}

function seedOf(base: number, session: string, token: bigint): number {
  let s = base >>> 0;
  for (const c of `${session}/${token}`) s = (Math.imul(s, 31) + c.charCodeAt(0)) >>> 0;
  return s;
}

/** The bytes of a scenario memfd: seeded pages, the odd 64 KiB chunks only when sparse. */
function expectedPage(f: Pick<ManifestFile, 'seed' | 'sparse'>, index: number): Uint8Array | undefined {
  if (f.sparse && Math.floor((index * PAGE_SIZE) / 65536) % 2 === 0) return undefined;
  const page = new Uint8Array(PAGE_SIZE);
  new SeededPages(f.seed).fillPage(page, index);
  return page;
}

/**
 * The outgoing half: a process `luo-<gen>` makes every session of `cfg` with its memfds (seeded bytes, seals),
 * preserves them, adds the injection's test file, runs the outgoing checks and preserves the state session with
 * the manifest. The process keeps every fd open (as upstream's selftest daemon does) until the kexec.
 */
export function makeLuo(k: Kernel, cfg: LuoGeneration, gen: number, seed: number, errors: string[]): LuoMade {
  const luo = k.get(Liveupdate);
  if (!luo.isEnabled()) throw new KernelError(Errno.EOPNOTSUPP, `generation ${gen}: live update is not enabled (the scenario's kernels get liveupdate=on)`);
  const fs = k.get(MemfdFs);
  const p = k.get(Vfs).spawn(`luo-${gen}`);
  const dev = luoOpenDevice(p);
  const manifest: Manifest = { generation: gen, sessions: [] };
  const sessionFds = new Map<string, number>();
  const fileFds = new Map<string, number>();
  let files = 0;
  let bytes = 0;
  for (const spec of cfg.sessions) {
    for (let r = 0; r < spec.repeat; r++) {
      const name = spec.name.replace('{i}', String(r));
      const sfd = luoCreateSession(p, dev, name);
      sessionFds.set(name, sfd);
      const list = Array.isArray(spec.files) ? spec.files : Array.from({ length: spec.files.count }, (_, i) => ({ token: BigInt(i), size: (spec.files as { size: number }).size, sparse: (spec.files as { sparse: boolean }).sparse, seals: undefined }));
      const entry: Manifest['sessions'][number] = { name, files: [] };
      for (const f of list) {
        const seals = (f.seals ?? []).reduce((m, x) => m | SEALS[x], 0);
        const mf: ManifestFile = { token: `0x${f.token.toString(16)}`, kind: 'memfd', size: f.size, sparse: f.sparse, seals, seed: seedOf(seed, name, f.token) };
        const fd = fs.memfdCreate(p, `${name}/${mf.token}`, seals ? MFD_ALLOW_SEALING : 0);
        p.ftruncate(fd, f.size);
        if (f.size > 0) {
          const map = p.mmap(fd);
          for (let i = 0; i < Math.ceil(f.size / PAGE_SIZE); i++) {
            const page = expectedPage(mf, i);
            if (page) map.page(i).set(page.subarray(0, Math.min(PAGE_SIZE, f.size - i * PAGE_SIZE)));
          }
          map.unmap();
        }
        if (seals) p.fcntl(fd, F_ADD_SEALS, seals);
        luoPreserveFd(p, sfd, fd, f.token);
        fileFds.set(`${name}/${mf.token}`, fd);
        entry.files.push(mf);
        files++;
        bytes += f.size;
      }
      manifest.sessions.push(entry);
    }
  }
  if (cfg.inject) {
    const first = manifest.sessions[0];
    const tfd = createTestFile(p, `injected into generation ${gen}`);
    luoPreserveFd(p, sessionFds.get(first.name)!, tfd, INJECT_TOKEN);
    first.files.push({ token: `0x${INJECT_TOKEN.toString(16)}`, kind: 'test', size: 0, sparse: false, seals: 0, seed: 0 });
    if (cfg.inject.retrieve) manifest.injectRetrieve = cfg.inject.retrieve;
  }
  const checks: string[] = [];
  for (const c of cfg.checks) {
    if (c.do !== 'open-twice' && c.do !== 'create-session' && c.do !== 'preserve') continue;
    const got = errnoOf(() => {
      if (c.do === 'open-twice') luoOpenDevice(k.get(Vfs).spawn('luo-other'));
      else if (c.do === 'create-session') luoCreateSession(p, dev, c.name);
      else {
        const sfd = sessionFds.get(c.session);
        if (sfd === undefined) throw new KernelError(Errno.EINVAL, `check preserve: no session '${c.session}' in this generation`);
        luoPreserveFd(p, sfd, fileFor(p, fs, c.file, fileFds), c.token);
      }
    });
    record(checks, errors, gen, describeCheck(c), c.expect, got);
  }
  // The state session: the manifest, for the next kernel.
  const state = luoCreateSession(p, dev, LUO_STATE_SESSION);
  const mfd = fs.memfdCreate(p, 'manifest');
  p.write(mfd, new TextEncoder().encode(JSON.stringify(manifest)));
  luoPreserveFd(p, state, mfd, LUO_STATE_TOKEN);
  p.close(dev);
  return { sessions: manifest.sessions.length, files, bytes, checks };
}

/** The kexec's prepare, with the injected freeze failure first when there is one: it must be refused and undone. */
export function prepareWithInjection(k: Kernel, cfg: LuoGeneration | undefined, gen: number, errors: string[], made: LuoMade | undefined, prepare: () => void): LuoMade | undefined {
  const errnoName = cfg?.inject?.freeze;
  if (!errnoName) {
    prepare();
    return made;
  }
  const h = k.get(TestFileHandler);
  h.fail.set('freeze', Errno[errnoName]);
  let refused: string | undefined;
  try {
    prepare();
    errors.push(`generation ${gen}: the kexec went ahead although a freeze was told to fail with ${errnoName}`);
  } catch (e) {
    refused = describeError(e, { errno: true });
    const st = k.get(Liveupdate).status();
    if (st.frozen) errors.push(`generation ${gen}: LUO stayed frozen after the refused kexec`);
    if (k.state !== 'running') errors.push(`generation ${gen}: the update is '${k.state}' after the refused kexec (wanted 'running')`);
    if (!refused.startsWith(errnoName)) errors.push(`generation ${gen}: the refused kexec says '${refused}' (wanted ${errnoName})`);
  }
  h.fail.delete('freeze');
  prepare();
  return made && { ...made, refusedKexec: refused };
}

/**
 * The incoming half: retrieves the state session and its manifest, then every session it lists and every file by
 * token, checks every byte against the seeds (and sizes and seals), runs this generation's incoming checks while
 * the sessions are open, finishes and closes them. Errors name the session and token.
 */
export function verifyLuo(k: Kernel, cfg: LuoGeneration | undefined, gen: number, errors: string[]): LuoVerified | undefined {
  const luo = k.get(Liveupdate);
  const fail = (m: string) => errors.push(`generation ${gen}: ${m}`);
  const p = k.get(Vfs).spawn(`luo-verify-${gen}`);
  let dev: number;
  try {
    dev = luoOpenDevice(p);
  } catch (e) {
    fail(`cannot open /dev/liveupdate: ${describeError(e, { errno: true })}`);
    return undefined;
  }
  let manifest: Manifest;
  let stateFd: number;
  try {
    stateFd = luoRetrieveSession(p, dev, LUO_STATE_SESSION);
    const mfd = luoRetrieveFd(p, stateFd, LUO_STATE_TOKEN);
    manifest = JSON.parse(new TextDecoder().decode(p.pread(mfd, 0, p.fsize(mfd)))) as Manifest;
  } catch (e) {
    // the process goes either way: it holds /dev/liveupdate open, and the next opener (this generation's own
    // sessions) would get EBUSY
    p.exit();
    if (luo.status().incoming.length === 0 && !luo.status().panic) return undefined; // nothing was handed over through LUO
    fail(`cannot read the LUO state session: ${describeError(e, { errno: true })}`);
    return undefined;
  }
  if (manifest.injectRetrieve) k.get(TestFileHandler).fail.set('retrieve', Errno[manifest.injectRetrieve]);
  const fs = k.get(MemfdFs);
  let files = 0;
  let bytes = 0;
  let ok = true;
  const open: number[] = [stateFd];
  const checks: string[] = [];
  for (const s of manifest.sessions) {
    let sfd: number;
    try {
      sfd = luoRetrieveSession(p, dev, s.name);
    } catch (e) {
      fail(`session '${s.name}': ${describeError(e, { errno: true })}`);
      ok = false;
      continue;
    }
    open.push(sfd);
    for (const f of s.files) {
      const what = `session '${s.name}' token ${f.token}`;
      if (f.kind === 'test') {
        const got = errnoOf(() => luoRetrieveFd(p, sfd, BigInt(f.token)));
        const want = manifest.injectRetrieve ? Errno[manifest.injectRetrieve] : 0;
        if (want) checks.push(`RETRIEVE_FD '${s.name}' token ${f.token} (injected to fail) → ${got ? errnoName(got) : 'success'}`);
        if (got !== want) {
          fail(`${what}: RETRIEVE_FD gave ${got ? errnoName(got) : 'success'} (wanted ${want ? errnoName(want) : 'success'})`);
          ok = false;
        } else if (!want) {
          const tf = p.fget(luoRetrieveFd(p, sfd, BigInt(f.token)));
          if (!new TextDecoder().decode(testFileBytes(tf)).startsWith('injected')) fail(`${what}: the test file differs`);
          tf.put();
        }
        continue;
      }
      try {
        const fd = luoRetrieveFd(p, sfd, BigInt(f.token));
        const problem = checkMemfd(p, fs, fd, f);
        if (problem) {
          fail(`${what}: ${problem}`);
          ok = false;
        }
        files++;
        bytes += f.size;
        p.close(fd);
      } catch (e) {
        fail(`${what}: ${describeError(e, { errno: true })}`);
        ok = false;
      }
    }
  }
  for (const c of cfg?.checks ?? []) {
    if (c.do !== 'retrieve-session' && c.do !== 'retrieve-fd' && c.do !== 'finish') continue;
    const got = errnoOf(() => {
      if (c.do === 'retrieve-session') luoRetrieveSession(p, dev, c.name);
      else {
        const idx = manifest.sessions.findIndex((s) => s.name === c.session);
        if (idx < 0) throw new KernelError(Errno.EINVAL, `check ${c.do}: no session '${c.session}' was handed over`);
        if (c.do === 'retrieve-fd') luoRetrieveFd(p, open[idx + 1], c.token);
        else luoSessionFinish(p, open[idx + 1]);
      }
    });
    record(checks, errors, gen, describeCheck(c), c.expect, got);
  }
  k.get(TestFileHandler).fail.delete('retrieve');
  for (const fd of open) {
    try {
      luoSessionFinish(p, fd);
    } catch (e) {
      fail(`FINISH: ${describeError(e, { errno: true })}`);
      ok = false;
    }
  }
  p.exit();
  return { sessions: manifest.sessions.length, files, bytes, verified: ok, checks };
}

function checkMemfd(p: Process, fs: MemfdFs, fd: number, f: ManifestFile): string | undefined {
  const size = p.fsize(fd);
  if (size !== f.size) return `size ${size} (wanted ${f.size})`;
  const file = p.fget(fd);
  const seals = fs.inodeOf(file).seals;
  file.put();
  if (f.seals && seals !== f.seals) return `seals 0x${seals.toString(16)} (wanted 0x${f.seals.toString(16)})`;
  for (let i = 0; i < Math.ceil(size / PAGE_SIZE); i++) {
    const n = Math.min(PAGE_SIZE, size - i * PAGE_SIZE);
    const got = p.pread(fd, i * PAGE_SIZE, n);
    const want = expectedPage(f, i);
    for (let j = 0; j < n; j++) if (got[j] !== (want ? want[j] : 0)) return `byte ${i * PAGE_SIZE + j} is 0x${got[j].toString(16)} (wanted 0x${(want ? want[j] : 0).toString(16)})`;
  }
  return undefined;
}

function fileFor(p: Process, fs: MemfdFs, ref: z.output<typeof fileRef>, fds: Map<string, number>): number {
  if (ref === 'memfd') return fs.memfdCreate(p, 'check');
  if (ref === 'hugetlb') return fs.memfdCreate(p, 'check-huge', MFD_HUGETLB);
  if (ref === 'devnull') return p.open('/dev/null');
  const fd = fds.get(`${ref.sameAs.session}/0x${ref.sameAs.token.toString(16)}`);
  if (fd === undefined) throw new KernelError(Errno.EINVAL, `check preserve: no file with token 0x${ref.sameAs.token.toString(16)} in session '${ref.sameAs.session}'`);
  return fd;
}

function describeCheck(c: z.output<typeof check>): string {
  switch (c.do) {
    case 'open-twice':
      return 'open /dev/liveupdate a second time';
    case 'create-session':
      return `CREATE_SESSION '${c.name}'`;
    case 'preserve':
      return `PRESERVE_FD ${typeof c.file === 'string' ? c.file : `the file of '${c.file.sameAs.session}' token 0x${c.file.sameAs.token.toString(16)}`} into '${c.session}' with token 0x${c.token.toString(16)}`;
    case 'retrieve-session':
      return `RETRIEVE_SESSION '${c.name}'`;
    case 'retrieve-fd':
      return `RETRIEVE_FD '${c.session}' token 0x${c.token.toString(16)}`;
    case 'finish':
      return `FINISH '${c.session}'`;
  }
}

function record(checks: string[], errors: string[], gen: number, what: string, want: ErrnoName | 'success', got: number): void {
  const gotName = got === 0 ? 'success' : errnoName(got);
  checks.push(`${what} → ${gotName}`);
  if (gotName !== want) errors.push(`generation ${gen}: ${what} gave ${gotName} (wanted ${want})`);
}

/** A generation's LUO work, for `kho run`'s text output. */
export function formatLuoMade(m: LuoMade): string {
  const checks = m.checks.length > 0 ? `; checks: ${m.checks.join(', ')}` : '';
  return `LUO: ${m.sessions} sessions, ${m.files} memfds (${formatBytes(m.bytes)})${m.refusedKexec ? `; the kexec was refused as injected (${m.refusedKexec})` : ''}${checks}`;
}

/** What the next generation retrieved of it. */
export function formatLuoVerified(m: LuoMade, v: LuoVerified | undefined): string {
  if (!v) return `LUO nothing retrieved (${m.sessions} sessions handed over)`;
  return `LUO ${v.sessions}/${m.sessions} sessions, ${v.files} memfds retrieved: ${v.verified ? 'verified' : 'FAILED'}${v.checks.length > 0 ? `; checks: ${v.checks.join(', ')}` : ''}`;
}
