import { Errno, KernelError, formatBytes, hex, parseSize } from '@kho/kernel';
import type { PhysicalMemory } from '@kho/physmem';
import { KHO_LOWMEM_LIMIT, KHO_SCRATCH_ALIGN, type ScratchArea } from './abi';
import type { EarlyAllocator } from './ports';

/** Sizes of the scratch areas: lowmem (below 4 GiB), global, and one per NUMA node. */
export interface ScratchSizes {
  readonly lowmem: number;
  readonly global: number;
  readonly pernode: number[];
}

/**
 * Parses `kho_scratch=`: `N%` of the memory reserved during early boot, or `<lowmem>,<global>,<pernode>` with
 * K/M/G suffixes. Every size is rounded up to 2 MiB. Throws EINVAL naming the bad text.
 */
export function scratchSizes(spec: string, nodes: readonly number[], reserved: (f: { max?: number; node?: number }) => number): ScratchSizes {
  const up = (n: number): number => Math.max(KHO_SCRATCH_ALIGN, Math.ceil(n / KHO_SCRATCH_ALIGN) * KHO_SCRATCH_ALIGN);
  const pct = /^(\d+)%$/.exec(spec);
  if (pct) {
    const scale = Number(pct[1]) / 100;
    if (scale <= 0) throw new KernelError(Errno.EINVAL, `kho_scratch=${spec}: the percentage must be above 0`);
    return {
      lowmem: up(reserved({ max: KHO_LOWMEM_LIMIT }) * scale),
      global: up(reserved({}) * scale),
      pernode: nodes.map((node) => up(reserved({ node }) * scale)),
    };
  }
  const parts = spec.split(',');
  if (parts.length !== 3) {
    throw new KernelError(Errno.EINVAL, `kho_scratch=${spec} (wanted N% or <lowmem>,<global>,<pernode> with K/M/G suffixes)`);
  }
  const [lowmem, global, pernode] = parts.map((p, i) => up(parseSize(p, `kho_scratch ${['lowmem', 'global', 'pernode'][i]}`)));
  return { lowmem, global, pernode: nodes.map(() => pernode) };
}

/**
 * Places the scratch areas of a cold boot with the early allocator (lowmem below 4 GiB first, then global, then one
 * per node) and leaves them free but marked scratch: the buddy allocator serves them to movable allocations only,
 * as CMA. Returns the areas in kho_scratch order. Throws ENOMEM (having freed what it placed) when one does not fit.
 */
export function placeScratch(early: EarlyAllocator, ram: PhysicalMemory, sizes: ScratchSizes): ScratchArea[] {
  const areas: ScratchArea[] = [];
  try {
    const lowmemMax = Math.min(KHO_LOWMEM_LIMIT, ram.endAddr);
    areas.push({ addr: early.alloc(sizes.lowmem, KHO_SCRATCH_ALIGN, { max: lowmemMax, owner: 'kho-scratch' }), size: sizes.lowmem });
    areas.push({ addr: early.alloc(sizes.global, KHO_SCRATCH_ALIGN, { owner: 'kho-scratch' }), size: sizes.global });
    ram.nodes.forEach((node, i) => {
      areas.push({ addr: early.alloc(sizes.pernode[i], KHO_SCRATCH_ALIGN, { node, owner: 'kho-scratch' }), size: sizes.pernode[i] });
    });
  } catch (e) {
    for (const a of areas) early.free(a.addr, a.size);
    throw e;
  }
  for (const a of areas) {
    early.free(a.addr, a.size);
    early.markScratch(a.addr, a.size);
  }
  return areas;
}

/** `0x…+2.00 MiB, …`: the areas as the log shows them. */
export function describeScratch(areas: readonly ScratchArea[]): string {
  return areas.map((a) => `${hex(a.addr)}+${formatBytes(a.size)}`).join(', ');
}

/** The scratch area that `[phys, phys + size)` overlaps, or undefined. */
export function overlappingScratch(areas: readonly ScratchArea[], phys: number, size: number): ScratchArea | undefined {
  return areas.find((a) => phys < a.addr + a.size && a.addr < phys + size);
}
