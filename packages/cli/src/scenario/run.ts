import { BOOT_PHASES, Errno, KernelError, formatSizeExact, isKernelError, type KernelModule, type PhaseEndEvent, type PluginDisabledEvent, describeError } from '@kho/kernel';
import { PhysicalMemory } from '@kho/physmem';
import { Kho, Tracker } from '@kho/kho-core';
import { KhoTest } from '../demo/kho-test';
import type { Observe } from '../demo/run';
import { idlePages, kernelImage, machineFor } from '../system';
import { regionsOf, type Scenario } from './schema';
import { ScenarioWorkload, scenarioWorkloadModule, type ScenarioWorkloadConfig, type WorkloadCheck, type WorkloadPreserved, type WorkloadRestore } from './workload';
import { testFileModule } from '@kho/liveupdate/testing';
import { makeLuo, prepareWithInjection, verifyLuo, type LuoMade, type LuoVerified } from './luo';
import { GuestMemory, guestMemoryModule, type GuestsCheck, type GuestsPreserved } from './guests';

/** What the next kernel verified of a generation's workloads (counts are of items verified). */
export interface WorkloadsVerified {
  readonly vmalloc: { readonly areas: number; readonly bytes: number; readonly verified: boolean };
  readonly reserveMem: { readonly regions: number; readonly bytes: number; readonly verified: boolean };
  /** Objects restored by key and verified field by field; the fields kstate's RestoreReports list. */
  readonly kstate: { readonly objects: number; readonly fieldsRestored: number; readonly fieldsDefaulted: number; readonly verified: boolean };
  readonly memfd: { readonly files: number; readonly bytes: number; readonly verified: boolean };
  /** Guests restored folio by folio, their stamps compared, their memory otherwise unwritten. */
  readonly guests: { readonly guests: number; readonly folios: number; readonly bytes: number; readonly stamps: number; readonly verified: boolean };
}

/** What one generation did and what its successor found. */
export interface GenerationResult {
  readonly generation: number;
  /** The self-test's folios, the tracker's figures at the jump, and what each workload handed over. */
  readonly preserved: { folios: number; bytes: number; blocks: number; trackerPages: number } & WorkloadPreserved & { guests: GuestsPreserved };
  /** Filled in when the next generation has restored this one's folios. */
  restoredByNext: { folios: number; bytes: number; verified: boolean } | undefined;
  /** Filled in when the next generation has verified this one's workloads. */
  verifiedByNext: WorkloadsVerified | undefined;
  /** LUO: what this generation's process preserved through /dev/liveupdate, and what the next one retrieved. */
  luo?: LuoMade;
  luoVerifiedByNext?: LuoVerified;
  readonly ms: Record<string, number>;
  readonly errors: string[];
  /** Milliseconds per phase of this generation's kernel, heard on the machine's bus (boot to kexec). */
  readonly phases?: Readonly<Record<string, number>>;
  /** Free pages after this generation restored and finished what the previous one handed over (not for the first). */
  readonly freePages?: { readonly afterFinish: number; readonly coldBoot: number };
}

export interface ScenarioResult {
  readonly name: string;
  readonly ok: boolean;
  readonly generations: GenerationResult[];
  readonly freePagesAtEnd: number;
  readonly freePagesColdBoot: number;
  /** The last kernel's view of the chain, from kexec-metadata (kho-v3 and later): the previous release and the count. */
  readonly lastKernel?: { readonly compatible?: string; readonly previousRelease?: string; readonly kexecCount: number };
  readonly errors: string[];
}

/** How to run a scenario beyond the scenario itself. */
export interface ScenarioOptions {
  /** Subscribes observers (progress, reports, timings) to the machine's bus before the first boot. */
  readonly observe?: Observe;
  /**
   * Extra modules for generation `gen`'s kernel image: plugins that act inside the kernel in phase order (tests
   * use them to damage a handover at the jump, or to leak a page in a given generation).
   */
  readonly modules?: (gen: number) => readonly KernelModule[];
}

/** What generation `gen`'s kernel makes of the workloads (nothing for the last kernel and cold boots of it). */
function workloadConfig(s: Scenario, gen: number): ScenarioWorkloadConfig {
  const p = s.generations[gen - 1]?.preserve;
  return { generation: gen, seed: (s.seed + gen - 1) >>> 0, vmalloc: p?.vmalloc ?? [], reserveMem: p?.reserveMem ?? [], kstate: p?.kstate, memfd: p?.memfd ?? [] };
}

