import { Errno, KernelError } from '@kho/kernel';
import { FdtNode } from '@kho/fdt';
import { PROP_BLOB_SIZE, PROP_PRESERVED_MEMORY_MAP, PROP_SUB_FDT, PROP_SUB_FDT_V1 } from './abi';
import { KHO_GENERATIONS, generationByCompatible, type KhoGeneration } from './generations';

/** Where a subtree's blob is, as the previous kernel recorded it. `size` is absent before kho-v3. */
export interface SubtreeRef {
  readonly phys: number;
  readonly size?: number;
}

/** A new root FDT of generation `g` pointing at the preserved-memory map at `mapPhys`. */
export function buildRootFdt(g: KhoGeneration, mapPhys: number): FdtNode {
  const root = new FdtNode('');
  root.setString('compatible', g.compatible);
  root.setU64LE(PROP_PRESERVED_MEMORY_MAP, mapPhys);
  return root;
}

/** The name of the subtree property that holds the blob's phys in generation `g`. */
export function subtreeAddressProp(g: KhoGeneration): string {
  return g.subtreeAddress === 'fdt' ? PROP_SUB_FDT_V1 : PROP_SUB_FDT;
}

/**
 * Adds child `name` to `root` with the properties generation `g` writes: the blob's phys, and from kho-v3 on its
 * size. EEXIST when the name exists; EINVAL for a name the FDT cannot hold. Nothing is left behind on failure.
 */
export function addSubtreeNode(g: KhoGeneration, root: FdtNode, name: string, phys: number, size: number): FdtNode {
  if (root.child(name)) throw new KernelError(Errno.EEXIST, `subtree '${name}' already exists in the root FDT`);
  const node = root.addChild(name);
  try {
    node.setU64LE(subtreeAddressProp(g), phys);
    if (g.blobSize) node.setU64LE(PROP_BLOB_SIZE, size);
  } catch (e) {
    root.removeChild(name);
    throw e;
  }
  return node;
}

/**
 * The first child of `root` whose address property (of generation `g`) is exactly 8 bytes and equals `phys`
 * (upstream's kho_remove_subtree), or undefined.
 */
export function findSubtreeByBlob(g: KhoGeneration, root: FdtNode, phys: number): FdtNode | undefined {
  const prop = subtreeAddressProp(g);
  return root.children.find((c) => {
    const v = c.getProp(prop);
    return v !== undefined && v.length === 8 && Number(new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true)) === phys;
  });
}

/**
 * Reads subtree `name` of an incoming root of generation `g`, with upstream's checks in upstream's order: no such
 * child → ENOENT; the address property missing or not 8 bytes → EINVAL; from kho-v3 on, `blob-size` missing or not
 * 8 bytes → EINVAL. A u64 at or above 2^53 comes back as Infinity (no RAM lies there; callers' range checks refuse it).
 */
export function readSubtreeNode(g: KhoGeneration, root: FdtNode, name: string): SubtreeRef {
  const node = root.child(name);
  if (!node) throw new KernelError(Errno.ENOENT, `retrieveSubtree('${name}'): no such subtree in the incoming FDT`);
  const addrProp = subtreeAddressProp(g);
  const phys = u64Prop(node, addrProp);
  if (phys === undefined) throw badProp(name, addrProp, node.getProp(addrProp));
  if (!g.blobSize) return { phys };
  const size = u64Prop(node, PROP_BLOB_SIZE);
  if (size === undefined) throw badProp(name, PROP_BLOB_SIZE, node.getProp(PROP_BLOB_SIZE));
  return { phys, size };
}

/**
 * The generation of an incoming root FDT: its `compatible` must be one of `known` exactly (a single-entry list, as
 * upstream writes it). Throws EINVAL with one line naming what was found and what this kernel knows.
 */
export function rootGeneration(root: FdtNode, known: readonly KhoGeneration[]): KhoGeneration {
  const compat = root.getProp('compatible');
  const shown = compat ? `'${new TextDecoder().decode(compat).replace(/\0/g, '\\0')}'` : '(missing)';
  // One string and its NUL, nothing more: upstream writes a single-entry list and compares it whole.
  const single = compat !== undefined && compat.length > 1 && compat.indexOf(0) === compat.length - 1;
  const g = single ? generationByCompatible(new TextDecoder().decode(compat.subarray(0, -1))) : undefined;
  if (g && known.includes(g)) return g;
  const reads = `wanted one this kernel reads: ${known.map((k) => `'${k.compatible}'`).join(', ')}`;
  const other = g ? `, a ${g.tracker} handover` : '';
  throw new KernelError(Errno.EINVAL, `root FDT compatible is ${shown}${other} (${reads})`);
}

/** Every generation whose preserved-memory map is of kind `tracker`: what a kernel with that tracker can read. */
export function readableGenerations(tracker: string): KhoGeneration[] {
  return KHO_GENERATIONS.filter((g) => g.tracker === tracker);
}

function u64Prop(node: FdtNode, name: string): number | undefined {
  const v = node.getProp(name);
  if (!v || v.length !== 8) return undefined;
  const x = new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true);
  return x >= 2n ** 53n ? Infinity : Number(x);
}

function badProp(name: string, prop: string, v: Uint8Array | undefined): KernelError {
  return new KernelError(Errno.EINVAL, `retrieveSubtree('${name}'): '${prop}' is ${v ? `${v.length} bytes` : 'missing'} (wanted 8)`);
}
