import { KernelBug, KernelInfo, describeError, findKernelError, type Kernel, type KernelModule, type Machine, type PluginErrorEvent, type PreservationEvent } from '@kho/kernel';
import { FaultInjector, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { Kho, Tracker } from '@kho/kho-core';
import { idlePages, machineFor } from '../system';
import { trackerDescriptor } from '../registry';

/*
 * Kexec at any moment (issue 16). Finalize-free KHO promises that the tracker is always a valid handover: "a
 * kexec may happen at any moment after KHO init". A path is a multi-step operation (the demo's prepare and
 * serialize, a subsystem preserving its objects, a LUO session being filled, a kho_block set growing); its
 * moments are the points between its steps, where a step is one page allocation (the FaultInjector's hook, which
 * the allocator calls first) or one edit of the tracker (a preserve or unpreserve, heard on the machine's bus).
 * Moment k is "just before the k-th allocation" or "just after the k-th tracker edit", whichever is the k-th
 * step; the last moment is "after the operation". Allocations cover every data structure being built (a radix
 * node, a kstate segment, a table page); tracker edits cover the handover itself.
 *
 * A sweep runs the path once to count its steps, then, for each moment, runs it again from a fresh machine and
 * jumps right there (`anyMoment`: only the kexec handlers run; nothing is prepared, serialized or cancelled).
 * The operation's own code is then abandoned, as it would be by a real kexec. The next kernel must:
 *  - boot, and revive the handover (a kho-v1 map exists only after serialize: before it, the revival must be
 *    refused and the next kernel boots cold);
 *  - take exactly the tracker's blocks at the jump as its incoming blocks: none more, none fewer;
 *  - have every subsystem either restore a consistent state (every restored byte verified, whole objects only)
 *    or refuse with a KernelError (one line); never a crash, never a KernelBug, never a plugin disabled;
 *  - after finish, leak nothing. Precisely: free pages + tracker pages + the pages of the preserved blocks that
 *    KHO's finish reports as never restored = a cold boot's free pages + tracker pages. A block nobody restores
 *    (the half of an operation whose record never reached the handover, a refused subsystem's data) stays
 *    reserved for the whole boot, as KHO documents, and is named in finish's report: it is accounted for, not
 *    lost, and nothing else may be missing;
 *  - at the last moment (the operation complete), restore everything with no refusal and no unrestored block.
 */

/** One run of a path: the machine and kernel it starts from, the operation, and what the next kernel checks. */
export interface PathRun {
  readonly machine: Machine;
  /** The kernel the operation runs in (set up, nothing swept yet). */
  readonly kernel: Kernel;
  /** The next kernel's image and command line. */
  readonly next: { readonly image: readonly KernelModule[]; readonly cmdline: string };
  /** The operation: its page allocations and tracker edits are the moments. */
  run(): void;
  /** At the jump, before anything else: what the operation had completed (handed to verify). */
  progress?(): unknown;
  /**
   * In the next kernel, after its restore phase and before finish: checks what came back against `progress` and
   * frees what it took back outside plugins. `complete`: the operation had finished (everything must be back).
   * Returns a short account of what came back and every problem (wrong bytes, a partial object, an object back
   * that nobody preserved, something missing although complete).
   */
  verify(next: Kernel, progress: unknown, complete: boolean): { found: string; problems: string[] };
}

/** A path of the sweep: its name (stable: reports and workers refer to it) and how to start a run of it. */
export interface AnytimePath {
  readonly name: string;
  /** One line: what the operation is. */
  readonly title: string;
  start(): PathRun;
}

/** What the kexec at one moment found. */
export interface MomentResult {
  readonly path: string;
  /** 1-based; the path's last moment is "after the operation". */
  readonly moment: number;
  /** The step just made (or about to be made, for an allocation), and whose handler was running. */
  readonly at: string;
  readonly blocksAtJump: number;
  /** The next kernel revived the handover. */
  readonly revived: boolean;
  /** The path's account of what came back. */
  readonly found: string;
  /** Subsystems (and KHO) that refused something, with their one-line reason. */
  readonly refused: readonly string[];
  /** Blocks and pages finish reported as never restored (they stay reserved). */
  readonly unrestored: { readonly blocks: number; readonly pages: number };
  /** Everything that broke a rule above; empty when the moment passed. */
  readonly problems: readonly string[];
}

/** Thrown at the stopping step (and at every later one): the operation is abandoned, as by a real kexec. */
class Halt extends Error {
  constructor() {
    super('kexec at this moment: the operation is abandoned');
  }
}

/** The tracker's blocks as sorted `pfn:order` keys. */
function trackerBlocks(t: Tracker): string[] {
  const out: Array<[number, number]> = [];
  t.walk((pfn, order) => void out.push([pfn, order]));
  return out.sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([p, o]) => `${p}:${o}`);
}

