import { withUnwind } from '@kho/kernel';
import { Slab } from '@kho/physmem';
import { KhoSlab } from '@kho/kho-slab';
import { KhoVmalloc, Vmalloc } from '@kho/vmalloc';
import { writeDemoFiles } from '../demo/files';
import { KHO_TEST_LOG_CMDLINE, KhoTest } from '../demo/kho-test';
import { TRACKER_KINDS, kernelImage, machineFor, type TrackerKind } from '../system';
import { sweepAllocationFailures } from './faults';
import { fuzzHandovers } from './fuzz';

const MiB = 2 ** 20;

function demoKernel(tracker: TrackerKind = 'radix') {
  const machine = machineFor({ ram: 512 * MiB });
  const k = machine.boot({ image: kernelImage({ mem: 4 * MiB, seed: 4 }, { tracker }), cmdline: `${KHO_TEST_LOG_CMDLINE} kho_scratch=32M,32M,32M` });
  k.get(KhoTest).generate();
  writeDemoFiles(k, 4);
  return k;
}

describe('fault injection: every allocation of an update path fails once, and nothing is left behind', () => {
  it.each(TRACKER_KINDS)("the demo's prepare and serialize (kstate, the self-test, memfd, reserve_mem, KHO), tracker %s", (tracker) => {
    const k = demoKernel(tracker);
    const sweep = sweepAllocationFailures(
      k,
      () => {
        k.prepare();
        k.serialize();
      },
      () => k.cancel(),
    );
    expect(sweep.problems).toEqual([]);
    expect(sweep.retried).toBe(true);
    expect(sweep.failurePoints).toBeGreaterThan(10);
    // and the update then goes through
    const k2 = k.liveUpdate();
    expect(k2.restore().ok).toBe(true);
    expect(k2.get(KhoTest).lastRestore?.verified).toBe(true);
  });

  it('vmalloc preservation', () => {
    const k = demoKernel();
    const vm = k.get(Vmalloc);
    const addr = vm.vmalloc(3 * 511 * 4096 + 5 * 4096); // four chunk pages
    let desc: Uint8Array | undefined;
    const sweep = sweepAllocationFailures(
      k,
      () => (desc = k.get(KhoVmalloc).preserveVmalloc(addr)),
      () => k.get(KhoVmalloc).unpreserveVmalloc(desc!),
    );
    expect(sweep.problems).toEqual([]);
    expect(sweep.failurePoints).toBeGreaterThanOrEqual(4);
  });

  it('slab preservation', () => {
    const k = demoKernel();
    const slab = k.get(Slab);
    const objs = [64, 64, 1024, 8192, 20_000].map((n) => slab.kmalloc(n));
    const sweep = sweepAllocationFailures(
      k,
      // several objects: the caller's own ladder undoes the ones preserved before the failing one
      () =>
        withUnwind((u) => {
          for (const o of objs) {
            k.get(KhoSlab).preserveSlab(o);
            u.push(() => k.get(KhoSlab).unpreserveSlab(o));
          }
        }),
      () => {
        for (const o of objs) k.get(KhoSlab).unpreserveSlab(o);
      },
    );
    expect(sweep.problems).toEqual([]);
    expect(sweep.failurePoints).toBeGreaterThanOrEqual(1);
  });
});

describe('hostile handovers (kho fuzz)', () => {
  it('150 mutated handovers: never a crash, a hang or a block restored that was not preserved', () => {
    const r = fuzzHandovers({ cases: 150, seed: 2024 });
    expect(r.crashes).toEqual([]);
    expect(r.hangs).toEqual([]);
    expect(r.falseRestores).toEqual([]);
    expect(r.cases).toBe(150);
    expect(r.refused + r.accepted).toBe(150);
    // every structure and every kind of mutation was tried, and the tracker's checksum caught what it should
    expect(Object.keys(r.byTarget).sort()).toEqual(['kexec-metadata', 'kstate stream', 'memblock FDT', 'memfd table', 'root FDT', 'scratch array', 'tracker', 'vmalloc chunks']);
    expect(Object.keys(r.byMutation)).toHaveLength(6);
    expect(r.byTarget.tracker.accepted).toBe(0);
  });
});