function imageFor(s: Scenario, gen: number, extra: ScenarioOptions['modules']): KernelModule[] {
  const p = s.generations[gen - 1]?.preserve;
  const f = p?.folios;
  const image = kernelImage({ mem: f?.total ?? 0, seed: s.seed + gen - 1, minOrder: f?.minOrder, maxOrder: f?.maxOrder }, { tracker: s.tracker });
  return [
    ...image,
    scenarioWorkloadModule(workloadConfig(s, gen)),
    guestMemoryModule({ generation: gen, seed: (s.seed + gen - 1) >>> 0, guests: p?.guests ?? [] }),
    // LUO scenarios inject failures through the test file handler of @kho/liveupdate/testing.
    ...(usesLuo(s) ? [testFileModule()] : []),
    ...(extra?.(gen) ?? []),
  ];
}

/** True when a generation of `s` has LUO steps: then every kernel of the chain runs with liveupdate=on. */
function usesLuo(s: Scenario): boolean {
  return s.generations.some((g) => g.luo !== undefined);
}

/**
 * The command line of generation `gen`'s kernel (booted by generation gen-1's kexec; the first boots cold): the
 * scenario's or the previous generation's `cmdline`, then a `reserve_mem=` for every region declared so far
 * (a region, once declared, stays on every later command line: see regionsOf).
 */
export function cmdlineOf(s: Scenario, gen: number): string {
  const base = gen === 1 ? s.cmdline : (s.generations[gen - 2].cmdline ?? s.cmdline);
  const regions = regionsOf(s, gen).map((r) => `reserve_mem=${formatSizeExact(r.size)}:${formatSizeExact(r.align)}:${r.name}`);
  return [base.trim(), ...regions, ...(usesLuo(s) ? ['liveupdate=on'] : [])].filter((x) => x.length > 0).join(' ');
}

const NOTHING: WorkloadPreserved = {
  vmalloc: { areas: 0, bytes: 0 },
  reserveMem: { regions: 0, bytes: 0, carried: 0 },
  kstate: { objects: 0, bytes: 0 },
  memfd: { files: 0, bytes: 0 },
};
const NO_GUESTS: GuestsPreserved = { guests: 0, folios: 0, bytes: 0 };

/**
 * Compares what generation `gen - 1` handed over (`sent`) with what generation `gen` verified (`got`, from the
 * handover state alone), pushing an error for every workload that does not verify.
 */
function checkWorkloads(gen: number, sent: WorkloadPreserved & { guests: GuestsPreserved }, got: WorkloadRestore | undefined, guests: GuestsCheck | undefined, errors: string[]): WorkloadsVerified {
  const prev = gen - 1;
  const one = (count: number, label: string, check: WorkloadCheck | undefined): boolean => {
    if (!check) {
      if (count > 0) errors.push(`generation ${gen} could not verify generation ${prev}'s ${count} ${label}: no workload state came back`);
      return count === 0;
    }
    for (const p of check.problems) errors.push(`generation ${gen} could not verify generation ${prev}'s ${p}`);
    if (check.listed !== count) errors.push(`generation ${gen} found ${check.listed} ${label} in generation ${prev}'s state (it handed over ${count})`);
    return check.problems.length === 0 && check.listed === count && check.verified === count;
  };
  if (got && got.writtenBy !== prev) errors.push(`generation ${gen} found a workload state written by generation ${got.writtenBy} (wanted ${prev})`);
  return {
    vmalloc: { areas: got?.vmalloc.verified ?? 0, bytes: got?.vmalloc.bytes ?? 0, verified: one(sent.vmalloc.areas, 'vmalloc areas', got?.vmalloc) },
    reserveMem: { regions: got?.reserveMem.verified ?? 0, bytes: got?.reserveMem.bytes ?? 0, verified: one(sent.reserveMem.regions, 'reserve_mem regions', got?.reserveMem) },
    kstate: {
      objects: got?.kstate.verified ?? 0,
      fieldsRestored: got?.kstate.fieldsRestored ?? 0,
      fieldsDefaulted: got?.kstate.fieldsDefaulted ?? 0,
      verified: one(sent.kstate.objects, 'kstate objects', got?.kstate),
    },
    memfd: { files: got?.memfd.verified ?? 0, bytes: got?.memfd.bytes ?? 0, verified: one(sent.memfd.files, 'memfd files', got?.memfd) },
    guests: {
      guests: guests?.verified ?? 0,
      folios: guests?.folios ?? 0,
      bytes: guests?.bytes ?? 0,
      stamps: guests?.stamps ?? 0,
      verified: one(sent.guests.guests, 'guests', guests) && (guests?.folios ?? 0) === sent.guests.folios,
    },
  };
}

function time<T>(ms: Record<string, number>, name: string, body: () => T): T {
  const t0 = performance.now();
  try {
    return body();
  } finally {
    ms[name] = Math.round((performance.now() - t0) * 1000) / 1000;
  }
}

