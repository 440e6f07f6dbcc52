import type { Kernel } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { Tracker } from '@kho/kho-core';
import type { ScenarioResult } from '../scenario/run';
import type { KexecSection, ReportData } from './html';
import { ownersFrom, snapshotKernel, type MemoryMapSnapshot } from './snapshot';

/** Collects the memory maps of every kexec of a scenario for its HTML report. */
export class ScenarioReportCollector {
  private readonly before = new Map<number, MemoryMapSnapshot>();
  private readonly after = new Map<number, MemoryMapSnapshot>();

  private readonly compatible = new Map<number, string>();

  atJump(kernel: Kernel, generation: number): void {
    this.compatible.set(generation, `root compatible ${kernel.get<Tracker>(Tracker).compatible}`);
    this.before.set(generation, snapshotKernel(kernel, `generation ${generation} at the jump (after serialize)`));
  }

  afterBoot(kernel: Kernel, generation: number): void {
    const prev = this.before.get(generation - 1);
    this.after.set(generation - 1, snapshotKernel(kernel, `generation ${generation} after boot`, prev && ownersFrom(prev)));
  }

  build(command: string, r: ScenarioResult): ReportData {
    const kexecs: KexecSection[] = [];
    for (const g of r.generations) {
      const before = this.before.get(g.generation);
      const after = this.after.get(g.generation);
      if (!before || !after) continue;
      const next = r.generations.find((x) => x.generation === g.generation + 1);
      const by = g.restoredByNext;
      kexecs.push({
        title: `kexec ${g.generation}: generation ${g.generation} → generation ${g.generation + 1}`,
        before,
        after,
        stats: {
          tracker: this.compatible.get(g.generation) ?? '',
          'blocks preserved': g.preserved.blocks,
          'tracker pages': g.preserved.trackerPages,
          'tracker bytes per block': Math.round(((g.preserved.trackerPages * PAGE_SIZE) / Math.max(1, g.preserved.blocks)) * 100) / 100,
        },
        timings: { [`generation ${g.generation}`]: g.ms, ...(next ? { [`generation ${g.generation + 1}`]: next.ms } : {}) },
        verified: g.preserved.folios === 0 || by?.verified === true,
        checks: [
          `preserved ${g.preserved.folios} folios (${g.preserved.bytes} bytes) as ${g.preserved.blocks} blocks`,
          by ? `generation ${g.generation + 1} restored ${by.folios} folios (${by.bytes} bytes): ${by.verified ? 'verified' : 'FAILED'}` : 'nothing to restore',
          ...g.errors,
        ],
      });
    }
    return { title: `kho run: ${r.name}`, command, ok: r.ok, kexecs };
  }
}
