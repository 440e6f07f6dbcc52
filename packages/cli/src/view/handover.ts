import { describeError, hex } from '@kho/kernel';
import { PAGE_SIZE, type PhysicalMemory } from '@kho/physmem';
import {
  KHO_GENERATIONS,
  KHO_MAX_INCOMING_BLOCKS,
  PROP_PRESERVED_MEMORY_MAP,
  decodeKhoData,
  mapCrc,
  pagesCrc,
  tooManyBlocks,
  decodeScratchArray,
  readSubtreeNode,
  rootGeneration,
  type KexecMetadata,
  type KhoGeneration,
  type TrackerDescriptor,
} from '@kho/kho-core';
import { decodeFdt, formatDts, type FdtNode } from '@kho/fdt';
import type { DecodedLuo } from '@kho/liveupdate';
import { TRACKERS, type TrackerKind } from '../registry';
import { Problems, type Problem } from './problems';
import { radixBlocks, readRadixLenient, type RadixNode } from './radix';
import { SUBTREE_RENDERERS } from './renderers';
import { fdtView } from './renderers/fdt';
import type { Claim, ViewNode } from './types';

/** One subtree of the root FDT, decoded by its renderer. `[jsonKey]` holds the decoded data. */
export interface SubtreeInfo {
  name: string;
  phys: string;
  /** What the renderer says the subtree is ("kstate stream", "memfd file table", "FDT"). */
  kind?: string;
  compatible?: string;
  dts?: string;
  kstate?: unknown;
  memfd?: unknown;
  memblock?: unknown;
  slab?: unknown;
  /** The previous kernel's kexec-metadata (subtree `kexec-metadata`). */
  kexecMetadata?: KexecMetadata;
  /** LUO's sessions, files and their folios (subtree `LUO`). */
  luo?: DecodedLuo;
  /** `blob-size` (kho-v3 and later). */
  size?: number;
  /** The decoded structure as a tree, for the explorer (not in `kho inspect --json`). */
  view?: ViewNode;
  /** Why the blob could not be decoded. */
  error?: string;
}

/** The tracker's figures. */
export interface TrackerInfo {
  /** Which tracker wrote the map (from the root compatible), and what its map is. */
  name: TrackerKind;
  kind: string;
  /** Pages of the map the next kernel reads (radix: tree nodes; bitmaps: the serialised map and the bitmaps). */
  metadataPages: number;
  /** The same as metadataPages (the radix tree's word for them). */
  nodes: number;
  blocks: number;
  preservedBytes: number;
  bytesPerBlock: number;
  byOrder: Record<string, number>;
  /** False when the map was not read whole into blocks (its checksum failed, it holds too many, it is unreadable). */
  listed: boolean;
}

/** Everything decoded from a handover: what `kho inspect` prints and what the explorer draws. */
export interface HandoverView {
  khoData?: { fdtAddr: string; fdtSize: number; scratchAddr: string; scratchSize: number };
  scratch: Array<{ kind: string; addr: string; size: number }>;
  /** The root FDT; `generation` is the ABI generation its compatible names ('v1', 'v2', 'v3', 'v4', …). */
  fdt?: { compatible: string; generation?: string; preservedMemoryMap: string; dts: string; view: ViewNode };
  subtrees: SubtreeInfo[];
  /** Every preserved block of a map read whole, in walk order (none when the map was refused). */
  blocks: BlockList;
  tracker?: TrackerInfo;
  /** The radix tree's pages, for walking from the root to any block (radix trackers only). */
  radix?: { root: number; nodes: RadixNode[] };
  /** Ranges the subtrees' data names, with the subtree: a block inside one belongs to it. */
  claims: Array<Claim & { subtree: string }>;
  /** Everything found wrong (empty for a handover the next kernel accepts). */
  problems: Problem[];
  /** The root FDT's bytes (its totalsize), for --dtb-out; not part of the JSON. */
  rootDtb?: Uint8Array;
}

