import { Errno, KernelError, Phase, describeError, formatBytes, type BootParams, type Kernel, type Machine, type MachineBus, type PhaseEndEvent } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory, type RamRange } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import {
  Liveupdate,
  Vfs,
  luoCreateSession,
  luoOpenDevice,
  luoPreserveFd,
  luoRetrieveFd,
  luoRetrieveSession,
  luoSessionFinish,
  type LiveupdateStatus,
  type Process,
} from '@kho/liveupdate';
import { MemfdFs, SHMEM_HUGE_ORDER } from '@kho/memfd';
import { idlePages, kernelImage, machineFor, type TrackerKind } from '../system';
import { SeededPages, type GuestPattern } from './pattern';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

/** The session, tokens and sizes of the VMM demo. */
export const VMM_SESSION = 'vm0';
export const GUEST_TOKEN = 1n;
export const DEVICE_TOKEN = 2n;
export const DEVICE_STATE_SIZE = 64 * 1024;

/** Settings of `kho demo --vmm`, `kho kexec --vmm`, `kho boot` of a VMM image. */
export interface VmmOptions {
  /** Bytes of guest memory (a multiple of 2 MiB; default 1 GiB). */
  readonly guest: number;
  readonly seed: number;
  /** RAM of the machine (default: the guest plus 3 GiB, at least 4 GiB). */
  readonly ram: number;
  readonly nodes: number;
  /** Extra command line for both kernels (`liveupdate=on transparent_hugepage_shmem=always` is always there). */
  readonly cmdline: string;
  readonly tracker?: TrackerKind;
  /** 'full': every guest page carries seeded words; 'sparse': one page per 2 MiB folio does, the rest stay zero. */
  readonly fill: 'full' | 'sparse';
}

export const DEFAULT_VMM: VmmOptions = { guest: GiB, seed: 1, ram: 4 * GiB, nodes: 1, cmdline: '', fill: 'full' };

/** RAM for a guest when --ram is not given. */
export function defaultVmmRam(guest: number): number {
  return Math.max(4 * GiB, Math.ceil((guest + 3 * GiB) / GiB) * GiB);
}

/** Refuses settings the demo cannot run with (EINVAL, one line). */
export function checkVmmOptions(o: VmmOptions): void {
  if (!Number.isSafeInteger(o.guest) || o.guest <= 0 || o.guest % (2 * MiB) !== 0) {
    throw new KernelError(Errno.EINVAL, `--guest ${o.guest} is not a positive multiple of 2 MiB (guest memory is held in 2 MiB folios)`);
  }
  if (o.guest + 2 * GiB > o.ram) throw new KernelError(Errno.EINVAL, `--guest ${formatBytes(o.guest)} does not fit --ram ${formatBytes(o.ram)} (wanted at least 2 GiB more RAM than guest)`);
}

export function vmmCmdline(o: VmmOptions): string {
  return `liveupdate=on transparent_hugepage_shmem=always ${o.cmdline}`.trim();
}

export function patternOf(o: Pick<VmmOptions, 'seed' | 'fill'>): SeededPages {
  return new SeededPages(o.seed, o.fill === 'sparse' ? 2 ** SHMEM_HUGE_ORDER : 1);
}

/** A session as the report lists it: its files with token, handler, size and folios. */
export interface VmmSessionReport {
  readonly name: string;
  readonly files: ReadonlyArray<{ token: string; handler: string; what: string; bytes: number; folios: number; record: string }>;
}

/** What the first kernel did, up to the jump. */
export interface VmmFirstHalf {
  readonly guestBytes: number;
  readonly guestFolios: number;
  readonly folioOrders: Record<string, number>;
  readonly deviceStateBytes: number;
  readonly pattern: string;
  readonly sessions: readonly VmmSessionReport[];
  /** Milliseconds: boot, fill, preserve (PRESERVE_FD of both memfds), freeze (prepare), serialize, kexec (the jump). */
  readonly ms: Record<string, number>;
}

/** What the next kernel found. */
export interface VmmSecondHalf {
  readonly ok: boolean;
  readonly khoBoot: boolean;
  readonly revivalError?: string;
  readonly luoPanic?: string;
  readonly liveupdateNum: number;
  readonly guest: { readonly bytes: number; readonly folios: number; readonly verified: boolean };
  readonly deviceState: { readonly bytes: number; readonly verified: boolean };
  readonly sessions: readonly VmmSessionReport[];
  /** Milliseconds: boot (its phases in boot.*), open, retrieve-session, retrieve-fds, verify, finish. */
  readonly ms: Record<string, number>;
  readonly unrestoredBlocks: number;
  readonly freePagesAfterFinish: number;
  readonly freePagesColdBoot: number;
  readonly errors: readonly string[];
}

