import { KernelError, describeError, withUnwind, type Kernel, type KernelModule, type Machine } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Memmap, PhysicalMemory } from '@kho/physmem';
import { KHO_GENERATIONS, KHO_KEXEC_METADATA_SUBTREE, Kho, Tracker } from '@kho/kho-core';
import { KhoBlocks, type KhoBlockSet } from '@kho/kho-block';
import { Liveupdate, Vfs, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish, type Process } from '@kho/liveupdate';
import { MemfdFs } from '@kho/memfd';
import { DEMO_FILES, verifyDemoFiles, writeDemoFiles } from '../demo/files';
import { KHO_TEST_LOG_CMDLINE, KhoTest } from '../demo/kho-test';
import { idlePages, kernelImage, machineFor } from '../system';
import { SeededBytes } from '../scenario/workload';
import { GuestMemory, guestMemoryModule, type GuestSpec } from '../scenario/guests';
import { stateOf } from './faults';

/*
 * Faults on every new path (issue 16): each allocation of an operation fails once, in its own case. A case starts
 * the path from a fresh machine, makes allocation `nth` of the operation fail (FaultInjector failNth), and then
 * checks: the operation threw a KernelError; everything stateOf() compares (tracker blocks and pages, root FDT
 * bytes and subtrees, free pages and free lists, slab caches, vmalloc areas, memfd files, kstate registrations)
 * and the path's own state (LUO sessions and files, a process's fds, a kho_block set, the stamps of an incoming
 * handover) are exactly as before; then the retry, with no fault, succeeds and the path checks it end to end
 * (a live update and what the next kernel finds, with no page leaked). An operation that makes no allocation at
 * all is run once with every allocation failing instead: it must succeed anyway.
 */

/** One run of an operation whose allocations fail one at a time. */
export interface FaultRun {
  readonly kernel: Kernel;
  /** The operation; it must undo what it did when it throws. */
  attempt(): void;
  /** State beyond stateOf() that a failed attempt must leave as it was. */
  state?(): Record<string, string>;
  /** State keys of stateOf() the path does not compare, each with the documented reason. */
  readonly ignore?: Readonly<Record<string, string>>;
  /** After the retry succeeded: checks it end to end (usually a live update and the next kernel). Returns problems. */
  after(): string[];
}

/** A path of the fault sweep: how many allocations it makes, and one case with allocation `nth` failing. */
export interface FaultPath {
  readonly name: string;
  readonly title: string;
  /** Allocations the operation makes when nothing fails (its failure points). */
  count(): number;
  /** The case with allocation `nth` failing (1-based; 0: every allocation failing, for an operation that makes none). */
  fail(nth: number): FaultCaseResult;
}

/** What one case found. */
export interface FaultCaseResult {
  readonly path: string;
  readonly point: number;
  /** The failure the operation reported (its one line), when it failed. */
  readonly error?: string;
  readonly problems: readonly string[];
}

function stateWith(r: FaultRun): Record<string, string> {
  const s = stateOf(r.kernel);
  for (const k of Object.keys(r.ignore ?? {})) delete s[k];
  return { ...s, ...(r.state?.() ?? {}) };
}

/** A fault path over an operation: `start` builds a fresh run (see FaultRun). Exported for the sweep's own tests. */
export function operationPath(name: string, title: string, start: () => FaultRun): FaultPath {
  return {
    name,
    title,
    count() {
      const r = start();
      const faults = r.kernel.get(FaultInjector);
      const before = faults.calls;
      r.attempt();
      return faults.calls - before;
    },
    fail(nth) {
      const problems: string[] = [];
      let error: string | undefined;
      try {
        const r = start();
        const faults = r.kernel.get(FaultInjector);
        const before = stateWith(r);
        faults.configure(nth === 0 ? { everyNth: 1 } : { failNth: nth });
        let threw: unknown;
        try {
          r.attempt();
        } catch (e) {
          threw = e;
        } finally {
          faults.reset();
        }
        if (nth === 0) {
          if (threw !== undefined) problems.push(`with every allocation failing the operation failed: ${describeError(threw, { errno: true })}`);
        } else if (!(threw instanceof KernelError)) {
          problems.push(threw === undefined ? 'the injected failure was swallowed: the operation succeeded' : `not a KernelError: ${describeError(threw)}`);
        } else {
          error = threw.message.split('\n')[0];
          const after = stateWith(r);
          for (const k of Object.keys(before)) if (before[k] !== after[k]) problems.push(`${k} changed`);
          if (problems.length === 0) {
            try {
              r.attempt();
            } catch (e) {
              problems.push(`the retry failed: ${describeError(e, { errno: true })}`);
            }
          }
        }
        if (problems.length === 0) problems.push(...r.after());
      } catch (e) {
        problems.push(`the path broke: ${describeError(e, { errno: true })}`);
      }
      return { path: name, point: nth, ...(error ? { error } : {}), problems };
    },
  };
}

