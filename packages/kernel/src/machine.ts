import type { InjectionToken } from 'tsyringe';
import { BootParams } from './boot-params';
import { MachineBus } from './bus';
import { Errno, KernelError } from './errno';
import { Kernel, type KexecOptions } from './kernel';
import type { KernelModule } from './plugin';

/** How to start a kernel: the modules that make up its image, and its command line. */
export interface BootOptions {
  readonly image: readonly KernelModule[];
  readonly cmdline?: string;
}

/** How to land a handover on a halted machine (see {@link Machine.bootFrom}). */
export interface LandOptions {
  readonly image: readonly KernelModule[];
  /**
   * The generation the new kernel has: the `to` of the kexec that handed over (an image records it). Default:
   * one more than the last kernel of this machine.
   */
  readonly generation?: number;
}

/**
 * The hardware: it outlives kernels. Devices (RAM above all) are attached once and handed to every kernel that
 * boots on this machine; everything else a kernel builds dies with it at kexec. The machine owns the event bus
 * every kernel publishes on, and the kexec transition from one kernel to the next.
 */
export class Machine {
  /** The machine-level event stream: boots, phases, plugin errors, kexecs, log lines, preservation events. */
  readonly bus = new MachineBus();
  private readonly devices = new Map<InjectionToken<unknown>, unknown>();
  private running: Kernel | undefined;
  private generations = 0;

  /** Attaches a device (a value that survives every kexec) under `token`. Returns this machine. */
  attach<T>(token: InjectionToken<T>, device: T): this {
    if (this.devices.has(token)) throw new KernelError(Errno.EEXIST, `a device is already attached as ${String(token)}`);
    this.devices.set(token, device);
    return this;
  }

  /** The device attached under `token`. Throws ENOENT when there is none. */
  device<T>(token: InjectionToken<T>): T {
    if (!this.devices.has(token)) throw new KernelError(Errno.ENOENT, `no device attached as ${String(token)}`);
    return this.devices.get(token) as T;
  }

  /** @internal every attached device, for a booting kernel's container. */
  attachedDevices(): ReadonlyMap<InjectionToken<unknown>, unknown> {
    return this.devices;
  }

  /** The kernel running now, if any. */
  get kernel(): Kernel | undefined {
    return this.running;
  }

  /** The generation of the last kernel started on this machine (0 before the first boot). */
  get generation(): number {
    return this.generations;
  }

  /**
   * Cold boot: starts a kernel with no boot parameters but the command line. Any running kernel is shut down
   * first (RAM keeps its bytes, as after a warm reset). Returns the new kernel; throws a KernelError when the
   * image is inconsistent (duplicate, missing or cyclic plugin dependencies) or a plugin cannot be built.
   */
  boot(opts: BootOptions): Kernel {
    this.shutdown();
    return this.start(opts.image, new BootParams(opts.cmdline ?? ''), 'cold');
  }

  /** Disposes the running kernel, if any, without a handover. */
  shutdown(): void {
    const k = this.running;
    this.running = undefined;
    k?.dispose('shutdown');
  }

  /**
   * The kexec transition: runs `kernel`'s kexec handlers, publishes `kexec`, disposes `kernel` and boots the
   * next kernel with only the boot parameters (see {@link Kernel.kexec} for the rules). Returns the new kernel.
   */
  kexec(kernel: Kernel, opts: KexecOptions = {}): Kernel {
    const params = this.jump(kernel, opts.cmdline, { anyMoment: opts.anyMoment });
    return this.start(opts.image ?? kernel.image, params, 'handover');
  }

  /**
   * The transition without the landing: the machine is left halted with its RAM, and the returned boot
   * parameters are for {@link bootFrom} (later, or in another process through an image). With `anyMoment` the
   * jump happens whatever the live update's state (see {@link KexecOptions.anyMoment}).
   */
  jump(kernel: Kernel, cmdline?: string, how: { readonly anyMoment?: boolean } = {}): BootParams {
    if (this.running !== kernel) throw new KernelError(Errno.EINVAL, `kexec: generation ${kernel.generation} is not the kernel running on this machine`);
    const params = kernel.leave(cmdline, how.anyMoment === true);
    this.bus.emit('kexec', { from: kernel.generation, to: kernel.generation + 1, cmdline: params.cmdline });
    this.running = undefined;
    kernel.dispose('kexec');
    return params;
  }

  /**
   * Boots a kernel from boot parameters handed over by a previous one, on a halted machine. Returns the new
   * kernel. Throws EBUSY when a kernel is running, EINVAL for a generation that is not a positive integer.
   */
  bootFrom(params: BootParams, opts: LandOptions): Kernel {
    if (opts.generation !== undefined) {
      if (!Number.isSafeInteger(opts.generation) || opts.generation < 1) {
        throw new KernelError(Errno.EINVAL, `boot: generation ${opts.generation} (wanted a positive integer)`);
      }
      if (!this.running) this.generations = opts.generation - 1;
    }
    return this.start(opts.image, params, 'handover');
  }

  private start(image: readonly KernelModule[], params: BootParams, kind: 'cold' | 'handover'): Kernel {
    if (this.running) throw new KernelError(Errno.EBUSY, 'a kernel is still running on this machine');
    const kernel = new Kernel(this, this.generations + 1, image, params, kind);
    this.generations = kernel.generation;
    this.running = kernel;
    return kernel;
  }
}
