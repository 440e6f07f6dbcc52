import { BootParams, Errno, KernelError, type Machine } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory, type RamRange } from '@kho/physmem';
import { SETUP_KHO } from '@kho/kho-core';
import { pagesToSegments, readImageFile, writeImageFile, type HandoverImage } from '@kho/image';
import { machineFor } from './system';

/** Extra keys this project stores in the image's machine note. */
export interface ImageExtras {
  /** The command line for the next kernel. */
  readonly cmdline: string;
  /** The tracker that wrote the handover: 'radix', 'bitmap-chunks' or 'bitmap-array' (see TRACKER_KINDS). */
  readonly tracker: string;
  /** The demo's settings, when the image came from `kho kexec`. */
  readonly demo?: { mem: number; seed: number };
  /** The VMM demo's settings, when the image came from `kho kexec --vmm` (checked by its reader: see vmm/commands). */
  readonly vmm?: unknown;
  /** The generation of the kernel the image boots (the `to` of the kexec that wrote it). */
  readonly generation?: number;
}

/**
 * Writes the machine's RAM at the jump (every populated page, as runs) and the boot parameters to a handover
 * image file (spec section 10), atomically (see writeImageFile). Returns the file's size in bytes. Throws EINVAL
 * when the boot parameters carry no kho_data, EIO when the file cannot be written.
 */
export function writeHandoverImage(file: string, machine: Machine, params: BootParams, extras: ImageExtras): number {
  const khoData = params.setupData(SETUP_KHO);
  if (!khoData) throw new KernelError(Errno.EINVAL, 'the kernel handed over no kho_data (was KHO enabled?)');
  const ram = machine.device(PhysicalMemory);
  const image: HandoverImage = {
    khoData,
    machine: {
      pageSize: PAGE_SIZE,
      ram: ram.ranges.map((r) => ({ start: r.start, size: r.size, node: r.node })),
      cmdline: extras.cmdline,
      tracker: extras.tracker,
      ...(extras.demo ? { demo: extras.demo } : {}),
      ...(extras.vmm !== undefined ? { vmm: extras.vmm } : {}),
      ...(extras.generation !== undefined ? { generation: extras.generation } : {}),
      generator: 'kho-lab',
    },
    segments: pagesToSegments(ram.populatedPfns(), (pfn) => ram.pageIfPresent(pfn) ?? new Uint8Array(PAGE_SIZE)),
  };
  return writeImageFile(file, image);
}

/** A machine rebuilt from an image: RAM refilled, halted at the jump, with the boot parameters to land with. */
export interface LoadedImage {
  readonly machine: Machine;
  readonly params: BootParams;
  readonly ranges: readonly RamRange[];
  readonly extras: Partial<ImageExtras>;
  /** The image as read: its kho_data and machine note (the segments went into the machine's RAM). */
  readonly image: HandoverImage;
}

/**
 * Reads a handover image and rebuilds its machine, copying the segments' bytes into its RAM as they are read
 * (the file's data is never held twice; all-zero pages are left unwritten, as RAM reads zero anyway). `image`
 * comes back without segment bytes. Throws KernelError(EINVAL) naming what is wrong with the file.
 */
export function loadHandoverImage(file: string): LoadedImage {
  let machine: Machine | undefined;
  let ram: PhysicalMemory | undefined;
  const image = readImageFile(file, {
    onHeaders: (h) => {
      machine = machineFor({ ranges: h.machine.ram });
      ram = machine.device(PhysicalMemory);
    },
    onSegment: (s) => writeNonZeroPages(ram!, s.paddr, s.bytes),
  });
  const ranges = image.machine.ram.map((r) => ({ start: r.start, size: r.size, node: r.node }));
  const m = image.machine as Record<string, unknown>;
  const extras: Partial<ImageExtras> = {
    cmdline: typeof m.cmdline === 'string' ? m.cmdline : '',
    tracker: typeof m.tracker === 'string' ? m.tracker : undefined,
    demo: isDemo(m.demo) ? m.demo : undefined,
    vmm: m.vmm,
    generation: Number.isSafeInteger(m.generation) && (m.generation as number) >= 1 ? (m.generation as number) : undefined,
  };
  const params = new BootParams(extras.cmdline ?? '', new Map([[SETUP_KHO, image.khoData]]));
  return { machine: machine!, params, ranges, extras, image };
}

/** Copies the pages of `bytes` (page-aligned, at `paddr`) into `ram`, runs at a time, skipping all-zero pages. */
export function writeNonZeroPages(ram: PhysicalMemory, paddr: number, bytes: Uint8Array): void {
  // 32-bit words when the bytes allow it (page-aligned buffers in practice): a quarter of the loads
  const words = bytes.byteOffset % 4 === 0 ? new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2) : undefined;
  const isZero = (off: number): boolean => {
    if (words) {
      for (let w = off >> 2, end = (off + PAGE_SIZE) >> 2; w < end; w++) if (words[w] !== 0) return false;
      return true;
    }
    for (let b = off; b < off + PAGE_SIZE; b++) if (bytes[b] !== 0) return false;
    return true;
  };
  let run = -1;
  for (let off = 0; off <= bytes.length; off += PAGE_SIZE) {
    const zero = off === bytes.length || isZero(off);
    if (!zero && run < 0) run = off;
    if (zero && run >= 0) {
      ram.write(paddr + run, bytes.subarray(run, off));
      run = -1;
    }
  }
}

function isDemo(v: unknown): v is { mem: number; seed: number } {
  return typeof v === 'object' && v !== null && Number.isSafeInteger((v as { mem: unknown }).mem) && Number.isSafeInteger((v as { seed: unknown }).seed);
}
