import { describeError, hex } from '@kho/kernel';
import { FDT_MAGIC, decodeFdt, formatDts, type FdtNode } from '@kho/fdt';
import { PAGE_SIZE, type PhysicalMemory } from '@kho/physmem';
import type { Rendered, SubtreeRenderer, ViewNode } from '../types';

/** Byte swap of a u32: FDT headers are big-endian, RAM reads little-endian. */
function swap(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

/** A property's value for people: a string, a u64 (8 bytes, little-endian as KHO writes them), or bytes. */
export function propText(bytes: Uint8Array): string {
  const text = bytes.length > 0 && bytes[bytes.length - 1] === 0 ? new TextDecoder().decode(bytes.subarray(0, -1)) : undefined;
  if (text !== undefined && /^[\x20-\x7e\0]*$/.test(text) && text.length > 0) return `"${text.replace(/\0/g, '", "')}"`;
  if (bytes.length === 8) return `u64 ${hex(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true))}`;
  if (bytes.length === 4) return `u32 ${hex(new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true))}`;
  return `[${Array.from(bytes.subarray(0, 32), (b) => b.toString(16).padStart(2, '0')).join(' ')}${bytes.length > 32 ? ' …' : ''}] (${bytes.length} bytes)`;
}

/** An FDT node as a tree: its properties, then its children. */
export function fdtView(node: FdtNode, label = node.name || '/'): ViewNode {
  return {
    label,
    children: [...[...node.props].map(([k, v]) => ({ label: k, value: propText(v) })), ...node.children.map((c) => fdtView(c))],
  };
}

/** Reads an FDT blob at `phys` when it looks like one (magic, size inside RAM). Returns undefined otherwise. */
export function readFdtAt(ram: PhysicalMemory, phys: number): FdtNode | undefined {
  if (!Number.isSafeInteger(phys) || !ram.isRam(phys, 8) || ram.readU32(phys) !== swap(FDT_MAGIC)) return undefined;
  const size = Math.min(PAGE_SIZE * 16, swap(ram.readU32(phys + 4)));
  return ram.isRam(phys, size) ? decodeFdt(ram.read(phys, size)) : undefined;
}

/** Any other subtree whose blob is an FDT: shown as DTS. Matches last (see renderers/index.ts). */
export const fdtRenderer: SubtreeRenderer = {
  kind: 'FDT',
  jsonKey: 'dts',
  matches: () => true,
  render({ ram, phys, node }): Rendered {
    let sub: FdtNode | undefined;
    try {
      sub = readFdtAt(ram, phys);
    } catch (e) {
      return { data: `(not a valid FDT: ${describeError(e, { errno: true })})`, view: { label: node.name, value: 'not a valid FDT', phys }, claims: [] };
    }
    if (!sub) return { data: undefined, view: { label: node.name, value: 'a blob this explorer does not know', phys }, claims: [{ start: phys, end: phys + PAGE_SIZE, what: `${node.name} blob` }] };
    return { data: formatDts(sub), view: { ...fdtView(sub, node.name), value: sub.getString('compatible'), phys }, claims: [{ start: phys, end: phys + PAGE_SIZE, what: `${node.name} FDT` }] };
  },
};
