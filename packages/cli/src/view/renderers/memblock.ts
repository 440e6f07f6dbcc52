import { formatBytes, hex } from '@kho/kernel';
import { MEMBLOCK_SUBTREE, readMemblockFdt } from '@kho/memblock';
import { PAGE_SIZE } from '@kho/physmem';
import type { Claim, SubtreeRenderer } from '../types';

/** Subtree `memblock` (upstream's memblock-v1): the reserve_mem regions handed over, by name. */
export const memblockRenderer: SubtreeRenderer = {
  kind: 'memblock reserve_mem regions (memblock-v1 FDT)',
  jsonKey: 'memblock',
  matches: (node) => node.name === MEMBLOCK_SUBTREE,
  render({ ram, phys }) {
    const regions = [...readMemblockFdt(ram, phys)].map(([name, r]) => ({ name, start: hex(r.start), size: r.size }));
    const claims: Claim[] = [{ start: phys, end: phys + PAGE_SIZE, what: 'memblock FDT' }];
    for (const r of regions) claims.push({ start: Number(r.start), end: Number(r.start) + r.size, what: `reserve_mem region ${r.name}` });
    return {
      data: regions,
      claims,
      view: {
        label: 'reserve_mem regions',
        value: `${regions.length}`,
        phys,
        children: regions.map((r) => ({ label: r.name, value: `${r.start} +${formatBytes(r.size)}`, phys: Number(r.start) })),
      },
    };
  },
};
