import { inject, injectable } from 'tsyringe';
import {
  BootParams,
  CommandLine,
  KernelInfo,
  Errno,
  KernelError,
  KernelLog,
  MachineBus,
  NextBootParams,
  crc32c,
  formatBytes,
  hex,
  parseSize,
  withUnwind,
  type KernelPlugin,
  type PluginReport,
  describeError,
} from '@kho/kernel';
import { BuddyAllocator, Folio, MAX_PAGE_ORDER, Memmap, PAGE_SIZE, PhysicalMemory, type Pfn } from '@kho/physmem';
import {
  KHO_LOWMEM_LIMIT,
  KHO_PAGE_MAGIC,
  KHO_SCRATCH_ALIGN,
  KHO_SCRATCH_DEFAULT_PERCENT,
  KHO_SCRATCH_ENTRY_SIZE,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_PRESERVED_MEMORY_MAP_CRC,
  PROP_SUB_FDT,
  SETUP_KHO,
  decodeKhoData,
  decodeScratchArray,
  encodeKhoData,
  encodeScratchArray,
  type ScratchArea,
} from './abi';
import { FdtNode, decodeFdt, encodeFdt } from '@kho/fdt';
import { EarlyAllocator, Tracker } from './ports';

/** What the previous kernel handed over, validated in boot:early. */
export interface IncomingHandover {
  readonly fdt: FdtNode;
  readonly fdtPhys: number;
  readonly mapPhys: number;
  readonly scratch: readonly ScratchArea[];
  readonly scratchArrayPhys: number;
  readonly scratchArraySize: number;
  /** Every preserved block the walk found (pfn and order, in walk order). */
  readonly pfns: readonly number[];
  readonly orders: readonly number[];
}

/** Numbers a report or `kho inspect` shows about this kernel's KHO state. */
export interface KhoStats {
  readonly enabled: boolean;
  readonly khoBoot: boolean;
  readonly revivalError?: string;
  readonly scratch: readonly ScratchArea[];
  readonly incomingBlocks: number;
  readonly incomingBytes: number;
  readonly trackerBlocks: number;
  readonly trackerPages: number;
  readonly subtrees: readonly string[];
}

/** Largest order a block may have in a split of [pfn, pfn + nrPages): min(ctz(pfn), log2(nrPages), MAX_PAGE_ORDER). */
export function splitOrder(pfn: number, nrPages: number): number {
  let order = 0;
  while (order < MAX_PAGE_ORDER && pfn % 2 ** (order + 1) === 0 && 2 ** (order + 1) <= nrPages) order++;
  return order;
}

/**
 * Kexec HandOver: the preservation API of spec section 4, the root FDT, the scratch areas, the hand-off at
 * kexec, and the incoming boot path of section 1 (steps 1 to 5 with memblock's help). One instance per boot.
 */
@injectable()
export class Kho implements KernelPlugin {
  readonly name = 'kho';
  readonly after = ['physmem'];

