import { Errno, KernelError } from '@kho/kernel';
import { countMoments, kexecAtMoment } from './anytime';
import { anytimePath } from './anytime-paths';
import { faultPath } from './fault-paths';
import { runFuzzCase } from './fuzz';

/**
 * One case of a sweep, as a worker receives it: plain data, so that it crosses to a worker thread. `probe` is the
 * pool's own check (echo a value, throw, crash the worker, exit it, hang), used by its tests.
 */
export type SweepTask =
  | { readonly kind: 'anytime-count'; readonly path: string }
  | { readonly kind: 'anytime'; readonly path: string; readonly moment: number }
  | { readonly kind: 'faults-count'; readonly path: string }
  | { readonly kind: 'faults'; readonly path: string; readonly point: number }
  | { readonly kind: 'fuzz'; readonly seed: number; readonly from: number; readonly count: number; readonly hangMs?: number }
  | { readonly kind: 'probe'; readonly act: 'echo' | 'throw' | 'crash' | 'exit' | 'hang'; readonly value?: number };

function named<T>(p: T | undefined, name: string): T {
  if (!p) throw new KernelError(Errno.EINVAL, `no sweep path named '${name}'`);
  return p;
}

/** Runs one task in this thread and returns its result (what a worker posts back). Throws what the case throws. */
export function runTask(t: SweepTask): unknown {
  switch (t.kind) {
    case 'anytime-count':
      return countMoments(named(anytimePath(t.path), t.path));
    case 'anytime':
      return kexecAtMoment(named(anytimePath(t.path), t.path), t.moment);
    case 'faults-count':
      return named(faultPath(t.path), t.path).count();
    case 'faults':
      return named(faultPath(t.path), t.path).fail(t.point);
    case 'fuzz':
      return Array.from({ length: t.count }, (_, i) => runFuzzCase(t.seed, t.from + i, { hangMs: t.hangMs }));
    case 'probe':
      return probe(t.act, t.value ?? 0);
  }
}

/** An error the worker does not catch: it kills the worker thread (the pool's test of a worker that dies). */
export class WorkerCrash extends RangeError {}

function probe(act: 'echo' | 'throw' | 'crash' | 'exit' | 'hang', value: number): unknown {
  switch (act) {
    case 'echo':
      return value;
    case 'throw':
      throw new KernelError(Errno.EIO, `probe: thrown as asked (${value})`);
    case 'crash':
      throw new WorkerCrash(`probe: crashed as asked (${value})`);
    case 'exit':
      process.exit(3);
    // eslint-disable-next-line no-fallthrough
    case 'hang':
      for (;;) {
        // a case that never ends
      }
  }
}
