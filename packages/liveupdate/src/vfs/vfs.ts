import { injectable } from 'tsyringe';
import { Errno, KernelError, KernelInfo, type KernelPlugin } from '@kho/kernel';
import { KernelFile } from './file';
import { Process, type DeviceOpen, type ProcessHost } from './process';

/**
 * The user-facing side of one boot: device paths and the processes that use them. One instance per kernel
 * (plugin 'vfs'); at the jump every process dies with it, since nothing of user space crosses a kexec.
 * `/dev/null` is always there; `/dev/liveupdate` is registered by LUO when it is enabled.
 */
@injectable()
export class Vfs implements KernelPlugin, ProcessHost {
  readonly name = 'vfs';
  private readonly devices = new Map<string, DeviceOpen>();
  private readonly procs: Process[] = [];
  private nextPid = 1;
  private dead = false;

  constructor(private readonly info: KernelInfo) {
    this.registerDevice('/dev/null', () => new KernelFile('/dev/null', NULL_OPS, undefined));
  }

  get generation(): number {
    return this.info.generation;
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** Makes `path` openable. EEXIST when something is registered there. */
  registerDevice(path: string, open: DeviceOpen): void {
    if (this.devices.has(path)) throw new KernelError(Errno.EEXIST, `device ${path} is already registered`);
    this.devices.set(path, open);
  }

  unregisterDevice(path: string): void {
    this.devices.delete(path);
  }

  lookup(path: string): DeviceOpen | undefined {
    return this.devices.get(path);
  }

  /** Starts a process (pid 1, 2, ... in this boot). */
  spawn(name: string): Process {
    if (this.dead) throw new KernelError(Errno.EINVAL, `spawn('${name}'): kernel generation ${this.generation} is gone`);
    const p = new Process(this.nextPid++, name, this);
    this.procs.push(p);
    return p;
  }

  /** The processes of this boot that have not exited. */
  processes(): readonly Process[] {
    return this.procs.filter((p) => !p.hasExited);
  }

  /** The jump: user space is gone (its files are not closed: the kernel that owned them is). */
  kexec(): void {
    this.dead = true;
  }
}

/** /dev/null: reads give nothing, writes take everything. */
const NULL_OPS = {
  read: () => new Uint8Array(0),
  write: (_f: KernelFile, _off: number, bytes: Uint8Array) => bytes.length,
  size: () => 0,
};