  private readonly enabled: boolean;
  private incoming: IncomingHandover | undefined;
  private revivalError: string | undefined;
  private scratch: ScratchArea[] = [];
  private root: FdtNode | undefined;
  private fdtFolio: Folio | undefined;
  private scratchArrayPhys = 0;
  private initialMap = 0;
  private finished = false;
  /** Which plugin preserved each outgoing block (head pfn → plugin name): host-side bookkeeping for reports. */
  private readonly owners = new Map<number, string>();

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
    private readonly cmdline: CommandLine,
    private readonly params: BootParams,
    private readonly next: NextBootParams,
    @inject(EarlyAllocator) private readonly early: EarlyAllocator,
    @inject(Tracker) private readonly tracker: Tracker,
    private readonly info: KernelInfo,
    private readonly bus: MachineBus,
  ) {
    this.enabled = cmdline.getBool('kho', true);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Spec section 1, steps 1 to 3: validate everything the previous kernel left, then scratch-only mode. */
  bootEarly(): void {
    const blob = this.params.setupData(SETUP_KHO);
    if (!this.enabled) {
      if (blob) this.log.info('kho', 'KHO is disabled (kho=off): the handover is ignored, preserved memory becomes ordinary memory');
      return;
    }
    if (!blob) return;
    try {
      this.incoming = this.validateIncoming(blob);
    } catch (e) {
      this.revivalError = describeError(e);
      this.log.error('kho', `disabling KHO revival: ${this.revivalError}; booting cold`);
      return;
    }
    const inc = this.incoming;
    for (const a of inc.scratch) this.early.markScratch(a.addr, a.size);
    this.early.reserve(inc.scratchArrayPhys, inc.scratchArraySize, 'kho-scratch-array');
    this.early.setScratchOnly(true);
    this.log.info('kho', `KHO boot: ${inc.pfns.length} preserved blocks, ${inc.scratch.length} scratch areas, scratch-only mode on`);
  }

  /**
   * Cold boot: size and place the scratch areas (section 5). KHO boot: steps 4 and 5: reserve, mark no-init and
   * stamp every preserved block, then leave scratch-only mode (memblock then frees the rest to the buddy allocator).
   */
  bootMm(): void {
    if (!this.enabled) return;
    const inc = this.incoming;
    if (!inc) {
      this.reserveScratch();
      return;
    }
    let bytes = 0;
    for (let i = 0; i < inc.pfns.length; i++) {
      const pfn = inc.pfns[i];
      const order = inc.orders[i];
      const size = PAGE_SIZE * 2 ** order;
      this.early.reserve(pfn * PAGE_SIZE, size, 'kho');
      this.early.markNoInit(pfn * PAGE_SIZE, size);
      this.memmap.setPrivate(pfn, order, KHO_PAGE_MAGIC);
      bytes += size;
    }
    this.early.setScratchOnly(false);
    this.scratch = inc.scratch.slice();
    this.log.info('kho', `reserved ${inc.pfns.length} preserved blocks (${formatBytes(bytes)}), left scratch-only mode`);
  }

  /** The outgoing side: tracker root, root FDT (preserved itself), and kho_data for the next kernel. */
  bootLate(): void {
    if (!this.enabled) return;
    if (this.scratch.length === 0) throw new KernelError(Errno.ENOMEM, 'KHO has no scratch areas; it stays disabled');
    const mapPhys = this.tracker.init();
    this.initialMap = mapPhys;
    const fdt = this.buddy.folioAlloc(0);
    try {
      this.ram.fill(fdt.phys, PAGE_SIZE, 0);
      const root = new FdtNode('');
      root.setString('compatible', this.tracker.compatible);
      root.setU64LE(PROP_PRESERVED_MEMORY_MAP, mapPhys);
      this.root = root;
      this.fdtFolio = fdt;
      this.writeFdt();
      this.preserveFolio(fdt);
    } catch (e) {
      this.root = undefined;
      this.fdtFolio = undefined;
      this.buddy.folioPut(fdt);
      throw e;
    }
    // The scratch array is a kexec segment: it is written into the first scratch area at the jump.
    this.scratchArrayPhys = this.scratch[0].addr;
    this.next.setSetupData(
      SETUP_KHO,
      encodeKhoData({
        fdtAddr: fdt.phys,
        fdtSize: PAGE_SIZE,
        scratchAddr: this.scratchArrayPhys,
        scratchSize: this.scratch.length * KHO_SCRATCH_ENTRY_SIZE,
      }),
    );
    this.log.info('kho', `KHO ready: root FDT at ${hex(fdt.phys)}, ${this.tracker.compatible} map at ${hex(mapPhys)}`);
  }

  /** Trackers that serialise (the v1 designs) write their final form now; the radix tree has nothing to do. */
  serialize(): void {
    if (!this.root) return;
    const map = this.tracker.serialize();
    if (map !== Number(this.root.getU64LE(PROP_PRESERVED_MEMORY_MAP))) {
      this.root.setU64LE(PROP_PRESERVED_MEMORY_MAP, map);
      this.writeFdt();
    }
  }

  cancel(): void {
    this.tracker.cancelSerialize();
    // The map a serialising tracker built is gone: point the FDT back at what init() gave.
    if (this.root && Number(this.root.getU64LE(PROP_PRESERVED_MEMORY_MAP)) !== this.initialMap) {
      this.root.setU64LE(PROP_PRESERVED_MEMORY_MAP, this.initialMap);
      this.writeFdt();
    }
  }

  /**
   * The jump: load the scratch array segment, and checksum the tracker's pages into the root FDT so the next
   * kernel can tell a damaged tracker from the one this kernel left.
   */
  kexec(): void {
    if (!this.root) return;
    this.ram.write(this.scratchArrayPhys, encodeScratchArray(this.scratch));
    const crc = new Uint8Array(4);
    new DataView(crc.buffer).setUint32(0, this.trackerCrc(this.tracker.metadataPfns()), true);
    this.root.setProp(PROP_PRESERVED_MEMORY_MAP_CRC, crc);
    this.writeFdt();
  }

  /** CRC32C over the given pages, in order. */
  private trackerCrc(pfns: readonly number[]): number {
    let crc = 0;
    for (const pfn of pfns) crc = crc32c(this.ram.pageIfPresent(pfn) ?? ZERO_PAGE, 0, PAGE_SIZE, crc);
    return crc;
  }

  /**
   * Frees the handover metadata (the incoming root FDT page) and reports every preserved block that nobody
   * restored: its memory stays reserved and is named, not silently lost.
   */
  finish(): PluginReport | void {
    const inc = this.incoming;
    if (!inc || this.finished) return;
    const fdtPfn = inc.fdtPhys / PAGE_SIZE;
    if (this.hasStamp(fdtPfn, 0)) this.buddy.folioPut(this.restoreFolio(inc.fdtPhys));
    this.finished = true;
    // The scratch array was a kexec segment reserved at boot: give its pages back (to the scratch pool).
    const first = Math.floor(inc.scratchArrayPhys / PAGE_SIZE);
    const last = Math.ceil((inc.scratchArrayPhys + inc.scratchArraySize) / PAGE_SIZE);
    for (let p = first; p < last; p++) {
      this.buddy.adoptPages(p, 0);
      this.buddy.freePages(p, 0);
    }
    const unrestored: Array<{ phys: string; order: number }> = [];
    let count = 0;
    let unrestoredBytes = 0;
    for (let i = 0; i < inc.pfns.length; i++) {
      if (!this.hasStamp(inc.pfns[i], inc.orders[i])) continue;
      count++;
      unrestoredBytes += PAGE_SIZE * 2 ** inc.orders[i];
      if (unrestored.length < 16) unrestored.push({ phys: hex(inc.pfns[i] * PAGE_SIZE), order: inc.orders[i] });
    }
    if (count > 0) {
      this.log.warn('kho', `finish: ${count} preserved blocks (${formatBytes(unrestoredBytes)}) were never restored; they stay reserved`);
    }
    return { unrestoredBlocks: count, unrestoredBytes, unrestored };
  }

  // ---------------------------------------------------------------- queries

  /** True when KHO is enabled in this kernel (command line `kho=`, default on) and has its scratch areas. */
  isEnabled(): boolean {
    return this.enabled && this.root !== undefined;
  }

  /** True when this kernel booted from a valid handover. */
  isKhoBoot(): boolean {
    return this.incoming !== undefined;
  }

  /** The validated incoming handover, if this is a KHO boot. */
  get incomingHandover(): IncomingHandover | undefined {
    return this.incoming;
  }

  /** This kernel's scratch areas. */
  scratchAreas(): readonly ScratchArea[] {
    return this.scratch;
  }

  /** The outgoing root FDT (a copy of the tree; the bytes in RAM are authoritative). */
  get rootFdtPhys(): number {
    return this.fdtFolio?.phys ?? 0;
  }

  stats(): KhoStats {
    const t = this.tracker.stats();
    const inc = this.incoming;
    return {
      enabled: this.isEnabled(),
      khoBoot: this.isKhoBoot(),
      revivalError: this.revivalError,
      scratch: this.scratch,
      incomingBlocks: inc?.pfns.length ?? 0,
      incomingBytes: inc ? inc.orders.reduce((n, o) => n + PAGE_SIZE * 2 ** o, 0) : 0,
      trackerBlocks: t.blocks,
      trackerPages: t.metadataPages,
      subtrees: this.root?.children.map((c) => c.name) ?? [],
    };
  }

  // ---------------------------------------------------------------- preservation API (spec section 4)

  /** Records a folio for the next kernel. The caller keeps it allocated. Throws EOPNOTSUPP, EINVAL or ENOMEM. */
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
   * warning in the log) for a page with no stamp (never preserved, restored already, or a tail page).
   */
  restoreFolio(phys: number): Folio {
    const pfn = this.restorablePfn(phys, 'restoreFolio');
    const order = this.memmap.privateLo(pfn);
    this.consumeStamp(pfn);
    return this.buddy.adoptFolio(pfn, order);
  }

  /**
   * Preserves `nrPages` pages from `pfn`, split greedily into blocks of order min(ctz(pfn), log2(remaining),
   * MAX_PAGE_ORDER). On failure everything this call preserved is unpreserved.
   */
  preservePages(pfn: number, nrPages: number): void {
    checkPageRange(pfn, nrPages);
    withUnwind((u) => {
      for (let p = pfn, left = nrPages; left > 0; ) {
        const order = splitOrder(p, left);
        this.preserveBlock(p, order);
        const done = p;
        u.push(() => this.unpreserveBlock(done, order));
        p += 2 ** order;
        left -= 2 ** order;
      }
    });
  }

  /** Undoes {@link preservePages} with the same split. Throws ENOENT if a block of the split was not preserved. */
  unpreservePages(pfn: number, nrPages: number): void {
    checkPageRange(pfn, nrPages);
    for (const [p, order] of splitBlocks(pfn, nrPages)) if (!this.tracker.has(p, order)) throw notPreserved(p, order);
    for (const [p, order] of splitBlocks(pfn, nrPages)) this.unpreserveBlock(p, order);
  }

  /**
   * Restores pages preserved with {@link preservePages} (same split): every page gets refcount 1 and order 0, so
   * `freePages(pfn + i, 0)` frees each. All stamps are checked before any is consumed. Returns the first pfn.
   */
  restorePages(phys: number, nrPages: number): Pfn {
    const pfn = this.restorablePfn(phys, 'restorePages');
    checkPageRange(pfn, nrPages);
    const blocks = splitBlocks(pfn, nrPages);
    for (const [p, order] of blocks) {
      if (!this.hasStamp(p, order)) throw this.restoreRefused('restorePages', p * PAGE_SIZE, `block of order ${order} has no KHO stamp`);
    }
    for (const [p] of blocks) this.consumeStamp(p);
    for (let p = pfn; p < pfn + nrPages; p++) this.buddy.adoptPages(p, 0);
    return pfn as Pfn;
  }

  /**
   * Allocates zeroed memory of `size` bytes (rounded up to a power of two pages) and preserves it. Returns its
   * phys. Throws EINVAL for size 0, E2BIG above MAX_PAGE_ORDER, ENOMEM.
   */
  allocPreserve(size: number): number {
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
  unpreserveFree(phys: number): void {
    const folio = this.folioAt(phys, 'unpreserveFree');
    this.unpreserveFolio(folio);
    this.buddy.folioPut(folio);
  }

  /** Restores and frees memory the previous kernel got from {@link allocPreserve}. */
  restoreFree(phys: number): void {
    this.buddy.folioPut(this.restoreFolio(phys));
  }

  // ---------------------------------------------------------------- subtrees

  /** Adds node `name` to the root FDT pointing at `blobPhys`. EEXIST if the name exists; ENOMEM if the page is full. */
  addSubtree(name: string, blobPhys: number): void {
    const root = this.requireRoot('addSubtree');
    if (root.child(name)) throw new KernelError(Errno.EEXIST, `subtree '${name}' already exists in the root FDT`);
    const node = root.addChild(name);
    node.setU64LE(PROP_SUB_FDT, blobPhys);
    try {
      this.writeFdt();
    } catch (e) {
      root.removeChild(name);
      throw e;
    }
  }

  /** Removes the subtree whose `preserved-data` equals `blobPhys`; silent if there is none. */
  removeSubtree(blobPhys: number): void {
    const root = this.requireRoot('removeSubtree');
    const node = root.children.find((c) => c.getProp(PROP_SUB_FDT)?.length === 8 && Number(c.getU64LE(PROP_SUB_FDT)) === blobPhys);
    if (!node) return;
    root.removeChild(node.name);
    this.writeFdt();
  }

  /**
   * The phys of the previous kernel's subtree `name`. ENOENT when this boot has no incoming handover or no such
   * node; EINVAL when `preserved-data` is missing or not 8 bytes. It does not restore the blob's pages.
   */
  retrieveSubtree(name: string): number {
    if (!this.incoming) throw new KernelError(Errno.ENOENT, `retrieveSubtree('${name}'): this boot has no incoming KHO handover`);
    const node = this.incoming.fdt.child(name);
    if (!node) throw new KernelError(Errno.ENOENT, `retrieveSubtree('${name}'): no such subtree in the incoming FDT`);
    const prop = node.getProp(PROP_SUB_FDT);
    if (!prop || prop.length !== 8) {
      throw new KernelError(Errno.EINVAL, `retrieveSubtree('${name}'): '${PROP_SUB_FDT}' is ${prop ? `${prop.length} bytes` : 'missing'} (wanted 8)`);
    }
    return Number(new DataView(prop.buffer, prop.byteOffset, 8).getBigUint64(0, true));
  }

  /**
   * The plugin that preserved the outgoing block at `pfn` (whose handler was running at the time; 'other' for
   * preservation outside any handler), or undefined. Bookkeeping for reports: nothing of it crosses a kexec.
   */
  ownerOf(pfn: number): string | undefined {
    return this.owners.get(pfn);
  }

  /** Names of this kernel's outgoing subtrees. */
  subtrees(): string[] {
    return this.root?.children.map((c) => c.name) ?? [];
  }

  // ---------------------------------------------------------------- internals

  private requireRoot(what: string): FdtNode {
    if (!this.enabled) throw new KernelError(Errno.EOPNOTSUPP, `${what}: KHO is disabled (kho=off)`);
    if (!this.root) throw new KernelError(Errno.EOPNOTSUPP, `${what}: KHO is not initialised`);
    return this.root;
  }

  private writeFdt(): void {
    const bytes = encodeFdt(this.root!, { totalSize: PAGE_SIZE });
    this.ram.write(this.fdtFolio!.phys, bytes);
  }

  private preserveBlock(pfn: number, order: number): void {
    if (!this.enabled) throw new KernelError(Errno.EOPNOTSUPP, 'preserve: KHO is disabled (kho=off)');
    if (this.scratch.length === 0) throw new KernelError(Errno.EOPNOTSUPP, 'preserve: KHO is not initialised');
    const phys = pfn * PAGE_SIZE;
    const size = PAGE_SIZE * 2 ** order;
    if (!this.ram.isRam(phys, size)) throw new KernelError(Errno.EINVAL, `preserve: block ${hex(phys)} order ${order} is not RAM`);
    for (const a of this.scratch) {
      if (phys < a.addr + a.size && a.addr < phys + size) {
        throw new KernelError(
          Errno.EINVAL,
          `preserve: block ${hex(phys)} order ${order} overlaps scratch area ${hex(a.addr)}+${formatBytes(a.size)} (preserved memory must lie outside scratch)`,
        );
      }
    }
    this.tracker.add(pfn, order);
    this.owners.set(pfn, this.info.currentPlugin ?? 'other');
    this.bus.publish('kho:preserve', () => ({ generation: this.info.generation, owner: this.owners.get(pfn)!, phys, order }));
  }

  private unpreserveBlock(pfn: number, order: number): void {
    if (!this.tracker.has(pfn, order)) throw notPreserved(pfn, order);
    this.tracker.del(pfn, order);
    this.bus.publish('kho:unpreserve', () => ({ generation: this.info.generation, owner: this.owners.get(pfn) ?? 'other', phys: pfn * PAGE_SIZE, order }));
    this.owners.delete(pfn);
  }

  private folioAt(phys: number, what: string): Folio {
    if (phys % PAGE_SIZE !== 0 || !this.ram.isRam(phys, PAGE_SIZE)) {
      throw new KernelError(Errno.EINVAL, `${what}: ${hex(phys)} is not a page-aligned RAM address`);
    }
    const pfn = phys / PAGE_SIZE;
    if (this.memmap.compoundHead(pfn) !== pfn) throw new KernelError(Errno.EINVAL, `${what}: ${hex(phys)} is a tail page`);
    return new Folio(pfn as Pfn, this.memmap.order(pfn));
  }

  private hasStamp(pfn: number, order: number): boolean {
    return this.memmap.privateHi(pfn) === KHO_PAGE_MAGIC && this.memmap.privateLo(pfn) === order;
  }

  private consumeStamp(pfn: number): void {
    this.bus.publish('kho:restore', () => ({ generation: this.info.generation, owner: this.info.currentPlugin ?? 'other', phys: pfn * PAGE_SIZE, order: this.memmap.privateLo(pfn) }));
    this.memmap.setPrivate(pfn, 0, 0);
  }

  private restorablePfn(phys: number, what: string): number {
    if (this.finished) throw this.restoreRefused(what, phys, 'the handover is finished (blocks nobody restored stay reserved)', Errno.EPERM);
    if (!Number.isInteger(phys) || phys % PAGE_SIZE !== 0) throw this.restoreRefused(what, phys, 'the address is not page-aligned');
    if (!this.ram.isRam(phys, PAGE_SIZE)) throw this.restoreRefused(what, phys, 'the address is not RAM');
    const pfn = phys / PAGE_SIZE;
    if (this.memmap.privateHi(pfn) !== KHO_PAGE_MAGIC || this.memmap.privateLo(pfn) > MAX_PAGE_ORDER) {
      throw this.restoreRefused(what, phys, 'no KHO stamp (not preserved, already restored, or a tail page)');
    }
    return pfn;
  }

  private restoreRefused(what: string, phys: number, why: string, errno = Errno.EINVAL): KernelError {
    const msg = `${what}(${Number.isFinite(phys) ? hex(phys) : phys}): ${why}`;
    this.log.warn('kho', msg);
    return new KernelError(errno, msg);
  }

  /** Spec section 5: sizes from `kho_scratch=` (default 200%), each rounded up to 2 MiB; lowmem, global, per node. */
  private reserveScratch(): void {
    const spec = this.cmdline.get('kho_scratch') ?? `${KHO_SCRATCH_DEFAULT_PERCENT}%`;
    const nodes = this.ram.nodes;
    let sizes: { lowmem: number; global: number; pernode: number[] };
    try {
      sizes = scratchSizes(spec, nodes, (f) => this.early.reservedBytes(f));
    } catch (e) {
      this.log.error('kho', `${describeError(e, { errno: true })}; KHO disabled`);
      return;
    }
    const areas: ScratchArea[] = [];
    try {
      const lowmemMax = Math.min(KHO_LOWMEM_LIMIT, this.ram.endAddr);
      areas.push({ addr: this.early.alloc(sizes.lowmem, KHO_SCRATCH_ALIGN, { max: lowmemMax, owner: 'kho-scratch' }), size: sizes.lowmem });
      areas.push({ addr: this.early.alloc(sizes.global, KHO_SCRATCH_ALIGN, { owner: 'kho-scratch' }), size: sizes.global });
      nodes.forEach((node, i) => {
        areas.push({ addr: this.early.alloc(sizes.pernode[i], KHO_SCRATCH_ALIGN, { node, owner: 'kho-scratch' }), size: sizes.pernode[i] });
      });
    } catch (e) {
      for (const a of areas) this.early.free(a.addr, a.size);
      this.log.error('kho', `cannot place the scratch areas (${describeError(e, { errno: true })}); KHO disabled`);
      return;
    }
    // Scratch is not reserved: the buddy allocator serves it to movable allocations, like CMA.
    for (const a of areas) {
      this.early.free(a.addr, a.size);
      this.early.markScratch(a.addr, a.size);
    }
    this.scratch = areas;
    this.log.info('kho', `scratch areas (${spec}): ${areas.map((a) => `${hex(a.addr)}+${formatBytes(a.size)}`).join(', ')}`);
  }

  /** Steps 1 and 2, the scratch array, and the tracker walk: all checks before anything is marked. */
  private validateIncoming(blob: Uint8Array): IncomingHandover {
    const kd = decodeKhoData(blob);
    if (typeof kd === 'string') throw new KernelError(Errno.EINVAL, kd);
    if (kd.fdtSize !== PAGE_SIZE) throw new KernelError(Errno.EINVAL, `kho_data.fdt_size is ${kd.fdtSize} (wanted ${PAGE_SIZE})`);
    if (!Number.isFinite(kd.fdtAddr) || kd.fdtAddr % PAGE_SIZE !== 0 || !this.ram.isRam(kd.fdtAddr, PAGE_SIZE)) {
      throw new KernelError(Errno.EINVAL, `kho_data.fdt_addr ${describeAddr(kd.fdtAddr)} is not a page of RAM`);
    }
    const fdt = decodeFdt(this.ram.read(kd.fdtAddr, PAGE_SIZE));
    const compat = fdt.getProp('compatible');
    const want = this.tracker.compatible;
    const compatText = compat ? new TextDecoder().decode(compat).replace(/\0/g, '\\0') : '(missing)';
    if (!compat || compatText !== `${want}\\0`) {
      throw new KernelError(Errno.EINVAL, `root FDT compatible is '${compatText}' (wanted the single string '${want}')`);
    }
    const mapProp = fdt.getProp(PROP_PRESERVED_MEMORY_MAP);
    if (!mapProp || mapProp.length !== 8) {
      throw new KernelError(Errno.EINVAL, `'${PROP_PRESERVED_MEMORY_MAP}' is ${mapProp ? `${mapProp.length} bytes` : 'missing'} (wanted 8)`);
    }
    const map = new DataView(mapProp.buffer, mapProp.byteOffset, 8).getBigUint64(0, true);
    if (map === 0n) throw new KernelError(Errno.EINVAL, `'${PROP_PRESERVED_MEMORY_MAP}' is 0 (wanted the phys of the map)`);
    const mapPhys = map >= 2n ** 53n ? Infinity : Number(map);

    const n = kd.scratchSize / KHO_SCRATCH_ENTRY_SIZE;
    if (!Number.isInteger(n) || n < 1 || n > 2 + 64) {
      throw new KernelError(Errno.EINVAL, `kho_data.scratch_size ${describeAddr(kd.scratchSize)} (wanted 16 × 1..66 areas)`);
    }
    if (!Number.isFinite(kd.scratchAddr) || !this.ram.isRam(kd.scratchAddr, kd.scratchSize)) {
      throw new KernelError(Errno.EINVAL, `kho_data.scratch_addr ${describeAddr(kd.scratchAddr)} (+${kd.scratchSize}) is not RAM`);
    }
    const scratch = decodeScratchArray(this.ram.read(kd.scratchAddr, kd.scratchSize));
    const sorted = scratch.slice().sort((a, b) => a.addr - b.addr);
    sorted.forEach((a, i) => {
      if (!Number.isFinite(a.addr) || a.size <= 0 || a.addr % PAGE_SIZE !== 0 || a.size % PAGE_SIZE !== 0 || !this.ram.isRam(a.addr, a.size)) {
        throw new KernelError(Errno.EINVAL, `scratch area ${describeAddr(a.addr)}+${describeAddr(a.size)} is not page-aligned RAM`);
      }
      if (i > 0 && sorted[i - 1].addr + sorted[i - 1].size > a.addr) {
        throw new KernelError(Errno.EINVAL, `scratch areas ${hex(sorted[i - 1].addr)} and ${hex(a.addr)} overlap`);
      }
    });
    const pfns: number[] = [];
    const orders: number[] = [];
    this.tracker.walkIncoming(mapPhys, (pfn, order) => {
      pfns.push(pfn);
      orders.push(order);
    });
    const crcProp = fdt.getProp(PROP_PRESERVED_MEMORY_MAP_CRC);
    if (crcProp) {
      if (crcProp.length !== 4) throw new KernelError(Errno.EINVAL, `'${PROP_PRESERVED_MEMORY_MAP_CRC}' is ${crcProp.length} bytes (wanted 4)`);
      const want = new DataView(crcProp.buffer, crcProp.byteOffset, 4).getUint32(0, true);
      const got = this.trackerCrc(this.tracker.incomingMetadataPfns(mapPhys));
      if (got !== want) {
        throw new KernelError(Errno.EINVAL, `the tracker's pages fail their checksum (crc32c ${hex(got)}, wanted ${hex(want)}): the preserved-memory map was damaged`);
      }
    }
    // A preserved block inside scratch would be overwritten by this boot's early allocations.
    const bounds = sorted.map((a) => [a.addr / PAGE_SIZE, (a.addr + a.size) / PAGE_SIZE] as const);
    for (let i = 0; i < pfns.length; i++) {
      const end = pfns[i] + 2 ** orders[i];
      for (const [s, e] of bounds) {
        if (pfns[i] < e && s < end) {
          throw new KernelError(Errno.EINVAL, `preserved block ${hex(pfns[i] * PAGE_SIZE)} order ${orders[i]} overlaps scratch area ${hex(s * PAGE_SIZE)}`);
        }
      }
    }
    return {
      fdt,
      fdtPhys: kd.fdtAddr,
      mapPhys,
      scratch,
      scratchArrayPhys: kd.scratchAddr,
      scratchArraySize: kd.scratchSize,
      pfns,
      orders,
    };
  }
}

