import { withUnwind } from '@kho/kernel';
import { Slab } from '@kho/physmem';
import { KhoSlab } from '@kho/kho-slab';
import { KhoVmalloc, Vmalloc } from '@kho/vmalloc';
import { writeDemoFiles } from '../demo/files';
import { KHO_TEST_LOG_CMDLINE, KhoTest } from '../demo/kho-test';
import { TRACKER_KINDS, kernelImage, machineFor, type TrackerKind } from '../system';
import { sweepAllocationFailures } from './faults';
import { fuzzHandovers, fuzzHandoversParallel, runFuzzCase, type FuzzResult } from './fuzz';

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
  it('60 mutated handovers reach every structure with every kind of mutation; each case ends in one outcome', () => {
    const r = fuzzHandovers({ cases: 60, seed: 2024 });
    expect([...r.crashes, ...r.hangs, ...r.falseRestores, ...r.lost]).toEqual([]);
    expect(r.cases).toBe(60);
    expect(r.refused + r.accepted).toBe(60);
    for (const t of ['tracker', 'root FDT', 'subtree LUO', 'subtree kho-slab', 'image ELF headers and notes']) expect(r.byTarget[t]?.tried).toBeGreaterThan(0);
    for (const m of ['count-past-end', 'huge-size', 'cycle', 'shared-node', 'duplicate-record', 'overlap-record']) expect(r.byMutation[m] ?? r.byMutation[`${m}+crc`]).toBeGreaterThan(0);
    expect(r.byTarget.tracker.refused).toBeGreaterThan(0);
  }, 300_000);

  it('a kstate case with its checksums recomputed reaches the content checks (no checksum refusal)', () => {
    let found = 0;
    for (let i = 0; i < 400 && found < 2; i++) {
      const c = runFuzzCase(5, i, { scope: 'ram' });
      if (c.target !== 'kstate stream' || c.crc !== 'recomputed') continue;
      found++;
      expect(['refused', 'accepted']).toContain(c.outcome);
      expect(c.detail ?? '').not.toMatch(/checksum 0x/);
    }
    expect(found).toBe(2);
  }, 300_000);

  it('the same seed gives the same cases and the same report on 1 thread and on 2 workers', async () => {
    const one = fuzzHandovers({ cases: 24, seed: 7 });
    const two = await fuzzHandoversParallel({ cases: 24, seed: 7, jobs: 2 });
    const strip = (r: FuzzResult) => JSON.parse(JSON.stringify(r, (k, v) => (k === 'ms' ? undefined : v)));
    expect(strip(two)).toEqual(strip(one));
    expect(two.cases).toBe(24);
  }, 300_000);
});