// ------------------------------------------------------------------------------------------------ the paths

const KiB = 1024;
const MiB = 2 ** 20;
const SCRATCH = 'kho_scratch=16M,16M,16M';

/** After finish: the next kernel's free and tracker pages must equal a cold boot's of the same image and command line. */
function leakCheck(machine: Machine, next: Kernel, problems: string[]): void {
  const m = machineFor({ ranges: machine.device(PhysicalMemory).ranges });
  const cold = idlePages(m.boot({ image: next.image, cmdline: next.cmdline.text }));
  m.shutdown();
  const idle = idlePages(next);
  if (idle !== cold) problems.push(`the next kernel has ${idle} free and tracker pages after finish, a cold boot ${cold}`);
}

/** Runs restore and finish on `next`; no plugin may be disabled, every one must succeed and nothing stay unrestored. */
function restoreAndFinish(next: Kernel, problems: string[], between: () => void = () => undefined): void {
  for (const [plugin, why] of next.disabled) problems.push(`plugin '${plugin}' disabled at boot: ${why}`);
  const rep = next.restore();
  for (const [p, o] of Object.entries(rep.plugins)) if (!o.ok) problems.push(`restore ${p}: ${o.error}`);
  between();
  const fin = next.finish();
  for (const [p, o] of Object.entries(fin.plugins)) if (!o.ok) problems.push(`finish ${p}: ${o.error}`);
  const unrestored = Number(fin.plugins.kho?.report?.unrestoredBlocks ?? 0);
  if (unrestored > 0) problems.push(`${unrestored} preserved blocks were never restored`);
}

interface LuoFile {
  readonly token: number;
  readonly size: number;
  /** Written from here on (before it: a hole, read as zeros). */
  readonly from: number;
  fd: number;
}

const fileBytes = (token: number, len: number): Uint8Array => new SeededBytes(0x1000 + token).next(len);

/** memfds of a process for LUO: a dense one, one with a hole over its first half, an empty one. */
function makeFiles(k: Kernel, p: Process): LuoFile[] {
  const fs = k.get(MemfdFs);
  return [
    { token: 1, size: 40 * KiB, from: 0 },
    { token: 2, size: 300 * KiB, from: 152 * KiB },
    { token: 3, size: 0, from: 0 },
  ].map((f) => {
    const fd = fs.memfdCreate(p, `file-${f.token}`);
    p.ftruncate(fd, f.size);
    if (f.size > f.from) p.pwrite(fd, f.from, fileBytes(f.token, f.size - f.from));
    return { ...f, fd };
  });
}

/** A process's fds, and each memfd's size and bytes (as a checksum), for a failed operation to leave as they were. */
function processState(p: Process, files: readonly LuoFile[]): string {
  return JSON.stringify({
    fds: p.fdTable(),
    files: files.map((f) => {
      const size = p.fsize(f.fd);
      return [f.token, size, Buffer.from(p.pread(f.fd, 0, size)).toString('base64').length, Buffer.from(p.pread(f.fd, 0, size)).reduce((a, b) => (a * 31 + b) >>> 0, 7)];
    }),
  });
}

