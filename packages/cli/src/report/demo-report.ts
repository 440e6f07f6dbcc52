import { formatBytes, hex } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import type { DemoReport } from '../demo/run';
import type { PageGeneration, RunPage } from '../explore/model';
import type { RunRecorder } from './recorder';

const ms = (v: number): string => `${v.toFixed(2)} ms`;

/** The explorer's view of a finished demo, from what `rec` heard on its bus. */
export function demoReportData(rec: RunRecorder, command: string, r: DemoReport): RunPage {
  const s = r.second;
  const f = r.first;
  const checks = [
    `${f.folios} folios of random order, ${formatBytes(f.bytesPreserved)}, preserved as part of ${f.blocksPreserved} blocks`,
    s.khoBoot ? 'the next kernel booted from the handover (KHO boot)' : `the next kernel booted cold${s.revivalError ? `: ${s.revivalError}` : ''}`,
    ...(s.restore
      ? [
          `restored ${s.restore.folios} folios (${formatBytes(s.restore.bytes)}); orders ${s.restore.ordersMatch ? 'match' : 'DIFFER'}`,
          `checksum ${s.restore.checksumActual} (expected ${s.restore.checksumExpected})`,
        ]
      : []),
    s.files
      ? `memfd: ${s.files.files} files (${formatBytes(s.files.bytes)} of file size, ${formatBytes(f.fileBytes)} written) compared byte for byte, holes included: ${s.files.verified ? 'verified' : 'FAILED'}`
      : 'memfd: the files did not come back',
    `free pages after finish ${s.freePagesAfterFinish}, cold boot ${s.freePagesColdBoot}${s.freePagesAfterFinish === s.freePagesColdBoot ? ': nothing leaked' : ''}`,
    ...s.errors.map((e) => `error: ${e}`),
  ];
  const generations: PageGeneration[] = [
    { g: f.generation, phases: rec.phases.get(f.generation) ?? {}, preservedBytes: f.bytesPreserved, blocks: f.blocksPreserved, trackerPages: f.trackerPages },
    { g: s.generation, phases: rec.phases.get(s.generation) ?? {}, freePages: s.freePagesAfterFinish, coldFreePages: s.freePagesColdBoot, verified: s.ok },
  ];
  const compatible = rec.atJump.get(f.generation)?.facts['root compatible'];
  return {
    title: 'kho demo: live update of random folios',
    command,
    ok: r.ok,
    summary: [
      ['machine', `${formatBytes(r.ram)} of RAM, seed ${r.seed}`],
      ['preserved by generation 1', `${f.folios} folios (${formatBytes(f.bytesPreserved)}) and memfd files (${formatBytes(f.fileBytes)} written) as ${f.blocksPreserved} blocks`],
      ['tracker', `${f.tracker}${compatible ? ` (root compatible ${String(compatible)})` : ''}: ${f.trackerPages} pages of metadata (${formatBytes(f.trackerPages * PAGE_SIZE)}), ${Math.round(((f.trackerPages * PAGE_SIZE) / Math.max(1, f.blocksPreserved)) * 100) / 100} bytes per block`],
      ['scratch areas', f.scratch.map((a) => `${hex(a.addr)} +${formatBytes(a.size)}`).join(', ')],
      ['generation 1 time', Object.entries(f.ms).map(([k, v]) => `${k} ${ms(v)}`).join(', ')],
      ['generation 2 time', Object.entries(s.ms).map(([k, v]) => `${k} ${ms(v)}`).join(', ')],
      ['result', r.ok ? 'every preserved byte verified, nothing leaked' : 'FAILED'],
    ],
    generations,
    kexecs: [
      {
        from: f.generation,
        to: s.generation,
        verified: r.ok,
        stats: Object.entries(rec.phases.get(f.generation) ?? {}).map(([p, v]) => [`generation ${f.generation} ${p}`, ms(v)] as const)
          .concat(Object.entries(rec.phases.get(s.generation) ?? {}).map(([p, v]) => [`generation ${s.generation} ${p}`, ms(v)] as const)),
        checks,
        before: rec.atJump.get(f.generation),
        after: rec.afterBoot.get(s.generation),
        handover: rec.handovers.get(f.generation),
      },
    ],
  };
}
