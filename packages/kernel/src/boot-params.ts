import { Errno, KernelError } from './errno';

/**
 * The boot parameters: the only non-RAM state that crosses a kexec. Like x86 `setup_data`, they are a list of
 * typed byte blobs (KHO's `kho_data` is type 10) plus the command line. Blobs are copied on the way in and out,
 * so nothing of the old kernel's JS state is shared with the next.
 */
export class BootParams {
  private readonly blobs: Map<number, Uint8Array>;

  constructor(
    readonly cmdline = '',
    setupData: ReadonlyMap<number, Uint8Array> = new Map(),
  ) {
    this.blobs = new Map([...setupData].map(([t, b]) => [t, Uint8Array.from(b)]));
  }

  /** A copy of the setup_data blob of `type`, or undefined. */
  setupData(type: number): Uint8Array | undefined {
    const b = this.blobs.get(type);
    return b && Uint8Array.from(b);
  }

  /** The setup_data types present. */
  get types(): number[] {
    return [...this.blobs.keys()];
  }

  /** @internal the blobs, copied, for the next boot or an image file. */
  toMap(): Map<number, Uint8Array> {
    return new Map([...this.blobs].map(([t, b]) => [t, Uint8Array.from(b)]));
  }
}

/**
 * The boot parameters this kernel hands to the next one. A plugin (kho-core) sets its setup_data blob while
 * running; the kernel reads it at the jump.
 */
export class NextBootParams {
  private readonly blobs = new Map<number, Uint8Array>();

  /** Sets (or replaces) the setup_data blob of `type`; the bytes are copied. */
  setSetupData(type: number, bytes: Uint8Array): void {
    if (!Number.isInteger(type) || type < 0 || type > 0xffffffff) {
      throw new KernelError(Errno.EINVAL, `setup_data type ${type} is not a u32`);
    }
    this.blobs.set(type, Uint8Array.from(bytes));
  }

  /** Removes the setup_data blob of `type`, if any. */
  clearSetupData(type: number): void {
    this.blobs.delete(type);
  }

  /** The boot parameters for a next kernel started with `cmdline`. */
  build(cmdline: string): BootParams {
    return new BootParams(cmdline, this.blobs);
  }
}