/** The next kernel retrieves session `name` and checks every file; closes what it opened. */
function retrieveAndCheck(next: Kernel, name: string, files: readonly LuoFile[], problems: string[]): void {
  const q = next.get(Vfs).spawn('vmm');
  try {
    const dev = luoOpenDevice(q);
    const s = luoRetrieveSession(q, dev, name);
    for (const f of files) {
      const fd = luoRetrieveFd(q, s, f.token);
      const got = q.pread(fd, 0, q.fsize(fd));
      const want = new Uint8Array(f.size);
      if (f.size > f.from) want.set(fileBytes(f.token, f.size - f.from), f.from);
      if (got.length !== f.size || Buffer.compare(got, want) !== 0) problems.push(`memfd token ${f.token} came back with other bytes`);
      q.close(fd);
    }
    luoSessionFinish(q, s);
  } catch (e) {
    problems.push(`retrieving session '${name}': ${describeError(e, { errno: true })}`);
  } finally {
    q.exit();
  }
}

/** A kernel with LUO on and a process with its memfds (and with `demo`, the demo's self-test and memfd-v1 files too). */
function luoKernel(demo = false): { machine: Machine; k: Kernel; p: Process; dev: number; files: LuoFile[] } {
  const machine = machineFor({ ram: 128 * MiB });
  const k = machine.boot({ image: demo ? kernelImage({ mem: 128 * KiB, seed: 9, maxOrder: 3 }) : kernelImage(), cmdline: `${demo ? `${KHO_TEST_LOG_CMDLINE} ` : ''}${SCRATCH} liveupdate=on` });
  if (demo) {
    k.get(KhoTest).generate();
    writeDemoFiles(k, 9);
  }
  const p = k.get(Vfs).spawn('vmm');
  const dev = luoOpenDevice(p);
  return { machine, k, p, dev, files: makeFiles(k, p) };
}

/** The LUO state a failed operation must leave as it was. */
function luoState(k: Kernel): string {
  const st = k.get(Liveupdate).status();
  return JSON.stringify({ frozen: st.frozen, outgoing: st.outgoing, incoming: st.incoming, flbs: st.flbs });
}

/** After the retry: the update goes through and the next kernel gets the session back, leaking nothing. */
function luoUpdateAfter(machine: Machine, k: Kernel, name: string, files: readonly LuoFile[]): string[] {
  const problems: string[] = [];
  const next = k.state === 'serialized' ? k.kexec() : k.liveUpdate();
  restoreAndFinish(next, problems, () => retrieveAndCheck(next, name, files, problems));
  leakCheck(machine, next, problems);
  return problems;
}

/** CREATE_SESSION and PRESERVE_FD of three memfds (memfd-v2: record, holes filled, folio array, vmalloc chunks). */
const luoPreservePath = operationPath('luo preserve', 'LUO CREATE_SESSION and PRESERVE_FD of three memfds (dense, a hole over half of it, empty) through memfd-v2', (): FaultRun => {
  const { machine, k, p, dev, files } = luoKernel();
  return {
    kernel: k,
    // the user's own ladder: a failed PRESERVE_FD undoes itself; closing the session undoes the others
    attempt: () =>
      withUnwind((u) => {
        const s = luoCreateSession(p, dev, 's');
        u.push(() => p.close(s));
        for (const f of files) luoPreserveFd(p, s, f.fd, f.token);
      }),
    // memfd-v2 pins the whole file first, filling its holes with zeroed folios, and a failed preserve leaves
    // them filled, as upstream: the file owns more pages, its bytes are the same (compared below).
    ignore: { 'free pages': 'holes filled stay filled', buddyinfo: 'holes filled stay filled' },
    state: () => ({ luo: luoState(k), process: processState(p, files), 'free pages + file pages': String(freeAndFilePages(k, p, files)) }),
    after: () => luoUpdateAfter(machine, k, 's', files),
  };
});

/** Free pages plus the pages of the process's memfds: a failed preserve may move pages from one to the other only. */
function freeAndFilePages(k: Kernel, p: Process, files: readonly LuoFile[]): number {
  const fs = k.get(MemfdFs);
  let pages = k.get(BuddyAllocator).nrFreePages;
  for (const f of files) {
    const file = p.fget(f.fd);
    for (const folio of fs.inodeOf(file).folios.values()) pages += folio.nrPages;
    file.put();
  }
  return pages;
}

