import { inject, injectable } from 'tsyringe';
import { Errno, KernelError, KernelInfo, KernelLog, MachineBus, formatBytes, hex, withUnwind } from '@kho/kernel';
import { encodeFdt, type FdtNode } from '@kho/fdt';
import { BuddyAllocator, Folio, MAX_PAGE_ORDER, Memmap, ORDER_0, PAGE_SIZE, PhysicalMemory, pfnAdd, type Order, type Pfn, type PhysAddr } from '@kho/physmem';
import { KHO_FDT_SIZE, type ScratchArea } from './abi';
import type { KhoGeneration } from './generations';
import { containingBlock, type IncomingHandover } from './incoming';
import { Tracker } from './ports';
import { addSubtreeNode, findSubtreeByBlob, readSubtreeNode } from './root-fdt';
import { overlappingScratch } from './scratch';
import { splitBlocks, type NodeOfPfn } from './split';
import { clearStamp, hasStamp, stampOrder } from './stamp';
import { KhoState } from './state';

/** Numbers a report or `kho inspect` shows about this kernel's KHO state. */
export interface KhoStats {
  readonly enabled: boolean;
  readonly khoBoot: boolean;
  readonly revivalError?: string;
  /** Why this kernel cannot preserve anything: its outgoing side failed at boot (an allocation). */
  readonly outgoingError?: string;
  /** The root compatible this kernel writes. */
  readonly compatible?: string;
  /** The root compatible of the handover this kernel booted from. */
  readonly incomingCompatible?: string;
  /** kexec boots since the last cold boot, as the previous kernel's kexec-metadata counts them (0 without one). */
  readonly kexecCount: number;
  /** The release of the kernel that handed over, from its kexec-metadata. */
  readonly previousRelease?: string;
  readonly scratch: readonly ScratchArea[];
  readonly incomingBlocks: number;
  readonly incomingBytes: number;
  readonly trackerBlocks: number;
  readonly trackerPages: number;
  readonly subtrees: readonly string[];
}

/** A subtree of the incoming root FDT whose blob {@link Kho.retrieveSubtree} found inside preserved memory. */
export interface RetrievedSubtree {
  readonly phys: PhysAddr;
  /** The blob's size in bytes, as kho-v3 and later record it; absent before. */
  readonly size?: number;
}

/**
 * Kexec HandOver's API (spec section 4): preserve, unpreserve and restore folios and page ranges, preserved
 * allocations, and the subtrees of the root FDT. One instance per boot; the lifecycle is KhoPlugin's.
 */
@injectable()
export class Kho {
  private readonly nodeOf: NodeOfPfn;

  constructor(
    private readonly state: KhoState,
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
    @inject(Tracker) private readonly tracker: Tracker,
    private readonly info: KernelInfo,
    private readonly bus: MachineBus,
  ) {
    this.nodeOf = (pfn) => ram.findRange(pfn * PAGE_SIZE)?.node ?? -1;
  }

  // ---------------------------------------------------------------- queries

  /** True when KHO is enabled in this kernel (command line `kho=`, default on) and has its root FDT. */
  isEnabled(): boolean {
    return this.state.enabled && this.state.root !== undefined;
  }

  /** True when this kernel booted from a valid handover. */
  isKhoBoot(): boolean {
    return this.state.incoming !== undefined;
  }

  /** The generation this kernel writes (undefined when `kho_abi=` was refused). */
  get generation(): KhoGeneration | undefined {
    return this.state.generation;
  }

  /** The validated incoming handover, if this is a KHO boot. */
  get incomingHandover(): IncomingHandover | undefined {
    return this.state.incoming;
  }

  /** This kernel's scratch areas. */
  scratchAreas(): readonly ScratchArea[] {
    return this.state.scratch;
  }

  /** Phys of the outgoing root FDT's page (0 before boot:late or when KHO is off). */
  get rootFdtPhys(): number {
    return this.state.fdtPhys;
  }

