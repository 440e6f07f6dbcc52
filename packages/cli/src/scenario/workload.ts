import { inject, injectable, type DependencyContainer } from 'tsyringe';
import { Errno, KernelError, KernelLog, SeededByteStream, isKernelError, registerPerBoot, withUnwind, type KernelModule, type KernelPlugin, type PluginReport } from '@kho/kernel';
import { Kho } from '@kho/kho-core';
import { KState } from '@kho/kstate';
import {
  ScenarioWorkloadConfig,
  WorkloadStateDesc,
  type WorkloadCheck,
  type WorkloadOutgoing,
  type WorkloadPreserved,
  type WorkloadRestore,
  type WorkloadState,
} from './workloads/model';
import { KstateObjectsWorkload } from './workloads/kstate-objects';
import { MemfdWorkload } from './workloads/memfd';
import { ReserveMemWorkload } from './workloads/reserve-mem';
import { VmallocWorkload } from './workloads/vmalloc';

/**
 * The scenario's workloads beyond the self-test's folios: vmalloc areas, reserve_mem regions, kstate objects and
 * memfd files, each filled with seeded bytes in one kernel and verified in the next. Each kind is a strategy of
 * its own (./workloads); ScenarioWorkload runs them in order and owns what they share: the handover state.
 *
 * What crosses the kexec: the workload's handover state, a kstate description (`scenario_workload`, instance
 * 0) listing every item with its seed (and the vmalloc buffers themselves, as `vmallocBuf` fields); the
 * objects, each a kstate section (`scenario_object`, instance = its index) with its payload folio; the memfd
 * files (memfd's own handover); the reserve_mem regions (reserve_mem's handover). The next kernel reads only
 * those: it recomputes the expected bytes from the seeds in the state, never from its own configuration.
 */

export {
  WORKLOAD_OBJECTS_MAX,
  WORKLOAD_PAYLOAD_MAX,
  WORKLOAD_SPARSE_CHUNK,
  ScenarioWorkloadConfig,
  WorkloadObjectDesc,
  WorkloadStateDesc,
  itemSeed,
  type KstateCheck,
  type WorkloadCheck,
  type WorkloadObject,
  type WorkloadOutgoing,
  type WorkloadPreserved,
  type WorkloadRestore,
  type WorkloadState,
} from './workloads/model';
export type { WorkloadStrategy } from './workloads/strategy';

/** The workloads' byte source: the workspace's seeded stream (the same seed gives the same bytes however it is cut). */
export const SeededBytes = SeededByteStream;

/**
 * The scenario workload plugin. `generate()` (called by the scenario before the live update) has each strategy
 * make this generation's items, fill them with seeded bytes and list them in the handover state, which it
 * registers with kstate; kstate, memfd and reserve_mem preserve their memory at prepare. In the next kernel,
 * `restore` takes the state back from kstate and has each strategy verify the items it lists: vmalloc areas byte
 * for byte (and their block order), reserve_mem regions at the same physical address, kstate objects field by
 * field, memfd files byte for byte with their holes. `finish` has them free what was restored: vfree, folio_put,
 * unlink.
 */
@injectable()
export class ScenarioWorkload implements KernelPlugin {
  readonly name = 'scenario-workload';
  readonly after = ['kho', 'kstate', 'memfd'];
  readonly afterIfPresent = ['reserve_mem'];

  /** The outcome of the restore, when the previous kernel handed a workload over. */
  lastRestore: WorkloadRestore | undefined;

  private made: WorkloadOutgoing = { vmalloc: [], regions: [], objects: [], files: [] };

  constructor(
    private readonly kho: Kho,
    private readonly kstate: KState,
    private readonly log: KernelLog,
    @inject(ScenarioWorkloadConfig) private readonly config: ScenarioWorkloadConfig,
    private readonly vmalloc: VmallocWorkload,
    private readonly reserveMem: ReserveMemWorkload,
    private readonly objects: KstateObjectsWorkload,
    private readonly memfd: MemfdWorkload,
  ) {}

  /** What generate made in this kernel. */
  get outgoing(): WorkloadOutgoing {
    return this.made;
  }

