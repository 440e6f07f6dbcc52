import { container as rootContainer, type DependencyContainer, type InjectionToken } from 'tsyringe';
import { BootParams, NextBootParams } from './boot-params';
import { MachineBus, MemoryPicture, type BootKind, type MemoryMoment } from './bus';
import { CommandLine } from './cmdline';
import { Errno, KernelError, findKernelError } from './errno';
import { KernelLog } from './log';
import type { Machine } from './machine';
import { BOOT_PHASES, Phase } from './phases';
import { KernelPlugin, type KernelModule, type PluginReport } from './plugin';

/** Facts about the running boot that plugins may inject. */
export class KernelInfo {
  /**
   * The plugin whose phase handler is running now (undefined between handlers). Services use it to attribute
   * work to a subsystem, e.g. KHO records which plugin preserved each block.
   */
  currentPlugin: string | undefined;

  constructor(
    /** 1 for the first boot of a machine, +1 per kexec or cold boot. */
    readonly generation: number,
  ) {}
}

/** Where a live update stands. */
export type UpdateState = 'running' | 'prepared' | 'serialized' | 'dead';

/** One plugin's outcome in a phase that reports per plugin (boot, restore, finish). */
export interface PluginOutcome {
  readonly ok: boolean;
  readonly report?: PluginReport;
  readonly error?: string;
}

/** Result of `restore()` or `finish()`: ok when every plugin succeeded. */
export interface PhaseReport {
  readonly phase: Phase;
  readonly ok: boolean;
  readonly plugins: Readonly<Record<string, PluginOutcome>>;
}

/** Options for the jump. Omitted fields keep this kernel's image and command line. */
export interface KexecOptions {
  readonly image?: readonly KernelModule[];
  readonly cmdline?: string;
  /**
   * Jump whatever the live update's state: in the middle of prepare or serialize, or with an operation half done
   * (a kexec at any moment after KHO init, which finalize-free KHO must survive: the tracker is the handover).
   * Only the `kexec` handlers run; nothing is prepared, serialized or cancelled first.
   */
  readonly anyMoment?: boolean;
}

interface Live {
  readonly container: DependencyContainer;
  readonly log: KernelLog;
  readonly next: NextBootParams;
  readonly plugins: readonly KernelPlugin[];
}

/**
 * One boot of a {@link Machine}: a fresh tsyringe child container holding this boot's plugins and services, and
 * the phase runner. Everything it does is published on the machine's bus. The kexec transition belongs to the
 * machine: `kexec` and `jump` ask it, and it disposes this kernel and boots the next one, which receives
 * nothing but the machine's RAM and the boot parameters.
 */
export class Kernel {
  readonly cmdline: CommandLine;
  /** Plugins disabled during boot, with the reason. */
  readonly disabled = new Map<string, string>();
  private live: Live | undefined;
  private stateValue: UpdateState = 'running';
  private completed: KernelPlugin[] = [];
  private readonly info: KernelInfo;
  /** The machine's bus, on which this kernel publishes (it outlives the kernel). */
  readonly bus: MachineBus;

  /** @internal kernels are started by their machine (`machine.boot`, `machine.bootFrom`, `kernel.kexec`). */
  constructor(
    private readonly machine: Machine,
    readonly generation: number,
    readonly image: readonly KernelModule[],
    readonly bootParams: BootParams,
    kind: BootKind = 'cold',
  ) {
    this.bus = machine.bus;
    this.cmdline = new CommandLine(bootParams.cmdline);
    const container = rootContainer.createChildContainer();
    const log = new KernelLog(this.bus, generation);
    const next = new NextBootParams();
    for (const [token, device] of machine.attachedDevices()) container.register(token, { useValue: device });
    container.register(MachineBus, { useValue: this.bus });
    container.register(KernelLog, { useValue: log });
    container.register(CommandLine, { useValue: this.cmdline });
    container.register(BootParams, { useValue: bootParams });
    container.register(NextBootParams, { useValue: next });
    this.info = new KernelInfo(generation);
    container.register(KernelInfo, { useValue: this.info });
    const seen = new Set<string>();
    let plugins: KernelPlugin[];
    try {
      for (const m of image) {
        if (seen.has(m.name)) throw new KernelError(Errno.EEXIST, `kernel image lists module '${m.name}' twice`);
        seen.add(m.name);
        m.register(container);
      }
      plugins = orderPlugins(container.isRegistered(KernelPlugin) ? container.resolveAll<KernelPlugin>(KernelPlugin) : []);
    } catch (e) {
      dropContainer(container);
      throw constructionError(e);
    }
    this.live = { container, log, next, plugins };
    this.bus.emit('kernel:boot', { generation, kind, cmdline: bootParams.cmdline, plugins: plugins.map((p) => p.name) });
    log.info('kernel', `booting generation ${generation}: ${plugins.map((p) => p.name).join(', ') || 'no plugins'}`);
    if (bootParams.cmdline) log.info('kernel', `command line: ${bootParams.cmdline}`);
    const t0 = performance.now();
    for (const phase of BOOT_PHASES) this.runBootPhase(phase);
    this.bus.emit('kernel:up', { generation, ms: performance.now() - t0, disabled: [...this.disabled.keys()] });
    this.publishMemory('boot');
  }