/** Preserves every file into a new session `name` (set-up, not swept). */
function preserveAll(p: Process, dev: number, name: string, files: readonly LuoFile[]): number {
  const s = luoCreateSession(p, dev, name);
  for (const f of files) luoPreserveFd(p, s, f.fd, f.token);
  return s;
}

/** The kexec's prepare and serialize with LUO sessions: the freeze (and every other plugin's prepare). */
const luoFreezePath = operationPath('luo freeze', "the update's prepare and serialize with two LUO sessions of memfds, the self-test and memfd-v1 files: the freeze, and its unfreeze when a later step fails", (): FaultRun => {
  const { machine, k, p, dev, files } = luoKernel(true);
  preserveAll(p, dev, 'a', files.slice(0, 2));
  preserveAll(p, dev, 'b', files.slice(2));
  return {
    kernel: k,
    attempt: () => {
      k.prepare();
      k.serialize();
    },
    state: () => ({ luo: luoState(k), process: processState(p, files), update: k.state }),
    after: () => {
      const problems: string[] = [];
      const next = k.kexec();
      restoreAndFinish(next, problems, () => {
        if (!next.get(KhoTest).lastRestore?.verified) problems.push("the self-test's folios did not come back verified");
        const demo = verifyDemoFiles(next, 9);
        problems.push(...demo.problems.map((x) => `memfd ${x}`));
        retrieveAndCheck(next, 'a', files.slice(0, 2), problems);
        retrieveAndCheck(next, 'b', files.slice(2), problems);
      });
      leakCheck(machine, next, problems);
      return problems;
    },
  };
});

/** Cancelling a frozen update (LUO unfreezes every file): it makes no allocation, so it must work with none left. */
const luoCancelPath = operationPath('luo unfreeze', 'cancelling an update after the freeze: LUO unfreezes every session and file, every plugin undoes its prepare', (): FaultRun => {
  const { machine, k, p, dev, files } = luoKernel();
  preserveAll(p, dev, 'a', files);
  const before = { state: stateOf(k), luo: luoState(k), process: processState(p, files) };
  k.prepare();
  k.serialize();
  return {
    kernel: k,
    attempt: () => k.cancel(),
    after: () => {
      const problems: string[] = [];
      const now = stateOf(k);
      for (const key of Object.keys(before.state)) if (before.state[key] !== now[key]) problems.push(`after cancel, ${key} differs from before prepare`);
      if (luoState(k) !== before.luo) problems.push('after cancel, LUO differs from before prepare');
      if (processState(p, files) !== before.process) problems.push("after cancel, the process's files differ from before prepare");
      problems.push(...luoUpdateAfter(machine, k, 'a', files));
      return problems;
    },
  };
});

/** The next kernel's side: RETRIEVE_SESSION and RETRIEVE_FD of memfd-v2 files, their bytes read back. */
const luoRetrievePath = operationPath('luo retrieve', 'RETRIEVE_SESSION and RETRIEVE_FD of three memfd-v2 files in the next kernel (folio array restored, folios adopted)', (): FaultRun => {
  const { machine, k, p, dev, files } = luoKernel();
  preserveAll(p, dev, 'a', files);
  const next = k.liveUpdate();
  next.restore();
  const q = next.get(Vfs).spawn('vmm');
  const ndev = luoOpenDevice(q);
  const kho = next.get(Kho);
  const inc = kho.incomingHandover!;
  // which incoming blocks still carry their stamp: a failed retrieve must not consume one
  const stamps = (): string => inc.pfns.filter((pfn, i) => kho.isPreservedIncoming(pfn, inc.orders[i])).length.toString();
  const fds: number[] = [];
  return {
    kernel: next,
    attempt: () => {
      const s = luoRetrieveSession(q, ndev, 'a');
      fds.push(s);
      for (const f of files) fds.push(luoRetrieveFd(q, s, f.token));
    },
    state: () => ({ luo: luoState(next), stamps: stamps(), fds: JSON.stringify(q.fdTable()) }),
    after: () => {
      const problems: string[] = [];
      files.forEach((f, i) => {
        const fd = fds[fds.length - files.length + i];
        const want = new Uint8Array(f.size);
        if (f.size > f.from) want.set(fileBytes(f.token, f.size - f.from), f.from);
        if (Buffer.compare(q.pread(fd, 0, q.fsize(fd)), want) !== 0) problems.push(`memfd token ${f.token} came back with other bytes`);
      });
      luoSessionFinish(q, fds[fds.length - files.length - 1]);
      q.exit();
      const fin = next.finish();
      if (Number(fin.plugins.kho?.report?.unrestoredBlocks ?? 0) > 0) problems.push('preserved blocks were never restored');
      leakCheck(machine, next, problems);
      return problems;
    },
  };
});

