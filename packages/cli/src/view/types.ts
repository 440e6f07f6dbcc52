import type { PhysicalMemory } from '@kho/physmem';
import type { FdtNode } from '@kho/fdt';

/** A node of a decoded structure as the explorer and `kho inspect` show it: a label, a value, children. */
export interface ViewNode {
  readonly label: string;
  readonly value?: string;
  /** The physical address the node is about, when it has one (the explorer links it to the memory map). */
  readonly phys?: number;
  readonly children?: readonly ViewNode[];
}

/** A physical range a subtree's data occupies or names: blocks inside it belong to that subtree. */
export interface Claim {
  readonly start: number;
  readonly end: number;
  /** What the range is, for people ("memfd table", "folio of dense.bin"). */
  readonly what: string;
}

/** What a renderer gets: RAM (read only), the subtree's FDT node, its blob's phys and (kho-v3 and later) size. */
export interface RenderContext {
  readonly ram: PhysicalMemory;
  readonly node: FdtNode;
  readonly phys: number;
  readonly size?: number;
}

/** A subtree decoded: its data (JSON, for `kho inspect --json`), its tree for people, the ranges it owns. */
export interface Rendered {
  readonly data: unknown;
  readonly view: ViewNode;
  readonly claims: readonly Claim[];
  /** Problems inside the subtree that did not stop its decode (e.g. one bad vmalloc chunk list). */
  readonly problems?: readonly string[];
}

/**
 * A decoder of one kind of subtree of the root FDT. Adding a kind of subtree is one file exporting one of these
 * and one entry in `renderers/index.ts`. `render` throws a KernelError naming what is wrong with a damaged blob.
 */
export interface SubtreeRenderer {
  /** What the subtree is, for people ("kstate stream"). */
  readonly kind: string;
  /** The key of the decoded data in `kho inspect --json` (`{"name":…,"phys":…,"<key>":data}`). */
  readonly jsonKey: string;
  matches(node: FdtNode): boolean;
  render(ctx: RenderContext): Rendered;
}

/** A JSON value as a tree: objects and arrays become children, scalars values. */
export function jsonView(label: string, v: unknown, depth = 0): ViewNode {
  if (v === null || typeof v !== 'object') return { label, value: String(v) };
  if (depth > 12) return { label, value: '…' };
  const entries = Array.isArray(v) ? v.map((x, i) => [String(i), x] as const) : Object.entries(v as Record<string, unknown>);
  return { label, children: entries.map(([k, x]) => jsonView(k, x, depth + 1)) };
}
