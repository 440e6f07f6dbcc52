import { EventEmitter } from 'eventemitter3';
import { Phase } from './phases';
import type { LogLine } from './log';

/** What is published on a kernel's bus. Events notify and sequence; they never carry mutations. */
export interface BusEvents {
  'phase:start': (e: { phase: Phase; generation: number }) => void;
  'phase:end': (e: { phase: Phase; generation: number; ok: boolean; ms: number }) => void;
  'plugin:error': (e: { phase: Phase; plugin: string; error: unknown }) => void;
  'plugin:disabled': (e: { plugin: string; reason: string }) => void;
  log: (line: LogLine) => void;
}

/** The typed lifecycle bus of one kernel (one per boot; every listener is dropped at kexec). */
export class LifecycleBus extends EventEmitter<BusEvents> {}
