import { inject, injectable } from 'tsyringe';
import { BootParams, CommandLine, Errno, KernelError, KernelInfo, KernelLog, MachineBus, NextBootParams, Phase, describeError, formatBytes, hex, type KernelPlugin, type PluginReport } from '@kho/kernel';
import { BuddyAllocator, Memmap, ORDER_0, PAGE_SIZE, PhysicalMemory, physToPfn, type PhysAddr } from '@kho/physmem';
import {
  KHO_FDT_SIZE,
  KHO_KEXEC_METADATA_SUBTREE,
  KHO_SCRATCH_DEFAULT_PERCENT,
  KHO_SCRATCH_ENTRY_SIZE,
  KhoKexecMetadataStruct,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_PRESERVED_MEMORY_MAP_CRC,
  SETUP_KHO,
  encodeKhoData,
  encodeScratchArray,
} from './abi';
import { pagesCrc, validateHandover } from './incoming';
import { readKexecMetadata, writeKexecMetadata } from './kexec-metadata';
import { Kho } from './kho';
import { EarlyAllocator, Tracker } from './ports';
import { buildRootFdt, readableGenerations } from './root-fdt';
import { describeScratch, placeScratch, scratchSizes, type ScratchSizes } from './scratch';
import { hasStamp, writeStamp } from './stamp';
import { KhoState } from './state';

/**
 * KHO's lifecycle (plugin 'kho'): the incoming handover at boot:early and boot:mm (spec section 1), the outgoing
 * root FDT and kexec-metadata at boot:late, the serialising trackers' final form at serialize, the scratch array and
 * tracker checksum at kexec, and at finish the release of the handover metadata and the report of every preserved
 * block nobody restored.
 */
@injectable()
export class KhoPlugin implements KernelPlugin {
  readonly name = 'kho';
  readonly after = ['physmem'];

  constructor(
    private readonly state: KhoState,
    private readonly kho: Kho,
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
  ) {}

  /** Spec section 1, steps 1 to 3: validate everything the previous kernel left, then scratch-only mode. */
  bootEarly(): void {
    const s = this.state;
    const blob = this.params.setupData(SETUP_KHO);
    if (!s.enabled) {
      if (blob) this.log.info('kho', 'KHO is disabled (kho=off): the handover is ignored, preserved memory becomes ordinary memory');
      return;
    }
    if (s.generationError) {
      this.log.error('kho', `${s.generationError}; KHO disabled`);
      if (blob) this.log.info('kho', 'the handover is ignored, preserved memory becomes ordinary memory');
      return;
    }
    if (!blob) return;
    try {
      s.incoming = validateHandover(this.ram, blob, this.tracker, readableGenerations(this.tracker.kind));
    } catch (e) {
      s.revivalError = describeError(e);
      this.log.error('kho', `disabling KHO revival: ${s.revivalError}; booting cold`);
      return;
    }
    const inc = s.incoming;
    for (const a of inc.scratch) this.early.markScratch(a.addr, a.size);
    this.early.reserve(inc.scratchArrayPhys, inc.scratchArraySize, 'kho-scratch-array');
    this.early.setScratchOnly(true);
    this.log.info('kho', `KHO boot (${inc.generation.compatible}): ${inc.pfns.length} preserved blocks, ${inc.scratch.length} scratch areas, scratch-only mode on`);
  }

  /**
   * Cold boot: size and place the scratch areas (section 5). KHO boot: steps 4 and 5: reserve, mark no-init and
   * stamp every preserved block, then leave scratch-only mode (memblock then frees the rest to the buddy allocator).
   */
  bootMm(): void {
    const s = this.state;
    if (!s.enabled || !s.generation) return;
    const inc = s.incoming;
    if (!inc) {
      this.reserveScratch();
      return;
    }
    let bytes = 0;
    for (let i = 0; i < inc.pfns.length; i++) {
      const pfn = inc.pfns[i];
      const order = inc.orders[i];
      const size = PAGE_SIZE * 2 ** order;
      // A block may run on from one RAM range into the next (a kho-v2 block is not kept inside one node):
      // memblock takes a reservation per range.
      for (const r of this.ram.ranges) {
        const lo = Math.max(r.start, pfn * PAGE_SIZE);
        const hi = Math.min(r.start + r.size, pfn * PAGE_SIZE + size);
        if (hi <= lo) continue;
        this.early.reserve(lo, hi - lo, 'kho');
        this.early.markNoInit(lo, hi - lo);
      }
      writeStamp(this.memmap, pfn, order);
      bytes += size;
    }
    this.early.setScratchOnly(false);
    s.scratch = inc.scratch.slice();
    this.log.info('kho', `reserved ${inc.pfns.length} preserved blocks (${formatBytes(bytes)}), left scratch-only mode`);
  }

