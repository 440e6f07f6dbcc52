import type { AnytimeSweepReport, FaultSweepReport } from './sweeps';
import type { SoakResult, SoakSample } from './soak';

/** Failed cases listed in a text report, at most. */
const LISTED = 20;

/** `kho sweep anytime`'s text report: a line per path, then every failed moment (the first 20). */
export function formatAnytimeSweep(r: AnytimeSweepReport, jobs: number): string {
  const out = [`kho sweep anytime: ${r.cases} cases on ${jobs} worker${jobs === 1 ? '' : 's'}, ${r.failed} failed`];
  const w = Math.max(...r.paths.map((p) => p.name.length));
  for (const p of r.paths) {
    out.push(`  ${p.name.padEnd(w)}  ${String(p.swept).padStart(4)} of ${String(p.moments).padStart(4)} moments  revived ${p.revived}, refused some ${p.refusedSome}, left some unrestored ${p.unrestoredSome}, failed ${p.failed}`);
  }
  const failed = r.results.filter((x) => x.problems.length > 0);
  for (const x of failed.slice(0, LISTED)) out.push(`  FAILED ${x.path} moment ${x.moment}${x.at ? ` (${x.at})` : ''}: ${x.problems.join('; ')}`);
  if (failed.length > LISTED) out.push(`  … and ${failed.length - LISTED} more (see --json)`);
  return out.join('\n');
}

/** `kho sweep faults`'s text report: a line per path, then every failed case (the first 20). */
export function formatFaultSweep(r: FaultSweepReport, jobs: number): string {
  const out = [`kho sweep faults: ${r.cases} cases on ${jobs} worker${jobs === 1 ? '' : 's'}, ${r.failed} failed`];
  const w = Math.max(...r.paths.map((p) => p.name.length));
  for (const p of r.paths) {
    const what = p.points === 0 ? 'no allocation: run with every allocation failing' : `${p.swept} of ${p.points} failure points`;
    out.push(`  ${p.name.padEnd(w)}  ${what}, failed ${p.failed}`);
  }
  const failed = r.results.filter((x) => x.problems.length > 0);
  for (const x of failed.slice(0, LISTED)) out.push(`  FAILED ${x.path} allocation ${x.point}${x.error ? ` (${x.error})` : ''}: ${x.problems.join('; ')}`);
  if (failed.length > LISTED) out.push(`  … and ${failed.length - LISTED} more (see --json)`);
  return out.join('\n');
}

/** One sample of `kho soak`, as a text line. */
export function formatSoakSample(s: SoakSample): string {
  return `  generation ${String(s.generation).padStart(4)}: RSS ${s.rssMiB} MiB, heap after GC ${s.heapMiB} MiB, array buffers ${s.arrayBuffersMiB} MiB (${(s.ms / 1000).toFixed(1)} s)`;
}

/** `kho soak`'s closing text. */
export function formatSoakResult(r: SoakResult): string {
  const mix = Object.entries(r.mix)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const out = [
    `kho soak: ${r.generations} generations (seed ${r.seed}) in ${(r.ms / 1000).toFixed(1)} s: ${r.verified} without error, ${r.errorCount} errors`,
    `  generations preserving each subsystem: ${mix}`,
    `  free pages at the end ${r.freePagesAtEnd}, a cold boot ${r.freePagesColdBoot}`,
    `  kernels booted ${r.kernels.booted}, still reachable after the run ${r.kernels.reachableAfter}`,
  ];
  for (const e of r.errors) out.push(`  ERROR ${e}`);
  if (r.errorCount > r.errors.length) out.push(`  … and ${r.errorCount - r.errors.length} more`);
  return out.join('\n');
}
