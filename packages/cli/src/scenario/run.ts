import { formatBytes, type Kernel, type KernelModule } from '@kho/kernel';
import { BuddyAllocator, PhysicalMemory } from '@kho/physmem';
import { Kho, Tracker } from '@kho/kho-core';
import { KhoTest } from '../demo/kho-test';
import { kernelImage, machineFor } from '../system';
import type { Scenario } from './schema';

/** What one generation did and what its successor found. */
export interface GenerationResult {
  readonly generation: number;
  readonly preserved: { folios: number; bytes: number; blocks: number; trackerPages: number };
  /** Filled in when the next generation has restored this one's data. */
  restoredByNext: { folios: number; bytes: number; verified: boolean } | undefined;
  readonly ms: Record<string, number>;
  readonly errors: string[];
}

export interface ScenarioResult {
  readonly name: string;
  readonly ok: boolean;
  readonly generations: GenerationResult[];
  readonly freePagesAtEnd: number;
  readonly freePagesColdBoot: number;
  readonly errors: string[];
}

/** Observers (progress bars, reports). */
export interface ScenarioHooks {
  /** Called as a generation advances, with what it is doing. */
  progress?(generation: number, label: string): void;
  /** The kernel of a generation just before its jump, and the next one after boot. */
  atJump?(kernel: Kernel, generation: number): void;
  afterBoot?(kernel: Kernel, generation: number): void;
}

function imageFor(s: Scenario, gen: number): KernelModule[] {
  const f = s.generations[gen - 1]?.preserve.folios;
  return kernelImage({ mem: f?.total ?? 0, seed: s.seed + gen - 1, minOrder: f?.minOrder, maxOrder: f?.maxOrder }, { tracker: s.tracker });
}

function cmdlineOf(s: Scenario, gen: number): string {
  // generation g's kernel was booted by generation g-1's kexec
  return gen === 1 ? s.cmdline : (s.generations[gen - 2].cmdline ?? s.cmdline);
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
 * preserved, frees it, preserves its own data and kexecs; the last kernel restores, verifies and frees, and the
 * free-page count must equal a cold boot's. Never throws for a failed verification: it is in the result.
 */
export function runScenario(s: Scenario, hooks: ScenarioHooks = {}): ScenarioResult {
  const machine = machineFor({ ram: s.machine.ram, nodes: s.machine.nodes, ranges: s.machine.ranges });
  const baselines = new Map<string, number>();
  const coldFree = (cmdline: string, gen: number): number => {
    const key = `${cmdline}\u0000${s.tracker}`;
    if (!baselines.has(key)) {
      const m = machineFor({ ranges: machine.device(PhysicalMemory).ranges });
      baselines.set(key, m.boot({ image: imageFor(s, gen), cmdline }).get(BuddyAllocator).nrFreePages);
      m.shutdown();
    }
    return baselines.get(key)!;
  };
  const results: GenerationResult[] = [];
  const errors: string[] = [];
  let kernel = machine.boot({ image: imageFor(s, 1), cmdline: s.cmdline });
  const n = s.generations.length;
  for (let gen = 1; gen <= n + 1; gen++) {
    const ms: Record<string, number> = {};
    const genErrors: string[] = [];
    const k = kernel;
    if (gen > 1) {
      hooks.afterBoot?.(k, gen);
      hooks.progress?.(gen, 'restore');
      const restore = time(ms, 'restore', () => k.restore());
      for (const [name, o] of Object.entries(restore.plugins)) if (!o.ok) genErrors.push(`generation ${gen} restore ${name}: ${o.error}`);
      const kho = k.get(Kho);
      if (!kho.isKhoBoot()) genErrors.push(`generation ${gen} did not boot from the handover: ${kho.stats().revivalError ?? 'KHO disabled'}`);
      const test = k.get(KhoTest);
      const prev = results[gen - 2];
      const r = test.lastRestore;
      prev.restoredByNext = r ? { folios: r.folios, bytes: r.bytes, verified: r.verified } : undefined;
      if (prev.preserved.folios > 0 && !r?.verified) genErrors.push(`generation ${gen} could not verify generation ${gen - 1}'s folios`);
      const finish = time(ms, 'finish', () => k.finish());
      for (const [name, o] of Object.entries(finish.plugins)) if (!o.ok) genErrors.push(`generation ${gen} finish ${name}: ${o.error}`);
      const unrestored = Number(finish.plugins.kho?.report?.unrestoredBlocks ?? 0);
      if (unrestored > 0) genErrors.push(`generation ${gen}: ${unrestored} preserved blocks were never restored`);
      // Everything handed over is restored and freed again: the kernel must be back to a cold boot's count,
      // tracker pages of earlier generations included.
      const free = k.get(BuddyAllocator).nrFreePages;
      const baseline = coldFree(cmdlineOf(s, gen), gen);
      if (free !== baseline) genErrors.push(`generation ${gen}: ${free} free pages after finish, a cold boot has ${baseline}`);
    }
    if (gen > n) {
      errors.push(...genErrors);
      break;
    }
    const test = k.get(KhoTest);
    const spec = s.generations[gen - 1].preserve.folios;
    let gened = { folios: 0, bytes: 0 };
    if (spec) gened = time(ms, 'generate', () => test.generate((b) => hooks.progress?.(gen, `generate ${formatBytes(b)}`)));
    hooks.progress?.(gen, 'prepare');
    try {
      time(ms, 'prepare', () => k.prepare());
      time(ms, 'serialize', () => k.serialize());
    } catch (e) {
      genErrors.push(`generation ${gen}: ${e instanceof Error ? e.message : String(e)}`);
      errors.push(...genErrors);
      results.push({ generation: gen, preserved: { ...gened, blocks: 0, trackerPages: 0 }, restoredByNext: undefined, ms, errors: genErrors });
      break;
    }
    const stats = k.get<Tracker>(Tracker).stats();
    hooks.atJump?.(k, gen);
    results.push({
      generation: gen,
      preserved: { ...gened, blocks: stats.blocks, trackerPages: stats.metadataPages },
      restoredByNext: undefined,
      ms,
      errors: genErrors,
    });
    errors.push(...genErrors);
    hooks.progress?.(gen, 'kexec');
    kernel = time(ms, 'kexec', () => k.kexec({ image: imageFor(s, gen + 1), cmdline: cmdlineOf(s, gen + 1) }));
  }
  const freePagesAtEnd = kernel.isDead ? -1 : kernel.get(BuddyAllocator).nrFreePages;
  const cold = machineFor({ ranges: machine.device(PhysicalMemory).ranges });
  const coldKernel = cold.boot({ image: imageFor(s, n + 1), cmdline: cmdlineOf(s, n + 1) });
  const freePagesColdBoot = coldKernel.get(BuddyAllocator).nrFreePages;
  cold.shutdown();
  if (errors.length === 0 && freePagesAtEnd !== freePagesColdBoot) {
    errors.push(`free pages at the end ${freePagesAtEnd} differ from a cold boot's ${freePagesColdBoot}`);
  }
  return { name: s.name ?? 'scenario', ok: errors.length === 0, generations: results, freePagesAtEnd, freePagesColdBoot, errors };
}
