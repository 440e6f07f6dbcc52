import { hex } from '@kho/kernel';
import { KSTATE_SUBTREE, dumpStream } from '@kho/kstate';
import { PAGE_SIZE, type PhysicalMemory } from '@kho/physmem';
import { decodeKhoVmallocChunk } from '@kho/vmalloc';
import { jsonView, type Claim, type SubtreeRenderer, type ViewNode } from '../types';

/** A chunk list of more pages than this is refused (a cycle or a damaged list). */
const MAX_CHUNKS = 4096;

interface ChunkList {
  chunks: Array<{ phys: string; entries: number; firstEntries: string[] }>;
  entries: number[];
}

/** Follows a kho_vmalloc chunk list (spec section 6: next u64 + phys[511], zero-terminated), bounded, cycle-checked. */
function vmallocChunks(ram: PhysicalMemory, first: number): ChunkList | string {
  const out: ChunkList = { chunks: [], entries: [] };
  const seen = new Set<number>();
  for (let c = first; c !== 0; ) {
    if (!Number.isSafeInteger(c) || c % PAGE_SIZE !== 0 || !ram.isRam(c, PAGE_SIZE)) return `chunk ${hex(c)} is not a page of RAM`;
    if (seen.has(c) || seen.size >= MAX_CHUNKS) return `chunk ${hex(c)}: a cycle or too many chunks`;
    seen.add(c);
    const page = decodeKhoVmallocChunk(ram.read(c, PAGE_SIZE));
    out.chunks.push({ phys: hex(c), entries: page.phys.length, firstEntries: page.phys.slice(0, 4).map((p) => hex(p)) });
    out.entries.push(...page.phys);
    c = page.next;
  }
  return out;
}

/**
 * Adds to every `{ vmalloc: { first, totalPages, order } }` of a kstate dump the chunk list it points at, and
 * collects the ranges the stream names: its segments, every folio, vmalloc chunk and page, and physRange.
 */
function annotate(ram: PhysicalMemory, v: unknown, claims: Claim[], problems: string[], where: string): unknown {
  if (Array.isArray(v)) return v.map((x, i) => annotate(ram, x, claims, problems, `${where}[${i}]`));
  if (v === null || typeof v !== 'object') return v;
  const o = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(o)) out[k] = annotate(ram, x, claims, problems, where ? `${where}.${k}` : k);
  const vm = o.vmalloc as { first?: string; order?: number } | undefined;
  if (vm && typeof vm.first === 'string') {
    const list = vmallocChunks(ram, Number(vm.first));
    if (typeof list === 'string') {
      problems.push(`${where}: vmalloc chunk list: ${list}`);
      out.vmalloc = { ...(out.vmalloc as object), chunks: list };
    } else {
      out.vmalloc = { ...(out.vmalloc as object), chunks: list.chunks };
      const size = PAGE_SIZE * 2 ** (vm.order ?? 0);
      for (const c of list.chunks) claims.push({ start: Number(c.phys), end: Number(c.phys) + PAGE_SIZE, what: `vmalloc chunk list of ${where}` });
      for (const p of list.entries) claims.push({ start: p, end: p + size, what: `vmalloc page of ${where}` });
    }
  }
  const folio = o.folio as { phys?: string; order?: number } | undefined;
  if (folio && typeof folio.phys === 'string') {
    claims.push({ start: Number(folio.phys), end: Number(folio.phys) + PAGE_SIZE * 2 ** (folio.order ?? 0), what: `folio of ${where}` });
  }
  const range = o.physRange as { start?: string; size?: string } | undefined;
  if (range && typeof range.start === 'string' && typeof range.size === 'string') {
    claims.push({ start: Number(range.start), end: Number(range.start) + Number(range.size), what: `range of ${where}` });
  }
  return out;
}

function sectionView(s: Record<string, unknown>): ViewNode {
  const instance = typeof s.instance === 'object' ? JSON.stringify(s.instance) : String(s.instance);
  const fields = (s.fields ?? {}) as Record<string, unknown>;
  return {
    label: `${String(s.id)} #${instance}`,
    value: `v${String(s.version)}, ${String(s.bytes)} bytes${s.error ? `, ${String(s.error)}` : ''}`,
    children: Object.entries(fields).map(([k, x]) => jsonView(k, x)),
  };
}

/** Subtree `kstate`: the self-describing stream of every registered state description. */
export const kstateRenderer: SubtreeRenderer = {
  kind: 'kstate stream',
  jsonKey: 'kstate',
  matches: (node) => node.name === KSTATE_SUBTREE,
  render({ ram, phys }) {
    const dump = dumpStream(ram, phys);
    const claims: Claim[] = [];
    const problems: string[] = [];
    const segments = dump.segments as Array<{ phys: string; order: number }>;
    for (const s of segments) claims.push({ start: Number(s.phys), end: Number(s.phys) + PAGE_SIZE * 2 ** s.order, what: 'kstate stream segment' });
    const data = annotate(ram, dump, claims, problems, '') as Record<string, unknown>;
    const sections = (data.sections ?? []) as Array<Record<string, unknown>>;
    return {
      data,
      claims,
      problems,
      view: {
        label: 'kstate stream',
        value: `${sections.length} sections, ${String(data.bytes)} bytes in ${segments.length} segments`,
        phys,
        children: [
          { label: 'segments', children: segments.map((s) => ({ label: s.phys, value: `order ${s.order}`, phys: Number(s.phys) })) },
          ...sections.map(sectionView),
        ],
      },
    };
  },
};
