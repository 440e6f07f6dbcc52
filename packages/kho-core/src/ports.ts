import { Errno, KernelError, type KernelModule } from '@kho/kernel';
import type { Order, Pfn, PhysAddr, PhysicalMemory } from '@kho/physmem';

/**
 * The services kho-core needs from packages above it, declared here as ports (interface + DI token of the same
 * name) so the package graph stays acyclic: memblock implements {@link EarlyAllocator}; radix-tracker and
 * kho-array implement {@link Tracker}. kho-core never imports an implementation.
 */

/** The early-boot allocator (memblock), as kho-core uses it during boot:early and boot:mm. */
export const EarlyAllocator = Symbol('EarlyAllocator');
export interface EarlyAllocator {
  /** Marks [base, base+size) reserved. Throws EINVAL when it is not inside memory. */
  reserve(base: number, size: number, owner: string): void;
  /** Returns [base, base+size) to the free pool (undoes reserve or alloc). */
  free(base: number, size: number): void;
  /**
   * Allocates `size` bytes aligned to `align`, top-down, within [min, max) and on `node` when given. In
   * scratch-only mode only scratch memory is used. Throws ENOMEM when nothing fits. Returns the base.
   */
  alloc(size: number, align: number, opts?: { min?: number; max?: number; node?: number; owner?: string }): number;
  /** Marks [base, base+size) as scratch memory. */
  markScratch(base: number, size: number): void;
  /** Marks [base, base+size) as not to be initialised (its owner will initialise the page descriptors). */
  markNoInit(base: number, size: number): void;
  /** Enters or leaves scratch-only mode. */
  setScratchOnly(on: boolean): void;
  /** Bytes reserved so far, optionally only within [min, max) or only on `node`. */
  reservedBytes(filter?: { min?: number; max?: number; node?: number }): number;
}

/** One preserved block: `1 << order` pages from `pfn`, naturally aligned. */
export type BlockVisitor = (pfn: Pfn, order: Order) => boolean | void;

/** Statistics of a tracker's metadata. */
export interface TrackerStats {
  /** Blocks recorded. */
  readonly blocks: number;
  /** Pages of RAM the tracker's metadata occupies (in-memory form plus serialised form). */
  readonly metadataPages: number;
}

/**
 * The preserved-memory tracker: records which blocks survive the kexec and, in the next kernel, walks what the
 * previous one recorded. The outgoing side lives in this kernel's RAM; the incoming side reads the previous
 * kernel's RAM and must treat it as hostile (bounded, validated, never marks anything before it is all valid).
 */
export const Tracker = Symbol('Tracker');
export interface Tracker {
  /** The kind of map it writes and reads ('radix', …): the generations whose root points at such a map. */
  readonly kind: string;
  /** The largest block order it can record (KHO refuses larger blocks with E2BIG before calling add). */
  readonly maxOrder: number;
  /** The generation a kernel with this tracker writes unless `kho_abi=` says otherwise. */
  readonly defaultGeneration: string;
  /** Allocates the tracker's root; returns the value for `preserved-memory-map` (0 until `serialize` for v1). */
  init(): PhysAddr;
  /**
   * Records a block (order at most `descriptor.maxOrder`; KHO refuses larger ones first). Idempotent. Throws ENOMEM
   * (having freed what this call allocated) when memory runs out.
   */
  add(pfn: Pfn, order: Order): void;
  /** Forgets a block; forgetting one never recorded is reported, not fatal. Returns whether it was recorded. */
  del(pfn: Pfn, order: Order): boolean;
  /** Whether a block is recorded. */
  has(pfn: Pfn, order: Order): boolean;
  /** Visits every recorded block (order of the format); a visitor returning true stops the walk. */
  walk(visit: BlockVisitor): void;
  /**
   * Writes the final form for the next kernel; returns the phys for `preserved-memory-map`. The radix tree is
   * live in memory and returns its root without doing anything.
   */
  serialize(): PhysAddr;
  /** Drops what `serialize` built (the update was cancelled). */
  cancelSerialize(): void;
  /** Metadata statistics. */
  stats(): TrackerStats;
  /**
   * The pfns of every page the tracker's metadata occupies now, in a fixed order (the order the next kernel's
   * {@link incomingMetadataPfns} lists them): KHO checksums these pages at the jump.
   */
  metadataPfns(): Pfn[];
  /**
   * The metadata pages of the previous kernel's tracker rooted at `mapPhys`, in {@link metadataPfns}' order, read
   * without its blocks: KHO checksums them before anything walks the blocks. Checks every pointer it follows
   * (page-aligned, inside RAM, reached once) and throws KernelError(EINVAL) naming a malformed one.
   */
  incomingMetadataPfns(mapPhys: number): Pfn[];
  // (mapPhys stays a plain number in the incoming calls: it is the previous kernel's raw `preserved-memory-map`,
  // Infinity when at or above 2^53, and these readers are what checks it)
  /**
   * Walks the previous kernel's tracker rooted at `mapPhys`, visiting every block. Throws a KernelError naming
   * the problem for anything malformed (pointer outside RAM or unaligned, a node reached twice, a bad order or
   * key), and E2BIG when it holds more than `opts.maxBlocks` blocks, before any visit: a refused tree has
   * visited nothing. What it visits is checked: a pfn inside the map's range and an order at most
   * {@link maxOrder}, branded only after that check.
   */
  walkIncoming(mapPhys: number, visit: (pfn: Pfn, order: Order) => void, opts?: IncomingWalkOptions): void;
}