  /** This boot's kernel log. */
  get log(): KernelLog {
    return this.alive().log;
  }

  /** The plugins of this boot, in the order phases run over them. */
  get plugins(): readonly KernelPlugin[] {
    return this.alive().plugins;
  }

  /** Where the live update stands. */
  get state(): UpdateState {
    return this.stateValue;
  }

  get isDead(): boolean {
    return this.stateValue === 'dead';
  }

  /**
   * Resolves a service registered in this boot's container (for tests, tools and the command line; plugins
   * receive their dependencies through their constructors instead). Throws when the kernel is dead.
   */
  get<T>(token: InjectionToken<T>): T {
    return this.alive().container.resolve(token);
  }

  /** Whether a service is registered in this boot. */
  has(token: InjectionToken<unknown>): boolean {
    return this.alive().container.isRegistered(token, true);
  }

  /**
   * Starts a live update: runs `prepare` over every plugin in order. When one fails, `cancel` runs on every
   * plugin that completed prepare, in reverse order, and a KernelError naming the failing plugin is thrown.
   */
  prepare(): void {
    this.expectState('prepare', 'running');
    this.completed = [];
    this.runUpdatePhase(Phase.Prepare, (p) => p.prepare?.());
    this.stateValue = 'prepared';
  }

  /**
   * Runs `serialize` over every plugin: the final bytes before the jump. On failure everything prepared is
   * cancelled (reverse order) and a KernelError naming the plugin is thrown; the kexec does not happen.
   */
  serialize(): void {
    this.expectState('serialize', 'prepared');
    this.runUpdatePhase(Phase.Serialize, (p) => p.serialize?.(), false);
    this.stateValue = 'serialized';
  }

  /** Abandons a prepared or serialized update: `cancel` on every plugin that prepared, in reverse order. */
  cancel(): void {
    if (this.stateValue !== 'prepared' && this.stateValue !== 'serialized') {
      throw new KernelError(Errno.EINVAL, `cancel: no live update in progress (state is '${this.stateValue}')`);
    }
    this.runCancel();
  }

  /**
   * The jump, done by the machine ({@link Machine.kexec}): runs `kexec` on every plugin, disposes this kernel
   * completely (plugin instances, container) and boots the next kernel on the same machine with only the boot
   * parameters. Allowed with no update in progress (a plain kexec) or after `serialize`. Returns the new kernel.
   */
  kexec(opts: KexecOptions = {}): Kernel {
    return this.machine.kexec(this, opts);
  }

  /**
   * The jump without the landing ({@link Machine.jump}): returns the boot parameters for the next kernel and
   * leaves the machine halted with only its RAM (for writing a handover image; `machine.bootFrom` lands later,
   * possibly in another process). Same state rules as {@link kexec}.
   */
  jump(cmdline?: string): BootParams {
    return this.machine.jump(this, cmdline);
  }

  /** prepare, serialize and kexec in one call. Returns the new kernel; throws (with everything cancelled) on failure. */
  liveUpdate(opts: KexecOptions = {}): Kernel {
    this.prepare();
    this.serialize();
    return this.kexec(opts);
  }

  /** Runs `restore` over every plugin. Failures are reported per plugin, never thrown. */
  restore(): PhaseReport {
    return this.runReported(Phase.Restore, (p) => p.restore?.());
  }

  /** Runs `finish` over every plugin. Failures are reported per plugin, never thrown. */
  finish(): PhaseReport {
    return this.runReported(Phase.Finish, (p) => p.finish?.());
  }