const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

function describeAddr(n: number): string {
  return Number.isFinite(n) ? hex(n) : '>= 2^53';
}

function notPreserved(pfn: number, order: number): KernelError {
  return new KernelError(Errno.ENOENT, `unpreserve: block ${hex(pfn * PAGE_SIZE)} order ${order} was not preserved`);
}

function checkPageRange(pfn: number, nrPages: number): void {
  if (!Number.isInteger(nrPages) || nrPages <= 0) throw new KernelError(Errno.EINVAL, `page count ${nrPages} (wanted a positive integer)`);
  if (!Number.isInteger(pfn) || pfn < 0) throw new KernelError(Errno.EINVAL, `pfn ${pfn} (wanted a non-negative integer)`);
}

/** The blocks of the greedy split of [pfn, pfn + nrPages). */
export function splitBlocks(pfn: number, nrPages: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let p = pfn, left = nrPages; left > 0; ) {
    const order = splitOrder(p, left);
    out.push([p, order]);
    p += 2 ** order;
    left -= 2 ** order;
  }
  return out;
}

/**
 * Parses `kho_scratch=`: `N%` of the memory reserved during early boot, or `<lowmem>,<global>,<pernode>` with
 * K/M/G suffixes. Every size is rounded up to 2 MiB. Throws EINVAL naming the bad text.
 */
