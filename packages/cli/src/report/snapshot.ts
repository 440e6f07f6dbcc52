import { inject, injectable, type DependencyContainer } from 'tsyringe';
import { MemoryPicture, NextBootParams, type KernelModule, type MachineBus, type MemoryMap, type MemoryMoment, type MemoryRun } from '@kho/kernel';
import { Memmap, PAGE_SIZE, PageFlag, PhysicalMemory } from '@kho/physmem';
import { Kho, SETUP_KHO, Tracker } from '@kho/kho-core';
import { handoverViewOfRam, type HandoverView } from '../view/handover';

/**
 * What a stretch of physical memory is used for, as a memory-map picture shows it (`populated` and `empty` are
 * an image's: pages the image holds that nothing preserved, and pages it does not hold).
 */
export type RegionKind = 'free' | 'free-scratch' | 'allocated' | 'reserved' | 'tracker' | 'preserved' | 'incoming' | 'populated' | 'empty';

/** A run of pages of one kind (and, for preserved and incoming blocks, one owner). */
export interface MapSegment {
  readonly start: number;
  readonly end: number;
  readonly kind: RegionKind;
  readonly owner?: string;
}

/** The physical memory map of one kernel at one moment, with owners named. */
export interface MemoryMapSnapshot {
  readonly label: string;
  readonly generation: number;
  readonly ranges: ReadonlyArray<{ start: number; size: number; node: number }>;
  readonly scratch: ReadonlyArray<{ addr: number; size: number }>;
  readonly segments: readonly MapSegment[];
  /** Bytes per kind, and per `preserved:<owner>` / `incoming:<owner>`. */
  readonly totals: Readonly<Record<string, number>>;
  readonly facts: Readonly<Record<string, string | number>>;
}

const KINDS: RegionKind[] = ['free', 'free-scratch', 'allocated', 'reserved', 'tracker', 'preserved', 'incoming'];
const CODE = Object.fromEntries(KINDS.map((k, i) => [k, i])) as Record<RegionKind, number>;

/**
 * The kernel image's memory picture (published on the bus as `memory:map` when someone listens): every page of
 * RAM classified as free (normal or scratch pool), reserved, the tracker's metadata, blocks this kernel
 * preserves, blocks handed over by the previous kernel and not restored yet (`incoming`), and everything else
 * as allocated. Preserved and incoming blocks are one run each, so an observer can name each block's owner
 * from the preservation events. At the jump the picture carries the handover as the next kernel will read it.
 */
@injectable()
export class MemoryMapPicture implements MemoryPicture {
  constructor(
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly kho: Kho,
    private readonly next: NextBootParams,
    @inject(Tracker) private readonly tracker: Tracker,
  ) {}