/** Preserved blocks: pfn and order of each, in typed arrays (9 bytes a block: a map may hold millions). */
export interface BlockList {
  readonly count: number;
  readonly pfns: Float64Array;
  readonly orders: Uint8Array;
}

const NO_BLOCKS: BlockList = { count: 0, pfns: new Float64Array(0), orders: new Uint8Array(0) };

/** At most this many problems of one kind are listed (a map full of bad bits would otherwise list millions). */
const MAX_PROBLEMS_PER_CHECK = 16;

const addr = (n: number): string => (Number.isFinite(n) ? hex(n) : '>= 2^53');

/**
 * Decodes the handover described by `khoData` from `ram`, as the next kernel would read it, and checks what
 * the next kernel checks (and more: the tracker's checksum, overlapping blocks, metadata that is not itself
 * preserved). In strict mode the first problem throws KernelError(EINVAL) with the next kernel's message;
 * otherwise everything that can still be decoded is, and each problem is listed with where, what and wanted.
 */
export function decodeHandover(ram: PhysicalMemory, khoData: Uint8Array, opts: { strict?: boolean } = {}): HandoverView {
  const strict = opts.strict === true;
  const problems = new Problems(strict);
  const view: HandoverView = { scratch: [], subtrees: [], blocks: NO_BLOCKS, claims: [], problems: problems.list };
  const kd = decodeKhoData(khoData);
  if (typeof kd === 'string') {
    problems.add('kho_data', kd);
    return view;
  }
  view.khoData = { fdtAddr: addr(kd.fdtAddr), fdtSize: kd.fdtSize, scratchAddr: addr(kd.scratchAddr), scratchSize: kd.scratchSize };
  if (kd.fdtSize !== PAGE_SIZE) problems.add('kho_data', `kho_data.fdt_size is ${kd.fdtSize} (wanted ${PAGE_SIZE})`);

  // Root FDT
  let fdt: FdtNode | undefined;
  let fdtPage: Uint8Array | undefined;
  if (!Number.isFinite(kd.fdtAddr) || kd.fdtAddr % PAGE_SIZE !== 0 || !ram.isRam(kd.fdtAddr, PAGE_SIZE)) {
    problems.add('kho_data', `kho_data.fdt_addr ${addr(kd.fdtAddr)} is not a page of RAM (wanted the root FDT's page)`);
  } else {
    fdtPage = ram.read(kd.fdtAddr, PAGE_SIZE);
    fdt = problems.attempt(`root FDT at ${hex(kd.fdtAddr)}`, () => decodeFdt(fdtPage!), 'a valid FDT');
  }
  let reader: TrackerDescriptor | undefined;
  let generation: KhoGeneration | undefined;
  let mapPhys: number | undefined;
  if (fdt && fdtPage) {
    const totalsize = new DataView(fdtPage.buffer, fdtPage.byteOffset).getUint32(4, false);
    view.rootDtb = fdtPage.slice(0, Math.min(totalsize, PAGE_SIZE));
    const compatible = fdt.getString('compatible') ?? '';
    const map = fdt.getU64LE(PROP_PRESERVED_MEMORY_MAP);
    view.fdt = { compatible, preservedMemoryMap: map === undefined ? '(missing)' : hex(map), dts: formatDts(fdt), view: fdtView(fdt, '/') };
    if (map === undefined) problems.add('root FDT', `root FDT has no '${PROP_PRESERVED_MEMORY_MAP}' (wanted the phys of the tracker's map)`);
    else mapPhys = map >= 2n ** 53n ? Infinity : Number(map);
    // every generation whose map a tracker of the registry reads
    generation = problems.attempt('root FDT', () => rootGeneration(fdt!, KHO_GENERATIONS.filter((g) => TRACKERS.some((t) => t.kind === g.tracker))));
    if (generation) {
      view.fdt.generation = generation.id;
      reader = TRACKERS.find((t) => t.kind === generation!.tracker);
    }
  }

  // Scratch areas
  const nScratch = kd.scratchSize / 16;
  if (!Number.isInteger(nScratch) || nScratch < 1 || nScratch > 66 || !Number.isFinite(kd.scratchAddr) || !ram.isRam(kd.scratchAddr, kd.scratchSize)) {
    problems.add('kho_data', `kho_data scratch array ${addr(kd.scratchAddr)} (+${kd.scratchSize}) is not a valid array in RAM (wanted 16 × 1..66 bytes of RAM)`);
  } else {
    const areas = decodeScratchArray(ram.read(kd.scratchAddr, kd.scratchSize));
    view.scratch = areas.map((a, i) => ({ kind: i === 0 ? 'lowmem' : i === 1 ? 'global' : `node ${i - 2}`, addr: addr(a.addr), size: a.size }));
    const sorted = areas.slice().sort((a, b) => a.addr - b.addr);
    sorted.forEach((a, i) => {
      if (!Number.isFinite(a.addr) || a.size <= 0 || a.addr % PAGE_SIZE !== 0 || a.size % PAGE_SIZE !== 0 || !ram.isRam(a.addr, a.size)) {
        problems.add('scratch array', `scratch area ${addr(a.addr)}+${addr(a.size)} is not page-aligned RAM (wanted page-aligned RAM)`);
      } else if (i > 0 && sorted[i - 1].addr + sorted[i - 1].size > a.addr) {
        problems.add('scratch array', `scratch areas ${hex(sorted[i - 1].addr)} and ${hex(a.addr)} overlap (wanted disjoint areas)`);
      }
    });
  }

  // The tracker's map: its checksum first, then its count against the bound, then its blocks (as the next kernel)
  let blocks: BlockList = NO_BLOCKS;
  // the checks against the blocks (overlaps, metadata preserved) only mean something on a map read whole
  let mapWhole = false;
  let listed = false;
  if (reader && mapPhys !== undefined) {
    let pages = 0;
    const crc = fdt ? problems.attempt('root FDT', () => mapCrc(fdt!)) : undefined;
    if (reader.kind === 'radix' && !strict) {
      const t = readRadixLenient(ram, mapPhys);
      for (const p of t.problems.slice(0, MAX_PROBLEMS_PER_CHECK)) problems.add(`radix tree ${p.where}`, p.message);
      const more = t.problems.length + t.moreProblems - MAX_PROBLEMS_PER_CHECK;
      if (more > 0) problems.add('radix tree', `${more} more problems of the tree not listed (wanted none)`);
      pages = t.nodes.length;
      view.radix = { root: mapPhys, nodes: t.nodes };
      const crcOk = crc === undefined || checkTrackerCrc(ram, crc, t.nodes, problems);
      if (!crcOk) {
        // a map that fails its checksum is not read: its blocks are whatever the damage made them
      } else if (t.count > KHO_MAX_INCOMING_BLOCKS) {
        problems.add('tracker', tooManyBlocks('radix tree', t.count, KHO_MAX_INCOMING_BLOCKS).reason);
      } else {
        blocks = { ...radixBlocks(ram, t.nodes, t.count), count: t.count };
        listed = true;
        mapWhole = t.problems.length === 0;
      }
    } else {
      const t = problems.attempt('tracker', () => reader!.readIncoming(ram, mapPhys!, { crc, maxBlocks: KHO_MAX_INCOMING_BLOCKS }));
      if (t) {
        mapWhole = true;
        listed = true;
        blocks = { count: t.count, pfns: Float64Array.from(t.pfns), orders: Uint8Array.from(t.orders) };
        pages = t.metadataPages;
      }
      if (reader.kind === 'radix') view.radix = { root: mapPhys, nodes: readRadixLenient(ram, mapPhys).nodes };
    }
    const byOrder: Record<string, number> = {};
    let preservedBytes = 0;
    for (let i = 0; i < blocks.count; i++) {
      const o = blocks.orders[i];
      byOrder[o] = (byOrder[o] ?? 0) + 1;
      preservedBytes += PAGE_SIZE * 2 ** o;
    }
    view.blocks = blocks;
    view.tracker = {
      name: reader.kind,
      kind: reader.title,
      metadataPages: pages,
      nodes: pages,
      blocks: blocks.count,
      preservedBytes,
      bytesPerBlock: blocks.count ? Math.round(((pages * PAGE_SIZE) / blocks.count) * 100) / 100 : 0,
      byOrder,
      listed,
    };
  }
  const index = mapWhole ? checkBlocks(blocks, view.scratch, problems) : undefined;
  if (index && Number.isFinite(kd.fdtAddr) && !covered(index, kd.fdtAddr)) {
    problems.add('root FDT', `the root FDT's page ${hex(kd.fdtAddr)} is not a preserved block (wanted it preserved: the next kernel takes its whole handover from it)`);
  }

  // Subtrees, each by its renderer
  for (const child of fdt?.children ?? []) {
    const info = describeSubtree(ram, generation, fdt!, child, problems);
    view.subtrees.push(info);
    if (index && info.phys.startsWith('0x') && !covered(index, Number(info.phys))) {
      problems.add(`subtree ${child.name}`, `its blob ${info.phys} is not inside a preserved block (wanted it preserved: the next kernel reads it)`);
    }
  }
  for (const s of view.subtrees) {
    const rendered = renderedClaims.get(s);
    if (rendered) for (const c of rendered) view.claims.push({ ...c, subtree: s.name });
  }
  return view;
}

