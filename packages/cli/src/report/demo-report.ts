import { formatBytes, hex, type Kernel, KernelBug } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import type { DemoReport, RunHooks } from '../demo/run';
import type { KexecSection, ReportData } from './html';
import { ownersFrom, snapshotKernel, type MemoryMapSnapshot } from './snapshot';

/** Collects the memory maps of a demo run (before the jump, after the next boot) for its HTML report. */
export class DemoReportCollector implements RunHooks {
  before: MemoryMapSnapshot | undefined;
  after: MemoryMapSnapshot | undefined;

  private compatible = '';

  atJump(kernel: Kernel): void {
    this.compatible = kernel.get(Kho).generation?.compatible ?? '(KHO off)';
    this.before = snapshotKernel(kernel, `generation ${kernel.generation} at the jump (after serialize)`);
  }

  afterBoot(kernel: Kernel): void {
    this.after = snapshotKernel(kernel, `generation ${kernel.generation} after boot`, this.before && ownersFrom(this.before));
  }

  /** The report's data for a finished demo. */
  build(command: string, r: DemoReport): ReportData {
    if (!this.before || !this.after) throw new KernelBug('the demo stopped before both memory maps were taken');
    const s = r.second;
    const checks = [
      `${r.first.folios} folios of random order, ${formatBytes(r.first.bytesPreserved)}, preserved as ${r.first.blocksPreserved} blocks`,
      s.khoBoot ? 'the next kernel booted from the handover (KHO boot)' : `the next kernel booted cold${s.revivalError ? `: ${s.revivalError}` : ''}`,
      ...(s.restore
        ? [
            `restored ${s.restore.folios} folios (${formatBytes(s.restore.bytes)}); orders ${s.restore.ordersMatch ? 'match' : 'DIFFER'}`,
            `checksum ${s.restore.checksumActual} (expected ${s.restore.checksumExpected})`,
          ]
        : []),
      `free pages after finish ${s.freePagesAfterFinish}, cold boot ${s.freePagesColdBoot}`,
      ...s.errors.map((e) => `error: ${e}`),
    ];
    const section: KexecSection = {
      title: `kexec 1: generation 1 → generation 2`,
      before: this.before,
      after: this.after,
      stats: {
        tracker: `${r.first.tracker} (root compatible ${this.compatible})`,
        'blocks preserved': r.first.blocksPreserved,
        'tracker pages': r.first.trackerPages,
        'tracker bytes per block': Math.round(((r.first.trackerPages * PAGE_SIZE) / Math.max(1, r.first.blocksPreserved)) * 100) / 100,
        'scratch areas': r.first.scratch.map((a) => `${hex(a.addr)}+${formatBytes(a.size)}`).join(', '),
      },
      timings: { 'generation 1': r.first.ms, 'generation 2': s.ms },
      verified: r.ok,
      checks,
    };
    return { title: 'kho demo: live update of random folios', command, ok: r.ok, kexecs: [section] };
  }
}