  /**
   * @internal the machine's side of the jump: checks the state (any live state with `anyMoment`), runs the `kexec`
   * handlers (failures are logged; the jump happens regardless), publishes the memory picture of the moment, and
   * returns the boot parameters.
   */
  leave(cmdline?: string, anyMoment = false): BootParams {
    if (this.stateValue === 'dead' || (!anyMoment && this.stateValue !== 'running' && this.stateValue !== 'serialized')) {
      throw new KernelError(Errno.EBUSY, `kexec: the live update is '${this.stateValue}' (wanted 'serialized', or no update at all)`);
    }
    const live = this.alive();
    this.runReported(Phase.Kexec, (p) => p.kexec?.());
    this.publishMemory('jump');
    live.log.info('kernel', `kexec: jumping to generation ${this.generation + 1}`);
    return live.next.build(cmdline ?? this.cmdline.text);
  }

  /**
   * @internal drops everything this boot built, synchronously, so nothing of it stays reachable: the machine
   * calls it at kexec and shutdown.
   */
  dispose(why: 'kexec' | 'shutdown' = 'shutdown'): void {
    if (!this.live) return;
    dropContainer(this.live.container);
    this.live = undefined;
    this.completed = [];
    this.stateValue = 'dead';
    this.bus.emit('kernel:down', { generation: this.generation, why });
  }

  /** Publishes `memory:map` for `moment` when someone listens and the image provides pictures. */
  private publishMemory(moment: MemoryMoment): void {
    if (!this.bus.heard('memory:map') || !this.has(MemoryPicture)) return;
    const map = this.get<MemoryPicture>(MemoryPicture).take(moment);
    this.bus.emit('memory:map', { generation: this.generation, moment, map });
  }

/** Runs a plugin's handler with {@link KernelInfo.currentPlugin} set to it. */
  private as<T>(p: KernelPlugin, body: () => T): T {
    const outer = this.info.currentPlugin;
    this.info.currentPlugin = p.name;
    try {
      return body();
    } finally {
      this.info.currentPlugin = outer;
    }
  }

  private alive(): Live {
    if (!this.live) throw new KernelError(Errno.EINVAL, `kernel generation ${this.generation} is gone (replaced by kexec or shut down)`);
    return this.live;
  }

  private expectState(what: string, want: UpdateState): void {
    if (this.stateValue !== want) {
      throw new KernelError(Errno.EBUSY, `${what}: the live update is '${this.stateValue}' (wanted '${want}')`);
    }
  }

  private activePlugins(): KernelPlugin[] {
    return this.alive().plugins.filter((p) => !this.disabled.has(p.name));
  }

  private timed<T>(phase: Phase, body: () => T): T {
    const bus = this.bus;
    bus.emit('phase:start', { generation: this.generation, phase });
    const t0 = performance.now();
    let ok = false;
    try {
      const r = body();
      ok = true;
      return r;
    } finally {
      bus.emit('phase:end', { generation: this.generation, phase, ok, ms: performance.now() - t0 });
    }
  }

  private runBootPhase(phase: Phase): void {
    this.timed(phase, () => {
      for (const p of this.activePlugins()) {
        if (this.disabled.has(p.name)) continue; // disabled earlier in this phase
        const handler = phase === Phase.BootEarly ? p.bootEarly : phase === Phase.BootMm ? p.bootMm : p.bootLate;
        if (!handler) continue;
        try {
          this.as(p, () => handler.call(p));
        } catch (e) {
          this.disable(p.name, `${phase} failed: ${describe(e)}`, phase, e);
        }
      }
    });
  }

  /** Disables a plugin and, transitively, every plugin that must run after it. */
  private disable(name: string, reason: string, phase: Phase, error: unknown): void {
    const { log, plugins } = this.alive();
    this.pluginError(phase, name, error);
    const queue: Array<[string, string]> = [[name, reason]];
    while (queue.length > 0) {
      const [n, why] = queue.shift()!;
      if (this.disabled.has(n)) continue;
      this.disabled.set(n, why);
      log.error('kernel', `plugin '${n}' disabled: ${why}`);
      this.bus.emit('plugin:disabled', { generation: this.generation, plugin: n, reason: why });
      for (const q of plugins) if (q.after?.includes(n)) queue.push([q.name, `it needs '${n}', which is disabled`]);
    }
  }

  private pluginError(phase: Phase, plugin: string, error: unknown): void {
    this.bus.emit('plugin:error', { generation: this.generation, phase, plugin, reason: describe(error), error });
  }

  private runUpdatePhase(phase: Phase, step: (p: KernelPlugin) => void, track = true): void {
    this.timed(phase, () => {
      for (const p of this.activePlugins()) {
        try {
          this.as(p, () => step(p));
        } catch (e) {
          this.pluginError(phase, p.name, e);
          this.alive().log.error('kernel', `${phase} failed in plugin '${p.name}': ${describe(e)}; cancelling the update`);
          this.runCancel();
          const errno = e instanceof KernelError ? e.errno : Errno.EIO;
          throw new KernelError(errno, `live update ${phase} failed in plugin '${p.name}': ${describe(e)}`, { cause: e });
        }
        if (track) this.completed.push(p);
      }
    });
  }

