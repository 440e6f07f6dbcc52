import { Errno, KernelError, Phase, formatBytes, type BootParams, type Kernel, type Machine, type MachineBus, type PhaseEndEvent, type PluginDisabledEvent } from '@kho/kernel';
import { PhysicalMemory, type RamRange } from '@kho/physmem';
import { Kho, Tracker, type ScratchArea } from '@kho/kho-core';
import { idlePages, kernelImage, machineFor, type TrackerKind } from '../system';
import { type DemoFilesCheck, verifyDemoFiles, writeDemoFiles } from './files';
import { KHO_TEST_LOG_CMDLINE, KhoTest, type KhoTestRestore } from './kho-test';

/** Settings of `kho demo`, `kho kexec` and `kho boot`. */
export interface DemoOptions {
  /** Bytes of folios to preserve (default 256 MiB). */
  readonly mem: number;
  readonly seed: number;
  /** RAM of the machine (default 4 GiB). */
  readonly ram: number;
  readonly nodes: number;
  /** Kernel command line of both boots (default empty). */
  readonly cmdline: string;
  /** The preserved-memory tracker of the kernels (default 'radix'). */
  readonly tracker?: TrackerKind;
}

export const DEFAULT_DEMO: DemoOptions = { mem: 256 * 2 ** 20, seed: 1, ram: 4 * 2 ** 30, nodes: 1, cmdline: '' };

/**
 * Subscribes observers (reports, progress bars) to the bus of a run's machine before its first boot; every
 * observation then comes as events. Runs never call observers themselves.
 */
export type Observe = (bus: MachineBus) => void;

/** What the first kernel did, up to the jump. */
export interface FirstHalf {
  readonly machine: Machine;
  readonly params: BootParams;
  /** The first kernel's generation (the next one is one more). */
  readonly generation: number;
  /** Milliseconds per phase of the first kernel, heard on the machine's bus. */
  readonly phases: Readonly<Record<string, number>>;
  readonly folios: number;
  readonly bytesPreserved: number;
  /** Bytes written into the preserved memfd files. */
  readonly fileBytes: number;
  readonly blocksPreserved: number;
  /** The tracker that recorded the blocks, and the pages of its metadata at the jump. */
  readonly tracker: TrackerKind;
  readonly trackerPages: number;
  readonly scratch: readonly ScratchArea[];
  readonly ms: Record<string, number>;
}

/** What the second kernel found. */
export interface SecondHalf {
  readonly ok: boolean;
  /** The next kernel's generation: one more than the kernel that wrote the handover. */
  readonly generation: number;
  /** Milliseconds per phase of the next kernel, heard on the machine's bus. */
  readonly phases: Readonly<Record<string, number>>;
  readonly khoBoot: boolean;
  readonly revivalError?: string;
  readonly restore?: KhoTestRestore;
  readonly files?: DemoFilesCheck;
  readonly unrestoredBlocks: number;
  /** The handover's generation and, from kho-v3 on, the previous kernel's kexec-metadata. */
  readonly handover?: { readonly compatible: string; readonly previousRelease?: string; readonly kexecCount: number };
  readonly freePagesAfterFinish: number;
  readonly freePagesColdBoot: number;
  readonly errors: readonly string[];
  readonly ms: Record<string, number>;
}

export interface DemoReport {
  readonly ok: boolean;
  readonly seed: number;
  readonly mem: number;
  readonly ram: number;
  readonly first: Omit<FirstHalf, 'machine' | 'params'>;
  readonly second: SecondHalf;
}

/** Sums `phase:end` times per phase for one generation until `stop` (which unsubscribes and returns them). */
function phaseTimes(bus: MachineBus): { stop(generation: number): Record<string, number> } {
  const by = new Map<number, Record<string, number>>();
  const on = (e: PhaseEndEvent): void => {
    const t = by.get(e.generation) ?? {};
    t[e.phase] = (t[e.phase] ?? 0) + e.ms;
    by.set(e.generation, t);
  };
  bus.on('phase:end', on);
  return {
    stop(generation) {
      bus.off('phase:end', on);
      return Object.fromEntries(Object.entries(by.get(generation) ?? {}).map(([k, v]) => [k, round(v)]));
    },
  };
}

