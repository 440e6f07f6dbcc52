import { Errno, KernelError, formatBytes, hex, describeError } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { KHO_GENERATIONS, KHO_KEXEC_METADATA_SUBTREE, PROP_PRESERVED_MEMORY_MAP, decodeKhoData, decodeScratchArray, readKexecMetadata, readSubtreeNode, rootGeneration, type KexecMetadata, type KhoGeneration } from '@kho/kho-core';
import { FDT_MAGIC, decodeFdt, formatDts, type FdtNode } from '@kho/fdt';
import { readImageFile, type HandoverImage } from '@kho/image';
import { TRACKERS, type TrackerKind } from './registry';
import { KSTATE_SUBTREE, dumpStream } from '@kho/kstate';
import { MEMFD_SUBTREE, decodeMemfdTable } from '@kho/memfd';
import { decodeKhoVmallocChunk } from '@kho/vmalloc';
import { LUO_KHO_ENTRY_NAME, type DecodedLuo } from '@kho/liveupdate';
import { formatLuo, inspectLuo } from './vmm/luo-inspect';

/** The largest memfd table (4 MiB, its own limit). */
const MEMFD_TABLE_MAX = 4 * 2 ** 20;

/** Everything `kho inspect` decodes from a handover image. */
export interface Inspection {
  readonly file: string;
  readonly segments: number;
  readonly populatedBytes: number;
  readonly ram: ReadonlyArray<{ start: string; size: number; node: number }>;
  readonly cmdline: string;
  readonly khoData: { fdtAddr: string; fdtSize: number; scratchAddr: string; scratchSize: number };
  readonly scratch: ReadonlyArray<{ kind: string; addr: string; size: number }>;
  readonly fdt: { compatible: string; generation: string; preservedMemoryMap: string; dts: string };
  /** The previous kernel's kexec-metadata (kho-v3 and later), when the image carries a valid one. */
  readonly kexecMetadata?: KexecMetadata;
  readonly subtrees: readonly SubtreeInfo[];
  readonly blocks: ReadonlyArray<{ phys: string; order: number }>;
  readonly tracker: {
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
  };
  /** The root FDT's bytes (its totalsize), for --dtb-out. */
  readonly rootDtb: Uint8Array;
}

function fail(message: string): never {
  throw new KernelError(Errno.EINVAL, message);
}

/** Decodes a handover image file: root FDT, scratch areas, every preserved block, subtrees, tracker figures. */
export function inspectImage(file: string): Inspection {
  const image = readImageFile(file);
  return inspectLoaded(file, image);
}

/** As {@link inspectImage}, for an image already read. */
export function inspectLoaded(file: string, image: HandoverImage): Inspection {
  const ram = new PhysicalMemory({ ranges: image.machine.ram });
  for (const s of image.segments) ram.write(s.paddr, s.bytes);
  const kd = decodeKhoData(image.khoData);
  if (typeof kd === 'string') fail(kd);
  if (kd.fdtSize !== PAGE_SIZE) fail(`kho_data.fdt_size is ${kd.fdtSize} (wanted ${PAGE_SIZE})`);
  if (!Number.isFinite(kd.fdtAddr) || kd.fdtAddr % PAGE_SIZE !== 0 || !ram.isRam(kd.fdtAddr, PAGE_SIZE)) {
    fail(`kho_data.fdt_addr ${Number.isFinite(kd.fdtAddr) ? hex(kd.fdtAddr) : '>= 2^53'} is not a page of RAM`);
  }
  const fdtPage = ram.read(kd.fdtAddr, PAGE_SIZE);
  const fdt = decodeFdt(fdtPage);
  const totalsize = new DataView(fdtPage.buffer, fdtPage.byteOffset).getUint32(4, false);
  const compatible = fdt.getString('compatible') ?? '';
  const map = fdt.getU64LE(PROP_PRESERVED_MEMORY_MAP);
  if (map === undefined) fail(`root FDT has no '${PROP_PRESERVED_MEMORY_MAP}'`);
  const generation = rootGeneration(fdt, KHO_GENERATIONS.filter((g) => TRACKERS.some((t) => t.kind === g.tracker)));
  const reader = TRACKERS.find((t) => t.kind === generation.tracker)!;

  const nScratch = kd.scratchSize / 16;
  if (!Number.isInteger(nScratch) || nScratch < 1 || nScratch > 66 || !ram.isRam(kd.scratchAddr, kd.scratchSize)) {
    fail(`kho_data scratch array ${Number.isFinite(kd.scratchAddr) ? hex(kd.scratchAddr) : '>= 2^53'} (+${kd.scratchSize}) is not a valid array in RAM`);
  }
  const scratch = decodeScratchArray(ram.read(kd.scratchAddr, kd.scratchSize)).map((a, i) => ({
    kind: i === 0 ? 'lowmem' : i === 1 ? 'global' : `node ${i - 2}`,
    addr: Number.isFinite(a.addr) ? hex(a.addr) : '>= 2^53',
    size: a.size,
  }));

  const tree = reader.readIncoming(ram, map >= 2n ** 53n ? Infinity : Number(map));
  const blocks: Array<{ phys: string; order: number }> = [];
  const byOrder: Record<string, number> = {};
  let preservedBytes = 0;
  for (let i = 0; i < tree.count; i++) {
    blocks.push({ phys: hex(tree.pfns[i] * PAGE_SIZE), order: tree.orders[i] });
    byOrder[tree.orders[i]] = (byOrder[tree.orders[i]] ?? 0) + 1;
    preservedBytes += PAGE_SIZE * 2 ** tree.orders[i];
  }

  const subtrees = fdt.children.map((child) => describeSubtree(ram, generation, fdt, child));
  let kexecMetadata: KexecMetadata | undefined;
  const kmd = subtrees.find((t) => t.name === KHO_KEXEC_METADATA_SUBTREE);
  if (kmd?.kexecMetadata) kexecMetadata = kmd.kexecMetadata;
  const m = image.machine as Record<string, unknown>;
  return {
    file,
    segments: image.segments.length,
    populatedBytes: image.segments.reduce((n, s) => n + s.bytes.length, 0),
    ram: image.machine.ram.map((r) => ({ start: hex(r.start), size: r.size, node: r.node })),
    cmdline: typeof m.cmdline === 'string' ? m.cmdline : '',
    khoData: { fdtAddr: hex(kd.fdtAddr), fdtSize: kd.fdtSize, scratchAddr: hex(kd.scratchAddr), scratchSize: kd.scratchSize },
    scratch,
    fdt: { compatible, generation: generation.id, preservedMemoryMap: hex(map), dts: formatDts(fdt) },
    kexecMetadata,
    subtrees,
    blocks,
    tracker: {
      name: reader.kind,
      kind: reader.title,
      metadataPages: tree.metadataPages,
      nodes: tree.metadataPages,
      blocks: tree.count,
      preservedBytes,
      bytesPerBlock: tree.count ? Math.round(((tree.metadataPages * PAGE_SIZE) / tree.count) * 100) / 100 : 0,
      byOrder,
    },
    rootDtb: fdtPage.slice(0, Math.min(totalsize, PAGE_SIZE)),
  };
}

