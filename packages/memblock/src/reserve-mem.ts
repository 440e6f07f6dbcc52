import { injectAll, injectable } from 'tsyringe';
import { CommandLine, Errno, KernelError, KernelLog, formatBytes, hex, parseSize, type KernelPlugin, type PluginReport, describeError } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { Memblock } from './memblock';
import { RESERVE_MEM_MAX, RESERVE_MEM_NAME_MAX } from './abi';

/** One `reserve_mem=<size>:<align>:<name>` of the command line. */
export interface ReserveMemRequest {
  readonly name: string;
  readonly size: number;
  readonly align: number;
}

/** A region of this boot: where it is and whether it came back from the previous kernel. */
export interface ReserveMemRegion extends ReserveMemRequest {
  readonly start: number;
  /** True when the previous kernel handed it over and this boot took it back at the same address. */
  readonly revived: boolean;
  /** Why a handed-over region was not revived (alignment or size mismatch), if that happened. */
  readonly mismatch?: string;
}

/** A region as a handover format recorded it. */
export interface ReserveMemRecord {
  readonly start: number;
  readonly size: number;
}

/**
 * A handover format for reserve_mem regions (a port: memblock writes upstream's `memblock-v1` FDT itself;
 * kstate registers its own format). The next kernel reads whichever format the previous one wrote.
 */
export const ReserveMemHandover = Symbol('ReserveMemHandover');
export interface ReserveMemHandover {
  /** Its name on the command line (`reserve_mem_handover=<format>`). */
  readonly format: string;
  /** The regions the previous kernel handed over in this format, validated (empty when none, or refused). */
  incoming(): ReadonlyMap<string, ReserveMemRecord>;
  /** At boot:late: take back the pages of a region revived from this format's record (consuming their stamps). */
  adopt(region: ReserveMemRegion): void;
  /** At boot:late: restore and free the pages of a handed-over region that could not be revived. */
  discard(record: ReserveMemRecord): void;
  /** At prepare: preserve every region's pages and record the regions. Unwinds everything on failure. */
  save(regions: readonly ReserveMemRegion[]): void;
  /** Undoes `save`. */
  cancel(): void;
  /** Frees this format's incoming metadata (called at boot:late, once the regions are taken back). */
  release(): void;
}

/**
 * Parses the command line's `reserve_mem=<size>:<align>:<name>` values. Throws EINVAL naming the bad value:
 * more than 8 regions, a name that is not 1..15 characters or is repeated, a size that is not a positive
 * multiple of the page size, an alignment that is not a power of two of at least a page.
 */
export function parseReserveMem(values: readonly string[]): ReserveMemRequest[] {
  if (values.length > RESERVE_MEM_MAX) {
    throw new KernelError(Errno.E2BIG, `reserve_mem: ${values.length} regions (wanted at most ${RESERVE_MEM_MAX})`);
  }
  const out: ReserveMemRequest[] = [];
  for (const v of values) {
    const parts = v.split(':');
    if (parts.length !== 3) throw new KernelError(Errno.EINVAL, `reserve_mem=${v} (wanted <size>:<align>:<name>)`);
    const [sizeText, alignText, name] = parts;
    const size = parseSize(sizeText, `reserve_mem=${v} size`);
    const align = parseSize(alignText, `reserve_mem=${v} align`);
    if (size <= 0 || size % PAGE_SIZE !== 0) throw new KernelError(Errno.EINVAL, `reserve_mem=${v}: size ${size} is not a positive multiple of ${PAGE_SIZE}`);
    if (align < PAGE_SIZE || 2 ** Math.round(Math.log2(align)) !== align) {
      throw new KernelError(Errno.EINVAL, `reserve_mem=${v}: alignment ${align} is not a power of two of at least ${PAGE_SIZE}`);
    }
    if (name.length < 1 || name.length > RESERVE_MEM_NAME_MAX || !/^[A-Za-z0-9_.,+-]+$/.test(name)) {
      throw new KernelError(Errno.EINVAL, `reserve_mem=${v}: name '${name}' (wanted 1..${RESERVE_MEM_NAME_MAX} characters of [A-Za-z0-9_.,+-])`);
    }
    if (out.some((r) => r.name === name)) throw new KernelError(Errno.EEXIST, `reserve_mem=${v}: a region named '${name}' exists already`);
    out.push({ name, size, align });
  }
  return out;
}

/**
 * The `reserve_mem=` regions of this boot (spec section 8): set up at boot:mm, before memblock hands memory to
 * the buddy allocator. On a KHO boot a region the previous kernel handed over (in any registered format) is
 * revived at the same address when its start is aligned and its size equal, allocating nothing; otherwise it
 * is allocated fresh (zeroed) and the mismatch reported. The formats (ports, registered by modules of packages
 * that have KHO and kstate) do the KHO work: memblock itself knows neither. At prepare the regions are handed over in the format
 * named by `reserve_mem_handover=` (default `fdt`, upstream's memblock-v1, also called `memblock-v1`; `kstate`
 * when that format is in the image).
 */
