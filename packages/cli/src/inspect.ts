import { formatBytes, hex } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { readImageFile, type HandoverImage } from '@kho/image';
import { decodeHandover, type HandoverView } from './view/handover';
import { writeNonZeroPages } from './handover';
import { splitWanted } from './view/problems';
import { formatLuo } from './vmm/luo-inspect';

export type { SubtreeInfo } from './view/handover';

/** Everything `kho inspect` decodes from a handover image, and every problem it found. */
export interface Inspection extends HandoverView {
  readonly file: string;
  readonly segments: number;
  readonly populatedBytes: number;
  readonly ram: ReadonlyArray<{ start: string; size: number; node: number }>;
  readonly cmdline: string;
  /** The generation of the kernel the image boots (from the machine note; absent in older images). */
  readonly generation?: number;
  /** [start, end) of every segment of RAM the image holds (not in the JSON). */
  readonly populated: ReadonlyArray<readonly [number, number]>;
}

/**
 * Decodes a handover image file: root FDT, scratch areas, every preserved block, subtrees (each by its
 * renderer), tracker figures. With `strict`, throws KernelError(EINVAL) at the first problem (as the next kernel
 * refuses); otherwise decodes everything it can and lists the problems. A file that is not a readable image
 * always throws.
 */
export function inspectImage(file: string, opts: { strict?: boolean } = {}): Inspection {
  // a file cut short still has its headers and most of its pages: decode those, and say what is missing
  const lost: string[] = [];
  // the segments go into RAM as they are read (the file's data is never held twice); adjacent pieces of one
  // PT_LOAD make one populated range
  let ram: PhysicalMemory | undefined;
  const populated: Array<[number, number]> = [];
  const image = readImageFile(file, {
    ...(opts.strict ? {} : { salvage: (p: string) => lost.push(p) }),
    onHeaders: (h) => void (ram = new PhysicalMemory({ ranges: h.machine.ram })),
    onSegment: (seg) => {
      writeNonZeroPages(ram!, seg.paddr, seg.bytes);
      const last = populated[populated.length - 1];
      if (last && last[1] === seg.paddr) last[1] += seg.bytes.length;
      else populated.push([seg.paddr, seg.paddr + seg.bytes.length]);
    },
  });
  const r = inspectRam(file, image, ram!, populated, opts);
  for (const p of lost.reverse()) r.problems.unshift({ where: 'image file', ...splitWanted(p, 'the whole file') });
  return r;
}

/** As {@link inspectImage}, for an image already read (its segments in memory). */
export function inspectLoaded(file: string, image: HandoverImage, opts: { strict?: boolean } = {}): Inspection {
  const ram = new PhysicalMemory({ ranges: image.machine.ram });
  for (const s of image.segments) ram.write(s.paddr, s.bytes);
  return inspectRam(file, image, ram, image.segments.map((x) => [x.paddr, x.paddr + x.bytes.length] as const), opts);
}

function inspectRam(file: string, image: HandoverImage, ram: PhysicalMemory, populated: ReadonlyArray<readonly [number, number]>, opts: { strict?: boolean }): Inspection {
  const view = decodeHandover(ram, image.khoData, opts);
  const m = image.machine as Record<string, unknown>;
  return {
    file,
    segments: populated.length,
    populatedBytes: populated.reduce((n, [a, b]) => n + (b - a), 0),
    ram: image.machine.ram.map((r) => ({ start: hex(r.start), size: r.size, node: r.node })),
    cmdline: typeof m.cmdline === 'string' ? m.cmdline : '',
    ...(Number.isSafeInteger(m.generation) ? { generation: m.generation as number } : {}),
    populated,
    ...view,
  };
}

/** The inspection as JSON data: what people and scripts read (no byte buffers, no explorer trees). */
export function inspectionJson(r: Inspection): unknown {
  const json = jsonWithoutBlocks(r) as Record<string, unknown>;
  json.blocks = Array.from({ length: r.blocks.count }, (_, i) => ({ phys: hex(r.blocks.pfns[i] * PAGE_SIZE), order: r.blocks.orders[i] }));
  return json;
}

/** Where the blocks go in the JSON text: a string no inspection holds. */
const BLOCKS_MARK = '\u0000kho-inspect-blocks\u0000';

function jsonWithoutBlocks(r: Inspection): unknown {
  const { rootDtb: _d, radix: _r, claims: _c, populated: _p, fdt, subtrees, blocks: _b, ...rest } = r;
  const { problems, ...before } = rest;
  return {
    ...before,
    ...(fdt ? { fdt: { compatible: fdt.compatible, generation: fdt.generation, preservedMemoryMap: fdt.preservedMemoryMap, dts: fdt.dts } } : {}),
    subtrees: subtrees.map(({ view: _v, ...s }) => s),
    blocks: BLOCKS_MARK,
    problems,
  };
}

/** Lines of output written per call while streaming the blocks. */
const LINES_PER_WRITE = 4096;

/**
 * Writes the inspection as JSON (the text `JSON.stringify(inspectionJson(r), null, 2)` gives) to `out`, the
 * blocks a few thousand at a time: a map of millions of blocks never becomes one string.
 */
