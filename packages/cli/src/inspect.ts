import { Errno, KernelError, formatBytes, hex } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import {
  FDT_MAGIC,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_SUB_FDT,
  decodeFdt,
  decodeKhoData,
  decodeScratchArray,
  formatDts,
  readImageFile,
  type FdtNode,
  type HandoverImage,
} from '@kho/kho-core';
import { readIncomingTree } from '@kho/radix-tracker';

/** Everything `kho inspect` decodes from a handover image. */
export interface Inspection {
  readonly file: string;
  readonly segments: number;
  readonly populatedBytes: number;
  readonly ram: ReadonlyArray<{ start: string; size: number; node: number }>;
  readonly cmdline: string;
  readonly khoData: { fdtAddr: string; fdtSize: number; scratchAddr: string; scratchSize: number };
  readonly scratch: ReadonlyArray<{ kind: string; addr: string; size: number }>;
  readonly fdt: { compatible: string; preservedMemoryMap: string; dts: string };
  readonly subtrees: ReadonlyArray<{ name: string; phys: string; compatible?: string; dts?: string }>;
  readonly blocks: ReadonlyArray<{ phys: string; order: number }>;
  readonly tracker: { kind: string; nodes: number; blocks: number; preservedBytes: number; bytesPerBlock: number; byOrder: Record<string, number> };
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
  if (compatible !== 'kho-v2') fail(`root FDT compatible is '${compatible}' (this inspector reads 'kho-v2')`);

  const nScratch = kd.scratchSize / 16;
  if (!Number.isInteger(nScratch) || nScratch < 1 || nScratch > 66 || !ram.isRam(kd.scratchAddr, kd.scratchSize)) {
    fail(`kho_data scratch array ${Number.isFinite(kd.scratchAddr) ? hex(kd.scratchAddr) : '>= 2^53'} (+${kd.scratchSize}) is not a valid array in RAM`);
  }
  const scratch = decodeScratchArray(ram.read(kd.scratchAddr, kd.scratchSize)).map((a, i) => ({
    kind: i === 0 ? 'lowmem' : i === 1 ? 'global' : `node ${i - 2}`,
    addr: Number.isFinite(a.addr) ? hex(a.addr) : '>= 2^53',
    size: a.size,
  }));

  const tree = readIncomingTree(ram, map >= 2n ** 53n ? Infinity : Number(map));
  const blocks: Array<{ phys: string; order: number }> = [];
  const byOrder: Record<string, number> = {};
  let preservedBytes = 0;
  for (let i = 0; i < tree.count; i++) {
    blocks.push({ phys: hex(tree.pfns[i] * PAGE_SIZE), order: tree.orders[i] });
    byOrder[tree.orders[i]] = (byOrder[tree.orders[i]] ?? 0) + 1;
    preservedBytes += PAGE_SIZE * 2 ** tree.orders[i];
  }

  const subtrees = fdt.children.map((child) => describeSubtree(ram, child));
  const m = image.machine as Record<string, unknown>;
  return {
    file,
    segments: image.segments.length,
    populatedBytes: image.segments.reduce((n, s) => n + s.bytes.length, 0),
    ram: image.machine.ram.map((r) => ({ start: hex(r.start), size: r.size, node: r.node })),
    cmdline: typeof m.cmdline === 'string' ? m.cmdline : '',
    khoData: { fdtAddr: hex(kd.fdtAddr), fdtSize: kd.fdtSize, scratchAddr: hex(kd.scratchAddr), scratchSize: kd.scratchSize },
    scratch,
    fdt: { compatible, preservedMemoryMap: hex(map), dts: formatDts(fdt) },
    subtrees,
    blocks,
    tracker: {
      kind: 'kho-v2 radix tree',
      nodes: tree.nodes,
      blocks: tree.count,
      preservedBytes,
      bytesPerBlock: tree.count ? Math.round(((tree.nodes * PAGE_SIZE) / tree.count) * 100) / 100 : 0,
      byOrder,
    },
    rootDtb: fdtPage.slice(0, Math.min(totalsize, PAGE_SIZE)),
  };
}

function describeSubtree(ram: PhysicalMemory, node: FdtNode): { name: string; phys: string; compatible?: string; dts?: string } {
  const prop = node.getProp(PROP_SUB_FDT);
  if (!prop || prop.length !== 8) return { name: node.name, phys: `(bad ${PROP_SUB_FDT}: ${prop ? `${prop.length} bytes` : 'missing'})` };
  const phys = Number(new DataView(prop.buffer, prop.byteOffset, 8).getBigUint64(0, true));
  const out: { name: string; phys: string; compatible?: string; dts?: string } = { name: node.name, phys: hex(phys) };
  if (Number.isSafeInteger(phys) && ram.isRam(phys, 8) && ram.readU32(phys) === swap(FDT_MAGIC)) {
    try {
      const size = Math.min(PAGE_SIZE * 16, swap(ram.readU32(phys + 4)));
      if (ram.isRam(phys, size)) {
        const sub = decodeFdt(ram.read(phys, size));
        out.compatible = sub.getString('compatible');
        out.dts = formatDts(sub);
      }
    } catch (e) {
      out.dts = `(not a valid FDT: ${e instanceof Error ? e.message : String(e)})`;
    }
  }
  return out;
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
  lines.push(`Root FDT (compatible "${r.fdt.compatible}", preserved-memory-map at ${r.fdt.preservedMemoryMap}):`);
  lines.push(...r.fdt.dts.split('\n').map((l) => `  ${l}`));
  lines.push('');
  lines.push(`Subtrees: ${r.subtrees.length}`);
  for (const s of r.subtrees) {
    lines.push(`  ${s.name} -> ${s.phys}${s.compatible ? ` (FDT, compatible "${s.compatible}")` : ''}`);
    if (s.dts) lines.push(...s.dts.split('\n').map((l) => `    ${l}`));
  }
  lines.push('');
  const t = r.tracker;
  lines.push(`Tracker: ${t.kind}, ${t.nodes} nodes (${formatBytes(t.nodes * PAGE_SIZE)}), ${t.blocks} blocks, ${formatBytes(t.preservedBytes)} preserved, ${t.bytesPerBlock} metadata bytes per block`);
  lines.push(`  blocks by order: ${Object.entries(t.byOrder).map(([o, n]) => `${o}:${n}`).join(' ') || 'none'}`);
  lines.push('Preserved blocks (phys, order):');
  for (const b of r.blocks) lines.push(`  ${b.phys} ${b.order}`);
  return lines.join('\n');
}
