import type { InjectionToken } from 'tsyringe';
import { BootParams } from './boot-params';
import { Errno, KernelError } from './errno';
import { Kernel } from './kernel';
import type { LogLine } from './log';
import type { KernelModule } from './plugin';

/** How to start a kernel: the modules that make up its image, and its command line. */
export interface BootOptions {
  readonly image: readonly KernelModule[];
  readonly cmdline?: string;
}

/**
 * The hardware: it outlives kernels. Devices (RAM above all) are attached once and handed to every kernel that
 * boots on this machine; everything else a kernel builds dies with it at kexec.
 */
export class Machine {
  private readonly devices = new Map<InjectionToken<unknown>, unknown>();
  private running: Kernel | undefined;
  private generations = 0;

  /** Receives every kernel log line of every boot, as it is written (the serial console). */
  console: ((line: LogLine) => void) | undefined;

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

  /** How many kernels have booted on this machine. */
  get bootCount(): number {
    return this.generations;
  }

  /**
   * Cold boot: starts a kernel with no boot parameters but the command line. Any running kernel is shut down
   * first (RAM keeps its bytes, as after a warm reset). Returns the new kernel; throws a KernelError when the
   * image is inconsistent (duplicate, missing or cyclic plugin dependencies).
   */
  boot(opts: BootOptions): Kernel {
    this.shutdown();
    return this.start(opts.image, new BootParams(opts.cmdline ?? ''));
  }

  /** Disposes the running kernel, if any, without a handover. */
  shutdown(): void {
    this.running?.dispose();
    this.running = undefined;
  }

  /**
   * Boots a kernel from boot parameters handed over by a previous one (`Kernel.jump`), on a halted machine.
   * Returns the new kernel.
   */
  bootFrom(params: BootParams, opts: { image: readonly KernelModule[] }): Kernel {
    return this.start(opts.image, params);
  }

  /** @internal a kernel that jumped leaves the machine halted. */
  halt(kernel: Kernel): void {
    if (this.running === kernel) this.running = undefined;
  }

  /** @internal starts a kernel with the given boot parameters (used by cold boot and by kexec). */
  start(image: readonly KernelModule[], params: BootParams): Kernel {
    if (this.running && !this.running.isDead) throw new KernelError(Errno.EBUSY, 'a kernel is still running on this machine');
    this.running = undefined;
    const kernel = new Kernel(this, ++this.generations, image, params);
    this.running = kernel;
    return kernel;
  }
}
