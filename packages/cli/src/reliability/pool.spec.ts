import { SweepPool } from './pool';
import type { SweepTask } from './tasks';

jest.setTimeout(120_000);

describe('SweepPool', () => {
  it('runs cases on worker threads; a case that throws, a worker that crashes, exits or hangs fails that case only', async () => {
    const pool = new SweepPool({ jobs: 2, timeoutMs: 3000 });
    const probe = (act: 'echo' | 'throw' | 'crash' | 'exit' | 'hang', value = 0): SweepTask => ({ kind: 'probe', act, value });
    try {
      const out = await pool.run([probe('echo', 1), probe('throw', 2), probe('crash', 3), probe('echo', 4), probe('exit'), probe('hang'), probe('echo', 7)]);
      expect(out).toEqual([
        { ok: true, value: 1 },
        { ok: false, error: 'EIO: probe: thrown as asked (2)' },
        { ok: false, error: 'the worker crashed: RangeError: probe: crashed as asked (3)' },
        { ok: true, value: 4 },
        { ok: false, error: 'the worker exited with code 3' },
        { ok: false, error: 'hang: the case ran for more than 3 s' },
        { ok: true, value: 7 },
      ]);
      // the pool is whole again: later runs use the replacement workers
      expect(await pool.run([probe('echo', 8)])).toEqual([{ ok: true, value: 8 }]);
    } finally {
      await pool.close();
    }
  });
});
