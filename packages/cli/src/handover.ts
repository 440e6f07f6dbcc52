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
  readonly image: HandoverImage;
}

/** Reads a handover image and rebuilds its machine. Throws KernelError(EINVAL) naming what is wrong with the file. */
export function loadHandoverImage(file: string): LoadedImage {
  const image = readImageFile(file);
  const ranges = image.machine.ram.map((r) => ({ start: r.start, size: r.size, node: r.node }));
  const machine = machineFor({ ranges });
  const ram = machine.device(PhysicalMemory);
  for (const s of image.segments) ram.write(s.paddr, s.bytes);
  const m = image.machine as Record<string, unknown>;
  const extras: Partial<ImageExtras> = {
    cmdline: typeof m.cmdline === 'string' ? m.cmdline : '',
    tracker: typeof m.tracker === 'string' ? m.tracker : undefined,
    demo: isDemo(m.demo) ? m.demo : undefined,
    vmm: m.vmm,
    generation: Number.isSafeInteger(m.generation) && (m.generation as number) >= 1 ? (m.generation as number) : undefined,
  };
  const params = new BootParams(extras.cmdline ?? '', new Map([[SETUP_KHO, image.khoData]]));
  return { machine, params, ranges, extras, image };
}

function isDemo(v: unknown): v is { mem: number; seed: number } {
  return typeof v === 'object' && v !== null && Number.isSafeInteger((v as { mem: unknown }).mem) && Number.isSafeInteger((v as { seed: unknown }).seed);
}