/** The claims of each decoded subtree (kept aside so that SubtreeInfo stays the JSON of `kho inspect`). */
const renderedClaims = new WeakMap<SubtreeInfo, readonly Claim[]>();

function describeSubtree(ram: PhysicalMemory, g: KhoGeneration | undefined, root: FdtNode, node: FdtNode, problems: Problems): SubtreeInfo {
  // the generation says which properties a subtree has (kho-v1: 'fdt'; kho-v3 and later: blob-size too)
  let phys: number;
  let size: number | undefined;
  try {
    ({ phys, size } = readSubtreeNode(g ?? KHO_GENERATIONS.find((x) => x.id === 'v2')!, root, node.name));
  } catch (e) {
    const why = describeError(e);
    problems.add(`subtree ${node.name}`, `${why} (wanted the phys of its blob${g?.blobSize ? ' and its blob-size' : ''})`);
    return { name: node.name, phys: `(${why})` };
  }
  const out: SubtreeInfo = { name: node.name, phys: addr(phys), ...(size !== undefined ? { size } : {}) };
  const renderer = SUBTREE_RENDERERS.find((r) => r.matches(node))!;
  out.kind = renderer.kind;
  try {
    const r = renderer.render({ ram, node, phys, size });
    if (r.data !== undefined) (out as unknown as Record<string, unknown>)[renderer.jsonKey] = r.data;
    if (renderer.jsonKey === 'dts' && typeof r.data === 'string') out.compatible = r.view.value;
    if (typeof r.data === 'string' && r.data.startsWith('(not a valid FDT')) out.kind = undefined;
    out.view = r.view;
    renderedClaims.set(out, r.claims);
    // problems inside a subtree are listed, never fatal: the next kernel's subsystem refuses its own state
    for (const p of r.problems ?? []) problems.soft(`subtree ${node.name}`, p, 'a valid structure');
  } catch (e) {
    out.error = describeError(e);
    out.view = { label: node.name, value: `could not decode: ${out.error}`, phys };
    problems.soft(`subtree ${node.name} at ${out.phys}`, out.error, `a valid ${renderer.kind}`);
  }
  return out;
}

