import { formatBytes, hex } from '@kho/kernel';
import { MEMFD_SUBTREE, decodeMemfdTable, memfdTableSize } from '@kho/memfd';
import { PAGE_SIZE } from '@kho/physmem';
import type { Claim, SubtreeRenderer } from '../types';

/** The largest memfd table (4 MiB, its own limit). */
const MEMFD_TABLE_MAX = 4 * 2 ** 20;

/** Subtree `memfd`: the table of preserved memfd files and their folios. */
export const memfdRenderer: SubtreeRenderer = {
  kind: 'memfd file table',
  jsonKey: 'memfd',
  matches: (node) => node.name === MEMFD_SUBTREE,
  render({ ram, phys }) {
    const r = ram.rangeOf(phys);
    const files = decodeMemfdTable(ram.read(phys, Math.min(MEMFD_TABLE_MAX, r.start + r.size - phys)));
    const folios = files.reduce((n, f) => n + f.folios.length, 0);
    const claims: Claim[] = [{ start: phys, end: phys + memfdTableSize(files.length, folios), what: 'memfd table' }];
    for (const f of files) for (const x of f.folios) claims.push({ start: x.phys, end: x.phys + PAGE_SIZE * 2 ** x.order, what: `folio of ${f.name}` });
    return {
      data: files,
      claims,
      view: {
        label: 'memfd files',
        value: `${files.length}`,
        phys,
        children: files.map((f) => ({
          label: f.name,
          value: `${formatBytes(f.size)} file size, ${f.folios.length} folios`,
          children: f.folios.map((x) => ({ label: `offset ${x.offset}`, value: `folio ${hex(x.phys)} order ${x.order}`, phys: x.phys })),
        })),
      },
    };
  },
};