const hexPfn = (key: string): string => {
  const [p, o] = key.split(':').map(Number);
  return `0x${(p * PAGE_SIZE).toString(16)} order ${o}`;
};

/** Cold-boot idle pages (free + tracker) of each path's next kernel, per worker. */
const coldIdle = new Map<string, number>();

function coldBaseline(path: AnytimePath, r: PathRun): number {
  let n = coldIdle.get(path.name);
  if (n === undefined) {
    const m = machineFor({ ranges: r.machine.device(PhysicalMemory).ranges });
    n = idlePages(m.boot({ image: r.next.image, cmdline: r.next.cmdline }));
    m.shutdown();
    coldIdle.set(path.name, n);
  }
  return n;
}

/** Why a plugin's handler threw, as a refusal (a KernelError) or a crash (anything else, a KernelBug included). */
function classify(e: PluginErrorEvent): { refusal?: string; crash?: string } {
  const ke = findKernelError(e.error);
  if (ke && !(e.error instanceof KernelBug)) return { refusal: `${e.plugin} (${e.phase}): ${ke.message}` };
  return { crash: `${e.plugin} (${e.phase}) crashed: ${describeError(e.error)}` };
}

/** Jumps from the path's kernel right now and checks the next kernel (see the file comment). */
function kexecHere(path: AnytimePath, r: PathRun, moment: number, at: string, complete: boolean): MomentResult {
  const { machine, kernel: old } = r;
  const tracker = old.get<Tracker>(Tracker);
  const atJump = trackerBlocks(tracker);
  // A kho-v1 map is built at serialize: a jump before it hands over no map (and must be refused).
  const mapWritten = !trackerDescriptor(tracker.kind).serializes || old.state === 'serialized';
  const progress = r.progress?.();
  const problems: string[] = [];
  const refused: string[] = [];
  const base = { path: path.name, moment, at, blocksAtJump: atJump.length };
  const done = (extra: Partial<MomentResult>): MomentResult => ({ ...base, revived: false, found: '', refused, unrestored: { blocks: 0, pages: 0 }, problems, ...extra });
  const onError = (e: PluginErrorEvent): void => {
    if (e.generation !== old.generation + 1) return;
    const c = classify(e);
    if (c.refusal) refused.push(c.refusal);
    else problems.push(c.crash!);
  };
  machine.bus.on('plugin:error', onError);
  try {
    let next: Kernel;
    try {
      const params = machine.jump(old, r.next.cmdline, { anyMoment: true });
      next = machine.bootFrom(params, { image: r.next.image });
    } catch (e) {
      problems.push(`the next kernel did not boot: ${describeError(e, { errno: true })}`);
      return done({});
    }
    for (const [plugin, why] of next.disabled) problems.push(`the next kernel disabled plugin '${plugin}': ${why}`);
    const kho = next.get(Kho);
    const inc = kho.incomingHandover;
    if (!inc) {
      const why = kho.stats().revivalError ?? 'no handover';
      if (mapWritten) problems.push(`the next kernel did not revive the handover: ${why}`);
      else refused.push(`kho: ${why}`);
    } else {
      if (!mapWritten) problems.push('the next kernel revived a kho-v1 handover whose map was never serialized');
      const incoming = inc.pfns.map((p, i) => `${p}:${inc.orders[i]}`).sort((a, b) => {
        const [pa, oa] = a.split(':').map(Number);
        const [pb, ob] = b.split(':').map(Number);
        return pa - pb || oa - ob;
      });
      const want = new Set(atJump);
      const got = new Set(incoming);
      const extra = incoming.filter((b) => !want.has(b));
      const missing = atJump.filter((b) => !got.has(b));
      if (extra.length > 0) problems.push(`${extra.length} incoming blocks were not in the tracker at the jump (first: ${hexPfn(extra[0])})`);
      if (missing.length > 0) problems.push(`${missing.length} blocks of the tracker at the jump did not come in (first: ${hexPfn(missing[0])})`);
    }
    next.restore();
    let found = '';
    try {
      const v = r.verify(next, progress, complete);
      found = v.found;
      problems.push(...v.problems);
    } catch (e) {
      problems.push(`checking what came back failed: ${describeError(e, { errno: true })}`);
    }
    const fin = next.finish();
    const report = fin.plugins.kho?.report as { unrestoredBlocks?: number; unrestoredBytes?: number } | undefined;
    const unrestored = { blocks: Number(report?.unrestoredBlocks ?? 0), pages: Number(report?.unrestoredBytes ?? 0) / PAGE_SIZE };
    const idle = idlePages(next);
    const cold = coldBaseline(path, r);
    if (idle + unrestored.pages !== cold) {
      const lost = cold - idle - unrestored.pages;
      problems.push(
        `after finish: ${idle} free and tracker pages + ${unrestored.pages} pages never restored = ${idle + unrestored.pages}, a cold boot has ${cold} (${lost > 0 ? `${lost} pages leaked` : `${-lost} pages too many`})`,
      );
    }
    if (complete && refused.length > 0) problems.push('the operation was complete, yet something was refused');
    if (complete && unrestored.blocks > 0) problems.push(`the operation was complete, yet ${unrestored.blocks} preserved blocks were never restored`);
    return done({ revived: inc !== undefined, found, unrestored });
  } finally {
    machine.bus.off('plugin:error', onError);
    machine.shutdown();
  }
}