  /**
   * The outgoing side: the tracker root, the root FDT (preserved itself), kho_data for the next kernel, and from
   * kho-v3 on the kexec-metadata subtree (after reading the previous kernel's). When it cannot be built (an
   * allocation fails), this kernel preserves nothing (the API says EOPNOTSUPP with the reason, the next kexec
   * hands over nothing) but the plugin stays up: on a KHO boot the incoming handover, validated and reserved
   * already, is restored and finished as usual. Throws only when there are no scratch areas (a cold boot that
   * could not place them: KHO stays disabled).
   */
  bootLate(): void {
    const s = this.state;
    if (!s.enabled || !s.generation) return;
    if (s.scratch.length === 0) throw new KernelError(Errno.ENOMEM, 'KHO has no scratch areas; it stays disabled');
    try {
      this.setupOutgoing();
    } catch (e) {
      s.outgoingError = describeError(e, { errno: true });
      const incoming = s.incoming ? '; the incoming handover is still restored' : '';
      this.log.error('kho', `cannot set up the outgoing handover (${s.outgoingError}): this kernel preserves nothing${incoming}`);
      this.bus.emit('plugin:error', { generation: this.info.generation, phase: Phase.BootLate, plugin: 'kho', reason: s.outgoingError, error: e });
    }
  }

  /** bootLate's outgoing side; on failure every step that succeeded is undone (nothing stays allocated or preserved). */
  private setupOutgoing(): void {
    const s = this.state;
    const g = s.generation!;
    const mapPhys = this.tracker.init();
    s.initialMap = mapPhys;
    const fdt = this.buddy.folioAlloc(0);
    try {
      this.ram.fill(fdt.phys, KHO_FDT_SIZE, 0);
      s.root = buildRootFdt(g, mapPhys);
      s.fdtPhys = fdt.phys;
      this.kho.writeRoot();
      this.kho.preserveFolio(fdt);
    } catch (e) {
      s.root = undefined;
      s.fdtPhys = 0;
      this.buddy.folioPut(fdt);
      throw e;
    }
    if (g.kexecMetadata) {
      try {
        this.kexecMetadata();
      } catch (e) {
        this.kho.unpreserveFree(fdt.phys);
        s.root = undefined;
        s.fdtPhys = 0;
        throw new KernelError(Errno.ENOMEM, `failed to initialize kexec-metadata subtree: ${describeError(e)}`, { cause: e });
      }
    }
    // The scratch array is a kexec segment: it is written into the first scratch area at the jump.
    s.scratchArrayPhys = s.scratch[0].addr;
    this.next.setSetupData(
      SETUP_KHO,
      encodeKhoData({ fdtAddr: fdt.phys, fdtSize: KHO_FDT_SIZE, scratchAddr: s.scratchArrayPhys, scratchSize: s.scratch.length * KHO_SCRATCH_ENTRY_SIZE }),
    );
    this.log.info('kho', `KHO ready (${g.compatible}): root FDT at ${hex(fdt.phys)}, ${this.tracker.kind} map at ${hex(mapPhys)}`);
  }

  /** Trackers that serialise (the v1 designs) write their final form now; the radix tree has nothing to do. */
  serialize(): void {
    const root = this.state.root;
    if (!root) return;
    const map = this.tracker.serialize();
    if (map !== Number(root.getU64LE(PROP_PRESERVED_MEMORY_MAP))) {
      root.setU64LE(PROP_PRESERVED_MEMORY_MAP, map);
      this.kho.writeRoot();
    }
  }

  cancel(): void {
    this.tracker.cancelSerialize();
    const root = this.state.root;
    // The map a serialising tracker built is gone: point the FDT back at what init() gave.
    if (root && Number(root.getU64LE(PROP_PRESERVED_MEMORY_MAP)) !== this.state.initialMap) {
      root.setU64LE(PROP_PRESERVED_MEMORY_MAP, this.state.initialMap);
      this.kho.writeRoot();
    }
  }

  /**
   * The jump: load the scratch array segment, and checksum the tracker's pages into the root FDT so the next
   * kernel can tell a damaged tracker from the one this kernel left.
   */
  kexec(): void {
    const s = this.state;
    if (!s.root) return;
    this.ram.write(s.scratchArrayPhys, encodeScratchArray(s.scratch));
    const crc = new Uint8Array(4);
    new DataView(crc.buffer).setUint32(0, pagesCrc(this.ram, this.tracker.metadataPfns()), true);
    s.root.setProp(PROP_PRESERVED_MEMORY_MAP_CRC, crc);
    this.kho.writeRoot();
  }