/** Blocks sorted by address (a copy): first pfns and orders, for lookups. */
interface SortedBlocks {
  readonly starts: Float64Array;
  readonly orders: Uint8Array;
}

/** True when the page at `phys` lies inside one of the blocks. */
function covered(index: SortedBlocks, phys: number): boolean {
  const pfn = Math.floor(phys / PAGE_SIZE);
  let lo = 0;
  let hi = index.starts.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (index.starts[mid] <= pfn) lo = mid + 1;
    else hi = mid - 1;
  }
  return hi >= 0 && pfn < index.starts[hi] + 2 ** index.orders[hi];
}

/**
 * Blocks must not overlap each other (a map with overlaps is malformed) nor lie in scratch. Returns the blocks
 * sorted by address (one native sort of pfn * 64 + order: exact, pfns are below 2^38).
 */
function checkBlocks(blocks: BlockList, scratch: HandoverView['scratch'], problems: Problems): SortedBlocks {
  const keys = new Float64Array(blocks.count);
  for (let i = 0; i < blocks.count; i++) keys[i] = blocks.pfns[i] * 64 + blocks.orders[i];
  keys.sort();
  const starts = new Float64Array(keys.length);
  const orders = new Uint8Array(keys.length);
  let reported = 0;
  let end = -1;
  let endAt = -1;
  for (let i = 0; i < keys.length; i++) {
    orders[i] = keys[i] % 64;
    starts[i] = (keys[i] - orders[i]) / 64;
  }
  // a block that starts inside the furthest-reaching block before it overlaps that block
  for (let i = 0; i < keys.length; i++) {
    if (starts[i] < end && reported++ < MAX_PROBLEMS_PER_CHECK) {
      problems.add('tracker', `block ${hex(starts[i] * PAGE_SIZE)} order ${orders[i]} overlaps block ${hex(starts[endAt] * PAGE_SIZE)} order ${orders[endAt]} (wanted disjoint blocks)`);
    }
    if (starts[i] + 2 ** orders[i] > end) {
      end = starts[i] + 2 ** orders[i];
      endAt = i;
    }
  }
  reported = 0;
  const index = { starts, orders };
  for (const a of scratch) {
    const s = Number(a.addr) / PAGE_SIZE;
    const e = s + a.size / PAGE_SIZE;
    // the first block that ends after the area starts, then every one that starts before it ends
    let i = Math.max(0, lowerBound(starts, s) - 1);
    for (; i < starts.length && starts[i] < e; i++) {
      if (starts[i] + 2 ** orders[i] > s && reported++ < MAX_PROBLEMS_PER_CHECK) {
        problems.add('tracker', `preserved block ${hex(starts[i] * PAGE_SIZE)} order ${orders[i]} overlaps scratch area ${a.addr} (wanted preserved memory outside scratch)`);
      }
    }
  }
  return index;
}

/** The first index of `a` (ascending) whose value is at least `v`. */
function lowerBound(a: Float64Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The tracker's pages (the radix tree's `nodes`) against the root FDT's `preserved-memory-map-crc`, as KHO checks
 * them at boot. Returns whether they match; a mismatch is a problem.
 */
function checkTrackerCrc(ram: PhysicalMemory, want: number, nodes: readonly RadixNode[], problems: Problems): boolean {
  const got = pagesCrc(
    ram,
    nodes.map((n) => n.phys / PAGE_SIZE),
  );
  if (got === want) return true;
  problems.add('tracker', `the tracker's pages fail their checksum (crc32c ${hex(got)}): the preserved-memory map was damaged, its blocks are not listed (wanted crc32c ${hex(want)})`);
  return false;
}

/**
 * The handover as the next kernel will read it, decoded from a running machine's RAM (the memory picture at
 * the jump): never throws; what is wrong is in `problems`.
 */
export function handoverViewOfRam(ram: PhysicalMemory, khoData: Uint8Array): HandoverView {
  return decodeHandover(ram, khoData);
}