/** The blackout, freeze to retrieve complete, by phase. */
export interface Blackout {
  readonly phases: Record<string, number>;
  readonly totalMs: number;
}

export interface VmmReport {
  readonly ok: boolean;
  readonly options: VmmOptions;
  readonly first: VmmFirstHalf;
  readonly second: VmmSecondHalf;
  readonly blackout: Blackout;
}

/** Observers of a run: the machine's bus (reports hear memory pictures and phases there) and the fill/verify loops. */
export interface VmmHooks {
  /** Called with the machine's bus before the first boot. */
  observe?(bus: MachineBus): void;
  progress?(step: string, done: number, total: number): void;
}

function time<T>(ms: Record<string, number>, name: string, body: () => T): T {
  const t0 = performance.now();
  try {
    return body();
  } finally {
    ms[name] = Math.round((performance.now() - t0) * 1000) / 1000;
  }
}

function sessionsOf(status: LiveupdateStatus, incoming: boolean, describe: (token: string) => { what: string; bytes: number; folios: number }): VmmSessionReport[] {
  return (incoming ? status.incoming : status.outgoing).map((s) => ({
    name: s.name,
    files: s.files.map((f) => ({ token: f.token, handler: f.handler, record: f.data, ...describe(f.token) })),
  }));
}

/**
 * The VMM's first kernel: the guest's memory as a memfd of 2 MiB folios filled with the pattern, a small device
 * state memfd, both preserved in session `vm0` (the VMM keeps its fds, as upstream's selftest daemon does), then
 * the kexec's freeze (prepare), serialize and the jump. The machine is left halted with the boot parameters.
 */
export function runVmmFirst(o: VmmOptions, machine?: Machine, hooks: VmmHooks = {}): { machine: Machine; params: BootParams; first: VmmFirstHalf } {
  checkVmmOptions(o);
  const ms: Record<string, number> = {};
  const m = machine ?? machineFor({ ram: o.ram, nodes: o.nodes });
  hooks.observe?.(m.bus);
  const k = time(ms, 'boot', () => m.boot({ image: kernelImage(undefined, { tracker: o.tracker }), cmdline: vmmCmdline(o) }));
  const luo = k.get(Liveupdate);
  if (!luo.isEnabled()) throw new KernelError(Errno.EOPNOTSUPP, `live update is not enabled in the first kernel (${k.log.filter('warn', 'luo').map((l) => l.message).join('; ') || 'see the log'})`);
  const fs = k.get(MemfdFs);
  const vmm = k.get(Vfs).spawn('vmm');
  const pattern = patternOf(o);
  const guest = fs.memfdCreate(vmm, 'guest-ram');
  time(ms, 'fill', () => {
    vmm.ftruncate(guest, o.guest);
    const map = vmm.mmap(guest);
    const pages = o.guest / PAGE_SIZE;
    for (let i = 0; i < pages; i++) {
      if (pattern.carries(i)) pattern.fillPage(map.page(i), i);
      if ((i & 0x3fff) === 0) hooks.progress?.('fill guest memory', i * PAGE_SIZE, o.guest);
    }
    map.unmap();
  });
  const dev = fs.memfdCreate(vmm, 'device-state');
  vmm.write(dev, deviceState(o.seed));
  const lu = luoOpenDevice(vmm);
  time(ms, 'preserve', () => {
    const session = luoCreateSession(vmm, lu, VMM_SESSION);
    luoPreserveFd(vmm, session, guest, GUEST_TOKEN);
    luoPreserveFd(vmm, session, dev, DEVICE_TOKEN);
  });
  const inode = fs.inodeOf(fileOf(vmm, guest));
  const orders: Record<string, number> = {};
  for (const f of inode.folios.values()) orders[f.order] = (orders[f.order] ?? 0) + 1;
  const describe = (token: string) =>
    token === `0x${GUEST_TOKEN.toString(16)}`
      ? { what: 'guest memory (memfd)', bytes: o.guest, folios: inode.folios.size }
      : { what: 'device state (memfd)', bytes: DEVICE_STATE_SIZE, folios: fs.inodeOf(fileOf(vmm, dev)).folios.size };
  const sessions = sessionsOf(luo.status(), false, describe);
  hooks.progress?.('freeze and kexec', o.guest, o.guest);
  time(ms, 'freeze', () => k.prepare());
  time(ms, 'serialize', () => k.serialize());
  const params = time(ms, 'kexec', () => k.jump());
  return {
    machine: m,
    params,
    first: { guestBytes: o.guest, guestFolios: inode.folios.size, folioOrders: orders, deviceStateBytes: DEVICE_STATE_SIZE, pattern: pattern.name, sessions, ms },
  };
}

