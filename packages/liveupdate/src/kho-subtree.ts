import type { Kho } from '@kho/kho-core';
import type { PhysAddr } from '@kho/physmem';
import { Errno, KernelError } from '@kho/kernel';

/**
 * The one place LUO calls KHO's subtree API. From kho-v3 on the blob's size crosses as `blob-size` and the readers
 * check it (luo-v5: at least 32 bytes; luo-v1, linux-mm variant: 1..4096); older generations hand over no size.
 */
export function addLuoSubtree(kho: Kho, name: string, phys: PhysAddr, size: number): void {
  kho.addSubtree(name, phys, size);
}

export function removeLuoSubtree(kho: Kho, phys: PhysAddr): void {
  kho.removeSubtree(phys);
}

/** The previous kernel's subtree `name`: its phys and, from kho-v3 on, its blob-size; undefined when there is none. Throws KHO's other errors (EINVAL). */
export function retrieveLuoSubtree(kho: Kho, name: string): { phys: PhysAddr; size: number | undefined } | undefined {
  try {
    const ref = kho.retrieveSubtree(name);
    return { phys: ref.phys, size: ref.size };
  } catch (e) {
    // no such subtree: the previous kernel handed no LUO state over
    if (e instanceof KernelError && e.errno === Errno.ENOENT) return undefined;
    throw e;
  }
}
