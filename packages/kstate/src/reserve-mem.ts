import { injectable, type DependencyContainer } from 'tsyringe';
import { KernelLog, registerPerBoot, type KernelModule, describeError } from '@kho/kernel';
import { BuddyAllocator, ORDER_0, PAGE_SIZE, pfn } from '@kho/physmem';
import { ReserveMemHandover, type ReserveMemRecord, type ReserveMemRegion } from '@kho/memblock';
import { KState } from './kstate';
import { describe, instanceIdOf, physRange, str, u64 } from './model';

/** One reserve_mem region as kstate carries it: its name, alignment and physical range. */
export interface ReserveMemState {
  name: string;
  align: bigint;
  range: { start: number; size: number } | null;
}

/**
 * The description of a reserve_mem region (id `reserve_mem`, one section per region, instance = the CRC32C of
 * the region's name with the name kept, so two names that collide are refused at registration).
 */
export const ReserveMemRegionState = describe<ReserveMemState>({
  name: 'reserve_mem',
  id: 'reserve_mem',
  version: 1,
  fields: [str('name', 16), u64('align'), physRange('range')],
});

/**
 * reserve_mem regions handed over through kstate (the project's default format): the range is a `physRange`
 * field, so kstate preserves its pages at prepare and restores them in the next kernel; regions are found in
 * the incoming stream during boot:mm without touching memory (`peek`).
 */
@injectable()
export class KstateReserveMemHandover implements ReserveMemHandover {
  readonly format = 'kstate';
  private registered: string[] = [];
  private incomingMap: Map<string, ReserveMemRecord> | undefined;

  constructor(
    private readonly kstate: KState,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
  ) {}

  incoming(): ReadonlyMap<string, ReserveMemRecord> {
    if (this.incomingMap) return this.incomingMap;
    this.incomingMap = new Map();
    let stream;
    try {
      stream = this.kstate.incoming();
    } catch (e) {
      this.log.warn('memblock', `reserve_mem through kstate refused: ${describeError(e, { errno: true })}`);
      return this.incomingMap;
    }
    for (const s of stream?.sections ?? []) {
      if (s.id !== ReserveMemRegionState.id) continue;
      try {
        const r = this.kstate.peek(ReserveMemRegionState, s.instance).object;
        if (r.range) this.incomingMap.set(r.name, { start: r.range.start, size: r.range.size });
      } catch (e) {
        this.log.warn('memblock', `reserve_mem section refused: ${describeError(e, { errno: true })}`);
      }
    }
    return this.incomingMap;
  }

  adopt(region: ReserveMemRegion): void {
    this.kstate.restore(ReserveMemRegionState, instanceIdOf(region.name));
  }

  discard(record: ReserveMemRecord): void {
    for (const [name, rec] of this.incomingMap ?? []) {
      if (rec !== record) continue;
      const r = this.kstate.restore(ReserveMemRegionState, instanceIdOf(name)).object.range!;
      // The range restore accepted: whole pages of RAM.
      for (let p = pfn(r.start / PAGE_SIZE); p < (r.start + r.size) / PAGE_SIZE; p++) this.buddy.freePages(p, ORDER_0);
    }
  }

  /** Registers the regions with kstate, which writes them (and preserves their pages) at its own prepare. */
  save(regions: readonly ReserveMemRegion[]): void {
    this.cancel();
    for (const r of regions) {
      this.kstate.register(ReserveMemRegionState, instanceIdOf(r.name), { name: r.name, align: BigInt(r.align), range: { start: r.start, size: r.size } });
      this.registered.push(r.name);
    }
  }

  cancel(): void {
    for (const name of this.registered) this.kstate.unregister(ReserveMemRegionState, instanceIdOf(name));
    this.registered = [];
  }

  release(): void {
    // the stream's pages are kstate's to free at finish
  }
}

/** The kernel-image module of the kstate reserve_mem format (needs memblock, KHO and kstate in the image). */
export function kstateReserveMemModule(): KernelModule {
  return {
    name: 'kstate-reserve-mem',
    register(c: DependencyContainer) {
      registerPerBoot(c, KstateReserveMemHandover);
      c.register(ReserveMemHandover, { useToken: KstateReserveMemHandover });
    },
  };
}
