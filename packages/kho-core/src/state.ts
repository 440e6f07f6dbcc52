import { inject, injectable } from 'tsyringe';
import { CommandLine, describeError } from '@kho/kernel';
import type { FdtNode } from '@kho/fdt';
import type { ScratchArea } from './abi';
import { selectGeneration, type KhoGeneration } from './generations';
import type { IncomingHandover } from './incoming';
import { Tracker } from './ports';

/**
 * KHO's state in one boot, shared by the lifecycle plugin (which builds it) and the preservation API (which
 * reads and edits it). Host-side bookkeeping: nothing of it crosses a kexec except through RAM.
 */
@injectable()
export class KhoState {
  /** `kho=` (default on). */
  readonly enabled: boolean;
  /** The generation this kernel writes (`kho_abi=`, or the tracker's default); undefined when `kho_abi=` is bad. */
  readonly generation: KhoGeneration | undefined;
  /** Why `kho_abi=` was refused (KHO then stays disabled). */
  readonly generationError: string | undefined;
  /** The validated incoming handover of a KHO boot. */
  incoming: IncomingHandover | undefined;
  /** Why the incoming handover was refused (the boot went on cold). */
  revivalError: string | undefined;
  /** Why the outgoing side could not be set up at boot:late (this kernel then preserves nothing). */
  outgoingError: string | undefined;
  /** This kernel's scratch areas: placed on a cold boot, inherited on a KHO boot. */
  scratch: ScratchArea[] = [];
  /** The outgoing root FDT, edited in memory and written to its page after every change. */
  root: FdtNode | undefined;
  /** Phys of the outgoing root FDT's page (0 until boot:late). */
  fdtPhys = 0;
  /** Where the scratch array is written at the jump (a kexec segment in the first scratch area). */
  scratchArrayPhys = 0;
  /** The map's phys as init() gave it (serialising trackers repoint the FDT at serialize). */
  initialMap = 0;
  /** finish ran: restores are refused from then on. */
  finished = false;
  /** The previous kernel's kexec count, from its kexec-metadata (0 on a cold boot or without one). */
  incomingKexecCount = 0;
  /** The previous kernel's release, from its kexec-metadata. */
  incomingRelease: string | undefined;

  constructor(cmdline: CommandLine, @inject(Tracker) tracker: Tracker) {
    this.enabled = cmdline.getBool('kho', true);
    let generation: KhoGeneration | undefined;
    let error: string | undefined;
    try {
      generation = selectGeneration(cmdline.get('kho_abi'), tracker.kind, tracker.defaultGeneration);
    } catch (e) {
      error = describeError(e);
    }
    this.generation = generation;
    this.generationError = error;
  }
}