function time<T>(ms: Record<string, number>, name: string, body: () => T): T {
  const t0 = performance.now();
  try {
    return body();
  } finally {
    ms[name] = round(performance.now() - t0);
  }
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/**
 * Boots the first kernel, generates the test data, prepares, serializes and jumps. The machine is left halted.
 * Throws KernelError(EINVAL) when the first kernel cannot run KHO (e.g. `kho=off`, or scratch that does not fit).
 */
export function runFirstHalf(opts: DemoOptions, machine?: Machine, observe?: Observe): FirstHalf {
  const ms: Record<string, number> = {};
  const m = machine ?? machineFor({ ram: opts.ram, nodes: opts.nodes });
  const phases = phaseTimes(m.bus);
  observe?.(m.bus);
  const image = kernelImage({ mem: opts.mem, seed: opts.seed }, { tracker: opts.tracker });
  // The self-test keeps a log in a reserve_mem region that survives every update.
  const cmdline = `${KHO_TEST_LOG_CMDLINE} ${opts.cmdline}`.trim();
  const k1 = time(ms, 'boot', () => m.boot({ image, cmdline }));
  const kho = k1.get(Kho);
  if (!kho.isEnabled()) {
    if (!k1.cmdline.getBool('kho', true)) throw new KernelError(Errno.EINVAL, `the command line '${cmdline}' has kho=off: nothing can be preserved (wanted kho=on, or no kho=)`);
    const why = k1.log.filter('error', 'kho')[0]?.message ?? 'KHO disabled itself';
    // the kernel's own reason says what it wanted when it knows (a kho_abi its tracker cannot write); otherwise
    // KHO gave up placing its scratch areas
    const wanted = /\(wanted [^)]*\)/.test(why) ? '' : ' (wanted more RAM, or smaller scratch areas with kho_scratch= on the command line)';
    throw new KernelError(Errno.EINVAL, `the first kernel cannot run KHO: ${why}${wanted}`);
  }
  const test = k1.get(KhoTest);
  const gen = time(ms, 'generate', () => test.generate());
  // The data work inside generate: filling the folios and checksumming them (the rest is allocation).
  ms['generate.data'] = round(gen.dataMs);
  const fileBytes = time(ms, 'files', () => writeDemoFiles(k1, opts.seed));
  time(ms, 'prepare', () => k1.prepare());
  time(ms, 'serialize', () => k1.serialize());
  const stats = k1.get<Tracker>(Tracker).stats();
  const scratch = kho.scratchAreas();
  const params = time(ms, 'kexec', () => k1.jump());
  return {
    machine: m,
    params,
    generation: k1.generation,
    phases: phases.stop(k1.generation),
    folios: gen.folios,
    bytesPreserved: gen.bytes,
    fileBytes,
    blocksPreserved: stats.blocks,
    tracker: opts.tracker ?? 'radix',
    trackerPages: stats.metadataPages,
    scratch,
    ms,
  };
}

/**
 * Boots the next kernel on a halted machine from `params`, restores and verifies the self-test's folios,
 * finishes (freeing everything), and compares the free-page count with a cold boot of the same machine.
 */