/** The file behind `fd` (its reference dropped again: the fd keeps it). */
function fileOf(p: Process, fd: number) {
  const f = p.fget(fd);
  f.put();
  return f;
}

/** The device state: a header line, then seeded bytes. */
export function deviceState(seed: number): Uint8Array {
  const out = new Uint8Array(DEVICE_STATE_SIZE);
  const head = new TextEncoder().encode(`kho-lab vmm device state v1 seed ${seed}\n`);
  out.set(head);
  const p = new SeededPages(seed ^ 0x5a5a5a5a);
  const page = new Uint8Array(PAGE_SIZE);
  for (let off = head.length, i = 0; off < out.length; i++) {
    p.fillPage(page, i);
    const n = Math.min(PAGE_SIZE, out.length - off);
    out.set(page.subarray(0, n), off);
    off += n;
  }
  return out;
}

/**
 * The next kernel: boots from `params`, the VMM reopens /dev/liveupdate, retrieves `vm0` and both memfds (the
 * blackout ends here), checks every byte of guest memory and device state, finishes the session, exits; then the
 * kernel's restore and finish run and the idle pages (free and tracker metadata) are compared with a cold boot's.
 */
export function runVmmSecond(machine: Machine, params: BootParams, o: VmmOptions, ranges: readonly RamRange[], hooks: VmmHooks = {}): VmmSecondHalf {
  const ms: Record<string, number> = {};
  const errors: string[] = [];
  // the boot phases' times, heard on the bus
  const bootPhases = new Map<Phase, number>();
  const onPhase = (e: PhaseEndEvent): void => {
    bootPhases.set(e.phase, (bootPhases.get(e.phase) ?? 0) + e.ms);
  };
  machine.bus.on('phase:end', onPhase);
  let k: Kernel;
  try {
    k = time(ms, 'boot', () => machine.bootFrom(params, { image: kernelImage(undefined, { tracker: o.tracker }) }));
  } finally {
    machine.bus.off('phase:end', onPhase);
  }
  for (const [name, phase] of [['boot.early', Phase.BootEarly], ['boot.mm', Phase.BootMm], ['boot.late', Phase.BootLate]] as const) ms[name] = Math.round((bootPhases.get(phase) ?? 0) * 1000) / 1000;
  const kho = k.get(Kho);
  const luo = k.get(Liveupdate);
  const status0 = luo.status();
  const vmm = k.get(Vfs).spawn('vmm');
  const pattern = patternOf(o);
  let guestFolios = 0;
  let guestOk = false;
  let devOk = false;
  let sessions: VmmSessionReport[] = [];
  try {
    const lu = time(ms, 'open', () => luoOpenDevice(vmm));
    const session = time(ms, 'retrieve-session', () => luoRetrieveSession(vmm, lu, VMM_SESSION));
    const [guest, dev] = time(ms, 'retrieve-fds', () => [luoRetrieveFd(vmm, session, GUEST_TOKEN), luoRetrieveFd(vmm, session, DEVICE_TOKEN)]);
    const fs = k.get(MemfdFs);
    const inode = fs.inodeOf(fileOf(vmm, guest));
    guestFolios = inode.folios.size;
    sessions = sessionsOf(luo.status(), true, (token) =>
      token === `0x${GUEST_TOKEN.toString(16)}`
        ? { what: 'guest memory (memfd)', bytes: inode.size, folios: inode.folios.size }
        : { what: 'device state (memfd)', bytes: vmm.fsize(dev), folios: fs.inodeOf(fileOf(vmm, dev)).folios.size },
    );
    time(ms, 'verify', () => {
      const size = vmm.fsize(guest);
      if (size !== o.guest) errors.push(`guest memory is ${size} bytes (wanted ${o.guest})`);
      // Page by page through the page cache: a page never written reads as zero without costing host memory.
      const ram = k.get(PhysicalMemory);
      let bad = 0;
      let pages = 0;
      for (const [index, folio] of [...inode.folios].sort((a, b) => a[0] - b[0])) {
        for (let j = 0; j < folio.nrPages; j++) {
          const at = pattern.checkPage(ram.pageIfPresent(folio.pfn + j), index + j);
          if (at >= 0 && bad++ < 3) errors.push(`guest memory byte ${(index + j) * PAGE_SIZE + at} differs from what the VMM wrote`);
          pages++;
        }
        if ((index & 0x3fff) === 0) hooks.progress?.('verify guest memory', index * PAGE_SIZE, o.guest);
      }
      if (pages !== size / PAGE_SIZE) errors.push(`guest memory has ${pages} pages in its folios (wanted ${size / PAGE_SIZE})`);
      guestOk = bad === 0 && size === o.guest;
      const want = deviceState(o.seed);
      const got = vmm.pread(dev, 0, DEVICE_STATE_SIZE + 1);
      devOk = got.length === want.length && Buffer.from(got).equals(Buffer.from(want));
      if (!devOk) errors.push('the device state differs from what the VMM wrote');
    });
    time(ms, 'finish', () => luoSessionFinish(vmm, session));
  } catch (e) {
    errors.push(`the VMM could not take its guest back: ${describeError(e, { errno: true })}`);
  }
  vmm.exit();
  const restore = k.restore();
  for (const [name, r] of Object.entries(restore.plugins)) if (!r.ok) errors.push(`restore ${name}: ${r.error}`);
  const fin = k.finish();
  for (const [name, r] of Object.entries(fin.plugins)) if (!r.ok) errors.push(`finish ${name}: ${r.error}`);
  const unrestored = Number(fin.plugins.kho?.report?.unrestoredBlocks ?? 0);
  if (unrestored !== 0) errors.push(`${unrestored} preserved blocks were never restored`);
  const freePagesAfterFinish = idlePages(k);
  const freePagesColdBoot = coldFree(ranges, o, k.cmdline.text);
  if (errors.length === 0 && freePagesAfterFinish !== freePagesColdBoot) {
    errors.push(`free pages after finish ${freePagesAfterFinish}, a cold boot has ${freePagesColdBoot}: a leak of ${formatBytes((freePagesColdBoot - freePagesAfterFinish) * PAGE_SIZE)}`);
  }
  const stats = kho.stats();
  return {
    ok: errors.length === 0 && guestOk && devOk,
    khoBoot: stats.khoBoot,
    revivalError: stats.revivalError,
    luoPanic: status0.panic,
    liveupdateNum: status0.liveupdateNum - 1,
    guest: { bytes: o.guest, folios: guestFolios, verified: guestOk },
    deviceState: { bytes: DEVICE_STATE_SIZE, verified: devOk },
    sessions,
    ms,
    unrestoredBlocks: unrestored,
    freePagesAfterFinish,
    freePagesColdBoot,
    errors,
  };
}

