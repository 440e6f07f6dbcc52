import { Errno, KernelError } from '@kho/kernel';
import type { KhoGeneration } from './generation';
import { khoV1, khoV1Karr } from './kho-v1';
import { khoV2 } from './kho-v2';
import { khoV3 } from './kho-v3';
import { khoV4, khoV4Composite } from './kho-v4';

/** Every generation the project implements, oldest first. A new generation is one file and one entry here. */
export const KHO_GENERATIONS: readonly KhoGeneration[] = [khoV1, khoV1Karr, khoV2, khoV3, khoV4, khoV4Composite];

/** The generation `kho_abi=` names, or undefined. */
export function generationById(id: string): KhoGeneration | undefined {
  return KHO_GENERATIONS.find((g) => g.id === id);
}

/** The generation whose root compatible is exactly `compatible`, or undefined. */
export function generationByCompatible(compatible: string): KhoGeneration | undefined {
  return KHO_GENERATIONS.find((g) => g.compatible === compatible);
}

/**
 * The generation for `kho_abi=<text>` with a tracker of kind `tracker`: the tracker's default when `text` is
 * undefined. Throws EINVAL naming the value and what is allowed when the generation is unknown or carries another
 * kind of map than this kernel's tracker.
 */
export function selectGeneration(text: string | undefined, tracker: string, fallback: string): KhoGeneration {
  const id = text ?? fallback;
  const g = generationById(id);
  const fits = KHO_GENERATIONS.filter((x) => x.tracker === tracker).map((x) => x.id);
  if (!g) throw new KernelError(Errno.EINVAL, `kho_abi=${id} is not a KHO generation (wanted one of ${KHO_GENERATIONS.map((x) => x.id).join(', ')})`);
  if (g.tracker !== tracker) {
    throw new KernelError(Errno.EINVAL, `kho_abi=${id} (${g.compatible}) carries the ${g.tracker} map, but this kernel's tracker is ${tracker} (wanted one of ${fits.join(', ')})`);
  }
  return g;
}