const ENTRY = 64;
const BLOCKS_SUBTREE = 'fault-kho-block';

/** A kho_block set with one block of entries, its head and count in a record of its own subtree. */
function blockKernel(): { machine: Machine; k: Kernel; set: KhoBlockSet; rec: number; write: (n: number) => void } {
  const machine = machineFor({ ram: 128 * MiB });
  const k = machine.boot({ image: kernelImage(), cmdline: SCRATCH });
  const kho = k.get(Kho);
  const ram = k.get(PhysicalMemory);
  const rec = kho.allocPreserve(16);
  kho.addSubtree(BLOCKS_SUBTREE, rec, 16);
  const set = k.get(KhoBlocks).createSet(ENTRY, 'fault');
  set.grow(40);
  let written = 0;
  const write = (n: number): void => {
    const it = set.iterator();
    for (let i = 0; i < n; i++) {
      const e = it.reserveEntry()!;
      if (i >= written) ram.writeU64(e, 0xb10c_0000 + i);
    }
    written = n;
    ram.writeU64(rec, set.headPa);
    ram.writeU64(rec + 8, n);
  };
  write(40);
  return { machine, k, set, rec, write };
}

/** The next kernel restores the set named by the record and checks its `n` entries; frees everything. */
function restoreBlocks(next: Kernel, n: number, problems: string[]): void {
  const kho = next.get(Kho);
  const ram = next.get(PhysicalMemory);
  const phys = kho.retrieveSubtree(BLOCKS_SUBTREE).phys;
  const set = next.get(KhoBlocks).createSet(ENTRY, 'fault');
  set.restore(ram.readU64(phys));
  let i = 0;
  for (const e of set.entries()) if (ram.readU64(e) !== 0xb10c_0000 + i++) problems.push(`entry ${i - 1} differs`);
  if (i !== n) problems.push(`${i} entries came back (wanted ${n})`);
  set.destroy();
  kho.restoreFree(phys);
}

/** kho_block grow: from one block to five (each block a preserved page linked from the previous one). */
const khoBlockGrowPath = operationPath('kho_block grow', 'a kho_block set of 64-byte entries growing from one block to five', (): FaultRun => {
  const { machine, k, set, write } = blockKernel();
  return {
    kernel: k,
    attempt: () => set.grow(300),
    state: () => ({ set: JSON.stringify({ blocks: set.blockPhys(), capacity: set.capacity, head: set.headPa }) }),
    after: () => {
      const problems: string[] = [];
      write(300);
      const next = k.liveUpdate();
      restoreAndFinish(next, problems, () => restoreBlocks(next, 300, problems));
      leakCheck(machine, next, problems);
      return problems;
    },
  };
});

/** kho_block restore in the next kernel: the chain walked and taken over (no allocation: it must work with none). */
const khoBlockRestorePath = operationPath('kho_block restore', "the next kernel restoring a five-block kho_block chain, reading it, giving its pages back", (): FaultRun => {
  const { machine, k, set, write } = blockKernel();
  set.grow(300);
  write(300);
  const next = k.liveUpdate();
  next.restore();
  const problems: string[] = [];
  return {
    kernel: next,
    attempt: () => restoreBlocks(next, 300, problems),
    after: () => {
      const fin = next.finish();
      if (Number(fin.plugins.kho?.report?.unrestoredBlocks ?? 0) > 0) problems.push('preserved blocks were never restored');
      leakCheck(machine, next, problems);
      return problems;
    },
  };
});