@injectable()
export class ReserveMem implements KernelPlugin {
  readonly name = 'reserve_mem';
  readonly after = ['memblock'];
  readonly afterIfPresent = ['kho'];

  private readonly requests: ReserveMemRequest[];
  private list: ReserveMemRegion[] = [];
  private saved: ReserveMemHandover | undefined;
  private stale: Array<[ReserveMemHandover, ReserveMemRecord]> = [];
  private from = new Map<string, ReserveMemHandover>();

  constructor(
    private readonly memblock: Memblock,
    private readonly ram: PhysicalMemory,
    private readonly cmdline: CommandLine,
    private readonly log: KernelLog,
    @injectAll(ReserveMemHandover, { isOptional: true }) private readonly handovers: ReserveMemHandover[],
  ) {
    let requests: ReserveMemRequest[] = [];
    try {
      requests = parseReserveMem(cmdline.getAll('reserve_mem'));
    } catch (e) {
      // As the kernel does with a bad parameter: say why, ignore it, boot on.
      log.error('memblock', `${describeError(e)}; no reserve_mem regions in this boot`);
    }
    this.requests = requests;
  }

  /** This boot's regions. */
  get regions(): readonly ReserveMemRegion[] {
    return this.list;
  }

  /** The region named `name`. Throws ENOENT when the command line asked for none of that name. */
  find(name: string): ReserveMemRegion {
    const r = this.list.find((x) => x.name === name);
    if (!r) throw new KernelError(Errno.ENOENT, `reserve_mem: no region named '${name}' in this boot`);
    return r;
  }

  /** Called by memblock at boot:mm, after KHO reserved the preserved blocks and before the hand-off. */
  setup(): void {
    const incoming = new Map<string, [ReserveMemHandover, ReserveMemRecord]>();
    for (const h of this.handovers ?? []) for (const [name, rec] of h.incoming()) if (!incoming.has(name)) incoming.set(name, [h, rec]);
    for (const req of this.requests) {
      const [format, rec] = incoming.get(req.name) ?? [];
      let mismatch: string | undefined;
      if (format && rec) {
        if (rec.start % req.align !== 0) mismatch = `start ${hex(rec.start)} is not aligned to ${formatBytes(req.align)}`;
        else if (rec.size !== req.size) mismatch = `size ${formatBytes(rec.size)} differs from the requested ${formatBytes(req.size)}`;
        if (!mismatch) {
          this.list.push({ ...req, start: rec.start, revived: true });
          this.from.set(req.name, format);
          this.log.info('memblock', `reserve_mem '${req.name}': revived at ${hex(rec.start)} (+${formatBytes(req.size)})`);
          continue;
        }
        this.stale.push([format, rec]);
        this.log.warn('memblock', `reserve_mem '${req.name}': not revived: ${mismatch}; allocating a new region`);
      }
      const start = this.memblock.alloc(req.size, req.align, { owner: `reserve_mem:${req.name}` });
      this.ram.fill(start, req.size, 0);
      this.list.push({ ...req, start, revived: false, ...(mismatch ? { mismatch } : {}) });
      this.log.info('memblock', `reserve_mem '${req.name}': ${hex(start)} (+${formatBytes(req.size)})`);
    }
  }

  /**
   * Takes back the pages of revived regions (consuming their KHO stamps) so they are this boot's, and frees
   * those of regions that were handed over but could not be revived.
   */
  bootLate(): void {
    for (const r of this.list) if (r.revived) this.from.get(r.name)!.adopt(r);
    for (const [format, rec] of this.stale) format.discard(rec);
    this.stale = [];
    for (const h of this.handovers ?? []) h.release();
  }

  prepare(): void {
    if (this.list.length === 0 || (this.handovers ?? []).length === 0) return;
    const h = this.outgoingFormat();
    h.save(this.list);
    this.saved = h;
  }

  cancel(): void {
    this.saved?.cancel();
    this.saved = undefined;
  }

  finish(): PluginReport | void {
    if (this.list.length > 0) return { regions: this.list.map((r) => ({ name: r.name, start: hex(r.start), size: r.size, revived: r.revived, ...(r.mismatch ? { mismatch: r.mismatch } : {}) })) };
  }

  private outgoingFormat(): ReserveMemHandover {
    const all = this.handovers ?? [];
    // Upstream's memblock-v1 FDT by default: it is the only form Linux revives. 'memblock-v1' names it too.
    const asked = this.cmdline.get('reserve_mem_handover') ?? 'fdt';
    const want = asked === 'memblock-v1' ? 'fdt' : asked;
    const h = all.find((x) => x.format === want);
    if (!h) {
      throw new KernelError(Errno.EOPNOTSUPP, `reserve_mem_handover=${want}: no such format in this kernel (have ${all.map((x) => x.format).join(', ') || 'none'})`);
    }
    return h;
  }
}

