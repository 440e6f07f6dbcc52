import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { SweepTask } from './tasks';

/*
 * Sweep cases on worker threads. Each worker loads the command's code the way the command itself runs: from the
 * TypeScript sources through @swc-node/register with the "@kho/source" condition inside the workspace (as
 * bin/kho.js and tools/scripts/run-ts.js do), or the built dist/ of an installed package. Cases are independent
 * (each boots its own machine); results come back by case index, so a report does not depend on how many
 * workers ran it or in which order they finished. A worker that crashes (an uncaught error, an exit, running out
 * of memory) fails the case it was running and is replaced; a case that runs past the time limit is a hang: its
 * worker is terminated and replaced.
 */

/** A case's outcome: what the task returned, or why it did not return. */
export type PoolOutcome<R> = { readonly ok: true; readonly value: R } | { readonly ok: false; readonly error: string };

export interface PoolOptions {
  /** Worker threads (default: the machine's available parallelism). */
  readonly jobs?: number;
  /** A case running longer than this is a hang (default 120 s). */
  readonly timeoutMs?: number;
}

/** The default number of workers: every core. */
export function defaultJobs(): number {
  return availableParallelism();
}

/** The nearest tsconfig.base.json above `dir` (the workspace's), for @swc-node/register. */
function workspaceTsconfig(dir: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    const f = join(d, 'tsconfig.base.json');
    if (existsSync(f)) return f;
    if (dirname(d) === d) return undefined;
  }
}

/** Starts one worker running worker.ts (sources) or worker.js (dist), beside this file. */
function startWorker(): Worker {
  const source = extname(__filename) === '.ts';
  const file = join(__dirname, `worker${source ? '.ts' : '.js'}`);
  if (!source) return new Worker(file);
  const register = require.resolve('@swc-node/register', { paths: [__dirname] });
  const tsconfig = workspaceTsconfig(__dirname);
  return new Worker(`require(${JSON.stringify(register)}); require(${JSON.stringify(file)});`, {
    eval: true,
    execArgv: ['--conditions=@kho/source'],
    env: { ...process.env, ...(tsconfig ? { SWC_NODE_PROJECT: tsconfig } : {}) },
  });
}

interface Slot {
  readonly worker: Worker;
  /** The case it runs, if any. */
  busy: number | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Set once the worker failed or was told to stop: its later events are ignored. */
  gone: boolean;
  /** Set when the worker has loaded the code and said so: cases (and their time limit) start then. */
  ready: boolean;
  /** What the current run does with the worker's events (listeners are attached once, at spawn). */
  onMessage: (m: WorkerMessage) => void;
  onFailure: (why: string) => void;
}

/** What a worker posts: that it is ready, or a case's outcome. */
type WorkerMessage = { readonly ready: true } | { readonly index: number; readonly value?: unknown; readonly error?: string };

const ignore = (): void => undefined;

/**
 * What killed a worker, in one line. Checked by shape, not instanceof (the error is rebuilt in this thread, and a
 * test runner's realm has other Error classes); one that does not survive the trip between threads arrives empty.
 */
function describeCrash(e: unknown): string {
  const { name, message } = (typeof e === 'object' && e !== null ? e : {}) as { name?: unknown; message?: unknown };
  if (typeof message !== 'string' || message === '') return 'an error that did not cross to the main thread';
  return typeof name !== 'string' || name === 'Error' ? message : `${name}: ${message}`;
}

/**
 * A pool of worker threads for sweep tasks. `run` hands out tasks in order to whichever worker is free and
 * resolves with every outcome in task order; `close` stops the workers.
 */
export class SweepPool {
  readonly jobs: number;
  private readonly timeoutMs: number;
  private readonly slots: Slot[] = [];

  constructor(opts: PoolOptions = {}) {
    this.jobs = Math.max(1, Math.floor(opts.jobs ?? defaultJobs()));
    this.timeoutMs = opts.timeoutMs ?? 120_000;
  }

  /** Runs every task; `onDone(i, outcome)` hears each as it finishes. Never rejects for a failing task. */
  run<R>(tasks: readonly SweepTask[], onDone?: (index: number, outcome: PoolOutcome<R>) => void): Promise<Array<PoolOutcome<R>>> {
    const out = new Array<PoolOutcome<R>>(tasks.length);
    let next = 0;
    let left = tasks.length;
    return new Promise((resolve) => {
      if (left === 0) return resolve(out);
      const finish = (slot: Slot, outcome: PoolOutcome<R>): void => {
        const index = slot.busy;
        if (slot.timer) clearTimeout(slot.timer);
        slot.timer = undefined;
        slot.busy = undefined;
        if (index === undefined || out[index] !== undefined) return;
        out[index] = outcome;
        onDone?.(index, outcome);
        if (--left === 0) {
          for (const s of this.slots) this.idle(s);
          resolve(out);
        }
      };
      const feed = (slot: Slot): void => {
        if (!slot.ready || slot.busy !== undefined || next >= tasks.length) return;
        const index = next++;
        slot.busy = index;
        slot.timer = setTimeout(() => slot.onFailure(`hang: the case ran for more than ${Math.round(this.timeoutMs / 1000)} s`), this.timeoutMs);
        slot.worker.postMessage({ index, task: tasks[index] });
      };
      const attach = (slot: Slot): void => {
        slot.onMessage = (m) => {
          if ('ready' in m) {
            slot.ready = true;
            return feed(slot);
          }
          if (m.index !== slot.busy) return;
          finish(slot, m.error !== undefined ? { ok: false, error: m.error } : { ok: true, value: m.value as R });
          feed(slot);
        };
        // A worker that failed takes its case with it; a fresh one carries on with the rest. One that failed
        // before it was ready could not load the code: another would fail the same way, so none is started,
        // and with no worker left every case still waiting fails with that reason.
        slot.onFailure = (why) => {
          slot.gone = true;
          void slot.worker.terminate();
          const at = this.slots.indexOf(slot);
          if (!slot.ready) {
            this.slots.splice(at, 1);
            if (this.slots.length > 0) return;
            const error = `no worker could start: ${why}`;
            while (next < tasks.length) {
              slot.busy = next++;
              finish(slot, { ok: false, error });
            }
            return;
          }
          const fresh = this.spawn();
          this.slots[at] = fresh;
          attach(fresh);
          finish(slot, { ok: false, error: why });
        };
      };
      while (this.slots.length < this.jobs) this.slots.push(this.spawn());
      for (const slot of this.slots) {
        attach(slot);
        feed(slot);
      }
    });
  }

  /** Stops every worker. */
  async close(): Promise<void> {
    const slots = this.slots.splice(0);
    for (const s of slots) {
      s.gone = true;
      this.idle(s);
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  /** Between runs a worker's events change nothing (a crash while idle only replaces it at the next run's failure). */
  private idle(slot: Slot): void {
    slot.onMessage = ignore;
    slot.onFailure = ignore;
  }

  private spawn(): Slot {
    const slot: Slot = { worker: startWorker(), busy: undefined, timer: undefined, gone: false, ready: false, onMessage: ignore, onFailure: ignore };
    slot.worker.on('message', (m: WorkerMessage) => {
      if ('ready' in m) slot.ready = true;
      if (!slot.gone) slot.onMessage(m);
    });
    slot.worker.on('error', (e: unknown) => {
      if (!slot.gone) slot.onFailure(`the worker crashed: ${describeCrash(e)}`);
    });
    slot.worker.on('exit', (code) => {
      if (!slot.gone) slot.onFailure(`the worker exited with code ${code}`);
    });
    return slot;
  }
}
