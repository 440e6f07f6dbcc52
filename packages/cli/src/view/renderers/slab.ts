import { Errno, KernelError, formatBytes, hex } from '@kho/kernel';
import { decodeFdt } from '@kho/fdt';
import { KHO_SLAB_COMPATIBLE, KHO_SLAB_SUBTREE, decodeSlabTablePage, type KhoSlabEntry } from '@kho/kho-slab';
import { PAGE_SIZE } from '@kho/physmem';
import type { Claim, SubtreeRenderer } from '../types';

/** The slab table's chain is refused past this many pages (its format's own limit). */
const MAX_TABLE_PAGES = 1024;

/** Subtree `kho-slab` (kho-slab-v1): preserved slabs and large kmallocs, with the objects kept in each. */
export const slabRenderer: SubtreeRenderer = {
  kind: 'preserved slabs (kho-slab-v1)',
  jsonKey: 'slab',
  matches: (node) => node.name === KHO_SLAB_SUBTREE,
  render({ ram, phys }) {
    const bad = (what: string): never => {
      throw new KernelError(Errno.EINVAL, `kho-slab at ${hex(phys)}: ${what}`);
    };
    if (!Number.isSafeInteger(phys) || phys % PAGE_SIZE !== 0 || !ram.isRam(phys, PAGE_SIZE)) bad('not a page of RAM');
    const fdt = decodeFdt(ram.read(phys, PAGE_SIZE));
    if (fdt.getString('compatible') !== KHO_SLAB_COMPATIBLE) bad(`compatible is '${fdt.getString('compatible') ?? '(missing)'}' (wanted '${KHO_SLAB_COMPATIBLE}')`);
    const first = fdt.getU64LE('slab-table');
    if (first === undefined) bad("no 'slab-table' property (wanted the phys of the first table page)");
    const claims: Claim[] = [{ start: phys, end: phys + PAGE_SIZE, what: 'kho-slab FDT' }];
    const entries: KhoSlabEntry[] = [];
    const seen = new Set<number>();
    for (let p = Number(first); p !== 0; ) {
      if (!Number.isSafeInteger(p) || p % PAGE_SIZE !== 0 || !ram.isRam(p, PAGE_SIZE)) bad(`table page ${hex(p)} is not a page of RAM`);
      if (seen.has(p) || seen.size >= MAX_TABLE_PAGES) bad(`table page ${hex(p)}: a cycle or more than ${MAX_TABLE_PAGES} pages`);
      seen.add(p);
      const page = decodeSlabTablePage(ram.read(p, PAGE_SIZE));
      if (typeof page === 'string') bad(`table page ${hex(p)}: ${page}`);
      const t = page as Exclude<typeof page, string>;
      claims.push({ start: p, end: p + PAGE_SIZE, what: 'slab table page' });
      entries.push(...t.entries);
      p = t.next;
    }
    for (const e of entries) claims.push({ start: e.phys, end: e.phys + PAGE_SIZE * 2 ** e.order, what: e.kind === 'slab' ? `slab of ${e.objectSize}-byte objects` : 'large kmalloc' });
    const data = entries.map((e) => ({ phys: hex(e.phys), order: e.order, kind: e.kind, objectSize: e.objectSize, preserved: e.preserved }));
    return {
      data,
      claims,
      view: {
        label: 'preserved slabs',
        value: `${entries.length} in ${seen.size} table pages`,
        phys,
        children: entries.map((e) => ({
          label: hex(e.phys),
          value: e.kind === 'slab' ? `order ${e.order}, ${e.objectSize}-byte objects, ${e.preserved.length} kept: ${e.preserved.join(' ')}` : `large kmalloc, ${formatBytes(PAGE_SIZE * 2 ** e.order)}`,
          phys: e.phys,
        })),
      },
    };
  },
};