/** What `kho inspect` says about one subtree: its blob, decoded by what it is. */
export interface SubtreeInfo {
  name: string;
  phys: string;
  compatible?: string;
  dts?: string;
  /** The kstate stream as JSON (subtree `kstate`), with every vmalloc buffer's chunk list. */
  kstate?: unknown;
  /** The memfd file table (subtree `memfd`). */
  memfd?: unknown;
  /** `blob-size` (kho-v3 and later). */
  size?: number;
  /** The kexec-metadata struct (subtree `kexec-metadata`). */
  kexecMetadata?: KexecMetadata;
  /** LUO's sessions, files and their folios (subtree `LUO`). */
  luo?: DecodedLuo;
  /** Why the blob could not be decoded. */
  error?: string;
}

function describeSubtree(ram: PhysicalMemory, g: KhoGeneration, root: FdtNode, node: FdtNode): SubtreeInfo {
  let phys: number;
  let size: number | undefined;
  try {
    ({ phys, size } = readSubtreeNode(g, root, node.name));
  } catch (e) {
    return { name: node.name, phys: `(${describeError(e)})` };
  }
  const out: SubtreeInfo = size === undefined ? { name: node.name, phys: hex(phys) } : { name: node.name, phys: hex(phys), size };
  const why = (e: unknown): string => describeError(e);
  if (node.name === KHO_KEXEC_METADATA_SUBTREE && size !== undefined) {
    try {
      out.kexecMetadata = readKexecMetadata(ram, phys, size);
    } catch (e) {
      out.error = why(e);
    }
    return out;
  }
  if (node.name === KSTATE_SUBTREE) {
    try {
      out.kstate = withVmallocChunks(ram, dumpStream(ram, phys));
    } catch (e) {
      out.error = why(e);
    }
    return out;
  }
  if (node.name === LUO_KHO_ENTRY_NAME) {
    out.luo = inspectLuo(ram, phys, size);
    return out;
  }
  if (node.name === MEMFD_SUBTREE) {
    try {
      const r = ram.rangeOf(phys);
      out.memfd = decodeMemfdTable(ram.read(phys, Math.min(MEMFD_TABLE_MAX, r.start + r.size - phys)));
    } catch (e) {
      out.error = why(e);
    }
    return out;
  }
  if (Number.isSafeInteger(phys) && ram.isRam(phys, 8) && ram.readU32(phys) === swap(FDT_MAGIC)) {
    try {
      const size = Math.min(PAGE_SIZE * 16, swap(ram.readU32(phys + 4)));
      if (ram.isRam(phys, size)) {
        const sub = decodeFdt(ram.read(phys, size));
        out.compatible = sub.getString('compatible');
        out.dts = formatDts(sub);
      }
    } catch (e) {
      out.dts = `(not a valid FDT: ${describeError(e, { errno: true })})`;
    }
  }
  return out;
}