/**
 * Runs a scenario: boots the machine, and for every generation restores and verifies what the previous one
 * preserved (the self-test's folios through KhoTest, the workloads through ScenarioWorkload), frees it, makes and
 * preserves its own data and kexecs; the last kernel restores, verifies and frees. After every generation's
 * finish the free-page count must equal a cold boot's with the same command line. A plugin disabled at boot
 * (heard on the bus) is an error of its generation. Never throws for a failed verification: it is in the
 * result. Throws KernelError(ENOMEM) naming the generation when the scenario asks for more memory than the
 * machine has (bad input).
 */
export function runScenario(s: Scenario, opts: ScenarioOptions = {}): ScenarioResult {
  const machine = machineFor({ ram: s.machine.ram, nodes: s.machine.nodes, ranges: s.machine.ranges });
  const baselines = new Map<string, number>();
  const coldFree = (cmdline: string, gen: number): number => {
    const key = `${cmdline}\u0000${s.tracker}`;
    if (!baselines.has(key)) {
      const m = machineFor({ ranges: machine.device(PhysicalMemory).ranges });
      baselines.set(key, idlePages(m.boot({ image: imageFor(s, gen, undefined), cmdline })));
      m.shutdown();
    }
    return baselines.get(key)!;
  };
  const results: GenerationResult[] = [];
  const errors: string[] = [];
  // plugins disabled while a kernel boots, by generation: the runner hears them on the bus
  const disabled = new Map<number, string[]>();
  machine.bus.on('plugin:disabled', (e: PluginDisabledEvent) => {
    disabled.set(e.generation, [...(disabled.get(e.generation) ?? []), `generation ${e.generation}: plugin '${e.plugin}' disabled at boot: ${e.reason}`]);
  });
  // every kernel phase's time, by generation, heard on the bus (the result's `phases`)
  const phases = new Map<number, Record<string, number>>();
  machine.bus.on('phase:end', (e: PhaseEndEvent) => {
    const t = phases.get(e.generation) ?? {};
    t[e.phase] = Math.round(((t[e.phase] ?? 0) + e.ms) * 1000) / 1000;
    phases.set(e.generation, t);
  });
  opts.observe?.(machine.bus);
  let kernel = machine.boot({ image: imageFor(s, 1, opts.modules), cmdline: cmdlineOf(s, 1) });
  const n = s.generations.length;
  for (let gen = 1; gen <= n + 1; gen++) {
    const ms: Record<string, number> = {};
    const genErrors: string[] = [...(disabled.get(gen) ?? [])];
    const k = kernel;
    let freePages: GenerationResult['freePages'];
    if (gen > 1) {
      const restore = time(ms, 'restore', () => k.restore());
      for (const [name, o] of Object.entries(restore.plugins)) if (!o.ok) genErrors.push(`generation ${gen} restore ${name}: ${o.error}`);
      const kho = k.get(Kho);
      if (!kho.isKhoBoot()) genErrors.push(`generation ${gen} did not boot from the handover: ${kho.stats().revivalError ?? 'KHO disabled'}`);
      const test = k.get(KhoTest);
      const prev = results[gen - 2];
      const r = test.lastRestore;
      prev.restoredByNext = r ? { folios: r.folios, bytes: r.bytes, verified: r.verified } : undefined;
      if (prev.preserved.folios > 0 && !r?.verified) genErrors.push(`generation ${gen} could not verify generation ${gen - 1}'s folios`);
      const guests = k.get(GuestMemory).lastRestore;
      if (guests && guests.folios !== prev.preserved.guests.folios) genErrors.push(`generation ${gen} restored ${guests.folios} guest folios (generation ${gen - 1} handed over ${prev.preserved.guests.folios})`);
      prev.verifiedByNext = checkWorkloads(gen, prev.preserved, k.get(ScenarioWorkload).lastRestore, guests, genErrors);
      if (usesLuo(s)) {
        const v = time(ms, 'luo-verify', () => verifyLuo(k, s.generations[gen - 1]?.luo, gen, genErrors));
        if (prev.luo) {
          prev.luoVerifiedByNext = v;
          if (!v) genErrors.push(`generation ${gen} found no LUO state session (generation ${gen - 1} preserved ${prev.luo.sessions} sessions)`);
          else if (v.sessions !== prev.luo.sessions) genErrors.push(`generation ${gen} found ${v.sessions} LUO sessions (generation ${gen - 1} preserved ${prev.luo.sessions})`);
        }
      }
      const finish = time(ms, 'finish', () => k.finish());
      // The live update's other half, with the one that started it: the next kernel's restore and finish.
      prev.ms['next.restore'] = ms.restore;
      prev.ms['next.finish'] = ms.finish;
      for (const [name, o] of Object.entries(finish.plugins)) if (!o.ok) genErrors.push(`generation ${gen} finish ${name}: ${o.error}`);
      const unrestored = Number(finish.plugins.kho?.report?.unrestoredBlocks ?? 0);
      if (unrestored > 0) genErrors.push(`generation ${gen}: ${unrestored} preserved blocks were never restored`);
      // Everything handed over is restored and freed again: the kernel must be back to a cold boot's count,
      // tracker pages of earlier generations included.
      const free = idlePages(k);
      const baseline = coldFree(cmdlineOf(s, gen), gen);
      freePages = { afterFinish: free, coldBoot: baseline };
      if (free !== baseline) genErrors.push(`generation ${gen}: ${free} free pages (tracker pages counted as free) after finish, a cold boot has ${baseline}`);
    }
    if (gen > n) {
      errors.push(...genErrors);
      break;
    }
    const test = k.get(KhoTest);
    const spec = s.generations[gen - 1].preserve.folios;
    let gened = { folios: 0, bytes: 0 };
    let made = NOTHING;
    let luoMade: LuoMade | undefined;
    const luoCfg = s.generations[gen - 1].luo;
    let guests = NO_GUESTS;
    try {
      if (spec) gened = time(ms, 'generate', () => test.generate());
      made = time(ms, 'workloads', () => k.get(ScenarioWorkload).generate());
      if (s.generations[gen - 1].preserve.guests?.length) guests = time(ms, 'guests', () => k.get(GuestMemory).generate());
      if (luoCfg) luoMade = time(ms, 'luo', () => makeLuo(k, luoCfg, gen, (s.seed + gen - 1) >>> 0, genErrors));
    } catch (e) {
      if (isKernelError(e, Errno.ENOMEM)) {
        throw new KernelError(Errno.ENOMEM, `generation ${gen} asks for more memory than the machine has left (${e.reason}; wanted less to preserve, or more machine.ram)`, { cause: e });
      }
      throw e;
    }
    try {
      luoMade = time(ms, 'prepare', () => prepareWithInjection(k, luoCfg, gen, genErrors, luoMade, () => k.prepare()));
      time(ms, 'serialize', () => k.serialize());
    } catch (e) {
      genErrors.push(`generation ${gen}: ${describeError(e, { errno: true })}`);
      errors.push(...genErrors);
      results.push({ generation: gen, preserved: { ...gened, blocks: 0, trackerPages: 0, ...made, guests }, restoredByNext: undefined, verifiedByNext: undefined, luo: luoMade, ms, errors: genErrors, ...(freePages ? { freePages } : {}) });
      break;
    }
    const stats = k.get<Tracker>(Tracker).stats();
    results.push({
      generation: gen,
      preserved: { ...gened, blocks: stats.blocks, trackerPages: stats.metadataPages, ...made, guests },
      restoredByNext: undefined,
      verifiedByNext: undefined,
      luo: luoMade,
      ms,
      errors: genErrors,
      ...(freePages ? { freePages } : {}),
    });
    errors.push(...genErrors);
    kernel = time(ms, 'kexec', () => k.kexec({ image: imageFor(s, gen + 1, opts.modules), cmdline: cmdlineOf(s, gen + 1) }));
    // The next kernel's boot, inside the kexec: its boot phases as heard on the bus (the incoming walk is in boot:early and boot:mm).
    const next = phases.get(gen + 1) ?? {};
    ms['kexec.boot'] = Math.round(BOOT_PHASES.reduce((n, p) => n + (next[p] ?? 0), 0) * 1000) / 1000;
  }
  const freePagesAtEnd = kernel.isDead ? -1 : idlePages(kernel);
  const cold = machineFor({ ranges: machine.device(PhysicalMemory).ranges });
  const coldKernel = cold.boot({ image: imageFor(s, n + 1, undefined), cmdline: cmdlineOf(s, n + 1) });
  const freePagesColdBoot = idlePages(coldKernel);
  cold.shutdown();
  if (errors.length === 0 && freePagesAtEnd !== freePagesColdBoot) {
    errors.push(`free pages at the end ${freePagesAtEnd} differ from a cold boot's ${freePagesColdBoot}`);
  }
  const last = kernel.isDead ? undefined : kernel.get(Kho).stats();
  const lastKernel = last ? { compatible: last.incomingCompatible, previousRelease: last.previousRelease, kexecCount: last.kexecCount } : undefined;
  const generations = results.map((r) => ({ ...r, phases: phases.get(r.generation) ?? {} }));
  return { name: s.name ?? 'scenario', ok: errors.length === 0, generations, freePagesAtEnd, freePagesColdBoot, lastKernel, errors };
}