/** Pages of the blocks a kernel's tracker holds (what it preserves for its own next kernel). */
function preservedPages(k: Kernel): number {
  let pages = 0;
  k.get<Tracker>(Tracker).walk((_pfn, order) => void (pages += 2 ** order));
  return pages;
}

/**
 * The boot of a kernel of generation `abi` from a handover of the same generation (the demo's self-test folios and
 * memfd files, a LUO session), with allocation `nth` of the boot failing (armed from the command line: physmem
 * reads `fail_page_alloc=` first thing). Its failure points are every allocation of the boot, the generation
 * writers among them: the tracker root, the root FDT page, the kexec-metadata blob (kho-v3 on), LUO's luo_ser and
 * FLB pages. However it fails, the boot must come up with no plugin disabled and take back everything handed over
 * (every byte verified, nothing left unrestored); what the failed writer began is undone: after finish, free +
 * tracker pages + the pages this kernel preserves for its own next kernel equal those of the same boot without the
 * fault. The retry is that boot without the fault: its outgoing side is whole (root FDT of the generation, and
 * kexec-metadata from kho-v3 on) and a live update from it verifies.
 */
function bootPath(abi: string): FaultPath {
  const g = KHO_GENERATIONS.find((x) => x.id === abi)!;
  const cmdline = `${KHO_TEST_LOG_CMDLINE} ${SCRATCH} kho_abi=${abi} liveupdate=on`;
  const image = kernelImage({ mem: 128 * KiB, seed: 9, maxOrder: 3 }, { tracker: g.tracker });
  const name = `boot kho_abi=${abi}`;
  const luoFiles: LuoFile[] = [];
  /** A machine halted at the jump of a kernel that handed over the demo's data and a LUO session. */
  const handover = (extra = ''): { machine: Machine; params: ReturnType<Machine['jump']> } => {
    const machine = machineFor({ ram: 128 * MiB });
    const k1 = machine.boot({ image, cmdline });
    k1.get(KhoTest).generate();
    writeDemoFiles(k1, 9);
    const p = k1.get(Vfs).spawn('vmm');
    const files = makeFiles(k1, p);
    luoFiles.splice(0, luoFiles.length, ...files);
    preserveAll(p, luoOpenDevice(p), 'boot', files);
    k1.prepare();
    k1.serialize();
    return { machine, params: machine.jump(k1, `${cmdline}${extra}`) };
  };
  /** Boots the next kernel (with `extra` on its command line), restores, checks and finishes it. */
  const land = (extra: string, problems: string[]): { machine: Machine; next: Kernel } => {
    const { machine, params } = handover(extra);
    const next = machine.bootFrom(params, { image });
    restoreAndFinish(next, problems, () => {
      const t = next.get(KhoTest).lastRestore;
      if (!t?.verified) problems.push("the self-test's folios did not come back verified");
      const files = verifyDemoFiles(next, 9);
      problems.push(...files.problems.map((x) => `memfd ${x}`));
      if (files.files !== DEMO_FILES.length) problems.push(`${files.files} of ${DEMO_FILES.length} memfd files came back`);
      retrieveAndCheck(next, 'boot', luoFiles, problems);
    });
    return { machine, next };
  };
  let reference: number | undefined;
  /** free + tracker + preserved pages of the boot without a fault, after finish (the leak baseline). */
  const baseline = (): number => {
    if (reference === undefined) {
      const { next } = land('', []);
      reference = idlePages(next) + preservedPages(next);
    }
    return reference;
  };
  return {
    name,
    title: `the boot of a ${g.compatible} kernel from a ${g.compatible} handover with a LUO session: its own handover's writers (tracker root, root FDT${g.kexecMetadata ? ', kexec-metadata' : ''}, LUO's state) and every other allocation of the boot`,
    count() {
      const { machine, params } = handover();
      const next = machine.bootFrom(params, { image });
      return next.get(FaultInjector).calls;
    },
    fail(nth) {
      const problems: string[] = [];
      let error: string | undefined;
      try {
        const { machine, next } = land(nth > 0 ? ` fail_page_alloc=${nth},100,1` : '', problems);
        error = next.get(Kho).stats().outgoingError ?? next.get(Liveupdate).status().outgoingError;
        const total = idlePages(next) + preservedPages(next);
        if (total !== baseline()) problems.push(`after finish, free + tracker + preserved pages are ${total}, the same boot without the fault has ${baseline()}`);
        if (nth > 0 && next.get(FaultInjector).injected !== 1) problems.push('the fault was not hit');
        if (nth === 0 || problems.length > 0) return { path: name, point: nth, ...(error ? { error } : {}), problems };
        // the retry: the same boot without the fault has its whole outgoing side, and an update from it verifies
        const { next: clean } = land('', problems);
        const kho = clean.get(Kho);
        if (!kho.isEnabled() || kho.stats().compatible !== g.compatible) problems.push(`the retry cannot preserve (${kho.stats().outgoingError ?? 'KHO disabled'})`);
        if (g.kexecMetadata && !kho.subtrees().includes(KHO_KEXEC_METADATA_SUBTREE)) problems.push('the retry has no kexec-metadata subtree');
        clean.get(KhoTest).generate();
        const after = clean.liveUpdate();
        after.restore();
        if (!after.get(KhoTest).lastRestore?.verified) problems.push("the retry's update did not verify");
        machine.shutdown();
      } catch (e) {
        problems.push(`the path broke: ${describeError(e, { errno: true })}`);
      }
      return { path: name, point: nth, ...(error ? { error } : {}), problems };
    },
  };
}