  stats(): KhoStats {
    const t = this.tracker.stats();
    const s = this.state;
    const inc = s.incoming;
    return {
      enabled: this.isEnabled(),
      khoBoot: this.isKhoBoot(),
      revivalError: s.revivalError,
      ...(s.outgoingError ? { outgoingError: s.outgoingError } : {}),
      compatible: s.generation?.compatible,
      incomingCompatible: inc?.generation.compatible,
      kexecCount: s.incomingKexecCount,
      previousRelease: s.incomingRelease,
      scratch: s.scratch,
      incomingBlocks: inc?.pfns.length ?? 0,
      incomingBytes: inc ? inc.orders.reduce((n, o) => n + PAGE_SIZE * 2 ** o, 0) : 0,
      trackerBlocks: t.blocks,
      trackerPages: t.metadataPages,
      subtrees: s.root?.children.map((c) => c.name) ?? [],
    };
  }

  /**
   * The order stamped on head page `pfn` by this boot's walk, or undefined: the block is preserved by the previous
   * kernel and not restored yet. The one way for an owner of preserved memory to ask.
   */
  stampOrder(pfn: Pfn): Order | undefined {
    return this.memmap.hasPage(pfn) ? stampOrder(this.memmap, pfn) : undefined;
  }

  /** True when `pfn` heads a block of exactly `order` that the previous kernel preserved and nobody restored yet. */
  isPreservedIncoming(pfn: Pfn, order: Order): boolean {
    return this.memmap.hasPage(pfn) && hasStamp(this.memmap, pfn, order);
  }

  /** Names of this kernel's outgoing subtrees. */
  subtrees(): string[] {
    return this.state.root?.children.map((c) => c.name) ?? [];
  }

  // ---------------------------------------------------------------- preservation (spec section 4)

  /** Records a folio for the next kernel. The caller keeps it allocated. Throws EOPNOTSUPP, EINVAL, E2BIG or ENOMEM. */
  preserveFolio(folio: Folio): void {
    this.preserveBlock(folio.pfn, folio.order);
  }

  /** Undoes {@link preserveFolio} exactly. Throws ENOENT when the folio was not preserved. */
  unpreserveFolio(folio: Folio): void {
    this.unpreserveBlock(folio.pfn, folio.order);
  }

  /**
   * Takes back a folio the previous kernel preserved: requires the head-page stamp, consumes it, and returns a
   * folio with refcount 1 that `folioPut` frees as if it had been allocated in this boot. Throws EINVAL (with a
   * warning in the log) for a page with no stamp (never preserved, restored already, or a tail page), and for a
   * block larger than MAX_PAGE_ORDER, which no folio can be (restore it with restorePages); EPERM after finish.
   */
  restoreFolio(phys: PhysAddr): Folio {
    const pfn = this.restorablePfn(phys, 'restoreFolio');
    const order = stampOrder(this.memmap, pfn)!;
    if (order > MAX_PAGE_ORDER) {
      throw this.restoreRefused('restoreFolio', phys, `the block is order ${order}, larger than any folio (MAX_PAGE_ORDER ${MAX_PAGE_ORDER}); restore it with restorePages`);
    }
    this.consumeStamp(pfn, order);
    return this.buddy.adoptFolio(pfn, order);
  }

  /**
   * Preserves `nrPages` pages from `pfn`, split into blocks of order min(ctz(pfn), log2(remaining)) (no cap at
   * MAX_PAGE_ORDER; from kho-v3 on, kept inside one NUMA node). On failure everything this call preserved is
   * unpreserved. Throws EINVAL, E2BIG (a block the tracker cannot record), EOPNOTSUPP or ENOMEM.
   */
  preservePages(pfn: Pfn, nrPages: number): void {
    checkPageRange(pfn, nrPages);
    const blocks = this.split(pfn, nrPages);
    withUnwind((u) => {
      for (const [p, order] of blocks) {
        this.preserveBlock(p, order);
        u.push(() => this.unpreserveBlock(p, order));
      }
    });
  }

