import { formatBytes } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import type { Inspection } from '../inspect';
import type { MapSegment, MemoryMapSnapshot, RegionKind } from '../report/snapshot';
import type { HandoverView } from '../view/handover';
import type { Problem } from '../view/problems';
import { RADIX_WALK_CONSTANTS } from '../view/radix';
import type { ViewNode } from '../view/types';
import { KIND_COLOURS, KIND_LABELS, ownerHue } from './colours';

/**
 * The explorer page's data, embedded in the page as JSON. Numbers are compact: memory maps and blocks are flat
 * arrays of page frame numbers, so a chain of a hundred updates stays a few MB.
 */
export interface PageData {
  readonly title: string;
  readonly command: string;
  /** 'verified' / 'failed' for a run, 'image' for an image (nothing was run). */
  readonly result: 'verified' | 'failed' | 'image';
  readonly resultText: string;
  /** Labelled figures of the whole run. */
  readonly summary: ReadonlyArray<readonly [string, string]>;
  readonly kinds: readonly string[];
  readonly kindColours: readonly string[];
  readonly kindLabels: readonly string[];
  readonly owners: readonly string[];
  readonly ownerHues: readonly number[];
  /** One entry per generation, for the timeline. */
  readonly generations: readonly PageGeneration[];
  readonly kexecs: readonly PageKexec[];
  readonly problems: readonly Problem[];
  readonly radix: typeof RADIX_WALK_CONSTANTS;
  readonly pageSize: number;
}

export interface PageGeneration {
  readonly g: number;
  /** Milliseconds per phase of this generation's kernel. */
  readonly phases: Readonly<Record<string, number>>;
  readonly preservedBytes?: number;
  readonly blocks?: number;
  readonly trackerPages?: number;
  /** Free pages after this generation restored and finished (and a cold boot's, for comparison). */
  readonly freePages?: number;
  readonly coldFreePages?: number;
  readonly verified?: boolean;
}

export interface PageKexec {
  readonly from: number;
  readonly to: number;
  readonly title: string;
  readonly verified: boolean | null;
  readonly stats: ReadonlyArray<readonly [string, string]>;
  readonly checks: readonly string[];
  readonly maps: readonly PageMap[];
  readonly handover?: PageHandover;
}

export interface PageMap {
  readonly id: 'before' | 'after' | 'image';
  readonly label: string;
  /** [start, size, node] per RAM range, in bytes. */
  readonly ranges: ReadonlyArray<readonly [number, number, number]>;
  readonly scratch: ReadonlyArray<readonly [number, number]>;
  /** Flat quadruples: first pfn, pages, kind index, owner index (-1: none). */
  readonly seg: readonly number[];
  /** Labelled bytes per kind and owner. */
  readonly totals: ReadonlyArray<readonly [string, number]>;
}

export interface PageHandover {
  readonly fdt?: ViewNode;
  readonly compatible?: string;
  readonly subtrees: ReadonlyArray<{ name: string; phys: string; kind?: string; error?: string; view?: ViewNode }>;
  /** Flat pairs: pfn, order; sorted by pfn. */
  readonly blocks: readonly number[];
  /** Flat triples: first pfn, end pfn, index into claimNames; sorted by first pfn. */
  readonly claims: readonly number[];
  readonly claimNames: readonly string[];
  readonly radix?: { root: number; nodes: ReadonlyArray<readonly number[]> };
  readonly tracker?: ReadonlyArray<readonly [string, string]>;
  readonly problems: readonly Problem[];
}

/** Builds the tables of kinds and owners while maps are added, so each map refers to them by index. */
class Indexer {
  readonly kinds: string[] = [];
  readonly owners: string[] = [];
  kind(k: string): number {
    let i = this.kinds.indexOf(k);
    if (i < 0) i = this.kinds.push(k) - 1;
    return i;
  }
  owner(o: string | undefined): number {
    if (o === undefined) return -1;
    let i = this.owners.indexOf(o);
    if (i < 0) i = this.owners.push(o) - 1;
    return i;
  }
}

function mapOf(id: PageMap['id'], s: MemoryMapSnapshot, ix: Indexer): PageMap {
  const seg: number[] = [];
  for (const x of s.segments) seg.push(x.start / PAGE_SIZE, (x.end - x.start) / PAGE_SIZE, ix.kind(x.kind), ix.owner(x.owner));
  return {
    id,
    label: s.label,
    ranges: s.ranges.map((r) => [r.start, r.size, r.node] as const),
    scratch: s.scratch.map((a) => [a.addr, a.size] as const),
    seg,
    totals: Object.entries(s.totals).sort(([a], [b]) => a.localeCompare(b)),
  };
}

