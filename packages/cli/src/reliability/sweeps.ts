import { Errno, KernelError } from '@kho/kernel';
import { pickMoments, type MomentResult } from './anytime';
import { ANYTIME_PATHS } from './anytime-paths';
import { FAULT_PATHS, type FaultCaseResult } from './fault-paths';
import { SweepPool, type PoolOutcome } from './pool';
import type { SweepTask } from './tasks';

/** How to run the kexec-at-any-moment sweep. */
export interface AnytimeSweepOptions {
  /** Worker threads (default: every core). */
  readonly jobs?: number;
  /** At most this many moments per path, spread evenly (default: every moment). */
  readonly limit?: number;
  /** Only these paths (default: all of them). */
  readonly paths?: readonly string[];
  /** A case running longer than this fails as a hang (default 120 s). */
  readonly timeoutMs?: number;
  /** Hears each finished case: how many are done of how many. */
  onCase?(done: number, total: number, r: MomentResult): void;
}

/** One path's figures in a sweep report. */
export interface PathSummary {
  readonly name: string;
  readonly title: string;
  /** Moments the path has (its steps, plus "after the operation"). */
  readonly moments: number;
  readonly swept: number;
  /** Moments where the next kernel revived the handover. */
  readonly revived: number;
  /** Moments where something was refused (cleanly) or left unrestored (reported by finish). */
  readonly refusedSome: number;
  readonly unrestoredSome: number;
  readonly failed: number;
}

/** What a sweep found: the same for the same options whatever the number of workers. */
export interface AnytimeSweepReport {
  readonly paths: readonly PathSummary[];
  readonly cases: number;
  readonly failed: number;
  /** Every case's result, in path order then moment order. */
  readonly results: readonly MomentResult[];
}

/** A case the pool could not run (the worker crashed or hung): a failed moment saying so. */
function lost(task: { path: string; moment: number }, error: string): MomentResult {
  return { path: task.path, moment: task.moment, at: '', blocksAtJump: 0, revived: false, found: '', refused: [], unrestored: { blocks: 0, pages: 0 }, problems: [error] };
}

/**
 * The kexec-at-any-moment sweep over the paths of anytime-paths.ts, on worker threads: first every path's moments
 * are counted (one case per path), then each moment picked is a case. Throws EINVAL for an unknown path name.
 */
export async function sweepAnytime(opts: AnytimeSweepOptions = {}): Promise<AnytimeSweepReport> {
  const names = opts.paths ?? ANYTIME_PATHS.map((p) => p.name);
  const paths = names.map((n) => {
    const p = ANYTIME_PATHS.find((x) => x.name === n);
    if (!p) throw new KernelError(Errno.EINVAL, `no sweep path named '${n}' (wanted one of: ${ANYTIME_PATHS.map((x) => x.name).join(', ')})`);
    return p;
  });
  const pool = new SweepPool({ jobs: opts.jobs, timeoutMs: opts.timeoutMs });
  try {
    const counted = await pool.run<number>(paths.map((p): SweepTask => ({ kind: 'anytime-count', path: p.name })));
    const tasks: Array<{ kind: 'anytime'; path: string; moment: number }> = [];
    const totals = new Map<string, number>();
    const broken: MomentResult[] = [];
    counted.forEach((c, i) => {
      const name = paths[i].name;
      if (!c.ok) {
        broken.push(lost({ path: name, moment: 0 }, `counting the moments failed: ${c.error}`));
        totals.set(name, 0);
        return;
      }
      totals.set(name, c.value);
      for (const moment of pickMoments(c.value, opts.limit)) tasks.push({ kind: 'anytime', path: name, moment });
    });
    let done = 0;
    const outcomes = await pool.run<MomentResult>(tasks, (i, o) => opts.onCase?.(++done, tasks.length, o.ok ? o.value : lost(tasks[i], o.error)));
    const results = [...broken, ...outcomes.map((o: PoolOutcome<MomentResult>, i) => (o.ok ? o.value : lost(tasks[i], o.error)))];
    const summaries = paths.map((p): PathSummary => {
      const mine = results.filter((r) => r.path === p.name && r.moment > 0);
      return {
        name: p.name,
        title: p.title,
        moments: totals.get(p.name) ?? 0,
        swept: mine.length,
        revived: mine.filter((r) => r.revived).length,
        refusedSome: mine.filter((r) => r.refused.length > 0).length,
        unrestoredSome: mine.filter((r) => r.unrestored.blocks > 0).length,
        failed: results.filter((r) => r.path === p.name && r.problems.length > 0).length,
      };
    });
    return { paths: summaries, cases: results.length, failed: results.filter((r) => r.problems.length > 0).length, results };
  } finally {
    await pool.close();
  }
}

