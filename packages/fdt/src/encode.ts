import { Errno, KernelError } from '@kho/kernel';
import {
  FDT_BEGIN_NODE,
  FDT_END,
  FDT_END_NODE,
  FDT_HEADER_SIZE,
  FDT_LAST_COMP_VERSION,
  FDT_MAGIC,
  FDT_MAX_DEPTH,
  FDT_PROP,
  FDT_PROP_HEADER_SIZE,
  FDT_RESERVE_ALIGN,
  FDT_RESERVE_ENTRY_SIZE,
  FDT_TAGSIZE,
  FDT_VERSION,
  FdtHeaderStruct,
  FdtPropHeaderStruct,
} from './abi';
import { FdtNode, checkNodeName, checkPropName } from './node';

/** Options of {@link encodeFdt}. */
export interface EncodeFdtOptions {
  /** Pad the blob to exactly this many bytes (the header's totalsize says so too); the root KHO FDT is one page. */
  totalSize?: number;
  /** `boot_cpuid_phys` of the header; 0 by default. */
  bootCpuid?: number;
}

const U32_MAX = 0xffffffff;

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Where each block goes; computed once from a validated tree and shared by {@link fdtSize} and {@link encodeFdt}. */
interface Layout {
  offRsvmap: number;
  offStruct: number;
  sizeStruct: number;
  offStrings: number;
  /** Property name → offset in the strings block, in first-use order (names are ASCII, so length = bytes). */
  strings: Map<string, number>;
  sizeStrings: number;
  size: number;
}

/**
 * Validates the whole tree (names, sibling uniqueness, depth, no node reachable twice) and sizes its blocks.
 * The fields of FdtNode are public, so this does not trust what the helpers checked.
 */
function layout(root: FdtNode): Layout {
  if (root.name !== '') {
    throw new KernelError(Errno.EINVAL, `FDT: root node is named ${JSON.stringify(root.name)} (wanted '')`);
  }
  const strings = new Map<string, number>();
  let sizeStrings = 0;
  let sizeStruct = FDT_TAGSIZE; // FDT_END
  const seen = new Set<FdtNode>();

  const visit = (node: FdtNode, path: string, depth: number): void => {
    if (depth > FDT_MAX_DEPTH) {
      throw new KernelError(Errno.EINVAL, `FDT: node ${path} is at depth ${depth} (wanted at most ${FDT_MAX_DEPTH})`);
    }
    if (seen.has(node)) {
      throw new KernelError(Errno.EINVAL, `FDT: node ${path} appears twice in the tree (wanted a tree, not a graph)`);
    }
    seen.add(node);
    sizeStruct += FDT_TAGSIZE + align(node.name.length + 1, FDT_TAGSIZE) + FDT_TAGSIZE; // BEGIN_NODE name END_NODE
    for (const [name, value] of node.props) {
      checkPropName(name);
      if (!(value instanceof Uint8Array) || value.length > U32_MAX) {
        throw new KernelError(Errno.EINVAL, `FDT: property ${path}:${name} is not a byte array of at most 2^32-1 bytes`);
      }
      sizeStruct += FDT_TAGSIZE + FDT_PROP_HEADER_SIZE + align(value.length, FDT_TAGSIZE);
      if (!strings.has(name)) {
        strings.set(name, sizeStrings);
        sizeStrings += name.length + 1;
      }
    }
    const names = new Set<string>();
    for (const child of node.children) {
      checkNodeName(child.name);
      if (names.has(child.name)) {
        throw new KernelError(Errno.EINVAL, `FDT: node ${path} has two children named '${child.name}' (wanted unique names)`);
      }
      names.add(child.name);
      visit(child, path === '/' ? `/${child.name}` : `${path}/${child.name}`, depth + 1);
    }
  };
  visit(root, '/', 1);

  const offRsvmap = align(FDT_HEADER_SIZE, FDT_RESERVE_ALIGN);
  const offStruct = offRsvmap + FDT_RESERVE_ENTRY_SIZE; // one all-zero terminating entry
  const offStrings = offStruct + sizeStruct;
  return { offRsvmap, offStruct, sizeStruct, offStrings, strings, sizeStrings, size: offStrings + sizeStrings };
}

/**
 * Returns the size in bytes of the blob {@link encodeFdt} would produce for `root` without padding, so a caller
 * can refuse an addition with ENOMEM before making it. Throws EINVAL when the tree is not encodable.
 */
export function fdtSize(root: FdtNode): number {
  return layout(root).size;
}

/**
 * Encodes `root` as a DTB version 17: header, an empty memory reservation block, the structure block and a
 * deduplicated strings block. Returns a new buffer of {@link fdtSize} bytes, or exactly `opts.totalSize` bytes
 * (zero-padded, and so recorded in the header) when given.
 * Throws EINVAL for an invalid tree or option, ENOMEM when the content needs more than `opts.totalSize` bytes.
 */
export function encodeFdt(root: FdtNode, opts: EncodeFdtOptions = {}): Uint8Array {
  const { totalSize, bootCpuid = 0 } = opts;
  if (totalSize !== undefined && (!Number.isInteger(totalSize) || totalSize < 0 || totalSize > U32_MAX)) {
    throw new KernelError(Errno.EINVAL, `FDT: totalSize ${totalSize} is not a u32 byte count`);
  }
  if (!Number.isInteger(bootCpuid) || bootCpuid < 0 || bootCpuid > U32_MAX) {
    throw new KernelError(Errno.EINVAL, `FDT: bootCpuid ${bootCpuid} is not a u32`);
  }
  const l = layout(root);
  if (totalSize !== undefined && l.size > totalSize) {
    throw new KernelError(Errno.ENOMEM, `FDT needs ${l.size} bytes, only ${totalSize} available`);
  }
  if (l.size > U32_MAX) throw new KernelError(Errno.EINVAL, `FDT: blob of ${l.size} bytes does not fit a u32 totalsize`);

  const out = new Uint8Array(totalSize ?? l.size);
  const view = new DataView(out.buffer);
  FdtHeaderStruct.encodeInto(out, 0, {
    magic: FDT_MAGIC,
    totalsize: out.length,
    off_dt_struct: l.offStruct,
    off_dt_strings: l.offStrings,
    off_mem_rsvmap: l.offRsvmap,
    version: FDT_VERSION,
    last_comp_version: FDT_LAST_COMP_VERSION,
    boot_cpuid_phys: bootCpuid,
    size_dt_strings: l.sizeStrings,
    size_dt_struct: l.sizeStruct,
  });
  // The reservation block is one all-zero entry: the buffer is already zero there.

  let p = l.offStruct;
  const token = (t: number): void => {
    view.setUint32(p, t);
    p += FDT_TAGSIZE;
  };
  const ascii = (s: string, at: number): void => {
    for (let i = 0; i < s.length; i++) out[at + i] = s.charCodeAt(i);
  };
  const emit = (node: FdtNode): void => {
    token(FDT_BEGIN_NODE);
    ascii(node.name, p);
    p += align(node.name.length + 1, FDT_TAGSIZE);
    for (const [name, value] of node.props) {
      token(FDT_PROP);
      FdtPropHeaderStruct.encodeInto(out, p, { len: value.length, nameoff: l.strings.get(name)! });
      p += FDT_PROP_HEADER_SIZE;
      out.set(value, p);
      p += align(value.length, FDT_TAGSIZE);
    }
    for (const child of node.children) emit(child);
    token(FDT_END_NODE);
  };
  emit(root);
  token(FDT_END);

  for (const [name, off] of l.strings) ascii(name, l.offStrings + off);
  return out;
}