/** Bounds on reading a previous kernel's map. */
export interface IncomingWalkOptions {
  /** Most blocks the reader accepts: a larger map is refused (E2BIG) from its counts, before any block is visited. */
  readonly maxBlocks?: number;
}

/** The E2BIG of a map with `blocks` blocks where at most `max` are read; `label` names the map. */
export function tooManyBlocks(label: string, blocks: number, max: number): KernelError {
  return new KernelError(
    Errno.E2BIG,
    `${label} holds ${blocks} blocks, more than the ${max} a kernel of this lab reads (KHO_MAX_INCOMING_BLOCKS; wanted at most ${max})`,
  );
}

/**
 * What a tracker is, for the registry the command line and `kho compat` read: one per tracker package. Adding a
 * tracker is a package exporting one of these and one line in the cli's list.
 */
export interface TrackerDescriptor {
  /** The name `--tracker` takes and generations refer to ('radix', 'bitmap-chunks', 'bitmap-array'). */
  readonly kind: string;
  /** One line for help texts and tables. */
  readonly title: string;
  /** The KHO generation a kernel with this tracker writes unless `kho_abi=` says otherwise. */
  readonly defaultGeneration: string;
  /** The largest block order it can record; KHO refuses a larger block with E2BIG at preserve time. */
  readonly maxOrder: number;
  /** True when the map is built at `serialize` (the kho-v1 designs): a kexec without it hands over no map. */
  readonly serializes: boolean;
  /** The kernel-image module that makes it this boot's tracker. */
  module(): KernelModule;
  /**
   * Reads a map of this kind at `mapPhys` from `ram` as the next kernel would (every hostile-input check), for
   * tools that read images: every block in walk order and the pages the map occupies. With `opts.crc`, the map's
   * pages are checked against it first (EINVAL, as KHO checks `preserved-memory-map-crc`), and with
   * `opts.maxBlocks` a larger map is refused (E2BIG) from its counts: either before any block is read. Throws
   * what the walk throws.
   */
  readIncoming(ram: PhysicalMemory, mapPhys: number, opts?: ReadIncomingOptions): IncomingMap;
}

/** What {@link TrackerDescriptor.readIncoming} checks before it reads any block. */
export interface ReadIncomingOptions extends IncomingWalkOptions {
  /** The map's checksum (`preserved-memory-map-crc`): the map's pages must match it. */
  readonly crc?: number;
}

/** A previous kernel's map, read by a tracker descriptor. */
export interface IncomingMap {
  readonly count: number;
  readonly pfns: readonly Pfn[];
  readonly orders: readonly Order[];
  /** Pages of the map (radix: tree nodes; bitmaps: the serialised map and its bitmaps). */
  readonly metadataPages: number;
}