/**
 * Adds to every `{ vmalloc: { first, totalPages, order } }` in a kstate dump the chunk list it points at (spec
 * section 6: next u64 + phys[511], zero-terminated), followed with a bound and a cycle check.
 */
function withVmallocChunks(ram: PhysicalMemory, v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => withVmallocChunks(ram, x));
  if (v === null || typeof v !== 'object') return v;
  const o = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(o)) out[k] = withVmallocChunks(ram, x);
  const vm = o.vmalloc as { first?: string } | undefined;
  if (vm && typeof vm.first === 'string') out.vmalloc = { ...(out.vmalloc as object), chunks: vmallocChunks(ram, Number(vm.first)) };
  return out;
}

function vmallocChunks(ram: PhysicalMemory, first: number): Array<{ phys: string; entries: number; firstEntries: string[] }> | string {
  const chunks: Array<{ phys: string; entries: number; firstEntries: string[] }> = [];
  const seen = new Set<number>();
  for (let c = first; c !== 0; ) {
    if (!Number.isSafeInteger(c) || c % PAGE_SIZE !== 0 || !ram.isRam(c, PAGE_SIZE)) return `chunk ${hex(c)} is not a page of RAM`;
    if (seen.has(c) || seen.size >= 4096) return `chunk ${hex(c)}: a cycle or too many chunks`;
    seen.add(c);
    const page = decodeKhoVmallocChunk(ram.read(c, PAGE_SIZE));
    chunks.push({ phys: hex(c), entries: page.phys.length, firstEntries: page.phys.slice(0, 4).map((p) => hex(p)) });
    c = page.next;
  }
  return chunks;
}

/** Byte swap of a u32: FDT headers are big-endian, RAM reads little-endian. */
function swap(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

/** The inspection as text for people. */
export function formatInspection(r: Inspection): string {
  const lines: string[] = [];
  lines.push(`Handover image ${r.file}: ${r.segments} segments, ${formatBytes(r.populatedBytes)} of populated RAM`);
  for (const x of r.ram) lines.push(`  RAM ${x.start} +${formatBytes(x.size)} node ${x.node}`);
  if (r.cmdline) lines.push(`  command line: ${r.cmdline}`);
  lines.push('');
  lines.push(`kho_data: root FDT at ${r.khoData.fdtAddr} (${r.khoData.fdtSize} bytes), scratch array at ${r.khoData.scratchAddr} (${r.khoData.scratchSize / 16} areas)`);
  lines.push('Scratch areas:');
  for (const s of r.scratch) lines.push(`  ${s.kind.padEnd(7)} ${s.addr} +${formatBytes(s.size)}`);
  lines.push('');
  lines.push(`Root FDT (compatible "${r.fdt.compatible}": generation ${r.fdt.generation}; preserved-memory-map at ${r.fdt.preservedMemoryMap}):`);
  if (r.kexecMetadata) lines.push(`  kexec-metadata: exec from ${r.kexecMetadata.previousRelease} (count ${r.kexecMetadata.kexecCount})`);
  lines.push(...r.fdt.dts.split('\n').map((l) => `  ${l}`));
  lines.push('');
  lines.push(`Subtrees: ${r.subtrees.length}`);
  for (const s of r.subtrees) {
    const kind = s.compatible
      ? ` (FDT, compatible "${s.compatible}")`
      : s.kstate
        ? ' (kstate stream)'
        : s.memfd
          ? ' (memfd file table)'
          : s.kexecMetadata
            ? ` (kexec-metadata: exec from ${s.kexecMetadata.previousRelease}, count ${s.kexecMetadata.kexecCount})`
            : s.luo
              ? ' (Live Update Orchestrator)'
              : '';
    lines.push(`  ${s.name} -> ${s.phys}${s.size !== undefined ? `, blob-size ${s.size}` : ''}${kind}`);
    if (s.dts) lines.push(...s.dts.split('\n').map((l) => `    ${l}`));
    for (const x of [s.kstate, s.memfd]) if (x !== undefined) lines.push(...JSON.stringify(x, null, 2).split('\n').map((l) => `    ${l}`));
    if (s.luo) lines.push(...formatLuo(s.luo));
    if (s.error) lines.push(`    (could not decode: ${s.error})`);
  }
  lines.push('');
  const t = r.tracker;
  lines.push(`Tracker: ${t.kind} (${t.name}), ${t.metadataPages} metadata pages (${formatBytes(t.metadataPages * PAGE_SIZE)}), ${t.blocks} blocks, ${formatBytes(t.preservedBytes)} preserved, ${t.bytesPerBlock} metadata bytes per block`);
  lines.push(`  blocks by order: ${Object.entries(t.byOrder).map(([o, n]) => `${o}:${n}`).join(' ') || 'none'}`);
  lines.push('Preserved blocks (phys, order):');
  for (const b of r.blocks) lines.push(`  ${b.phys} ${b.order}`);
  return lines.join('\n');
}
