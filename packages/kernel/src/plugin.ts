import { Lifecycle, type DependencyContainer, type InjectionToken } from 'tsyringe';

/** What a plugin's restore or finish handler may report (free-form, JSON-serialisable). */
export type PluginReport = Record<string, unknown>;

/**
 * A plugin: one injectable class per subsystem, registered into each boot's container under the
 * {@link KernelPlugin} token. Handlers are optional; they run in dependency order (`after`), and `cancel` in
 * reverse. Handlers take no arguments: a plugin receives what it needs through its constructor.
 */
export const KernelPlugin = Symbol('KernelPlugin');
export interface KernelPlugin {
  /** Unique within a kernel. */
  readonly name: string;
  /** Plugins that must run before this one; a missing one is a boot error. */
  readonly after?: readonly string[];
  /** Plugins that, when present in this kernel, run before this one. */
  readonly afterIfPresent?: readonly string[];

  bootEarly?(): void;
  bootMm?(): void;
  bootLate?(): void;
  prepare?(): void;
  serialize?(): void;
  kexec?(): void;
  restore?(): PluginReport | void;
  finish?(): PluginReport | void;
  cancel?(): void;
}

/**
 * A piece of a kernel image: what a package contributes to every boot. `register` is called on the boot's own
 * child container (a fresh one per boot), so every instance it registers lives exactly as long as that kernel.
 */
export interface KernelModule {
  readonly name: string;
  register(container: DependencyContainer): void;
}

/**
 * Registers `cls` in a boot's container as one instance per boot, and, when it is a plugin, under the
 * {@link KernelPlugin} token too (resolving either gives the same instance).
 */
export function registerPerBoot<T>(container: DependencyContainer, cls: new (...args: never[]) => T, opts: { plugin?: boolean } = {}): void {
  container.register(cls as InjectionToken<T>, { useClass: cls as never }, { lifecycle: Lifecycle.ContainerScoped });
  if (opts.plugin) container.register(KernelPlugin, { useToken: cls as InjectionToken<T> });
}
