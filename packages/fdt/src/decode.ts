import { Errno, KernelError, hex } from '@kho/kernel';
import {
  FDT_BEGIN_NODE,
  FDT_END,
  FDT_END_NODE,
  FDT_FIRST_SUPPORTED_VERSION,
  FDT_HEADER,
  FDT_HEADER_SIZE,
  FDT_MAGIC,
  FDT_MAX_DEPTH,
  FDT_MAX_NAME_LEN,
  FDT_NOP,
  FDT_PROP,
  FDT_PROP_HEADER_SIZE,
  FDT_RESERVE_ALIGN,
  FDT_RESERVE_ENTRY_SIZE,
  FDT_TAGSIZE,
  FDT_VERSION,
  FdtHeaderStruct,
  FdtPropHeaderStruct,
  FdtReserveEntryStruct,
} from './abi';
import { FdtNode, isValidNodeName, isValidPropName } from './node';

/** Options of {@link decodeFdt}: bounds that keep a hostile blob from costing more than a real one. */
export interface DecodeFdtOptions {
  /** Deepest nesting accepted, the root counting as level 1; default {@link FDT_MAX_DEPTH} (32). */
  maxDepth?: number;
  /** Most nodes accepted, the root included; default 10,000. */
  maxNodes?: number;
}

/** Default bound on the number of nodes {@link decodeFdt} accepts; a one-page KHO root FDT holds about a hundred. */
export const FDT_DEFAULT_MAX_NODES = 10_000;

/** Longest node name on the wire: a name and an @unit of 31 characters each. */
const MAX_NODE_NAME_BYTES = 2 * FDT_MAX_NAME_LEN + 1;

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

function bad(what: string, at: number, wanted: string): KernelError {
  return new KernelError(Errno.EINVAL, `FDT: ${what} (at offset ${hex(at)}; wanted ${wanted})`);
}

/** The ASCII text of `bytes[from, NUL)`, or undefined when no NUL occurs within `max` bytes before `limit`. */
function cstring(bytes: Uint8Array, from: number, limit: number, max: number): string | undefined {
  const nul = bytes.subarray(from, Math.min(limit, from + max + 1)).indexOf(0);
  return nul < 0 ? undefined : String.fromCharCode(...bytes.subarray(from, from + nul));
}

/** An open node while walking the structure block. */
interface Frame {
  node: FdtNode;
  path: string;
  childNames: Set<string>;
}

/**
 * Decodes a DTB (version 16 or 17) into a new tree; property values are copies. The input is treated as hostile:
 * the header, every block's bounds and alignment, every string, every length and the token sequence are checked
 * before use, nesting and node count are bounded, and the walk always advances, so it ends.
 * Memory reservation entries are refused: a KHO tree has none and {@link FdtNode} cannot carry them.
 * Returns the root node. Throws only KernelError(EINVAL, 'FDT: <what> (at offset 0x…; wanted …)').
 */
