import { FdtNode } from './node';

/** Options of {@link formatDts}. */
export interface FormatDtsOptions {
  /** Add `/* u64 le 0x… *\/` after every 8-byte non-string property (KHO's values); default true. */
  u64Comments?: boolean;
  /** One level of indentation; default a tab, as dtc prints. */
  indent?: string;
}

/** Decodes the printable ASCII of a string property (no spread of the bytes: a property may be megabytes long). */
const ascii = new TextDecoder();
const hexByte = (b: number): string => b.toString(16).padStart(2, '0');

/** The strings of a printable NUL-terminated string list (dtc's rule), or undefined when the bytes are not one. */
function stringList(bytes: Uint8Array): string[] | undefined {
  if (bytes.length === 0 || bytes[bytes.length - 1] !== 0) return undefined;
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0) {
      if (i === start) return undefined; // an empty string: more likely binary data
      parts.push(ascii.decode(bytes.subarray(start, i)));
      start = i + 1;
    } else if (b < 0x20 || b > 0x7e) {
      return undefined;
    }
  }
  return parts;
}

/** The property line after its name: ` = value;`, `;` for an empty value, and the u64 comment where it applies. */
function formatValue(bytes: Uint8Array, u64Comments: boolean): string {
  if (bytes.length === 0) return ';';
  const strings = stringList(bytes);
  if (strings) return ` = ${strings.map((s) => JSON.stringify(s)).join(', ')};`;
  if (bytes.length === 8) {
    const le = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
    return ` = [${Array.from(bytes, hexByte).join(' ')}];${u64Comments ? ` /* u64 le 0x${le.toString(16)} */` : ''}`;
  }
  if (bytes.length % 4 === 0) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const cells: string[] = [];
    for (let i = 0; i < bytes.length; i += 4) cells.push(`0x${view.getUint32(i).toString(16).padStart(8, '0')}`);
    return ` = <${cells.join(' ')}>;`;
  }
  return ` = [${Array.from(bytes, hexByte).join(' ')}];`;
}

/**
 * Returns DTS-like text for people: `/dts-v1/;` and the tree, properties as strings when they are printable
 * NUL-terminated string lists, 8-byte values as bytes with a comment giving their little-endian u64 (KHO's
 * values), other multiples of 4 bytes as big-endian `<cells>`, the rest as `[bytes]`. Throws nothing.
 * The output reads like dtc's, but it is not meant to be compiled back: use {@link encodeFdt} for that.
 */
export function formatDts(root: FdtNode, opts: FormatDtsOptions = {}): string {
  const { u64Comments = true, indent = '\t' } = opts;
  const lines = ['/dts-v1/;', ''];
  const visit = (node: FdtNode, depth: number, seen: Set<FdtNode>): void => {
    if (seen.has(node)) return; // a graph built through the public fields; encodeFdt refuses it, we just stop
    seen.add(node);
    const pad = indent.repeat(depth);
    lines.push(`${pad}${depth === 0 ? '/' : node.name} {`);
    for (const [name, value] of node.props) {
      lines.push(`${pad}${indent}${name}${formatValue(value, u64Comments)}`);
    }
    for (const child of node.children) {
      lines.push('');
      visit(child, depth + 1, seen);
    }
    lines.push(`${pad}};`);
  };
  visit(root, 0, new Set());
  return lines.join('\n') + '\n';
}