  /**
   * Frees the handover metadata (the incoming root FDT page and kexec-metadata blob, the scratch array) and reports
   * every preserved block that nobody restored: its memory stays reserved and is named, not silently lost.
   */
  finish(): PluginReport | void {
    const s = this.state;
    const inc = s.incoming;
    if (!inc || s.finished) return;
    // Upstream leaves the kexec-metadata blob reserved for the rest of the boot; the lab gives it back, as it
    // does the root FDT page, so that a finished update leaks nothing.
    for (const phys of [inc.fdtPhys, this.incomingBlob(KHO_KEXEC_METADATA_SUBTREE)]) {
      if (phys !== undefined && phys % PAGE_SIZE === 0 && this.kho.isPreservedIncoming(physToPfn(phys), ORDER_0)) this.kho.restoreFree(phys);
    }
    s.finished = true;
    // The scratch array was a kexec segment reserved at boot: give its pages back (to the scratch pool).
    // validateHandover checked the array lies in RAM: its pages are pfns.
    const first = physToPfn(inc.scratchArrayPhys);
    const last = Math.ceil((inc.scratchArrayPhys + inc.scratchArraySize) / PAGE_SIZE);
    for (let p = first; p < last; p++) {
      this.buddy.adoptPages(p, ORDER_0);
      this.buddy.freePages(p, ORDER_0);
    }
    const unrestored: Array<{ phys: string; order: number }> = [];
    let count = 0;
    let unrestoredBytes = 0;
    for (let i = 0; i < inc.pfns.length; i++) {
      if (!hasStamp(this.memmap, inc.pfns[i], inc.orders[i])) continue;
      count++;
      unrestoredBytes += PAGE_SIZE * 2 ** inc.orders[i];
      if (unrestored.length < 16) unrestored.push({ phys: hex(inc.pfns[i] * PAGE_SIZE), order: inc.orders[i] });
    }
    if (count > 0) {
      this.log.warn('kho', `finish: ${count} preserved blocks (${formatBytes(unrestoredBytes)}) were never restored; they stay reserved`);
    }
    return { unrestoredBlocks: count, unrestoredBytes, unrestored };
  }

  /** Reads the previous kernel's kexec-metadata (silently nothing when it has none) and writes this kernel's. */
  private kexecMetadata(): void {
    const s = this.state;
    if (s.incoming) {
      try {
        const ref = this.kho.retrieveSubtree(KHO_KEXEC_METADATA_SUBTREE);
        if (ref.size !== undefined) {
          const m = readKexecMetadata(this.ram, ref.phys, ref.size);
          s.incomingKexecCount = m.kexecCount;
          s.incomingRelease = m.previousRelease;
          this.log.info('kho', `exec from: ${m.previousRelease} (count ${m.kexecCount})`);
        }
      } catch (e) {
        // A missing subtree means an older kernel; a malformed one is ignored with a warning, as upstream does.
        if (!(e instanceof KernelError && e.errno === Errno.ENOENT)) this.log.warn('kho', describeError(e));
      }
    }
    const phys = this.kho.allocPreserve(KhoKexecMetadataStruct.size);
    try {
      writeKexecMetadata(this.ram, phys, { previousRelease: s.generation!.release, kexecCount: s.incomingKexecCount + 1 });
      this.kho.addSubtree(KHO_KEXEC_METADATA_SUBTREE, phys, KhoKexecMetadataStruct.size);
    } catch (e) {
      this.kho.unpreserveFree(phys);
      throw e;
    }
  }

  private incomingBlob(name: string): PhysAddr | undefined {
    try {
      return this.kho.retrieveSubtree(name).phys;
    } catch {
      return undefined;
    }
  }

  /** Spec section 5: sizes from `kho_scratch=` (default 200%), each rounded up to 2 MiB; lowmem, global, per node. */
  private reserveScratch(): void {
    const spec = this.cmdline.get('kho_scratch') ?? `${KHO_SCRATCH_DEFAULT_PERCENT}%`;
    let sizes: ScratchSizes;
    try {
      sizes = scratchSizes(spec, this.ram.nodes, (f) => this.early.reservedBytes(f));
    } catch (e) {
      this.log.error('kho', `${describeError(e, { errno: true })}; KHO disabled`);
      return;
    }
    try {
      this.state.scratch = placeScratch(this.early, this.ram, sizes);
    } catch (e) {
      this.log.error('kho', `cannot place the scratch areas (${describeError(e, { errno: true })}); KHO disabled`);
      return;
    }
    this.log.info('kho', `scratch areas (${spec}): ${describeScratch(this.state.scratch)}`);
  }
}