  /** Undoes {@link preservePages} with the same split. Throws ENOENT, changing nothing, if a block of the split was not preserved. */
  unpreservePages(pfn: Pfn, nrPages: number): void {
    checkPageRange(pfn, nrPages);
    const blocks = this.split(pfn, nrPages);
    for (const [p, order] of blocks) if (!this.tracker.has(p, order)) throw notPreserved(p, order);
    for (const [p, order] of blocks) this.unpreserveBlock(p, order);
  }

  /**
   * Restores pages preserved with {@link preservePages} (same split, whatever the orders): every page gets
   * refcount 1 and order 0, so `freePages(pfn + i, 0)` frees each and the buddy allocator merges them into naturally
   * aligned blocks of at most MAX_PAGE_ORDER. All stamps are checked before any is consumed. Returns the first pfn.
   * Throws EINVAL (no stamp, or a block above this generation's restore limit), EPERM after finish.
   */
  restorePages(phys: PhysAddr, nrPages: number): Pfn {
    const pfn = this.restorablePfn(phys, 'restorePages');
    checkPageRange(pfn, nrPages);
    const blocks = this.split(pfn, nrPages);
    const limit = this.state.generation?.restoreMaxOrder ?? Infinity;
    for (const [p, order] of blocks) {
      if (!hasStamp(this.memmap, p, order)) throw this.restoreRefused('restorePages', p * PAGE_SIZE, `block of order ${order} has no KHO stamp`);
      if (order > limit) {
        throw this.restoreRefused('restorePages', p * PAGE_SIZE, `block of order ${order} is above ${this.state.generation!.compatible}'s restore limit (order ${limit})`);
      }
    }
    for (const [p, order] of blocks) this.consumeStamp(p, order);
    for (let i = 0; i < nrPages; i++) this.buddy.adoptPages(pfnAdd(pfn, i), ORDER_0);
    return pfn;
  }

  /**
   * Allocates zeroed memory of `size` bytes (rounded up to a power of two pages) and preserves it. Returns its
   * phys. Throws EINVAL for size 0, E2BIG above MAX_PAGE_ORDER, ENOMEM.
   */
  allocPreserve(size: number): PhysAddr {
    if (!Number.isInteger(size) || size <= 0) throw new KernelError(Errno.EINVAL, `allocPreserve: size ${size} (wanted a positive integer)`);
    const order = Math.max(0, Math.ceil(Math.log2(Math.ceil(size / PAGE_SIZE))));
    if (order > MAX_PAGE_ORDER) {
      throw new KernelError(Errno.E2BIG, `allocPreserve: ${size} bytes needs order ${order} (wanted at most ${MAX_PAGE_ORDER})`);
    }
    const folio = this.buddy.folioAlloc(order);
    try {
      this.ram.fill(folio.phys, folio.size, 0);
      this.preserveFolio(folio);
    } catch (e) {
      this.buddy.folioPut(folio);
      throw e;
    }
    return folio.phys;
  }

  /** Unpreserves and frees memory from {@link allocPreserve}. */
  unpreserveFree(phys: PhysAddr): void {
    const folio = this.folioAt(phys, 'unpreserveFree');
    this.unpreserveFolio(folio);
    this.buddy.folioPut(folio);
  }

  /** Restores and frees memory the previous kernel got from {@link allocPreserve}. */
  restoreFree(phys: PhysAddr): void {
    this.buddy.folioPut(this.restoreFolio(phys));
  }

  // ---------------------------------------------------------------- subtrees

  /**
   * Adds node `name` to the root FDT pointing at the blob at `blobPhys` of `size` bytes (kho-v3 and later record
   * the size as `blob-size`; older generations do not). The blob's pages are the caller's to preserve. EEXIST if
   * the name exists; ENOMEM if the page is full (nothing is left behind); EOPNOTSUPP when KHO is off.
   */
  addSubtree(name: string, blobPhys: PhysAddr, size: number): void {
    const root = this.requireRoot('addSubtree');
    if (!Number.isSafeInteger(size) || size < 0) throw new KernelError(Errno.EINVAL, `addSubtree('${name}'): size ${size} (wanted a byte count)`);
    addSubtreeNode(this.state.generation!, root, name, blobPhys, size);
    try {
      this.writeRoot();
    } catch (e) {
      root.removeChild(name);
      throw e;
    }
  }