/**
 * Runs `path` from a fresh machine and kexecs at moment `stopAt` (1-based; steps + 1 is "after the operation").
 * Returns the steps the operation made and, when it reached the moment, what the next kernel found. Throws what
 * the operation throws when it fails on its own (a broken path, not a finding).
 */
function drive(path: AnytimePath, stopAt: number): { steps: number; result?: MomentResult } {
  const r = path.start();
  const { machine, kernel } = r;
  const generation = kernel.generation;
  const faults = kernel.get(FaultInjector);
  const info = kernel.get(KernelInfo);
  let steps = 0;
  let result: MomentResult | undefined;
  let jumping = false;
  const tick = (what: () => string): void => {
    if (result) throw new Halt();
    if (jumping) return;
    steps++;
    if (steps !== stopAt) return;
    jumping = true;
    result = kexecHere(path, r, steps, what(), false);
    throw new Halt();
  };
  const who = (): string => (info.currentPlugin ? ` in ${info.currentPlugin}` : '');
  const onEdit = (verb: string) => (e: PreservationEvent) => {
    if (e.generation === generation) tick(() => `after ${verb} 0x${e.phys.toString(16)} order ${e.order} (${e.owner})`);
  };
  const onPreserve = onEdit('preserving');
  const onUnpreserve = onEdit('unpreserving');
  faults.onCall = (n) => tick(() => `before allocation ${n}${who()}`);
  machine.bus.on('kho:preserve', onPreserve);
  machine.bus.on('kho:unpreserve', onUnpreserve);
  let failure: unknown;
  try {
    r.run();
  } catch (e) {
    if (!result) failure = e;
  } finally {
    faults.onCall = undefined;
    machine.bus.off('kho:preserve', onPreserve);
    machine.bus.off('kho:unpreserve', onUnpreserve);
  }
  if (failure !== undefined) throw failure;
  if (!result && stopAt === steps + 1) result = kexecHere(path, r, stopAt, 'after the operation', true);
  if (!result) machine.shutdown();
  return { steps, result };
}

/** How many moments `path` has: its steps, and one more after the operation. */
export function countMoments(path: AnytimePath): number {
  return drive(path, Infinity).steps + 1;
}

/** The kexec at moment `moment` of `path` (1-based). A moment past the last is a usage error (KernelBug). */
export function kexecAtMoment(path: AnytimePath, moment: number): MomentResult {
  let run: { steps: number; result?: MomentResult };
  try {
    run = drive(path, moment);
  } catch (e) {
    return { path: path.name, moment, at: '', blocksAtJump: 0, revived: false, found: '', refused: [], unrestored: { blocks: 0, pages: 0 }, problems: [`the operation failed on its own: ${describeError(e, { errno: true })}`] };
  }
  if (!run.result) throw new KernelBug(`${path.name}: moment ${moment} is past the last (${run.steps + 1})`);
  return run.result;
}

/**
 * Which moments of `total` to sweep: all of them, or at most `limit` spread evenly (the first and the last
 * always), for the short versions CI runs.
 */
export function pickMoments(total: number, limit?: number): number[] {
  if (limit === undefined || limit >= total) return Array.from({ length: total }, (_, i) => i + 1);
  if (limit <= 1) return [total];
  const out = new Set<number>();
  for (let i = 0; i < limit; i++) out.add(1 + Math.round((i * (total - 1)) / (limit - 1)));
  return [...out];
}