/**
 * The update's prepare and serialize writing generation `abi` (the demo's self-test folios, kstate, memfd-v1
 * files, the reserve_mem log, and KHO's own writer for that generation: the kho-v1 map and its bitmap trackers at
 * serialize, the kho-array of v1-karr, the kexec-metadata blob from kho-v3 on). A failed attempt is cancelled by
 * the kernel itself; the retry's update must restore every byte in the next kernel and leak nothing.
 */
function updatePath(abi: string): FaultPath {
  const g = KHO_GENERATIONS.find((x) => x.id === abi)!;
  return operationPath(`update kho_abi=${abi}`, `the update's prepare and serialize writing ${g.compatible} with the ${g.tracker} tracker: the demo's subsystems and the generation's own writers`, (): FaultRun => {
    const machine = machineFor({ ram: 128 * MiB });
    const k = machine.boot({ image: kernelImage({ mem: 128 * KiB, seed: 11, maxOrder: 3 }, { tracker: g.tracker }), cmdline: `${KHO_TEST_LOG_CMDLINE} ${SCRATCH} kho_abi=${abi}` });
    k.get(KhoTest).generate();
    writeDemoFiles(k, 11);
    return {
      kernel: k,
      attempt: () => {
        k.prepare();
        k.serialize();
      },
      state: () => ({ update: k.state }),
      after: () => {
        const problems: string[] = [];
        const next = k.kexec();
        if (next.get(Kho).stats().compatible === undefined) problems.push('the next kernel has no outgoing handover');
        restoreAndFinish(next, problems, () => {
          if (!next.get(KhoTest).lastRestore?.verified) problems.push("the self-test's folios did not come back verified");
          const demo = verifyDemoFiles(next, 11);
          problems.push(...demo.problems.map((x) => `memfd ${x}`));
          if (demo.files !== DEMO_FILES.length) problems.push(`${demo.files} of ${DEMO_FILES.length} memfd files came back`);
        });
        if (!next.get(Kho).incomingHandover) problems.push('the next kernel did not revive the handover');
        leakCheck(machine, next, problems);
        return problems;
      },
    };
  });
}

/** A host-scale machine: RAM in three ranges, the last above 1 TiB (holes between; memmap sections far apart). */
const HOST_RANGES = [
  { start: 0, size: 192 * MiB, node: 0 },
  { start: 4 * 2 ** 30, size: 128 * MiB, node: 0 },
  { start: 2 ** 40, size: 128 * MiB, node: 1 },
];
/** Guests larger than any one range: their folios come from every range, so every memmap section is written. */
const HOST_GUESTS: GuestSpec[] = [
  { name: 'vm-huge', size: 256 * MiB, order: 10 },
  { name: 'vm-4k', size: 256 * KiB, order: 0 },
];