export function scratchSizes(
  spec: string,
  nodes: readonly number[],
  reserved: (f: { max?: number; node?: number }) => number,
): { lowmem: number; global: number; pernode: number[] } {
  const up = (n: number): number => Math.max(KHO_SCRATCH_ALIGN, Math.ceil(n / KHO_SCRATCH_ALIGN) * KHO_SCRATCH_ALIGN);
  const pct = /^(\d+)%$/.exec(spec);
  if (pct) {
    const scale = Number(pct[1]) / 100;
    if (scale <= 0) throw new KernelError(Errno.EINVAL, `kho_scratch=${spec}: the percentage must be above 0`);
    return {
      lowmem: up(reserved({ max: KHO_LOWMEM_LIMIT }) * scale),
      global: up(reserved({}) * scale),
      pernode: nodes.map((node) => up(reserved({ node }) * scale)),
    };
  }
  const parts = spec.split(',');
  if (parts.length !== 3) {
    throw new KernelError(Errno.EINVAL, `kho_scratch=${spec} (wanted N% or <lowmem>,<global>,<pernode> with K/M/G suffixes)`);
  }
  const [lowmem, global, pernode] = parts.map((p, i) => up(parseSize(p, `kho_scratch ${['lowmem', 'global', 'pernode'][i]}`)));
  return { lowmem, global, pernode: nodes.map(() => pernode) };
}