function handoverOf(h: HandoverView): PageHandover {
  const order = Array.from({ length: h.blocks.count }, (_, i) => i).sort((a, b) => h.blocks.pfns[a] - h.blocks.pfns[b]);
  const blocks: number[] = [];
  for (const i of order) blocks.push(h.blocks.pfns[i], h.blocks.orders[i]);
  const claimNames: string[] = [];
  const claims: number[] = [];
  for (const c of [...h.claims].sort((a, b) => a.start - b.start)) {
    const name = `${c.subtree}: ${c.what}`;
    let i = claimNames.indexOf(name);
    if (i < 0) i = claimNames.push(name) - 1;
    claims.push(Math.floor(c.start / PAGE_SIZE), Math.ceil(c.end / PAGE_SIZE), i);
  }
  const t = h.tracker;
  return {
    fdt: h.fdt?.view,
    compatible: h.fdt?.compatible,
    subtrees: h.subtrees.map((s) => ({ name: s.name, phys: s.phys, kind: s.kind, error: s.error, view: s.view })),
    blocks,
    claims,
    claimNames,
    radix: h.radix && {
      root: h.radix.root / PAGE_SIZE,
      // [pfn, level, index, child pfn, …] for tables; [pfn, 0, bits set, first key] for leaves
      nodes: h.radix.nodes.map((n) => (n.level > 0 ? [n.phys / PAGE_SIZE, n.level, ...(n.entries ?? []).flatMap(([i, c]) => [i, c / PAGE_SIZE])] : [n.phys / PAGE_SIZE, 0, n.bits ?? 0, n.firstKey ?? 0])),
    },
    tracker: t && [
      ['tracker', `${t.kind} (${t.name})`],
      ['blocks', String(t.blocks)],
      ['preserved', formatBytes(t.preservedBytes)],
      ['metadata pages', `${t.metadataPages} (${formatBytes(t.metadataPages * PAGE_SIZE)})`],
      ['metadata bytes per block', String(t.bytesPerBlock)],
      ['blocks by order', Object.entries(t.byOrder).map(([o, n]) => `${o}:${n}`).join(' ') || 'none'],
    ],
    problems: h.problems,
  };
}

/** What a run's report gives the explorer: each kexec with its maps and handover, and each generation. */
export interface RunPage {
  readonly title: string;
  readonly command: string;
  readonly ok: boolean;
  readonly summary: ReadonlyArray<readonly [string, string]>;
  readonly generations: readonly PageGeneration[];
  readonly kexecs: ReadonlyArray<{
    from: number;
    to: number;
    verified: boolean;
    stats: ReadonlyArray<readonly [string, string]>;
    checks: readonly string[];
    before?: MemoryMapSnapshot;
    after?: MemoryMapSnapshot;
    handover?: HandoverView;
  }>;
}

function finish(ix: Indexer, base: Omit<PageData, 'kinds' | 'kindColours' | 'kindLabels' | 'owners' | 'ownerHues' | 'radix' | 'pageSize'>): PageData {
  return {
    ...base,
    kinds: ix.kinds,
    kindColours: ix.kinds.map((k) => KIND_COLOURS[k] ?? '#888'),
    kindLabels: ix.kinds.map((k) => KIND_LABELS[k] ?? k),
    owners: ix.owners,
    ownerHues: ix.owners.map(ownerHue),
    radix: RADIX_WALK_CONSTANTS,
    pageSize: PAGE_SIZE,
  };
}

/** The explorer's data for a run (the demo or a scenario). */
export function runPageData(r: RunPage): PageData {
  const ix = new Indexer();
  const kexecs: PageKexec[] = r.kexecs.map((k) => ({
    from: k.from,
    to: k.to,
    title: `kexec ${k.from}: generation ${k.from} → generation ${k.to}`,
    verified: k.verified,
    stats: k.stats,
    checks: k.checks,
    maps: [
      ...(k.before ? [mapOf('before', k.before, ix)] : []),
      ...(k.after ? [mapOf('after', k.after, ix)] : []),
    ],
    handover: k.handover && handoverOf(k.handover),
  }));
  return finish(ix, {
    title: r.title,
    command: r.command,
    result: r.ok ? 'verified' : 'failed',
    resultText: r.ok ? 'every preserved byte verified' : 'FAILED',
    summary: r.summary,
    generations: r.generations,
    kexecs,
    problems: [],
  });
}

/**
 * The memory map of an image, from the image alone: preserved blocks (named by the subtree whose data holds
 * them; the root FDT page is KHO's), the tracker's pages, the other pages the image holds, and what it does not.
 */