function coldFree(ranges: readonly RamRange[], o: VmmOptions, cmdline: string): number {
  const m = machineFor({ ranges });
  const n = idlePages(m.boot({ image: kernelImage(undefined, { tracker: o.tracker }), cmdline }));
  m.shutdown();
  return n;
}

/** The blackout by phase: the first kernel's freeze, serialize and jump, the next kernel's boot and retrieval. */
export function blackoutOf(first: Record<string, number>, second: Record<string, number>): Blackout {
  const phases: Record<string, number> = {
    freeze: first.freeze ?? 0,
    serialize: first.serialize ?? 0,
    kexec: first.kexec ?? 0,
    boot: second.boot ?? 0,
    open: second.open ?? 0,
    'retrieve-session': second['retrieve-session'] ?? 0,
    'retrieve-fds': second['retrieve-fds'] ?? 0,
  };
  const totalMs = Math.round(Object.values(phases).reduce((a, b) => a + b, 0) * 1000) / 1000;
  return { phases, totalMs };
}

/** The whole VMM demo in one process. */
export function runVmm(o: VmmOptions, hooks: VmmHooks = {}): VmmReport {
  const { machine, params, first } = runVmmFirst(o, undefined, hooks);
  const second = runVmmSecond(machine, params, o, machine.device(PhysicalMemory).ranges, hooks);
  return { ok: second.ok, options: o, first, second, blackout: blackoutOf(first.ms, second.ms) };
}

/** What a guest pattern is, for tests that swap it. */
export type { GuestPattern };
