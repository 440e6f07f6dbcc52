import { Presets, SingleBar } from 'cli-progress';
import { formatBytes, type KernelUpEvent, type MachineBus, type PhaseStartEvent, type ProgressEvent } from '@kho/kernel';

/** A progress indicator for long work; the quiet one does nothing. */
export interface Progress {
  /** Moves to `value` (of the total given at creation) with a short description of the current step. */
  update(value: number, step: string): void;
  stop(): void;
}

const QUIET: Progress = { update: () => undefined, stop: () => undefined };

/** An ETA is shown once work has run this long (short steps would show noise). */
const ETA_AFTER_MS = 1000;

/** "ETA 1m05s" from the time spent so far and the fraction done; empty before it means anything. */
export function etaText(elapsedMs: number, fraction: number): string {
  if (elapsedMs < ETA_AFTER_MS || fraction <= 0 || fraction >= 1) return '';
  const s = Math.round((elapsedMs * (1 - fraction)) / fraction / 1000);
  return s >= 60 ? `ETA ${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `ETA ${s}s`;
}

/**
 * A progress bar on `stream` when it is a terminal and `enabled` (callers pass false for --json), otherwise a
 * no-op, so piped or machine-read output stays clean. cli-progress draws the bar: it handles terminal widths,
 * redraw throttling and clean-up, which is not worth writing again. The bar hides the cursor; when the command
 * is interrupted, bin/kho.js shows it again.
 */
export function createProgress(enabled: boolean, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!enabled || !stream.isTTY) return QUIET;
  const bar = new SingleBar(
    { stream, format: ' {bar} {percentage}% {etaText} | {step}', hideCursor: true, clearOnComplete: true, fps: 10 },
    Presets.shades_classic,
  );
  const t0 = performance.now();
  bar.start(total, 0, { step: '', etaText: '' });
  return {
    update: (value, step) => {
      const eta = etaText(performance.now() - t0, total > 0 ? value / total : 0);
      bar.update(value, { step, etaText: eta ? `| ${eta}` : '' });
    },
    stop: () => bar.stop(),
  };
}

/**
 * Drives `progress` (of `mem` bytes) from a demo's bus: the self-test's `progress` events while it generates,
 * each phase as it starts, and the next kernel's restore. Returns the unsubscribe function.
 */
export function followDemo(bus: MachineBus, progress: Progress, mem: number): () => void {
  let done = 0;
  const onProgress = (e: ProgressEvent): void => {
    done = e.done;
    progress.update(done, `${e.step} ${formatBytes(e.done)} of ${formatBytes(e.total)}`);
  };
  const onPhase = (e: PhaseStartEvent): void => progress.update(e.generation > 1 ? mem : done, `generation ${e.generation}: ${e.phase}`);
  bus.on('progress', onProgress);
  bus.on('phase:start', onPhase);
  return () => {
    bus.off('progress', onProgress);
    bus.off('phase:start', onPhase);
  };
}

/**
 * Drives `progress` (of `total` generations) from a scenario's bus: the generation that booted, its phases and
 * its long steps. Returns the unsubscribe function.
 */
export function followScenario(bus: MachineBus, progress: Progress, total: number): () => void {
  let gen = 1;
  const label = (what: string): string => `generation ${gen}/${total}: ${what}`;
  const onUp = (e: KernelUpEvent): void => {
    gen = e.generation;
    progress.update(gen - 1, label('booted'));
  };
  const onPhase = (e: PhaseStartEvent): void => progress.update(gen - 1, label(e.phase));
  const onProgress = (e: ProgressEvent): void => progress.update(gen - 1 + e.done / Math.max(1, e.total), label(`${e.step} ${formatBytes(e.done)}`));
  bus.on('kernel:up', onUp);
  bus.on('phase:start', onPhase);
  bus.on('progress', onProgress);
  return () => {
    bus.off('kernel:up', onUp);
    bus.off('phase:start', onPhase);
    bus.off('progress', onProgress);
  };
}
