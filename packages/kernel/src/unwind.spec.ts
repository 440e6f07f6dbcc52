import { Errno, KernelBug, KernelError } from './errno';
import { Unwind, withUnwind } from './unwind';

describe('unwinding', () => {
  it('undoes exactly the steps that succeeded, in reverse order, and rethrows', () => {
    const log: string[] = [];
    const fail = new KernelError(Errno.ENOMEM, 'step 3');
    expect(() =>
      withUnwind((u) => {
        for (const step of [1, 2, 3, 4]) {
          if (step === 3) throw fail;
          log.push(`do ${step}`);
          u.push(() => log.push(`undo ${step}`));
        }
      }),
    ).toThrow(fail);
    expect(log).toEqual(['do 1', 'do 2', 'undo 2', 'undo 1']);
  });

  it('commits when the body succeeds', () => {
    const log: string[] = [];
    expect(withUnwind((u) => (u.push(() => log.push('undo')), 42))).toBe(42);
    expect(log).toEqual([]);
  });

  it('reports undo failures together with the original error', () => {
    let err: unknown;
    try {
      withUnwind((u) => {
        u.push(() => {
          throw new Error('undo broke');
        });
        u.push(() => undefined);
        u.push(() => {
          throw new Error('undo broke too');
        });
        throw new KernelError(Errno.EINVAL, 'original');
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AggregateError);
    expect((err as AggregateError).message).toBe('unwinding after a failure also failed 2 time(s)');
    expect((err as AggregateError).errors.map((e: Error) => e.message)).toEqual(['EINVAL: original', 'undo broke too', 'undo broke']);
  });

  it('counts the recorded undos; unwind runs them once, last first, and returns their errors', () => {
    const u = new Unwind();
    const log: number[] = [];
    expect(u.depth).toBe(0);
    u.push(() => log.push(1));
    u.push(() => log.push(2));
    expect(u.depth).toBe(2);
    expect(u.unwind()).toEqual([]);
    expect(log).toEqual([2, 1]);
    expect(u.depth).toBe(0);
    expect(u.unwind()).toEqual([]);
    expect(log).toEqual([2, 1]);
  });

  it.each([
    ['commit', (u: Unwind) => u.commit()],
    ['unwind', (u: Unwind) => void u.unwind()],
  ])('refuses to push after %s, as a bug', (_what, end) => {
    const u = new Unwind();
    end(u);
    expect(() => u.push(() => undefined)).toThrow(KernelBug);
    expect(() => u.push(() => undefined)).toThrow('Unwind.push after the ladder was committed or unwound');
  });
});
