import { container as rootContainer, type DependencyContainer, type InjectionToken } from 'tsyringe';
import { BootParams, NextBootParams } from './boot-params';
import { LifecycleBus } from './bus';
import { CommandLine } from './cmdline';
import { Errno, KernelError } from './errno';
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
}

interface Live {
  readonly container: DependencyContainer;
  readonly bus: LifecycleBus;
  readonly log: KernelLog;
  readonly next: NextBootParams;
  readonly plugins: readonly KernelPlugin[];
}

/**
 * One boot of a {@link Machine}: a fresh tsyringe child container holding this boot's plugins and services, a
 * lifecycle bus, and the phase runner. `kexec` disposes all of it and boots a new kernel that receives nothing
 * but the machine's RAM and the boot parameters.
 */
export class Kernel {
  readonly cmdline: CommandLine;
  /** Milliseconds spent in each phase this boot (summed over repeated runs). */
  readonly phaseMs = new Map<Phase, number>();
  /** Plugins disabled during boot, with the reason. */
  readonly disabled = new Map<string, string>();
  private live: Live | undefined;
  private stateValue: UpdateState = 'running';
  private completed: KernelPlugin[] = [];
  private readonly info: KernelInfo;

  constructor(
    private readonly machine: Machine,
    readonly generation: number,
    readonly image: readonly KernelModule[],
    readonly bootParams: BootParams,
  ) {
    this.cmdline = new CommandLine(bootParams.cmdline);
    const container = rootContainer.createChildContainer();
    const bus = new LifecycleBus();
    const log = new KernelLog(bus, generation, machine.console);
    const next = new NextBootParams();
    for (const [token, device] of machine.attachedDevices()) container.register(token, { useValue: device });
    container.register(LifecycleBus, { useValue: bus });
    container.register(KernelLog, { useValue: log });
    container.register(CommandLine, { useValue: this.cmdline });
    container.register(BootParams, { useValue: bootParams });
    container.register(NextBootParams, { useValue: next });
    this.info = new KernelInfo(generation);
    container.register(KernelInfo, { useValue: this.info });
    const seen = new Set<string>();
    for (const m of image) {
      if (seen.has(m.name)) throw new KernelError(Errno.EEXIST, `kernel image lists module '${m.name}' twice`);
      seen.add(m.name);
      m.register(container);
    }
    const plugins = container.isRegistered(KernelPlugin) ? container.resolveAll<KernelPlugin>(KernelPlugin) : [];
    this.live = { container, bus, log, next, plugins: orderPlugins(plugins) };
    log.info('kernel', `booting generation ${generation}: ${this.live.plugins.map((p) => p.name).join(', ') || 'no plugins'}`);
    if (bootParams.cmdline) log.info('kernel', `command line: ${bootParams.cmdline}`);
    for (const phase of BOOT_PHASES) this.runBootPhase(phase);
  }

  /** This boot's lifecycle bus. */
  get bus(): LifecycleBus {
    return this.alive().bus;
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
   * The jump: runs `kexec` on every plugin, disposes this kernel completely (listeners, plugin instances,
   * container) and boots the next kernel on the same machine with only the boot parameters. Allowed with no
   * update in progress (a plain kexec) or after `serialize`. Returns the new kernel.
   */
  kexec(opts: KexecOptions = {}): Kernel {
    const params = this.jump(opts.cmdline);
    return this.machine.start(opts.image ?? this.image, params);
  }

  /**
   * The jump without the landing: runs `kexec` on every plugin, disposes this kernel and returns the boot
   * parameters for the next one, leaving the machine halted with only its RAM (for writing a handover image;
   * `machine.bootFrom` lands later, possibly in another process). Same state rules as {@link kexec}.
   */
  jump(cmdline?: string): BootParams {
    if (this.stateValue !== 'running' && this.stateValue !== 'serialized') {
      throw new KernelError(Errno.EBUSY, `kexec: the live update is '${this.stateValue}' (wanted 'serialized', or no update at all)`);
    }
    const live = this.alive();
    this.runReported(Phase.Kexec, (p) => p.kexec?.()); // failures are logged; the jump happens regardless
    const params = live.next.build(cmdline ?? this.cmdline.text);
    live.log.info('kernel', `kexec: jumping to generation ${this.generation + 1}`);
    this.dispose();
    this.machine.halt(this);
    return params;
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

  /** @internal drops everything this boot built. Called by kexec and by the machine's shutdown. */
  dispose(): void {
    if (!this.live) return;
    const { bus, container } = this.live;
    bus.removeAllListeners();
    container.clearInstances();
    void container.dispose();
    this.live = undefined;
    this.completed = [];
    this.stateValue = 'dead';
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
    const { bus } = this.alive();
    bus.emit('phase:start', { phase, generation: this.generation });
    const t0 = performance.now();
    let ok = false;
    try {
      const r = body();
      ok = true;
      return r;
    } finally {
      const ms = performance.now() - t0;
      this.phaseMs.set(phase, (this.phaseMs.get(phase) ?? 0) + ms);
      this.live?.bus.emit('phase:end', { phase, generation: this.generation, ok, ms });
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
    const { bus, log, plugins } = this.alive();
    bus.emit('plugin:error', { phase, plugin: name, error });
    const queue: Array<[string, string]> = [[name, reason]];
    while (queue.length > 0) {
      const [n, why] = queue.shift()!;
      if (this.disabled.has(n)) continue;
      this.disabled.set(n, why);
      log.error('kernel', `plugin '${n}' disabled: ${why}`);
      bus.emit('plugin:disabled', { plugin: n, reason: why });
      for (const q of plugins) if (q.after?.includes(n)) queue.push([q.name, `it needs '${n}', which is disabled`]);
    }
  }

  private runUpdatePhase(phase: Phase, step: (p: KernelPlugin) => void, track = true): void {
    this.timed(phase, () => {
      for (const p of this.activePlugins()) {
        try {
          this.as(p, () => step(p));
        } catch (e) {
          this.alive().bus.emit('plugin:error', { phase, plugin: p.name, error: e });
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
          this.alive().bus.emit('plugin:error', { phase: Phase.Cancel, plugin: p.name, error: e });
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
          this.alive().bus.emit('plugin:error', { phase, plugin: p.name, error: e });
          this.alive().log.error('kernel', `${phase} failed in plugin '${p.name}': ${describe(e)}`);
        }
      }
    });
    return { phase, ok, plugins };
  }
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

