import { BuddyAllocator, ORDER_0 } from '@kho/physmem';
import { KhoBlockSet } from '@kho/kho-block';
import { kernelImage, machineFor } from '../system';
import { FAULT_PATHS, faultPath, operationPath, type FaultRun } from './fault-paths';
import { sweepFaults } from './sweeps';

const MiB = 2 ** 20;

/** A path over a toy operation on a fresh kernel: two page allocations, with `body` deciding what it does with them. */
function toyPath(body: (buddy: BuddyAllocator, held: number[]) => void, extra: Partial<FaultRun> = {}) {
  return operationPath('toy', 'two page allocations', (): FaultRun => {
    const k = machineFor({ ram: 64 * MiB }).boot({ image: kernelImage(), cmdline: 'kho_scratch=8M,8M,8M' });
    const held: number[] = [];
    return { kernel: k, attempt: () => body(k.get(BuddyAllocator), held), after: () => [], ...extra };
  });
}

describe('faults on every new path', () => {
  // The checks have teeth: an operation that breaks each rule is caught.
  it('an operation that does not undo what succeeded before the failure is reported', () => {
    const leaky = toyPath((buddy, held) => {
      held.push(buddy.allocPages(0));
      held.push(buddy.allocPages(0)); // when this one fails, the first page stays allocated
    });
    expect(leaky.count()).toBe(2);
    expect(leaky.fail(1).problems).toEqual([]);
    const r = leaky.fail(2);
    expect(r.error).toMatch(/^ENOMEM: .*injected failure/);
    expect(r.problems).toEqual(expect.arrayContaining(['free pages changed', 'buddyinfo changed']));
  });

  it('a failure swallowed, a retry that fails, state of its own that changed, a retry whose result is wrong: each is reported', () => {
    const swallow = toyPath((buddy) => {
      try {
        buddy.allocPages(0);
      } catch {
        // pretends it worked
      }
    });
    expect(swallow.fail(1).problems).toEqual(['the injected failure was swallowed: the operation succeeded']);

    let calls = 0;
    const failsTwice = toyPath((buddy, held) => {
      calls++;
      const p = buddy.allocPages(0);
      if (calls === 2) {
        buddy.freePages(p, ORDER_0);
        throw new Error('second attempt broke');
      }
      held.push(p);
    });
    expect(failsTwice.fail(1).problems).toEqual(['the retry failed: second attempt broke']);

    let counter = 0;
    const sideEffect = toyPath(
      (buddy) => {
        counter++;
        buddy.allocPages(0);
      },
      { state: () => ({ counter: String(counter) }) },
    );
    expect(sideEffect.fail(1).problems).toEqual(['counter changed']);

    const wrong = toyPath((buddy, held) => void held.push(buddy.allocPages(0)), { after: () => ['the next kernel found other bytes'] });
    expect(wrong.fail(1).problems).toEqual(['the next kernel found other bytes']);
  });

  it('an operation that makes no allocation must succeed with every allocation failing', () => {
    const needs = toyPath((buddy) => void buddy.allocPages(0));
    expect(needs.fail(0).problems[0]).toMatch(/^with every allocation failing the operation failed: ENOMEM: /);
  });

  it('a real path whose operation stops unwinding is reported (kho_block grow, one block at a time, no undo)', () => {
    const grow = KhoBlockSet.prototype.grow;
    const spy = jest.spyOn(KhoBlockSet.prototype, 'grow').mockImplementation(function (this: KhoBlockSet, count: number) {
      while (this.capacity < count) grow.call(this, this.capacity + 1);
    });
    try {
      const p = faultPath('kho_block grow')!;
      const r = p.fail(p.count());
      expect(r.problems).toEqual(expect.arrayContaining(['tracker blocks changed', 'free pages changed', 'set changed']));
    } finally {
      spy.mockRestore();
    }
  });

  it("the guests' first folio allocation failing unwinds cleanly (found by this sweep: the undo freed a folio never allocated)", () => {
    expect(faultPath('host guests')!.fail(1).problems).toEqual([]);
  });

  // one point each here (the middle one); `kho sweep faults` in CI and RELIABILITY.md run every point
  it('every path passes at its middle failure point (in this thread)', () => {
    const failures = [];
    for (const p of FAULT_PATHS) {
      const r = p.fail(Math.ceil(p.count() / 2));
      if (r.problems.length > 0) failures.push(r);
    }
    expect(failures).toEqual([]);
    // every kind of path is there
    expect(FAULT_PATHS.map((p) => p.name)).toEqual(
      expect.arrayContaining(['luo preserve', 'luo freeze', 'luo unfreeze', 'luo retrieve', 'kho_block grow', 'kho_block restore', 'update kho_abi=v1', 'boot kho_abi=v4-composite', 'host guests', 'host update']),
    );
  });
});

describe('the fault sweep on worker threads', () => {
  jest.setTimeout(120_000);

  it('the same report with one worker and with two', async () => {
    const opts = { paths: ['kho_block grow', 'luo unfreeze', 'luo preserve'], limit: 3 };
    const one = await sweepFaults({ ...opts, jobs: 1 });
    const two = await sweepFaults({ ...opts, jobs: 2 });
    expect(two).toEqual(one);
    expect(one.failed).toBe(0);
    expect(one.paths.map((p) => [p.name, p.swept, p.points > 0])).toEqual([
      ['kho_block grow', 3, true],
      ['luo unfreeze', 1, false],
      ['luo preserve', 3, true],
    ]);
    expect(one.cases).toBe(7);
  });

  it('refuses an unknown path', async () => {
    await expect(sweepFaults({ paths: ['nope'] })).rejects.toThrow("EINVAL: no fault sweep path named 'nope'");
  });
});
