import { EventEmitter } from 'eventemitter3';
import { Phase } from './phases';
import type { LogLine } from './log';

/** How a kernel came up: a cold boot, or a boot from the boot parameters a previous kernel handed over. */
export type BootKind = 'cold' | 'handover';

/** A kernel starts: its generation, command line and plugins (in phase order). */
export interface KernelBootEvent {
  readonly generation: number;
  readonly kind: BootKind;
  readonly cmdline: string;
  readonly plugins: readonly string[];
}

/** A kernel's boot phases are done (`ms` over all three); plugins disabled on the way are named. */
export interface KernelUpEvent {
  readonly generation: number;
  readonly ms: number;
  readonly disabled: readonly string[];
}

/** A kernel is gone: it jumped (kexec) or the machine shut it down. */
export interface KernelDownEvent {
  readonly generation: number;
  readonly why: 'kexec' | 'shutdown';
}

export interface PhaseStartEvent {
  readonly generation: number;
  readonly phase: Phase;
}

/** A phase ended; `ok` is false when a handler threw (boot phases go on after disabling the plugin). */
export interface PhaseEndEvent {
  readonly generation: number;
  readonly phase: Phase;
  readonly ok: boolean;
  readonly ms: number;
}

/** A plugin's handler threw. `reason` is the one-line description; `error` the value thrown. */
export interface PluginErrorEvent {
  readonly generation: number;
  readonly phase: Phase;
  readonly plugin: string;
  readonly reason: string;
  readonly error: unknown;
}

export interface PluginDisabledEvent {
  readonly generation: number;
  readonly plugin: string;
  readonly reason: string;
}

/**
 * The kexec transition, published by the machine between the old kernel's last handler and its disposal:
 * `to` is the generation the next kernel will have (it may boot later, from an image, in another process).
 */
export interface KexecEvent {
  readonly from: number;
  readonly to: number;
  readonly cmdline: string;
}

/**
 * One call of the preservation API: `owner` is the plugin whose handler made it (for restore, the plugin
 * taking the block back), `phys` and `order` the block. Published only when someone listens.
 */
export interface PreservationEvent {
  readonly generation: number;
  readonly owner: string;
  readonly phys: number;
  readonly order: number;
}

/** A run of physical memory of one kind, [start, end) in bytes. */
export interface MemoryRun {
  readonly start: number;
  readonly end: number;
  /** 'free', 'free-scratch', 'allocated', 'reserved', 'tracker', 'preserved', 'incoming', … (the publisher's words). */
  readonly kind: string;
}

/**
 * A read-only picture of physical memory at one moment, built by the kernel image's {@link MemoryPicture}
 * provider. Preserved and incoming blocks are one run each (observers name their owners from the preservation
 * events); other kinds are merged into maximal runs.
 */
export interface MemoryMap {
  readonly ranges: ReadonlyArray<{ readonly start: number; readonly size: number; readonly node: number }>;
  readonly scratch: ReadonlyArray<{ readonly addr: number; readonly size: number }>;
  readonly runs: readonly MemoryRun[];
  /** Named figures of the moment (e.g. the tracker's compatible string and its page count). */
  readonly facts: Readonly<Record<string, string | number>>;
  /** The provider's own decoded view of the moment (e.g. the handover as the next kernel will read it). */
  readonly detail?: unknown;
}

/** The moments a memory picture is taken: after a kernel's boot phases, and at the jump (after the kexec handlers). */
export type MemoryMoment = 'boot' | 'jump';

export interface MemoryMapEvent {
  readonly generation: number;
  readonly moment: MemoryMoment;
  readonly map: MemoryMap;
}

/** Long work reporting how far it got: `done` of `total` (bytes, items: the publisher's unit). */
export interface ProgressEvent {
  readonly generation: number;
  readonly step: string;
  readonly done: number;
  readonly total: number;
}

/**
 * What is published on the machine's bus. Events notify; they never carry something to mutate, and an observer
 * never needs to reach into a kernel to understand one.
 */
export interface BusEvents {
  'kernel:boot': (e: KernelBootEvent) => void;
  'kernel:up': (e: KernelUpEvent) => void;
  'kernel:down': (e: KernelDownEvent) => void;
  'phase:start': (e: PhaseStartEvent) => void;
  'phase:end': (e: PhaseEndEvent) => void;
  'plugin:error': (e: PluginErrorEvent) => void;
  'plugin:disabled': (e: PluginDisabledEvent) => void;
  kexec: (e: KexecEvent) => void;
  log: (line: LogLine) => void;
  'kho:preserve': (e: PreservationEvent) => void;
  'kho:unpreserve': (e: PreservationEvent) => void;
  'kho:restore': (e: PreservationEvent) => void;
  'memory:map': (e: MemoryMapEvent) => void;
  progress: (e: ProgressEvent) => void;
}

export type BusEventName = keyof BusEvents;

/**
 * The machine-level event stream: one per {@link Machine}, outliving every kernel that boots on it. Kernels and
 * plugins publish (inject `MachineBus`); reports, progress bars, timings and runners subscribe. Plugins do not
 * subscribe: a listener would outlive its kernel, and ordered reactions belong to phase handlers.
 */
export class MachineBus extends EventEmitter<BusEvents> {
  /**
   * Publishes `event` with the payload `build()` returns, calling `build` only when someone listens: hot paths
   * (every preserved block) cost one listener-count check when nobody observes.
   */
  publish<E extends BusEventName>(event: E, build: () => Parameters<BusEvents[E]>[0]): void {
    if (this.listenerCount(event) === 0) return;
    (this.emit as (e: E, payload: unknown) => boolean)(event, build());
  }

  /** True when `event` has a listener (for publishers whose payload is costly to build). */
  heard(event: BusEventName): boolean {
    return this.listenerCount(event) > 0;
  }
}

/** @deprecated the bus is the machine's now: use {@link MachineBus} (same class, same DI token). */
export const LifecycleBus = MachineBus;
/** @deprecated use {@link MachineBus}. */
export type LifecycleBus = MachineBus;

/**
 * The provider of {@link MemoryMap} pictures, registered by a kernel image that wants its memory observed (a
 * module registers it in the boot's container; the kernel calls it only when `memory:map` has a listener).
 */
export const MemoryPicture = Symbol('MemoryPicture');
export interface MemoryPicture {
  take(moment: MemoryMoment): MemoryMap;
}
