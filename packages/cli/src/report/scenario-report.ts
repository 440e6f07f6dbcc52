import type { Kernel } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { Tracker } from '@kho/kho-core';
import type { GenerationResult, ScenarioResult } from '../scenario/run';
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
        verified: (g.preserved.folios === 0 || by?.verified === true) && workloadsVerified(g),
        checks: [
          `preserved ${g.preserved.folios} folios (${g.preserved.bytes} bytes) as ${g.preserved.blocks} blocks`,
          by ? `generation ${g.generation + 1} restored ${by.folios} folios (${by.bytes} bytes): ${by.verified ? 'verified' : 'FAILED'}` : 'nothing to restore',
          ...workloadChecks(g),
          ...g.errors,
        ],
      });
    }
    return { title: `kho run: ${r.name}`, command, ok: r.ok, kexecs };
  }
}

/** True when the next generation verified every workload this one handed over (or it handed none over). */
function workloadsVerified(g: GenerationResult): boolean {
  const p = g.preserved;
  const handed = p.vmalloc.areas + p.reserveMem.regions + p.kstate.objects + p.memfd.files + p.guests.guests > 0;
  if (!handed) return true;
  const v = g.verifiedByNext;
  return v !== undefined && v.vmalloc.verified && v.reserveMem.verified && v.kstate.verified && v.memfd.verified && v.guests.verified;
}

/** One line per workload the generation handed over: what it handed over and what the next generation verified. */
function workloadChecks(g: GenerationResult): string[] {
  const p = g.preserved;
  const v = g.verifiedByNext;
  const next = `generation ${g.generation + 1}`;
  const result = (ok: boolean | undefined): string => (ok === undefined ? 'not checked' : ok ? 'verified' : 'FAILED');
  const out: string[] = [];
  if (p.vmalloc.areas > 0) {
    out.push(`vmalloc: ${p.vmalloc.areas} areas (${p.vmalloc.bytes} bytes); ${next} verified ${v?.vmalloc.areas ?? 0} areas (${v?.vmalloc.bytes ?? 0} bytes) byte for byte: ${result(v?.vmalloc.verified)}`);
  }
  if (p.reserveMem.regions > 0) {
    out.push(
      `reserve_mem: ${p.reserveMem.regions} regions (${p.reserveMem.bytes} bytes, ${p.reserveMem.carried} carried over unchanged); ${next} verified ${v?.reserveMem.regions ?? 0} at the same address: ${result(v?.reserveMem.verified)}`,
    );
  }
  if (p.kstate.objects > 0) {
    out.push(
      `kstate: ${p.kstate.objects} objects (${p.kstate.bytes} bytes of payload); ${next} restored and compared ${v?.kstate.objects ?? 0} field by field (${v?.kstate.fieldsRestored ?? 0} fields restored, ${v?.kstate.fieldsDefaulted ?? 0} defaulted): ${result(v?.kstate.verified)}`,
    );
  }
  if (p.memfd.files > 0) {
    out.push(`memfd: ${p.memfd.files} files (${p.memfd.bytes} bytes); ${next} verified ${v?.memfd.files ?? 0} files with their holes: ${result(v?.memfd.verified)}`);
  }
  if (p.guests.guests > 0) {
    out.push(
      `guests: ${p.guests.guests} guests, ${p.guests.folios} folios (${p.guests.bytes} bytes, never filled); ${next} restored ${v?.guests.folios ?? 0} folios, compared ${v?.guests.stamps ?? 0} stamps, found nothing else written: ${result(v?.guests.verified)}`,
    );
  }
  return out;
}