function hostKernel(generation: number, guests: GuestSpec[]): { machine: Machine; k: Kernel; image: (gen: number, g: GuestSpec[]) => KernelModule[]; cmdline: string } {
  const machine = machineFor({ ranges: HOST_RANGES });
  const image = (gen: number, gs: GuestSpec[]): KernelModule[] => [...kernelImage(), guestMemoryModule({ generation: gen, seed: 21, guests: gs })];
  // scratch sized from what the kernel allocates early: fixed 16 MiB areas leave no room below 4 GiB for the
  // kernel's own 16 MiB on this layout, and the next kernel's memblock would be disabled
  const cmdline = 'kho_scratch=150%';
  return { machine, k: machine.boot({ image: image(generation, guests), cmdline }), image, cmdline };
}

/** The next kernel of a host-scale path: every guest back and verified, nothing leaked. */
function hostAfter(machine: Machine, k: Kernel, problems: string[]): void {
  const next = k.state === 'serialized' ? k.kexec() : k.liveUpdate();
  restoreAndFinish(next, problems, () => {
    const r = next.get(GuestMemory).lastRestore;
    if (!r) problems.push('the guests did not come back');
    else {
      problems.push(...r.problems.map((x) => `guests: ${x}`));
      if (r.verified !== HOST_GUESTS.length) problems.push(`${r.verified} of ${HOST_GUESTS.length} guests verified`);
    }
  });
  leakCheck(machine, next, problems);
}

/** Host scale: the guests' folios allocated across three RAM ranges (every memmap section touched), their runs listed in vmalloc. */
const hostGuestsPath = operationPath('host guests', 'host scale: guest memory allocated as order-10 and order-0 folios across three RAM ranges (the last above 1 TiB), runs listed in vmalloc, state registered in kstate', (): FaultRun => {
  const { machine, k } = hostKernel(1, HOST_GUESTS);
  const sections = (): string => String(k.get(Memmap).presentSections);
  const before = sections();
  return {
    kernel: k,
    attempt: () => void k.get(GuestMemory).generate(),
    // sections are created on a page's first write and kept, as deferred struct-page init keeps them: compared
    // below only to check that the guests really spread over every range
    state: () => ({ guests: JSON.stringify(k.get(GuestMemory).outgoing.map((g) => [g.name, g.pfns.length])) }),
    after: () => {
      const problems: string[] = [];
      if (Number(sections()) < HOST_RANGES.length) problems.push(`the guests touched ${sections()} memmap sections (wanted at least ${HOST_RANGES.length}; ${before} before)`);
      hostAfter(machine, k, problems);
      return problems;
    },
  };
});

/** Host scale: the update preserving the guests' folios in radix nodes for three far-apart ranges (levels above 1 TiB). */
const hostUpdatePath = operationPath('host update', "host scale: the update's prepare and serialize preserving guest folios in three RAM ranges (tracker nodes above 1 TiB, the guests' kstate record)", (): FaultRun => {
  const { machine, k } = hostKernel(1, HOST_GUESTS);
  k.get(GuestMemory).generate();
  return {
    kernel: k,
    attempt: () => {
      k.prepare();
      k.serialize();
    },
    state: () => ({ update: k.state }),
    after: () => {
      const problems: string[] = [];
      hostAfter(machine, k, problems);
      return problems;
    },
  };
});

/** Every fault path of the sweep, in report order. */
export const FAULT_PATHS: readonly FaultPath[] = [
  luoPreservePath,
  luoFreezePath,
  luoCancelPath,
  luoRetrievePath,
  khoBlockGrowPath,
  khoBlockRestorePath,
  ...KHO_GENERATIONS.map((g) => updatePath(g.id)),
  ...KHO_GENERATIONS.map((g) => bootPath(g.id)),
  hostGuestsPath,
  hostUpdatePath,
];

/** The fault path named `name`, or undefined. */
export function faultPath(name: string): FaultPath | undefined {
  return FAULT_PATHS.find((p) => p.name === name);
}

