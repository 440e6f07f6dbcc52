import { Errno, KernelError, crc32c, hex } from '@kho/kernel';
import { decodeFdt, type FdtNode } from '@kho/fdt';
import { PAGE_SIZE, type Order, type Pfn, type PhysAddr, type PhysicalMemory } from '@kho/physmem';
import {
  KHO_FDT_SIZE,
  KHO_SCRATCH_ENTRY_SIZE,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_PRESERVED_MEMORY_MAP_CRC,
  decodeKhoData,
  decodeScratchArray,
  type ScratchArea,
} from './abi';
import type { KhoGeneration } from './generations';
import type { Tracker } from './ports';
import { rootGeneration } from './root-fdt';

/** What the previous kernel handed over, validated before anything is marked. */
export interface IncomingHandover {
  /** The generation of the root FDT (from its compatible). */
  readonly generation: KhoGeneration;
  readonly fdt: FdtNode;
  readonly fdtPhys: PhysAddr;
  readonly mapPhys: PhysAddr;
  readonly scratch: readonly ScratchArea[];
  readonly scratchArrayPhys: PhysAddr;
  readonly scratchArraySize: number;
  /** Every preserved block the walk found (pfn and order, in walk order). */
  readonly pfns: readonly Pfn[];
  readonly orders: readonly Order[];
  /** The same blocks sorted by address (they do not overlap: validateHandover checked), for lookups. */
  readonly index: BlockIndex;
}

/** Preserved blocks sorted by first pfn, with their orders: see {@link indexBlocks}. */
export interface BlockIndex {
  readonly starts: Float64Array;
  readonly orders: Uint8Array;
}

/** Most scratch areas a handover may list: lowmem, global and one per node of up to 64 nodes. */
export const KHO_MAX_SCRATCH_AREAS = 2 + 64;

/**
 * Most preserved blocks a kernel of this lab reads from a handover: 2^23, twice the vm-host scenario's worst case
 * (16 GiB of 4 KiB pages and 768 GiB of 2 MiB folios, about 4.6 million blocks). A map that holds more is refused
 * from its counts, before any block is visited: a few MB of map pages can claim tens of millions of blocks, and
 * the lists, index and stamps of so many would cost the host gigabytes (issue 16, row 8).
 */
export const KHO_MAX_INCOMING_BLOCKS = 2 ** 23;

const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

/** CRC32C over the given pages of `ram`, in order (a page never written counts as zeros). */
export function pagesCrc(ram: PhysicalMemory, pfns: readonly number[]): number {
  let crc = 0;
  for (const pfn of pfns) crc = crc32c(ram.pageIfPresent(pfn) ?? ZERO_PAGE, 0, PAGE_SIZE, crc);
  return crc;
}

/**
 * Checks everything the previous kernel left, before anything is marked (spec section 1, steps 1 and 2, the
 * scratch array and the whole preserved-memory map): `kho_data`, the root FDT (a valid DTB whose compatible is one
 * of the `readable` generations), `preserved-memory-map`, the scratch areas, the tracker checksum when present
 * (over the map's pages, before any block is read), the tracker (walked with its own hostile-input checks, at
 * most {@link KHO_MAX_INCOMING_BLOCKS} blocks, E2BIG beyond), that no preserved block lies in scratch or overlaps
 * another, and that the root FDT page is a preserved block. Pure: it reads RAM and writes nothing. Returns the
 * handover; throws a KernelError naming the first problem.
 */
