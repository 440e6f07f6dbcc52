import type { Kernel } from '@kho/kernel';
import { Memmap, PAGE_SIZE, PageFlag, PhysicalMemory } from '@kho/physmem';
import { Kho, Tracker } from '@kho/kho-core';

/** What a stretch of physical memory is used for, as a memory-map picture shows it. */
export type RegionKind = 'free' | 'free-scratch' | 'allocated' | 'reserved' | 'tracker' | 'preserved' | 'incoming';

/** A run of pages of one kind (and, for preserved and incoming blocks, one owner). */
export interface MapSegment {
  readonly start: number;
  readonly end: number;
  readonly kind: RegionKind;
  readonly owner?: string;
}

/** The physical memory map of one kernel at one moment. */
export interface MemoryMapSnapshot {
  readonly label: string;
  readonly generation: number;
  readonly ranges: ReadonlyArray<{ start: number; size: number; node: number }>;
  readonly scratch: ReadonlyArray<{ addr: number; size: number }>;
  readonly segments: readonly MapSegment[];
  /** Bytes per kind, and per `preserved:<owner>` / `incoming:<owner>`. */
  readonly totals: Readonly<Record<string, number>>;
}

const KINDS: RegionKind[] = ['free', 'free-scratch', 'allocated', 'reserved', 'tracker', 'preserved', 'incoming'];
const CODE = Object.fromEntries(KINDS.map((k, i) => [k, i])) as Record<RegionKind, number>;

/**
 * Classifies every page of RAM of a running kernel: free (normal or scratch pool), reserved, the tracker's
 * metadata, blocks this kernel preserves (with the plugin that preserved them), blocks handed over by the
 * previous kernel and not yet restored (`incoming`; `ownerOf` may name them from an earlier snapshot), and
 * everything else as allocated. Returns runs of pages.
 */
export function snapshotKernel(kernel: Kernel, label: string, ownerOf?: (pfn: number) => string | undefined): MemoryMapSnapshot {
  const ram = kernel.get(PhysicalMemory);
  const memmap = kernel.get(Memmap);
  const kho = kernel.get(Kho);
  const tracker = kernel.get<Tracker>(Tracker);
  const segments: MapSegment[] = [];
  const totals: Record<string, number> = {};

  for (const r of ram.ranges) {
    const first = r.start / PAGE_SIZE;
    const n = r.size / PAGE_SIZE;
    const code = new Uint8Array(n).fill(CODE.allocated);
    const owner: Array<string | undefined> = [];
    const mark = (pfn: number, pages: number, c: number, who?: string): void => {
      const from = Math.max(pfn - first, 0);
      const to = Math.min(pfn - first + pages, n);
      for (let i = from; i < to; i++) {
        code[i] = c;
        if (who !== undefined) owner[i] = who;
      }
    };
    for (let i = 0; i < n; i++) {
      const f = memmap.flags(first + i);
      if (f & PageFlag.Reserved) code[i] = CODE.reserved;
      if (f & PageFlag.Buddy) {
        const pages = 2 ** memmap.order(first + i);
        mark(first + i, pages, f & PageFlag.Scratch ? CODE['free-scratch'] : CODE.free);
        i += pages - 1;
      }
    }
    for (const pfn of tracker.metadataPfns()) mark(pfn, 1, CODE.tracker);
    tracker.walk((pfn, order) => mark(pfn, 2 ** order, CODE.preserved, kho.ownerOf(pfn) ?? 'other'));
    const inc = kho.incomingHandover;
    if (inc) {
      for (let b = 0; b < inc.pfns.length; b++) {
        const pfn = inc.pfns[b];
        // Still stamped: handed over and not restored yet.
        if (kho.stampOrder(pfn) !== undefined) mark(pfn, 2 ** inc.orders[b], CODE.incoming, ownerOf?.(pfn) ?? 'handover');
      }
    }
    let runStart = 0;
    for (let i = 1; i <= n; i++) {
      if (i < n && code[i] === code[runStart] && owner[i] === owner[runStart]) continue;
      const kind = KINDS[code[runStart]];
      const seg: MapSegment = {
        start: (first + runStart) * PAGE_SIZE,
        end: (first + i) * PAGE_SIZE,
        kind,
        ...(owner[runStart] !== undefined ? { owner: owner[runStart] } : {}),
      };
      segments.push(seg);
      const bytes = seg.end - seg.start;
      totals[kind] = (totals[kind] ?? 0) + bytes;
      if (seg.owner) totals[`${kind}:${seg.owner}`] = (totals[`${kind}:${seg.owner}`] ?? 0) + bytes;
      runStart = i;
    }
  }
  return {
    label,
    generation: kernel.generation,
    ranges: ram.ranges.map((r) => ({ start: r.start, size: r.size, node: r.node })),
    scratch: kho.scratchAreas().map((a) => ({ addr: a.addr, size: a.size })),
    segments,
    totals,
  };
}

/** An owner lookup over a snapshot's preserved blocks (to name incoming blocks in the next kernel's map). */
export function ownersFrom(s: MemoryMapSnapshot): (pfn: number) => string | undefined {
  const starts: number[] = [];
  const owners: string[] = [];
  for (const seg of s.segments) {
    if (seg.kind === 'preserved' && seg.owner) {
      starts.push(seg.start / PAGE_SIZE, seg.end / PAGE_SIZE);
      owners.push(seg.owner);
    }
  }
  return (pfn) => {
    let lo = 0;
    let hi = owners.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[2 * mid + 1] <= pfn) lo = mid + 1;
      else hi = mid;
    }
    return lo < owners.length && starts[2 * lo] <= pfn ? owners[lo] : undefined;
  };
}
