import { Presets, SingleBar } from 'cli-progress';

/** A progress indicator for long work; the quiet one does nothing. */
export interface Progress {
  /** Moves to `value` (of the total given at creation) with a short description of the current step. */
  update(value: number, step: string): void;
  stop(): void;
}

const QUIET: Progress = { update: () => undefined, stop: () => undefined };

/**
 * A progress bar on `stream` when it is a terminal and `enabled` (callers pass false for --json), otherwise a
 * no-op, so piped or machine-read output stays clean. cli-progress draws the bar: it handles terminal widths,
 * redraw throttling and clean-up, which is not worth writing again.
 */
export function createProgress(enabled: boolean, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!enabled || !stream.isTTY) return QUIET;
  const bar = new SingleBar(
    { stream, format: ' {bar} {percentage}% | {step}', hideCursor: true, clearOnComplete: true, fps: 10 },
    Presets.shades_classic,
  );
  bar.start(total, 0, { step: '' });
  return {
    update: (value, step) => bar.update(value, { step }),
    stop: () => bar.stop(),
  };
}