export function runSecondHalf(machine: Machine, params: BootParams, opts: DemoOptions, ranges: readonly RamRange[], generation?: number): SecondHalf {
  const ms: Record<string, number> = {};
  const errors: string[] = [];
  const image = kernelImage({ mem: opts.mem, seed: opts.seed }, { tracker: opts.tracker });
  // the walk of the handover is what boot:early and boot:mm do: timed from the bus
  let walk = 0;
  const onPhase = (e: PhaseEndEvent): void => {
    if (e.phase === Phase.BootEarly || e.phase === Phase.BootMm) walk += e.ms;
  };
  // a plugin the next kernel had to disable at boot is an error of the run, heard on the bus
  const onDisabled = (e: PluginDisabledEvent): void => void errors.push(`boot: plugin '${e.plugin}' disabled: ${e.reason}`);
  const phases = phaseTimes(machine.bus);
  machine.bus.on('phase:end', onPhase);
  machine.bus.on('plugin:disabled', onDisabled);
  let k2: Kernel;
  try {
    k2 = time(ms, 'boot', () => machine.bootFrom(params, { image, generation }));
  } finally {
    machine.bus.off('phase:end', onPhase);
    machine.bus.off('plugin:disabled', onDisabled);
  }
  ms['boot.walk'] = round(walk);
  const kho = k2.get(Kho);
  const test = k2.get(KhoTest);
  const restore = time(ms, 'restore', () => k2.restore());
  // The data work inside restore: reading every folio's bytes for the checksum.
  if (test.lastRestore) ms['restore.verify'] = round(test.lastRestore.verifyMs);
  for (const [name, o] of Object.entries(restore.plugins)) if (!o.ok) errors.push(`restore ${name}: ${o.error}`);
  const files = k2.get(Kho).isKhoBoot() ? verifyDemoFiles(k2, opts.seed) : undefined;
  for (const p of files?.problems ?? []) errors.push(`memfd ${p}`);
  const finish = time(ms, 'finish', () => k2.finish());
  for (const [name, o] of Object.entries(finish.plugins)) if (!o.ok) errors.push(`finish ${name}: ${o.error}`);
  const unrestoredBlocks = Number(finish.plugins.kho?.report?.unrestoredBlocks ?? 0);
  const freePagesAfterFinish = idlePages(k2);
  const stats = kho.stats();
  if (!stats.khoBoot) errors.push(`no handover was revived${stats.revivalError ? `: ${stats.revivalError}` : ''}`);
  else if (!test.lastRestore) errors.push('the previous kernel left no kho_test subtree');
  if (unrestoredBlocks > 0) errors.push(`${unrestoredBlocks} preserved blocks were never restored`);
  const freePagesColdBoot = coldBootFreePages(ranges, opts, k2.cmdline.text);
  if (errors.length === 0 && freePagesAfterFinish !== freePagesColdBoot) {
    errors.push(`free pages after finish ${freePagesAfterFinish} differ from a cold boot's ${freePagesColdBoot} (leak of ${formatBytes((freePagesColdBoot - freePagesAfterFinish) * 4096)})`);
  }
  return {
    ok: errors.length === 0 && test.lastRestore?.verified === true && files?.verified === true,
    generation: k2.generation,
    phases: phases.stop(k2.generation),
    khoBoot: stats.khoBoot,
    revivalError: stats.revivalError,
    restore: test.lastRestore,
    files,
    unrestoredBlocks,
    ...(stats.incomingCompatible ? { handover: { compatible: stats.incomingCompatible, previousRelease: stats.previousRelease, kexecCount: stats.kexecCount } } : {}),
    freePagesAfterFinish,
    freePagesColdBoot,
    errors,
    ms,
  };
}

/** Free pages of a cold boot of a machine with the same RAM map and exactly this command line (the leak baseline). */
export function coldBootFreePages(ranges: readonly RamRange[], opts: DemoOptions, cmdline = opts.cmdline): number {
  const m = machineFor({ ranges });
  const k = m.boot({ image: kernelImage({ mem: opts.mem, seed: opts.seed }, { tracker: opts.tracker }), cmdline });
  const free = idlePages(k);
  m.shutdown();
  return free;
}

/** The whole demo in one process: first kernel, kexec, second kernel. `observe` subscribes to the machine's bus. */
export function runDemo(opts: DemoOptions, observe?: Observe): DemoReport {
  const first = runFirstHalf(opts, undefined, observe);
  const ranges = first.machine.device(PhysicalMemory).ranges;
  const second = runSecondHalf(first.machine, first.params, opts, ranges);
  const { machine: _m, params: _p, ...firstReport } = first;
  return { ok: second.ok, seed: opts.seed, mem: opts.mem, ram: opts.ram, first: firstReport, second };
}