/** How to run the fault sweep (the same options as the kexec-at-any-moment sweep; `limit` counts failure points). */
export interface FaultSweepOptions extends Omit<AnytimeSweepOptions, 'onCase'> {
  onCase?(done: number, total: number, r: FaultCaseResult): void;
}

/** One path's figures in a fault sweep report. */
export interface FaultPathSummary {
  readonly name: string;
  readonly title: string;
  /** Allocations the operation makes when nothing fails: its failure points (0: it makes none). */
  readonly points: number;
  /** Cases run: failure points picked, or the one case with every allocation failing for a path with none. */
  readonly swept: number;
  readonly failed: number;
}

/** What a fault sweep found: the same for the same options whatever the number of workers. */
export interface FaultSweepReport {
  readonly paths: readonly FaultPathSummary[];
  readonly cases: number;
  readonly failed: number;
  /** Every case's result, in path order then failure-point order. */
  readonly results: readonly FaultCaseResult[];
}

/**
 * The sweep of faults on every new path (fault-paths.ts), on worker threads: every path's allocations are counted
 * (one case per path), then each failure point picked is a case (point 0, every allocation failing, for a path
 * that makes none). Throws EINVAL for an unknown path name.
 */
export async function sweepFaults(opts: FaultSweepOptions = {}): Promise<FaultSweepReport> {
  const names = opts.paths ?? FAULT_PATHS.map((p) => p.name);
  const paths = names.map((n) => {
    const p = FAULT_PATHS.find((x) => x.name === n);
    if (!p) throw new KernelError(Errno.EINVAL, `no fault sweep path named '${n}' (wanted one of: ${FAULT_PATHS.map((x) => x.name).join(', ')})`);
    return p;
  });
  const failedCase = (path: string, point: number, error: string): FaultCaseResult => ({ path, point, problems: [error] });
  const pool = new SweepPool({ jobs: opts.jobs, timeoutMs: opts.timeoutMs });
  try {
    const counted = await pool.run<number>(paths.map((p): SweepTask => ({ kind: 'faults-count', path: p.name })));
    const tasks: Array<{ kind: 'faults'; path: string; point: number }> = [];
    const totals = new Map<string, number>();
    const broken: FaultCaseResult[] = [];
    counted.forEach((c, i) => {
      const name = paths[i].name;
      if (!c.ok) {
        broken.push(failedCase(name, -1, `counting the allocations failed: ${c.error}`));
        totals.set(name, 0);
        return;
      }
      totals.set(name, c.value);
      const points = c.value === 0 ? [0] : pickMoments(c.value, opts.limit);
      for (const point of points) tasks.push({ kind: 'faults', path: name, point });
    });
    let done = 0;
    const outcomes = await pool.run<FaultCaseResult>(tasks, (i, o) => opts.onCase?.(++done, tasks.length, o.ok ? o.value : failedCase(tasks[i].path, tasks[i].point, o.error)));
    const results = [...broken, ...outcomes.map((o, i) => (o.ok ? o.value : failedCase(tasks[i].path, tasks[i].point, o.error)))];
    const summaries = paths.map((p): FaultPathSummary => {
      const mine = results.filter((r) => r.path === p.name);
      return { name: p.name, title: p.title, points: totals.get(p.name) ?? 0, swept: mine.filter((r) => r.point >= 0).length, failed: mine.filter((r) => r.problems.length > 0).length };
    });
    return { paths: summaries, cases: results.length, failed: results.filter((r) => r.problems.length > 0).length, results };
  } finally {
    await pool.close();
  }
}