export function writeInspectionJson(r: Inspection, out: (s: string) => void): void {
  const text = JSON.stringify(jsonWithoutBlocks(r), null, 2);
  const mark = `"blocks": ${JSON.stringify(BLOCKS_MARK)}`;
  const at = text.indexOf(mark);
  out(text.slice(0, at));
  out('"blocks": [');
  const { count, pfns, orders } = r.blocks;
  for (let i = 0; i < count; i += LINES_PER_WRITE) {
    let chunk = '';
    for (let j = i; j < Math.min(count, i + LINES_PER_WRITE); j++) {
      chunk += `${j === 0 ? '' : ','}\n    {\n      "phys": "${hex(pfns[j] * PAGE_SIZE)}",\n      "order": ${orders[j]}\n    }`;
    }
    out(chunk);
  }
  out(count > 0 ? '\n  ]' : ']');
  out(`${text.slice(at + mark.length)}\n`);
}

/** The inspection as text for people; the problems last. */
export function formatInspection(r: Inspection): string {
  const parts: string[] = [];
  writeInspection(r, (s) => parts.push(s));
  return parts.join('').replace(/\n$/, '');
}

/** Writes the inspection as text to `out` (what {@link formatInspection} returns, and a newline), the blocks a few thousand lines at a time. */
export function writeInspection(r: Inspection, out: (s: string) => void): void {
  const lines: string[] = [];
  lines.push(`Handover image ${r.file}: ${r.segments} segments, ${formatBytes(r.populatedBytes)} of populated RAM`);
  for (const x of r.ram) lines.push(`  RAM ${x.start} +${formatBytes(x.size)} node ${x.node}`);
  if (r.cmdline) lines.push(`  command line: ${r.cmdline}`);
  if (r.generation !== undefined) lines.push(`  boots generation ${r.generation}`);
  lines.push('');
  if (r.khoData) {
    const k = r.khoData;
    lines.push(`kho_data: root FDT at ${k.fdtAddr} (${k.fdtSize} bytes), scratch array at ${k.scratchAddr} (${k.scratchSize / 16} areas)`);
  }
  lines.push('Scratch areas:');
  for (const s of r.scratch) lines.push(`  ${s.kind.padEnd(7)} ${s.addr} +${formatBytes(s.size)}`);
  lines.push('');
  if (r.fdt) {
    lines.push(`Root FDT (compatible "${r.fdt.compatible}"${r.fdt.generation ? `: generation ${r.fdt.generation}` : ''}; preserved-memory-map at ${r.fdt.preservedMemoryMap}):`);
    const kmd = r.subtrees.find((s) => s.kexecMetadata)?.kexecMetadata;
    if (kmd) lines.push(`  kexec-metadata: exec from ${kmd.previousRelease} (count ${kmd.kexecCount})`);
    lines.push(...r.fdt.dts.split('\n').map((l) => `  ${l}`));
    lines.push('');
  }
  lines.push(`Subtrees: ${r.subtrees.length}`);
  for (const s of r.subtrees) {
    const kind = s.compatible
      ? ` (FDT, compatible "${s.compatible}")`
      : s.kexecMetadata
        ? ` (kexec-metadata: exec from ${s.kexecMetadata.previousRelease}, count ${s.kexecMetadata.kexecCount})`
        : s.kind && !s.error
          ? ` (${s.kind})`
          : '';
    lines.push(`  ${s.name} -> ${s.phys}${s.size !== undefined ? `, blob-size ${s.size}` : ''}${kind}`);
    if (s.dts) lines.push(...s.dts.split('\n').map((l) => `    ${l}`));
    for (const x of [s.kstate, s.memfd, s.memblock, s.slab]) if (x !== undefined) lines.push(...JSON.stringify(x, null, 2).split('\n').map((l) => `    ${l}`));
    if (s.luo) lines.push(...formatLuo(s.luo));
    if (s.error) lines.push(`    (could not decode: ${s.error})`);
  }
  lines.push('');
  const t = r.tracker;
  if (t) {
    lines.push(
      `Tracker: ${t.kind} (${t.name}), ${t.metadataPages} metadata pages (${formatBytes(t.metadataPages * PAGE_SIZE)}), ${t.blocks} blocks, ${formatBytes(t.preservedBytes)} preserved, ${t.bytesPerBlock} metadata bytes per block`,
    );
    lines.push(`  blocks by order: ${Object.entries(t.byOrder).map(([o, n]) => `${o}:${n}`).join(' ') || 'none'}`);
    lines.push(t.listed ? 'Preserved blocks (phys, order):' : 'Preserved blocks: not listed (the next kernel refuses this map; see the problems)');
    out(`${lines.join('\n')}\n`);
    lines.length = 0;
    const { count, pfns, orders } = r.blocks;
    for (let i = 0; i < count; i += LINES_PER_WRITE) {
      let chunk = '';
      for (let j = i; j < Math.min(count, i + LINES_PER_WRITE); j++) chunk += `  ${hex(pfns[j] * PAGE_SIZE)} ${orders[j]}\n`;
      out(chunk);
    }
  }
  if (r.problems.length > 0) {
    lines.push('');
    lines.push(`Problems: ${r.problems.length} (the next kernel would refuse this handover or part of it)`);
    for (const p of r.problems) lines.push(`  ${p.where}: ${p.what} (wanted ${p.wanted})`);
  }
  if (lines.length > 0) out(`${lines.join('\n')}\n`);
}
