import 'reflect-metadata';
import { parentPort } from 'node:worker_threads';
import { describeError } from '@kho/kernel';
import { WorkerCrash, runTask, type SweepTask } from './tasks';

/*
 * The body of a sweep worker thread (started by pool.ts): runs each task it is sent and posts back its result
 * or, when the task throws, the one-line reason. Anything that escapes a task kills the thread; the pool then
 * fails the case and starts another worker.
 */
parentPort?.on('message', (m: { index: number; task: SweepTask }) => {
  let reply: { index: number; value?: unknown; error?: string };
  try {
    reply = { index: m.index, value: runTask(m.task) };
  } catch (e) {
    if (e instanceof WorkerCrash) throw e;
    reply = { index: m.index, error: describeError(e, { errno: true }) };
  }
  parentPort!.postMessage(reply);
});
// the code is loaded: cases (and their time limit) may start
parentPort?.postMessage({ ready: true });