  private runCancel(): void {
    const done = this.completed.slice().reverse();
    this.completed = [];
    this.stateValue = 'running';
    this.timed(Phase.Cancel, () => {
      for (const p of done) {
        try {
          this.as(p, () => p.cancel?.());
        } catch (e) {
          // A cancel that fails leaves state behind: that is a bug in the plugin, reported loudly.
          this.pluginError(Phase.Cancel, p.name, e);
          this.alive().log.error('kernel', `BUG: cancel failed in plugin '${p.name}': ${describe(e)}`);
        }
      }
    });
  }

  private runReported(phase: Phase, step: (p: KernelPlugin) => PluginReport | void): PhaseReport {
    const plugins: Record<string, PluginOutcome> = {};
    let ok = true;
    this.timed(phase, () => {
      for (const p of this.activePlugins()) {
        try {
          const report = this.as(p, () => step(p));
          plugins[p.name] = report ? { ok: true, report } : { ok: true };
        } catch (e) {
          ok = false;
          plugins[p.name] = { ok: false, error: describe(e) };
          this.pluginError(phase, p.name, e);
          this.alive().log.error('kernel', `${phase} failed in plugin '${p.name}': ${describe(e)}`);
        }
      }
    });
    return { phase, ok, plugins };
  }
}

/**
 * The error to report when a boot's container fails to build a plugin. tsyringe wraps what a constructor
 * throws while it resolves another class's parameters in a plain Error whose message ends with `Reason:`
 * and the inner message, indented on the next lines (no cause is kept); a KernelError's message is
 * `<ERRNO>: <reason>`, so the innermost one is rebuilt from that text, with the wrapper as its cause. Anything
 * else is returned as is.
 */
export function constructionError(e: unknown): unknown {
  const found = findKernelError(e);
  if (found) return found;
  if (!(e instanceof Error)) return e;
  const at = e.message.lastIndexOf('Reason:');
  const inner = at >= 0 ? e.message.slice(at + 'Reason:'.length).split('\n').map((l) => l.trim()).filter(Boolean).join(' ') : '';
  const m = /^(E[A-Z0-9]+): (.*)$/s.exec(inner);
  const errno = m ? (Errno as unknown as Record<string, number>)[m[1]] : undefined;
  return m && typeof errno === 'number' ? new KernelError(errno, m[2], { cause: e }) : e;
}

/** Empties a boot's container synchronously (its async dispose would keep it alive until the event loop turns). */
function dropContainer(container: DependencyContainer): void {
  container.clearInstances();
  container.reset();
}

function describe(e: unknown): string {
  if (e instanceof KernelError) return e.message;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

/**
 * Orders plugins so each runs after those it names in `after` (and in `afterIfPresent`, when present); ties
 * keep registration order. Throws EEXIST for a duplicate name, ENOENT for a missing dependency and EINVAL for a
 * cycle, each naming the plugins involved.
 */
export function orderPlugins(plugins: readonly KernelPlugin[]): KernelPlugin[] {
  const byName = new Map<string, KernelPlugin>();
  for (const p of plugins) {
    if (byName.has(p.name)) throw new KernelError(Errno.EEXIST, `two plugins are named '${p.name}'`);
    byName.set(p.name, p);
  }
  const deps = new Map<string, string[]>();
  for (const p of plugins) {
    for (const d of p.after ?? []) {
      if (!byName.has(d)) throw new KernelError(Errno.ENOENT, `plugin '${p.name}' must run after '${d}', which is not in this kernel`);
    }
    deps.set(p.name, [...(p.after ?? []), ...(p.afterIfPresent ?? []).filter((d) => byName.has(d))]);
  }
  const out: KernelPlugin[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const path: string[] = [];
  const visit = (name: string): void => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') {
      const cycle = [...path.slice(path.indexOf(name)), name];
      throw new KernelError(Errno.EINVAL, `plugin dependency cycle: ${cycle.join(' -> ')}`);
    }
    state.set(name, 'visiting');
    path.push(name);
    for (const d of deps.get(name)!) visit(d);
    path.pop();
    state.set(name, 'done');
    out.push(byName.get(name)!);
  };
  for (const p of plugins) visit(p.name);
  return out;
}

