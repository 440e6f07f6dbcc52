import { PAGE_SIZE } from '@kho/physmem';
import type { GenerationResult, ScenarioResult } from '../scenario/run';
import { formatBytes } from '@kho/kernel';
import type { PageGeneration, RunPage } from '../explore/model';
import type { RunRecorder } from './recorder';

/** The explorer's view of a finished scenario, from what `rec` heard on its bus. */
export function scenarioReportData(rec: RunRecorder, command: string, r: ScenarioResult): RunPage {
  const last = r.generations.length + 1;
  const generations: PageGeneration[] = [];
  for (let g = 1; g <= last; g++) {
    const res = r.generations[g - 1];
    const prev = r.generations[g - 2];
    generations.push({
      g,
      phases: rec.phases.get(g) ?? {},
      ...(res ? { preservedBytes: res.preserved.bytes + workloadBytes(res), blocks: res.preserved.blocks, trackerPages: res.preserved.trackerPages } : {}),
      ...(res?.freePages ? { freePages: res.freePages.afterFinish, coldFreePages: res.freePages.coldBoot } : g === last && r.freePagesAtEnd >= 0 ? { freePages: r.freePagesAtEnd, coldFreePages: r.freePagesColdBoot } : {}),
      ...(prev ? { verified: generationVerified(prev) } : {}),
    });
  }
  const kexecs = r.generations.map((g) => {
    const by = g.restoredByNext;
    const next = g.generation + 1;
    return {
      from: g.generation,
      to: next,
      verified: generationVerified(g),
      stats: [
        ['tracker', `root compatible ${String(rec.atJump.get(g.generation)?.facts['root compatible'] ?? '')}`],
        ['blocks preserved', String(g.preserved.blocks)],
        ['tracker pages', String(g.preserved.trackerPages)],
        ['tracker bytes per block', String(Math.round(((g.preserved.trackerPages * PAGE_SIZE) / Math.max(1, g.preserved.blocks)) * 100) / 100)],
        ...Object.entries(g.ms).map(([k, v]) => [`generation ${g.generation} ${k}`, `${v.toFixed(2)} ms`] as const),
      ] as Array<readonly [string, string]>,
      checks: [
        `preserved ${g.preserved.folios} folios (${formatBytes(g.preserved.bytes)}) as part of ${g.preserved.blocks} blocks`,
        by ? `generation ${next} restored ${by.folios} folios (${formatBytes(by.bytes)}): ${by.verified ? 'verified' : 'FAILED'}` : 'no folios to restore',
        ...workloadChecks(g),
        ...g.errors,
      ],
      before: rec.atJump.get(g.generation),
      after: rec.afterBoot.get(next),
      handover: rec.handovers.get(g.generation),
    };
  });
  const verified = r.generations.filter(generationVerified).length;
  const total = r.generations.reduce((n, g) => n + g.preserved.bytes + workloadBytes(g), 0);
  const maxPages = Math.max(0, ...r.generations.map((g) => g.preserved.trackerPages));
  return {
    title: `kho run: ${r.name}`,
    command,
    ok: r.ok,
    summary: [
      ['generations', `${last} kernels, ${r.generations.length} live updates`],
      ['verified by the next kernel', `${verified} of ${r.generations.length} kexecs`],
      ['preserved over the chain', formatBytes(total)],
      ['tracker metadata', `at most ${maxPages} pages (${formatBytes(maxPages * PAGE_SIZE)}) at a jump`],
      ['free pages at the end', `${r.freePagesAtEnd}, cold boot ${r.freePagesColdBoot}${r.freePagesAtEnd === r.freePagesColdBoot ? ': nothing leaked' : ''}`],
      ['errors', r.errors.length ? r.errors.slice(0, 3).join('; ') + (r.errors.length > 3 ? ` (and ${r.errors.length - 3} more)` : '') : 'none'],
    ],
    generations,
    kexecs,
  };
}

/** Bytes a generation's workloads handed over (besides the self-test's folios). */
function workloadBytes(g: GenerationResult): number {
  const p = g.preserved;
  return p.vmalloc.bytes + p.reserveMem.bytes + p.kstate.bytes + p.memfd.bytes;
}

/** True when the next generation verified everything this one handed over. */
function generationVerified(g: GenerationResult): boolean {
  return (g.preserved.folios === 0 || g.restoredByNext?.verified === true) && workloadsVerified(g);
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