  take(moment: MemoryMoment): MemoryMap {
    const { ram, memmap, kho } = this;
    const tracker = this.tracker;
    const runs: MemoryRun[] = [];
    for (const r of ram.ranges) {
      const first = r.start / PAGE_SIZE;
      const n = r.size / PAGE_SIZE;
      const code = new Uint8Array(n).fill(CODE.allocated);
      const head = new Uint8Array(n);
      const mark = (pfn: number, pages: number, c: number, isBlock = false): void => {
        const from = Math.max(pfn - first, 0);
        const to = Math.min(pfn - first + pages, n);
        if (from >= to) return;
        code.fill(c, from, to);
        if (isBlock) head[from] = 1;
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
      tracker.walk((pfn, order) => mark(pfn, 2 ** order, CODE.preserved, true));
      const inc = kho.incomingHandover;
      if (inc) {
        for (let b = 0; b < inc.pfns.length; b++) {
          const pfn = inc.pfns[b];
          // Still stamped: handed over and not restored yet.
          if (kho.stampOrder(pfn) !== undefined) mark(pfn, 2 ** inc.orders[b], CODE.incoming, true);
        }
      }
      let runStart = 0;
      for (let i = 1; i <= n; i++) {
        if (i < n && code[i] === code[runStart] && !head[i]) continue;
        runs.push({ start: (first + runStart) * PAGE_SIZE, end: (first + i) * PAGE_SIZE, kind: KINDS[code[runStart]] });
        runStart = i;
      }
    }
    const s = tracker.stats();
    const facts: Record<string, string | number> = { 'root compatible': kho.generation?.compatible ?? '(KHO off)', 'tracker': tracker.kind, 'blocks preserved': s.blocks, 'tracker pages': s.metadataPages };
    const khoData = moment === 'jump' ? this.next.build('').setupData(SETUP_KHO) : undefined;
    let detail: HandoverView | undefined;
    if (khoData) detail = handoverViewOfRam(ram, khoData);
    return {
      ranges: ram.ranges.map((r) => ({ start: r.start, size: r.size, node: r.node })),
      scratch: kho.scratchAreas().map((a) => ({ addr: a.addr, size: a.size })),
      runs,
      facts,
      ...(detail ? { detail } : {}),
    };
  }
}

/** The kernel-image module that lets the kernel publish memory pictures (taken only when someone listens). */
export function memoryPictureModule(): KernelModule {
  return {
    name: 'memory-picture',
    register(c: DependencyContainer) {
      c.register(MemoryPicture, { useClass: MemoryMapPicture });
    },
  };
}

/**
 * Who preserved each block, from the preservation events: one book per generation (the phys of a block's
 * head → the plugin that preserved it). Subscribes to `bus`; `stop()` unsubscribes.
 */
export class OwnerBook {
  private readonly books = new Map<number, Map<number, string>>();
  private readonly onPreserve = (e: { generation: number; owner: string; phys: number }): void => {
    this.book(e.generation).set(e.phys, e.owner);
  };
  private readonly onUnpreserve = (e: { generation: number; phys: number }): void => {
    this.book(e.generation).delete(e.phys);
  };
  private readonly onKexec = (e: { from: number }): void => {
    // a kernel two kexecs back can no longer be asked about
    for (const g of this.books.keys()) if (g < e.from - 1) this.books.delete(g);
  };

  constructor(private readonly bus: MachineBus) {
    bus.on('kho:preserve', this.onPreserve);
    bus.on('kho:unpreserve', this.onUnpreserve);
    bus.on('kexec', this.onKexec);
  }

  /** The plugin of generation `generation` that preserved the block whose head is at `phys`. */
  ownerOf(generation: number, phys: number): string | undefined {
    return this.books.get(generation)?.get(phys);
  }

  stop(): void {
    this.bus.off('kho:preserve', this.onPreserve);
    this.bus.off('kho:unpreserve', this.onUnpreserve);
    this.bus.off('kexec', this.onKexec);
  }

  private book(g: number): Map<number, string> {
    let b = this.books.get(g);
    if (!b) this.books.set(g, (b = new Map()));
    return b;
  }
}

/**
 * A picture with owners named: preserved blocks by the generation that took the picture, incoming ones by the
 * generation before it (which preserved them). Adjacent runs of one kind and owner are merged.
 */
export function snapshotOf(map: MemoryMap, generation: number, label: string, owners: OwnerBook): MemoryMapSnapshot {
  const segments: MapSegment[] = [];
  const totals: Record<string, number> = {};
  for (const run of map.runs) {
    const kind = run.kind as RegionKind;
    const owner =
      kind === 'preserved'
        ? (owners.ownerOf(generation, run.start) ?? 'other')
        : kind === 'incoming'
          ? (owners.ownerOf(generation - 1, run.start) ?? 'handover')
          : undefined;
    const last = segments[segments.length - 1];
    if (last && last.kind === kind && last.owner === owner && last.end === run.start) {
      segments[segments.length - 1] = { ...last, end: run.end };
    } else {
      segments.push({ start: run.start, end: run.end, kind, ...(owner !== undefined ? { owner } : {}) });
    }
    const bytes = run.end - run.start;
    totals[kind] = (totals[kind] ?? 0) + bytes;
    if (owner) totals[`${kind}:${owner}`] = (totals[`${kind}:${owner}`] ?? 0) + bytes;
  }
  return { label, generation, ranges: map.ranges, scratch: map.scratch, segments, totals, facts: map.facts };
}
