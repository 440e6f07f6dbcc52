import { Errno, KernelError } from '@kho/kernel';
import { FaultInjector, parseFailPageAlloc, type FaultConfig } from './faults';

/** Which of the next `n` calls fail, as 1-based call numbers. */
function failures(f: FaultInjector, n: number): number[] {
  const out: number[] = [];
  for (let i = 1; i <= n; i++) if (f.shouldFail()) out.push(i);
  return out;
}

describe('FaultInjector', () => {
  it('never fails until configured', () => {
    const f = new FaultInjector();
    expect(failures(f, 100)).toEqual([]);
    expect([f.calls, f.injected, f.isArmed]).toEqual([100, 0, false]);
  });

  it.each<[string, FaultConfig, number[]]>([
    ['failNth', { failNth: 3 }, [3]],
    ['everyNth', { everyNth: 4 }, [4, 8, 12, 16, 20]],
    ['everyNth with times', { everyNth: 4, times: 2 }, [4, 8]],
    ['failNth and everyNth', { failNth: 1, everyNth: 10 }, [1, 10, 20]],
    ['everyNth with probability 0', { everyNth: 2, probability: 0 }, []],
    ['times 0', { everyNth: 1, times: 0 }, []],
  ])('%s fails exactly the expected calls', (_what, config, want) => {
    const f = new FaultInjector();
    failures(f, 7); // counting starts at configure
    f.configure(config);
    expect(failures(f, 20)).toEqual(want);
    expect(f.injected).toBe(want.length);
  });

  it('fails with a seeded probability, the same calls for the same seed', () => {
    const run = (seed: number): number[] => {
      const f = new FaultInjector();
      f.configure({ probability: 0.25, seed });
      return failures(f, 1000);
    };
    const a = run(42);
    expect(run(42)).toEqual(a);
    expect(run(43)).not.toEqual(a);
    expect(a.length).toBeGreaterThan(180);
    expect(a.length).toBeLessThan(320);
  });

  it('reset disarms and zeroes the counters', () => {
    const f = new FaultInjector();
    f.configure({ everyNth: 1 });
    failures(f, 5);
    f.reset();
    expect([f.calls, f.injected, f.isArmed]).toEqual([0, 0, false]);
    expect(failures(f, 5)).toEqual([]);
  });

  it.each<[FaultConfig, string]>([
    [{ failNth: 0 }, 'fault injection: failNth 0 is not a positive integer'],
    [{ everyNth: 1.5 }, 'fault injection: everyNth 1.5 is not a positive integer'],
    [{ probability: 2 }, 'fault injection: probability 2 is not in [0, 1]'],
    [{ probability: NaN }, 'fault injection: probability NaN is not in [0, 1]'],
    [{ everyNth: 1, times: -1 }, 'fault injection: times -1 is not a non-negative integer'],
  ])('configure(%j) throws EINVAL', (config, message) => {
    const f = new FaultInjector();
    expect(() => f.configure(config)).toThrow(new KernelError(Errno.EINVAL, message));
    expect(f.isArmed).toBe(false);
  });
});

describe('parseFailPageAlloc', () => {
  it.each<[string, FaultConfig]>([
    ['1,10,-1,42', { probability: 0.1, seed: 42 }],
    ['100,100,5', { everyNth: 100, probability: 1, times: 5 }],
    ['0,100,-1', { probability: 1 }],
    ['1,0,3', { probability: 0, times: 3 }],
  ])('parses %s', (text, want) => {
    expect(parseFailPageAlloc(text)).toEqual(want);
  });

  it.each([
    ['1,10', "fail_page_alloc='1,10': 2 fields (wanted <everyNth>,<probability%>,<times>[,<seed>])"],
    ['x,10,1', "fail_page_alloc='x,10,1': everyNth 'x' is not an integer (wanted <everyNth>,<probability%>,<times>[,<seed>])"],
    ['1,101,1', "fail_page_alloc='1,101,1': probability 101 is not in 0..100 (wanted <everyNth>,<probability%>,<times>[,<seed>])"],
    ['1,10,-2', "fail_page_alloc='1,10,-2': times -2 is below -1 (wanted <everyNth>,<probability%>,<times>[,<seed>])"],
    ['-1,10,1', "fail_page_alloc='-1,10,1': everyNth -1 is negative (wanted <everyNth>,<probability%>,<times>[,<seed>])"],
  ])('rejects %s with EINVAL', (text, message) => {
    expect(() => parseFailPageAlloc(text)).toThrow(new KernelError(Errno.EINVAL, message));
  });
});