  /**
   * Makes this generation's items and registers the handover state (saved by kstate at prepare). Returns what
   * will be handed over. Throws what an allocation or a service throws (ENOMEM, ENOENT for a region missing
   * from the command line, EEXIST for a file name in use), after undoing every step that succeeded.
   */
  generate(): WorkloadPreserved {
    const c = this.config;
    const state: WorkloadState = { generation: c.generation, seed: c.seed, vmalloc: [], regions: [], files: [], objects: 0, objectSize: 0 };
    const { preserved, made } = withUnwind((unwind) => {
      const run = { config: c, state, unwind };
      // in this order: a failure undoes the kinds made before it, last first
      const v = this.vmalloc.generate(run);
      const r = this.reserveMem.generate(run);
      const o = this.objects.generate(run);
      const m = this.memfd.generate(run);
      if (state.vmalloc.length + state.regions.length + state.objects + state.files.length > 0) {
        this.kstate.register(WorkloadStateDesc, 0, state);
        unwind.push(() => this.kstate.unregister(WorkloadStateDesc, 0));
      }
      return {
        preserved: { vmalloc: v.preserved, reserveMem: r.preserved, kstate: o.preserved, memfd: m.preserved },
        made: { vmalloc: v.made, regions: r.made, objects: o.made, files: m.made },
      };
    });
    this.made = made;
    this.log.info(
      'scenario',
      `generation ${c.generation}: ${state.vmalloc.length} vmalloc areas, ${state.regions.length} reserve_mem regions (${preserved.reserveMem.carried} carried), ${state.objects} kstate objects, ${state.files.length} memfd files`,
    );
    return preserved;
  }

  /**
   * Takes the handover state back from kstate and has every strategy verify what it lists. Verification failures
   * are collected in {@link lastRestore} (and the report), not thrown, so that every item is checked and every
   * restored one freed at finish. Throws what kstate throws for a state it cannot restore (other than ENOENT:
   * the previous kernel handed no workload over).
   */
  restore(): PluginReport | void {
    if (!this.kho.isKhoBoot()) return;
    let state: WorkloadState;
    try {
      state = this.kstate.restore(WorkloadStateDesc, 0).object;
    } catch (e) {
      if (isKernelError(e, Errno.ENOENT)) return;
      throw e;
    }
    const r: WorkloadRestore = {
      writtenBy: state.generation,
      vmalloc: this.vmalloc.verify(state),
      reserveMem: this.reserveMem.verify(state),
      kstate: this.objects.verify(state),
      memfd: this.memfd.verify(state),
    };
    this.lastRestore = r;
    const line = (w: WorkloadCheck): string => `${w.verified}/${w.listed}`;
    this.log.info('scenario', `generation ${state.generation}'s workload: vmalloc ${line(r.vmalloc)}, reserve_mem ${line(r.reserveMem)}, kstate ${line(r.kstate)}, memfd ${line(r.memfd)} verified`);
    return {
      writtenBy: r.writtenBy,
      vmalloc: line(r.vmalloc),
      reserveMem: line(r.reserveMem),
      kstate: line(r.kstate),
      memfd: line(r.memfd),
      problems: [r.vmalloc, r.reserveMem, r.kstate, r.memfd].reduce((n, w) => n + w.problems.length, 0),
    };
  }

  /** Has every strategy free what it restored: vfree the areas, put the payload folios, unlink the files. */
  finish(): PluginReport | void {
    const errors: string[] = [];
    const freed = { vmalloc: this.vmalloc.free(errors), folios: this.objects.free(errors), files: this.memfd.free(errors) };
    this.reserveMem.free();
    if (errors.length > 0) throw new KernelError(Errno.EINVAL, `scenario workload: freeing what was restored failed: ${errors.join('; ')}`);
    if (freed.vmalloc + freed.folios + freed.files > 0) return { freed };
  }
}

/** The kernel-image module of the scenario workload, configured with what this boot's generation makes. */
export function scenarioWorkloadModule(config: ScenarioWorkloadConfig): KernelModule {
  return {
    name: 'scenario-workload',
    register(c: DependencyContainer) {
      c.register(ScenarioWorkloadConfig, { useValue: config });
      registerPerBoot(c, VmallocWorkload);
      registerPerBoot(c, ReserveMemWorkload);
      registerPerBoot(c, KstateObjectsWorkload);
      registerPerBoot(c, MemfdWorkload);
      registerPerBoot(c, ScenarioWorkload, { plugin: true });
    },
  };
}