  /** Removes the first subtree whose address property equals `blobPhys`; silent if there is none. */
  removeSubtree(blobPhys: PhysAddr): void {
    const root = this.requireRoot('removeSubtree');
    const node = findSubtreeByBlob(this.state.generation!, root, blobPhys);
    if (!node) return;
    root.removeChild(node.name);
    this.writeRoot();
  }

  /**
   * The previous kernel's subtree `name`: its blob's phys and, from kho-v3 on, its size. ENOENT when this boot has no
   * incoming handover or no such node; EINVAL when the address property (or, kho-v3 and later, `blob-size`) is missing
   * or not 8 bytes. It does not restore the blob's pages: its owner does.
   */
  retrieveSubtree(name: string): RetrievedSubtree {
    const inc = this.state.incoming;
    if (!inc) throw new KernelError(Errno.ENOENT, `retrieveSubtree('${name}'): this boot has no incoming KHO handover`);
    const ref = readSubtreeNode(inc.generation, inc.fdt, name);
    // The blob must be preserved memory itself, all of it: otherwise this boot may have reused it already.
    const first = Math.floor(ref.phys / PAGE_SIZE);
    const block = Number.isFinite(ref.phys) ? containingBlock(inc.index, first) : undefined;
    const end = ref.phys + Math.max(1, ref.size ?? 1);
    if (!block || end > (block[0] + 2 ** block[1]) * PAGE_SIZE) {
      throw new KernelError(
        Errno.EINVAL,
        `retrieveSubtree('${name}'): the blob at ${Number.isFinite(ref.phys) ? hex(ref.phys) : '>= 2^53'}${ref.size !== undefined ? ` (${ref.size} bytes)` : ''} lies outside every preserved block`,
      );
    }
    // checked above: the blob lies inside a block of RAM the previous kernel preserved
    return ref.size === undefined ? { phys: ref.phys as PhysAddr } : { phys: ref.phys as PhysAddr, size: ref.size };
  }

  // ---------------------------------------------------------------- for the lifecycle plugin

  /** @internal writes the outgoing root FDT into its page (after every change). */
  writeRoot(): void {
    const bytes = encodeFdt(this.state.root!, { totalSize: KHO_FDT_SIZE });
    this.ram.write(this.state.fdtPhys, bytes);
  }

  // ---------------------------------------------------------------- internals

  private split(pfn: Pfn, nrPages: number): Array<[Pfn, Order]> {
    return splitBlocks(pfn, nrPages, this.state.generation?.numaClamp ? this.nodeOf : undefined);
  }

  private requireRoot(what: string): FdtNode {
    if (!this.state.enabled) throw new KernelError(Errno.EOPNOTSUPP, `${what}: KHO is disabled (kho=off)`);
    if (!this.state.root) throw new KernelError(Errno.EOPNOTSUPP, `${what}: KHO is not initialised${this.outgoingFailure()}`);
    return this.state.root;
  }

  /** `` (the outgoing side could not be set up: …)`` when boot:late failed to build it, else nothing. */
  private outgoingFailure(): string {
    return this.state.outgoingError ? ` (its outgoing side could not be set up: ${this.state.outgoingError})` : '';
  }