export function validateHandover(ram: PhysicalMemory, khoData: Uint8Array, tracker: Tracker, readable: readonly KhoGeneration[]): IncomingHandover {
  const kd = decodeKhoData(khoData);
  if (typeof kd === 'string') throw new KernelError(Errno.EINVAL, kd);
  if (kd.fdtSize !== KHO_FDT_SIZE) throw new KernelError(Errno.EINVAL, `kho_data.fdt_size is ${kd.fdtSize} (wanted ${KHO_FDT_SIZE})`);
  if (!Number.isFinite(kd.fdtAddr) || kd.fdtAddr % PAGE_SIZE !== 0 || !ram.isRam(kd.fdtAddr, PAGE_SIZE)) {
    throw new KernelError(Errno.EINVAL, `kho_data.fdt_addr ${describeAddr(kd.fdtAddr)} is not a page of RAM`);
  }
  const fdt = decodeFdt(ram.read(kd.fdtAddr, KHO_FDT_SIZE));
  const generation = rootGeneration(fdt, readable);
  const mapProp = fdt.getProp(PROP_PRESERVED_MEMORY_MAP);
  if (!mapProp || mapProp.length !== 8) {
    throw new KernelError(Errno.EINVAL, `'${PROP_PRESERVED_MEMORY_MAP}' is ${mapProp ? `${mapProp.length} bytes` : 'missing'} (wanted 8)`);
  }
  const map = new DataView(mapProp.buffer, mapProp.byteOffset, 8).getBigUint64(0, true);
  if (map === 0n) throw new KernelError(Errno.EINVAL, `'${PROP_PRESERVED_MEMORY_MAP}' is 0 (wanted the phys of the map)`);
  const mapPhys = map >= 2n ** 53n ? Infinity : Number(map);

  const scratch = readScratch(ram, kd.scratchAddr, kd.scratchSize);

  // The checksum first: a damaged map is refused from its pages alone, before its blocks are walked (issue 16,
  // row 9: a stale checksum was found only after a walk of millions of blocks).
  const want = mapCrc(fdt);
  if (want !== undefined) checkMapCrc(ram, tracker.incomingMetadataPfns(mapPhys), want);
  const pfns: Pfn[] = [];
  const orders: Order[] = [];
  tracker.walkIncoming(
    mapPhys,
    (pfn, order) => {
      pfns.push(pfn);
      orders.push(order);
    },
    { maxBlocks: KHO_MAX_INCOMING_BLOCKS },
  );
  checkOutsideScratch(scratch, pfns, orders);
  const index = indexBlocks(pfns, orders);
  const fdtBlock = containingBlock(index, kd.fdtAddr / PAGE_SIZE);
  if (!fdtBlock || fdtBlock[0] !== kd.fdtAddr / PAGE_SIZE || fdtBlock[1] !== 0) {
    throw new KernelError(Errno.EINVAL, `the root FDT page ${hex(kd.fdtAddr)} is not a preserved order-0 block (nothing would keep it for this boot)`);
  }
  // Checked above: the FDT page is preserved RAM, the tracker walked its map, readScratch read the array from RAM.
  return {
    generation,
    fdt,
    fdtPhys: kd.fdtAddr as PhysAddr,
    mapPhys: mapPhys as PhysAddr,
    scratch,
    scratchArrayPhys: kd.scratchAddr as PhysAddr,
    scratchArraySize: kd.scratchSize,
    pfns,
    orders,
    index,
  };
}

/**
 * The root FDT's `preserved-memory-map-crc` (a project extension; Linux writes none), or undefined when it has
 * none. Throws EINVAL when it is not 4 bytes.
 */
export function mapCrc(fdt: FdtNode): number | undefined {
  const prop = fdt.getProp(PROP_PRESERVED_MEMORY_MAP_CRC);
  if (!prop) return undefined;
  if (prop.length !== 4) throw new KernelError(Errno.EINVAL, `'${PROP_PRESERVED_MEMORY_MAP_CRC}' is ${prop.length} bytes (wanted 4)`);
  return new DataView(prop.buffer, prop.byteOffset, 4).getUint32(0, true);
}

/** Throws EINVAL when the CRC32C of the map's pages `pfns` (in order) is not `want`: the map was damaged. */
export function checkMapCrc(ram: PhysicalMemory, pfns: readonly number[], want: number): void {
  const got = pagesCrc(ram, pfns);
  if (got !== want) {
    throw new KernelError(Errno.EINVAL, `the tracker's pages fail their checksum (crc32c ${hex(got)}, wanted ${hex(want)}): the preserved-memory map was damaged`);
  }
}

/** The scratch array at `addr` (`size` bytes): 1..66 page-aligned areas of RAM that do not overlap. Throws EINVAL. */
export function readScratch(ram: PhysicalMemory, addr: number, size: number): ScratchArea[] {
  const n = size / KHO_SCRATCH_ENTRY_SIZE;
  if (!Number.isInteger(n) || n < 1 || n > KHO_MAX_SCRATCH_AREAS) {
    throw new KernelError(Errno.EINVAL, `kho_data.scratch_size ${describeAddr(size)} (wanted 16 × 1..${KHO_MAX_SCRATCH_AREAS} areas)`);
  }
  if (!Number.isFinite(addr) || !ram.isRam(addr, size)) {
    throw new KernelError(Errno.EINVAL, `kho_data.scratch_addr ${describeAddr(addr)} (+${size}) is not RAM`);
  }
  const scratch = decodeScratchArray(ram.read(addr, size));
  const sorted = scratch.slice().sort((a, b) => a.addr - b.addr);
  sorted.forEach((a, i) => {
    if (!Number.isFinite(a.addr) || a.size <= 0 || a.addr % PAGE_SIZE !== 0 || a.size % PAGE_SIZE !== 0 || !ram.isRam(a.addr, a.size)) {
      throw new KernelError(Errno.EINVAL, `scratch area ${describeAddr(a.addr)}+${describeAddr(a.size)} is not page-aligned RAM`);
    }
    if (i > 0 && sorted[i - 1].addr + sorted[i - 1].size > a.addr) {
      throw new KernelError(Errno.EINVAL, `scratch areas ${hex(sorted[i - 1].addr)} and ${hex(a.addr)} overlap`);
    }
  });
  return scratch;
}

