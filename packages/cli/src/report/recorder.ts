import type { KexecEvent, MachineBus, MemoryMapEvent, PhaseEndEvent } from '@kho/kernel';
import type { HandoverView } from '../view/handover';
import { OwnerBook, snapshotOf, type MemoryMapSnapshot } from './snapshot';

/**
 * Everything a report shows, heard on a run's bus: the memory pictures at each jump and after each boot (owners
 * named from the preservation events), the handover each jump leaves, and every phase's time per generation.
 * It never reaches into a kernel.
 */
export class RunRecorder {
  /** Generation g's picture at its jump (after serialize and the kexec handlers). */
  readonly atJump = new Map<number, MemoryMapSnapshot>();
  /** The handover generation g left at its jump, decoded as the next kernel reads it. */
  readonly handovers = new Map<number, HandoverView>();
  /** Generation g's picture after its boot phases, before restore. */
  readonly afterBoot = new Map<number, MemoryMapSnapshot>();
  /** Milliseconds per phase, per generation (summed when a phase runs twice). */
  readonly phases = new Map<number, Record<string, number>>();
  /** The kexecs, in order. */
  readonly kexecs: KexecEvent[] = [];
  private readonly owners: OwnerBook;

  constructor(private readonly bus: MachineBus) {
    // the owner book subscribes first: a picture's owners are known when the picture arrives
    this.owners = new OwnerBook(bus);
    bus.on('memory:map', this.onMap);
    bus.on('phase:end', this.onPhase);
    bus.on('kexec', this.onKexec);
  }

  /** Unsubscribes. */
  stop(): void {
    this.owners.stop();
    this.bus.off('memory:map', this.onMap);
    this.bus.off('phase:end', this.onPhase);
    this.bus.off('kexec', this.onKexec);
  }

  private readonly onMap = (e: MemoryMapEvent): void => {
    if (e.moment === 'jump') {
      this.atJump.set(e.generation, snapshotOf(e.map, e.generation, `generation ${e.generation} at the jump (after serialize)`, this.owners));
      if (e.map.detail) this.handovers.set(e.generation, e.map.detail as HandoverView);
    } else {
      this.afterBoot.set(e.generation, snapshotOf(e.map, e.generation, `generation ${e.generation} after boot`, this.owners));
    }
  };

  private readonly onPhase = (e: PhaseEndEvent): void => {
    const t = this.phases.get(e.generation) ?? {};
    t[e.phase] = (t[e.phase] ?? 0) + e.ms;
    this.phases.set(e.generation, t);
  };

  private readonly onKexec = (e: KexecEvent): void => {
    this.kexecs.push(e);
  };
}
