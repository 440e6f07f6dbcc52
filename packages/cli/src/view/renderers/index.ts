import type { SubtreeRenderer } from '../types';
import { fdtRenderer } from './fdt';
import { kexecMetadataRenderer } from './kexec-metadata';
import { luoRenderer } from './luo';
import { kstateRenderer } from './kstate';
import { memblockRenderer } from './memblock';
import { memfdRenderer } from './memfd';
import { slabRenderer } from './slab';

/**
 * Every kind of subtree the explorer and `kho inspect` decode, tried in order; the first that matches renders.
 * A new kind of subtree is one file in this folder and one entry here, before the FDT fallback.
 */
export const SUBTREE_RENDERERS: readonly SubtreeRenderer[] = [kstateRenderer, memfdRenderer, memblockRenderer, slabRenderer, kexecMetadataRenderer, luoRenderer, fdtRenderer];

export { fdtRenderer, kexecMetadataRenderer, kstateRenderer, luoRenderer, memblockRenderer, memfdRenderer, slabRenderer };