  private preserveBlock(pfn: Pfn, order: Order): void {
    if (!this.state.enabled) throw new KernelError(Errno.EOPNOTSUPP, 'preserve: KHO is disabled (kho=off)');
    if (!this.state.root) throw new KernelError(Errno.EOPNOTSUPP, `preserve: KHO is not initialised${this.outgoingFailure()}`);
    const phys = pfn * PAGE_SIZE;
    const size = PAGE_SIZE * 2 ** order;
    if (!this.ram.spansRam(phys, size)) throw new KernelError(Errno.EINVAL, `preserve: block ${hex(phys)} order ${order} is not RAM`);
    const a = overlappingScratch(this.state.scratch, phys, size);
    if (a) {
      throw new KernelError(
        Errno.EINVAL,
        `preserve: block ${hex(phys)} order ${order} overlaps scratch area ${hex(a.addr)}+${formatBytes(a.size)} (preserved memory must lie outside scratch)`,
      );
    }
    if (order > this.tracker.maxOrder) {
      throw new KernelError(Errno.E2BIG, `preserve: block ${hex(phys)} order ${order} is larger than the ${this.tracker.kind} tracker can record (order ${this.tracker.maxOrder} at most)`);
    }
    this.tracker.add(pfn, order);
    // Who preserved what is for observers (reports): published when someone listens, kept by nobody here.
    this.bus.publish('kho:preserve', () => ({ generation: this.info.generation, owner: this.info.currentPlugin ?? 'other', phys, order }));
  }

  private unpreserveBlock(pfn: Pfn, order: Order): void {
    if (!this.tracker.has(pfn, order)) throw notPreserved(pfn, order);
    this.tracker.del(pfn, order);
    this.bus.publish('kho:unpreserve', () => ({ generation: this.info.generation, owner: this.info.currentPlugin ?? 'other', phys: pfn * PAGE_SIZE, order }));
  }

  /** Consumes the stamp of a block being restored, and tells observers who took it back. */
  private consumeStamp(pfn: Pfn, order: Order): void {
    clearStamp(this.memmap, pfn);
    this.bus.publish('kho:restore', () => ({ generation: this.info.generation, owner: this.info.currentPlugin ?? 'other', phys: pfn * PAGE_SIZE, order }));
  }

  private folioAt(phys: PhysAddr, what: string): Folio {
    if (phys % PAGE_SIZE !== 0 || !this.ram.isRam(phys, PAGE_SIZE)) {
      throw new KernelError(Errno.EINVAL, `${what}: ${hex(phys)} is not a page-aligned RAM address`);
    }
    const pfn = phys / PAGE_SIZE;
    if (this.memmap.compoundHead(pfn) !== pfn) throw new KernelError(Errno.EINVAL, `${what}: ${hex(phys)} is a tail page`);
    return new Folio(pfn as Pfn, this.memmap.order(pfn));
  }

  private restorablePfn(phys: PhysAddr, what: string): Pfn {
    if (this.state.finished) throw this.restoreRefused(what, phys, 'the handover is finished (blocks nobody restored stay reserved)', Errno.EPERM);
    if (!Number.isInteger(phys) || phys % PAGE_SIZE !== 0) throw this.restoreRefused(what, phys, 'the address is not page-aligned');
    if (!this.ram.isRam(phys, PAGE_SIZE)) throw this.restoreRefused(what, phys, 'the address is not RAM');
    const pfn = (phys / PAGE_SIZE) as Pfn; // checked above: a page-aligned address of RAM
    if (stampOrder(this.memmap, pfn) === undefined) {
      throw this.restoreRefused(what, phys, 'no KHO stamp (not preserved, already restored, or a tail page)');
    }
    return pfn;
  }

  private restoreRefused(what: string, phys: number, why: string, errno = Errno.EINVAL): KernelError {
    const msg = `${what}(${Number.isFinite(phys) ? hex(phys) : phys}): ${why}`;
    this.log.warn('kho', msg);
    return new KernelError(errno, msg);
  }
}

function notPreserved(pfn: number, order: number): KernelError {
  return new KernelError(Errno.ENOENT, `unpreserve: block ${hex(pfn * PAGE_SIZE)} order ${order} was not preserved`);
}

function checkPageRange(pfn: Pfn, nrPages: number): void {
  if (!Number.isInteger(nrPages) || nrPages <= 0) throw new KernelError(Errno.EINVAL, `page count ${nrPages} (wanted a positive integer)`);
  if (!Number.isInteger(pfn) || pfn < 0) throw new KernelError(Errno.EINVAL, `pfn ${pfn} (wanted a non-negative integer)`);
}