export function decodeFdt(bytes: Uint8Array, opts: DecodeFdtOptions = {}): FdtNode {
  const { maxDepth = FDT_MAX_DEPTH, maxNodes = FDT_DEFAULT_MAX_NODES } = opts;
  for (const [key, v] of [['maxDepth', maxDepth], ['maxNodes', maxNodes]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new KernelError(Errno.EINVAL, `FDT: ${key} ${v} is not a positive integer`);
  }
  if (bytes.length < FDT_HEADER_SIZE) {
    throw bad(`buffer of ${bytes.length} bytes is shorter than the header`, 0, `at least ${FDT_HEADER_SIZE} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Every header field is a plain be32 (decoding cannot fail); they are checked below in a set order, magic first.
  const hd = FdtHeaderStruct.decode(bytes);
  const h = (f: keyof typeof FDT_HEADER): number => hd[f];

  const magic = h('magic');
  if (magic !== FDT_MAGIC) throw bad(`bad magic ${hex(magic)}`, FDT_HEADER.magic.offset, hex(FDT_MAGIC));
  const version = h('version');
  if (version < FDT_FIRST_SUPPORTED_VERSION) {
    throw bad(`version ${version} is too old`, FDT_HEADER.version.offset, `at least ${FDT_FIRST_SUPPORTED_VERSION}`);
  }
  const lastComp = h('last_comp_version');
  if (lastComp > FDT_VERSION) {
    throw bad(`last_comp_version ${lastComp} is newer than this reader`, FDT_HEADER.last_comp_version.offset, `at most ${FDT_VERSION}`);
  }
  const total = h('totalsize');
  if (total < FDT_HEADER_SIZE) {
    throw bad(`totalsize ${total} is smaller than the header`, FDT_HEADER.totalsize.offset, `at least ${FDT_HEADER_SIZE}`);
  }
  if (total > bytes.length) {
    throw bad(`totalsize ${total} exceeds the buffer of ${bytes.length} bytes`, FDT_HEADER.totalsize.offset, `at most ${bytes.length}`);
  }

  // Memory reservation block: 8-aligned, after the header, and empty (one all-zero terminating entry).
  const offRsv = h('off_mem_rsvmap');
  if (offRsv % FDT_RESERVE_ALIGN !== 0 || offRsv < FDT_HEADER_SIZE || offRsv + FDT_RESERVE_ENTRY_SIZE > total) {
    throw bad(
      `off_mem_rsvmap ${hex(offRsv)} is misplaced`,
      FDT_HEADER.off_mem_rsvmap.offset,
      `an 8-aligned offset in ${hex(FDT_HEADER_SIZE)}..${hex(total - FDT_RESERVE_ENTRY_SIZE)}`,
    );
  }
  const rsv = FdtReserveEntryStruct.decode(bytes, offRsv);
  if (rsv.address !== 0 || rsv.size !== 0) {
    throw bad('memory reservation entry 0 is not empty', offRsv, 'an empty reservation map (KHO reserves nothing there)');
  }

  // Structure block: 4-aligned inside totalsize. Before v17 its size is not recorded: it may run to totalsize.
  const offStruct = h('off_dt_struct');
  if (offStruct % FDT_TAGSIZE !== 0 || offStruct < FDT_HEADER_SIZE || offStruct > total) {
    throw bad(`off_dt_struct ${hex(offStruct)} is misplaced`, FDT_HEADER.off_dt_struct.offset, `a 4-aligned offset in ${hex(FDT_HEADER_SIZE)}..${hex(total)}`);
  }
  let sizeStruct = total - offStruct;
  if (version >= 17) {
    sizeStruct = h('size_dt_struct');
    if (sizeStruct % FDT_TAGSIZE !== 0 || sizeStruct > total - offStruct) {
      throw bad(`size_dt_struct ${sizeStruct} does not fit`, FDT_HEADER.size_dt_struct.offset, `a multiple of 4 of at most ${total - offStruct}`);
    }
  }
  const structEnd = offStruct + sizeStruct;

  const offStrings = h('off_dt_strings');
  if (offStrings < FDT_HEADER_SIZE || offStrings > total) {
    throw bad(`off_dt_strings ${hex(offStrings)} is misplaced`, FDT_HEADER.off_dt_strings.offset, `an offset in ${hex(FDT_HEADER_SIZE)}..${hex(total)}`);
  }
  const sizeStrings = h('size_dt_strings');
  if (sizeStrings > total - offStrings) {
    throw bad(`size_dt_strings ${sizeStrings} does not fit`, FDT_HEADER.size_dt_strings.offset, `at most ${total - offStrings}`);
  }
  const stringsEnd = offStrings + sizeStrings;

  // The walk: every iteration consumes at least one 4-byte token, so it ends within sizeStruct / 4 steps.
  const stack: Frame[] = [];
  let root: FdtNode | undefined;
  let nodes = 0;
  let p = offStruct;
  for (;;) {
    const at = p;
    if (p + FDT_TAGSIZE > structEnd) throw bad('structure block ends before FDT_END', at, 'an FDT_END token');
    const token = view.getUint32(p);
    p += FDT_TAGSIZE;
    const top = stack[stack.length - 1];

    switch (token) {
      case FDT_NOP:
        break;

      case FDT_BEGIN_NODE: {
        if (root && !top) throw bad('a second root node', at, 'FDT_END after the root node');
        const name = cstring(bytes, p, structEnd, MAX_NODE_NAME_BYTES);
        if (name === undefined) throw bad('node name is not NUL-terminated within 63 bytes of the structure block', p, 'a NUL-terminated name');
        const path = top ? (top.path === '/' ? `/${name}` : `${top.path}/${name}`) : '/';
        if (!top && name !== '') throw bad(`root node is named ${JSON.stringify(name)}`, p, 'an empty name');
        if (top) {
          if (!isValidNodeName(name)) {
            throw bad(`node name ${JSON.stringify(name)} is not valid`, p, '1..31 characters of A-Z a-z 0-9 , . _ + - and an optional @unit');
          }
          if (top.childNames.has(name)) throw bad(`duplicate node ${path}`, at, 'unique node names');
        }
        if (stack.length + 1 > maxDepth) throw bad(`node ${path} is nested deeper than ${maxDepth} levels`, at, `at most ${maxDepth} levels`);
        if (++nodes > maxNodes) throw bad(`more than ${maxNodes} nodes`, at, `at most ${maxNodes} nodes`);
        p = align(p + name.length + 1, FDT_TAGSIZE);
        const node = new FdtNode(name);
        if (top) {
          top.node.children.push(node);
          top.childNames.add(name);
        } else {
          root = node;
        }
        stack.push({ node, path, childNames: new Set() });
        break;
      }

      case FDT_END_NODE:
        if (!top) throw bad('FDT_END_NODE without an open node', at, 'FDT_BEGIN_NODE first');
        stack.pop();
        break;

      case FDT_PROP: {
        if (!top) throw bad('property outside any node', at, 'properties inside a node');
        if (p + FDT_PROP_HEADER_SIZE > structEnd) throw bad('property header runs past the structure block', at, `${FDT_PROP_HEADER_SIZE} bytes after FDT_PROP`);
        const { len, nameoff } = FdtPropHeaderStruct.decode(bytes, p);
        const valueAt = p + FDT_PROP_HEADER_SIZE;
        if (len > structEnd - valueAt) {
          throw bad(`property value of ${len} bytes runs past the structure block`, at, `at most ${structEnd - valueAt} bytes`);
        }
        if (nameoff >= sizeStrings) {
          throw bad(`property name offset ${hex(nameoff)} is outside the strings block`, at, `below size_dt_strings ${hex(sizeStrings)}`);
        }
        const name = cstring(bytes, offStrings + nameoff, stringsEnd, FDT_MAX_NAME_LEN);
        if (name === undefined) {
          throw bad(`property name at strings offset ${hex(nameoff)} is not NUL-terminated within 32 bytes of the strings block`, at, 'a NUL-terminated name');
        }
        if (!isValidPropName(name)) {
          throw bad(`property name ${JSON.stringify(name)} in ${top.path} is not valid`, at, '1..31 characters of A-Z a-z 0-9 , . _ + ? # -');
        }
        if (top.node.children.length > 0) throw bad(`property ${JSON.stringify(name)} after a child node of ${top.path}`, at, 'properties before subnodes');
        if (top.node.props.has(name)) throw bad(`duplicate property ${JSON.stringify(name)} in ${top.path}`, at, 'unique property names');
        top.node.props.set(name, bytes.slice(valueAt, valueAt + len));
        p = align(valueAt + len, FDT_TAGSIZE);
        break;
      }

      case FDT_END:
        if (!root) throw bad('FDT_END before the root node', at, 'FDT_BEGIN_NODE first');
        if (top) throw bad(`FDT_END inside node ${top.path}`, at, 'FDT_END_NODE first');
        if (version >= 17 && p !== structEnd) throw bad('FDT_END is not the last token', at, `the structure block to end at ${hex(structEnd)}`);
        return root;

      default:
        throw bad(`unknown token ${hex(token)}`, at, 'FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP or FDT_END');
    }
  }
}