function imageMap(r: Inspection, populated: ReadonlyArray<readonly [number, number]>): MemoryMapSnapshot {
  type Mark = { start: number; end: number; kind: string; owner?: string; rank: number };
  const marks: Mark[] = [];
  for (const [start, end] of populated) marks.push({ start, end, kind: 'populated', rank: 1 });
  for (const n of r.radix?.nodes ?? []) marks.push({ start: n.phys, end: n.phys + PAGE_SIZE, kind: 'tracker', rank: 2 });
  const claims = [...r.claims].sort((a, b) => a.start - b.start);
  const fdtAddr = r.khoData ? Number(r.khoData.fdtAddr) : NaN;
  for (let i = 0; i < r.blocks.count; i++) {
    const start = r.blocks.pfns[i] * PAGE_SIZE;
    const claim = claims.find((c) => c.start <= start && start < c.end);
    const owner = start === fdtAddr ? 'kho' : (claim?.subtree ?? 'unnamed');
    marks.push({ start, end: start + PAGE_SIZE * 2 ** r.blocks.orders[i], kind: 'preserved', owner, rank: 3 });
  }
  // paint by rank over an "empty" background, then cut into runs
  const cuts = new Set<number>();
  const ranges = r.ram.map((x) => ({ start: Number(x.start), size: x.size, node: x.node }));
  for (const x of ranges) cuts.add(x.start).add(x.start + x.size);
  for (const m of marks) cuts.add(m.start).add(m.end);
  const points = [...cuts].sort((a, b) => a - b);
  const sorted = [...marks].sort((a, b) => a.start - b.start);
  const segments: Array<{ start: number; end: number; kind: RegionKind; owner?: string }> = [];
  const totals: Record<string, number> = {};
  let open: Mark[] = [];
  let next = 0;
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i], points[i + 1]];
    if (!ranges.some((x) => a >= x.start && b <= x.start + x.size)) continue;
    open = open.filter((m) => m.end > a);
    while (next < sorted.length && sorted[next].start <= a) {
      if (sorted[next].end > a) open.push(sorted[next]);
      next++;
    }
    const top = open.reduce<Mark | undefined>((t, m) => (!t || m.rank > t.rank ? m : t), undefined);
    const kind = (top?.kind ?? 'empty') as RegionKind;
    const owner = top?.owner;
    const last = segments[segments.length - 1];
    if (last && last.end === a && last.kind === kind && last.owner === owner) last.end = b;
    else segments.push({ start: a, end: b, kind, ...(owner ? { owner } : {}) });
    totals[kind] = (totals[kind] ?? 0) + (b - a);
    if (owner) totals[`${kind}:${owner}`] = (totals[`${kind}:${owner}`] ?? 0) + (b - a);
  }
  const out: MapSegment[] = segments;
  return {
    label: `the image ${r.file}`,
    generation: r.generation ?? 0,
    ranges,
    scratch: r.scratch.filter((a) => a.addr.startsWith('0x')).map((a) => ({ addr: Number(a.addr), size: a.size })),
    segments: out,
    totals,
    facts: {},
  };
}

/** The explorer's data for a handover image (`kho explore IMAGE`); `populated` are the image's segments [start, end). */
export function imagePageData(r: Inspection, populated: ReadonlyArray<readonly [number, number]>): PageData {
  const ix = new Indexer();
  const map = imageMap(r, populated);
  const t = r.tracker;
  const summary: Array<[string, string]> = [
    ['image', r.file],
    ['populated RAM in the image', `${formatBytes(r.populatedBytes)} in ${r.segments} segments`],
    ['machine RAM', r.ram.map((x) => `${x.start} +${formatBytes(x.size)} (node ${x.node})`).join(', ')],
    ...(r.generation !== undefined ? [['boots generation', String(r.generation)] as [string, string]] : []),
    ...(r.cmdline ? [['command line of the next kernel', r.cmdline] as [string, string]] : []),
    ...(t ? [['preserved', `${t.blocks} blocks, ${formatBytes(t.preservedBytes)}`] as [string, string]] : []),
    ['problems found', String(r.problems.length)],
  ];
  const from = r.generation !== undefined ? r.generation - 1 : 0;
  const kexec: PageKexec = {
    from,
    to: from + 1,
    title: 'the handover in the image',
    verified: null,
    stats: r.khoData
      ? [
          ['root FDT', `${r.khoData.fdtAddr} (${r.khoData.fdtSize} bytes)`],
          ['scratch array', `${r.khoData.scratchAddr} (${r.khoData.scratchSize / 16} areas)`],
          ...r.scratch.map((a) => [`scratch ${a.kind}`, `${a.addr} +${formatBytes(a.size)}`] as [string, string]),
        ]
      : [],
    checks: [],
    maps: [mapOf('image', map, ix)],
    handover: handoverOf(r),
  };
  return finish(ix, {
    title: `kho explore: ${r.file}`,
    command: `kho explore ${r.file}`,
    result: 'image',
    resultText: r.problems.length ? `${r.problems.length} problem${r.problems.length === 1 ? '' : 's'} found` : 'the next kernel would accept this handover',
    summary,
    generations: [],
    kexecs: [kexec],
    problems: r.problems,
  });
}

