import { Phase, formatBytes, type BootParams, type Kernel, type Machine } from '@kho/kernel';
import { BuddyAllocator, PhysicalMemory, type RamRange } from '@kho/physmem';
import { Kho, Tracker, type ScratchArea } from '@kho/kho-core';
import { kernelImage, machineFor, type TrackerKind } from '../system';
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

/** Observers of a run (reports use them to take memory-map snapshots). */
export interface RunHooks {
  /** The first kernel after serialize, just before the jump. */
  atJump?(kernel: Kernel): void;
  /** The next kernel after boot, before restore. */
  afterBoot?(kernel: Kernel): void;
  /** What the run is doing: a step, with `done` of `total` bytes for the long ones. */
  progress?(step: string, done: number, total: number): void;
}

/** What the first kernel did, up to the jump. */
export interface FirstHalf {
  readonly machine: Machine;
  readonly params: BootParams;
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
  readonly khoBoot: boolean;
  readonly revivalError?: string;
  readonly restore?: KhoTestRestore;
  readonly files?: DemoFilesCheck;
  readonly unrestoredBlocks: number;
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

/** Boots the first kernel, generates the test data, prepares, serializes and jumps. The machine is left halted. */
export function runFirstHalf(opts: DemoOptions, machine?: Machine, hooks: RunHooks = {}): FirstHalf {
  const ms: Record<string, number> = {};
  const m = machine ?? machineFor({ ram: opts.ram, nodes: opts.nodes });
  const image = kernelImage({ mem: opts.mem, seed: opts.seed }, { tracker: opts.tracker });
  // The self-test keeps a log in a reserve_mem region that survives every update.
  const k1 = time(ms, 'boot', () => m.boot({ image, cmdline: `${KHO_TEST_LOG_CMDLINE} ${opts.cmdline}`.trim() }));
  const kho = k1.get(Kho);
  if (!kho.isEnabled()) throw new Error(`KHO is not enabled in the first kernel (${k1.log.filter('error', 'kho').map((l) => l.message).join('; ') || 'kho=off'})`);
  const test = k1.get(KhoTest);
  const gen = time(ms, 'generate', () => test.generate((b) => hooks.progress?.('generate', b, opts.mem)));
  // The data work inside generate: filling the folios and checksumming them (the rest is allocation).
  ms['generate.data'] = round(gen.dataMs);
  hooks.progress?.('preserve', opts.mem, opts.mem);
  const fileBytes = time(ms, 'files', () => writeDemoFiles(k1, opts.seed));
  time(ms, 'prepare', () => k1.prepare());
  time(ms, 'serialize', () => k1.serialize());
  const stats = k1.get<Tracker>(Tracker).stats();
  const scratch = kho.scratchAreas();
  hooks.atJump?.(k1);
  const params = time(ms, 'kexec', () => k1.jump());
  return {
    machine: m,
    params,
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
export function runSecondHalf(
  machine: Machine,
  params: BootParams,
  opts: DemoOptions,
  ranges: readonly RamRange[],
  hooks: RunHooks = {},
): SecondHalf {
  const ms: Record<string, number> = {};
  const errors: string[] = [];
  const image = kernelImage({ mem: opts.mem, seed: opts.seed }, { tracker: opts.tracker });
  const k2: Kernel = time(ms, 'boot', () => machine.bootFrom(params, { image }));
  ms['boot.walk'] = round((k2.phaseMs.get(Phase.BootEarly) ?? 0) + (k2.phaseMs.get(Phase.BootMm) ?? 0));
  const kho = k2.get(Kho);
  const test = k2.get(KhoTest);
  hooks.afterBoot?.(k2);
  const restore = time(ms, 'restore', () => k2.restore());
  // The data work inside restore: reading every folio's bytes for the checksum.
  if (test.lastRestore) ms['restore.verify'] = round(test.lastRestore.verifyMs);
  for (const [name, o] of Object.entries(restore.plugins)) if (!o.ok) errors.push(`restore ${name}: ${o.error}`);
  const files = k2.get(Kho).isKhoBoot() ? verifyDemoFiles(k2, opts.seed) : undefined;
  for (const p of files?.problems ?? []) errors.push(`memfd ${p}`);
  const finish = time(ms, 'finish', () => k2.finish());
  for (const [name, o] of Object.entries(finish.plugins)) if (!o.ok) errors.push(`finish ${name}: ${o.error}`);
  const unrestoredBlocks = Number(finish.plugins.kho?.report?.unrestoredBlocks ?? 0);
  const freePagesAfterFinish = k2.get(BuddyAllocator).nrFreePages;
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
    khoBoot: stats.khoBoot,
    revivalError: stats.revivalError,
    restore: test.lastRestore,
    files,
    unrestoredBlocks,
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
  const free = k.get(BuddyAllocator).nrFreePages;
  m.shutdown();
  return free;
}

/** The whole demo in one process: first kernel, kexec, second kernel. */
export function runDemo(opts: DemoOptions, hooks: RunHooks = {}): DemoReport {
  const first = runFirstHalf(opts, undefined, hooks);
  const ranges = first.machine.device(PhysicalMemory).ranges;
  const second = runSecondHalf(first.machine, first.params, opts, ranges, hooks);
  const { machine: _m, params: _p, ...firstReport } = first;
  return { ok: second.ok, seed: opts.seed, mem: opts.mem, ram: opts.ram, first: firstReport, second };
}