/**
 * Throws EINVAL for the first preserved block that overlaps a scratch area: this boot's early allocations would
 * overwrite it before anyone could restore it.
 */
export function checkOutsideScratch(scratch: readonly ScratchArea[], pfns: readonly number[], orders: readonly number[]): void {
  const bounds = scratch.map((a) => [a.addr / PAGE_SIZE, (a.addr + a.size) / PAGE_SIZE] as const);
  for (let i = 0; i < pfns.length; i++) {
    const end = pfns[i] + 2 ** orders[i];
    for (const [s, e] of bounds) {
      if (pfns[i] < e && s < end) {
        throw new KernelError(Errno.EINVAL, `preserved block ${hex(pfns[i] * PAGE_SIZE)} order ${orders[i]} overlaps scratch area ${hex(s * PAGE_SIZE)}`);
      }
    }
  }
}

function describeAddr(n: number): string {
  return Number.isFinite(n) ? hex(n) : '>= 2^53';
}

/**
 * The blocks sorted by address. Throws EINVAL naming two blocks that overlap: a map in which they do is malformed
 * (the same memory would be handed to two owners, and restoring one would leave the other's stamp in the middle of
 * a live block).
 */
export function indexBlocks(pfns: readonly number[], orders: readonly number[]): BlockIndex {
  // pfn * 64 + order is exact (pfns are below 2^38) and sorts by pfn, then order: one native numeric sort.
  const keys = new Float64Array(pfns.length);
  for (let i = 0; i < pfns.length; i++) keys[i] = pfns[i] * 64 + orders[i];
  sortKeys(keys);
  const starts = new Float64Array(keys.length);
  const ords = new Uint8Array(keys.length);
  let end = -1;
  for (let i = 0; i < keys.length; i++) {
    const order = keys[i] % 64;
    const start = (keys[i] - order) / 64;
    if (start < end) {
      throw new KernelError(
        Errno.EINVAL,
        `preserved blocks ${hex(starts[i - 1] * PAGE_SIZE)} order ${ords[i - 1]} and ${hex(start * PAGE_SIZE)} order ${order} overlap (the map is malformed)`,
      );
    }
    starts[i] = start;
    ords[i] = order;
    end = start + 2 ** order;
  }
  return { starts, orders: ords };
}

/** Most walks find few ascending runs (a radix walk: one per order): merging them beats a sort from scratch. */
const MAX_MERGED_RUNS = 64;

/**
 * Sorts `keys` ascending in place. A natural merge sort when they arrive as a few ascending runs (the radix tree
 * yields each order's blocks in address order), a native sort otherwise.
 */
function sortKeys(keys: Float64Array): void {
  const bounds = [0];
  for (let i = 1; i < keys.length; i++) {
    if (keys[i] < keys[i - 1]) {
      bounds.push(i);
      if (bounds.length > MAX_MERGED_RUNS) {
        keys.sort();
        return;
      }
    }
  }
  if (bounds.length === 1) return;
  bounds.push(keys.length);
  let src: Float64Array = keys;
  let dst: Float64Array = new Float64Array(keys.length);
  let runs = bounds;
  while (runs.length > 2) {
    const next = [0];
    for (let r = 0; r + 1 < runs.length; r += 2) {
      const lo = runs[r];
      const mid = runs[r + 1];
      const hi = r + 2 < runs.length ? runs[r + 2] : mid;
      let i = lo;
      let j = mid;
      let o = lo;
      while (i < mid && j < hi) dst[o++] = src[i] <= src[j] ? src[i++] : src[j++];
      while (i < mid) dst[o++] = src[i++];
      while (j < hi) dst[o++] = src[j++];
      next.push(hi);
    }
    if (next[next.length - 1] !== keys.length) next.push(keys.length);
    [src, dst] = [dst, src];
    runs = next;
  }
  if (src !== keys) keys.set(src);
}

/** The preserved block that holds page `pfn` ([its first pfn, its order]), or undefined. */
export function containingBlock(index: BlockIndex, pfn: number): [number, number] | undefined {
  const { starts, orders } = index;
  let lo = 0;
  let hi = starts.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (starts[mid] <= pfn) lo = mid + 1;
    else hi = mid - 1;
  }
  if (hi < 0) return undefined;
  return pfn < starts[hi] + 2 ** orders[hi] ? [starts[hi], orders[hi]] : undefined;
}
