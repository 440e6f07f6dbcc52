import type { Kho } from '@kho/kho-core';

/**
 * The one place LUO calls KHO's subtree API. KHO is gaining blob sizes (`addSubtree(name, phys, size)`,
 * `retrieveSubtree(name)` → `{ phys, size }`, the `blob-size` property of kho-v3/v4); until then the size is
 * dropped on the way out and unknown on the way in, and the readers skip the blob-size checks they make once it
 * is known (luo-v5: at least 32 bytes; luo-v1 variant: 1..4096).
 */
export function addLuoSubtree(kho: Kho, name: string, phys: number, _size: number): void {
  kho.addSubtree(name, phys);
}

export function removeLuoSubtree(kho: Kho, phys: number): void {
  kho.removeSubtree(phys);
}

/** The previous kernel's subtree `name`: its phys and, once KHO hands sizes over, its blob-size. Throws KHO's errors (ENOENT, EINVAL). */
export function retrieveLuoSubtree(kho: Kho, name: string): { phys: number; size: number | undefined } {
  return { phys: kho.retrieveSubtree(name), size: undefined };
}
