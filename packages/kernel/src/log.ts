import type { MachineBus } from './bus';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** One line of the kernel log (dmesg). `ms` is milliseconds since this kernel booted. */
export interface LogLine {
  readonly generation: number;
  readonly ms: number;
  readonly level: LogLevel;
  readonly subsystem: string;
  readonly message: string;
}

/** The kernel log of one boot: kept in memory and published on the machine's bus (where a console subscribes). */
export class KernelLog {
  readonly lines: LogLine[] = [];
  private readonly t0 = performance.now();

  constructor(
    private readonly bus: MachineBus,
    private readonly generation: number,
  ) {}

  debug(subsystem: string, message: string): void {
    this.add('debug', subsystem, message);
  }
  info(subsystem: string, message: string): void {
    this.add('info', subsystem, message);
  }
  warn(subsystem: string, message: string): void {
    this.add('warn', subsystem, message);
  }
  error(subsystem: string, message: string): void {
    this.add('error', subsystem, message);
  }

  /** Lines at or above `level`, optionally from one subsystem. */
  filter(level: LogLevel, subsystem?: string): LogLine[] {
    const rank = LEVEL_RANK[level];
    return this.lines.filter((l) => LEVEL_RANK[l.level] >= rank && (subsystem === undefined || l.subsystem === subsystem));
  }

  private add(level: LogLevel, subsystem: string, message: string): void {
    const line: LogLine = { generation: this.generation, ms: performance.now() - this.t0, level, subsystem, message };
    this.lines.push(line);
    this.bus.emit('log', line);
  }
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Formats a log line the way dmesg does: `[    0.001234] subsystem: message`. */
export function formatLogLine(l: LogLine): string {
  const t = (l.ms / 1000).toFixed(6).padStart(12, ' ');
  const tag = l.level === 'warn' ? 'WARNING: ' : l.level === 'error' ? 'ERROR: ' : '';
  return `[${t}] ${tag}${l.subsystem}: ${l.message}`;
}
