import { CommandLine } from './cmdline';
import { Errno, KernelError } from './errno';
import { formatBytes, formatSizeExact, parseSize } from './units';
import { Unwind, withUnwind } from './unwind';

describe('parseSize', () => {
  it.each([
    ['4096', 4096],
    ['4K', 4096],
    ['4k', 4096],
    ['256M', 256 * 2 ** 20],
    ['4G', 4 * 2 ** 30],
    ['1T', 2 ** 40],
    ['0x1000', 4096],
    ['0x10M', 16 * 2 ** 20],
  ])('%s = %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
    expect(parseSize(formatSizeExact(bytes))).toBe(bytes);
  });

  it.each([
    ['', "mem: '' is not a size (wanted a number with an optional K, M, G, T or P suffix)"],
    ['12Q', "mem: '12Q' is not a size (wanted a number with an optional K, M, G, T or P suffix)"],
    ['-4K', "mem: '-4K' is not a size (wanted a number with an optional K, M, G, T or P suffix)"],
    ['99999999P', "mem: '99999999P' is too large (wanted at most 2^53 - 1 bytes)"],
  ])('refuses %j', (text, message) => {
    expect(() => parseSize(text, 'mem')).toThrow(message);
  });

  it('formats bytes for people', () => {
    expect(formatBytes(12)).toBe('12 B');
    expect(formatBytes(1536 * 2 ** 20)).toBe('1.50 GiB');
  });
});

describe('CommandLine', () => {
  it('parses flags, values, repeats and quotes', () => {
    const c = new CommandLine('quiet  kho=on reserve_mem=1M:4K:log reserve_mem=2M:2M:trace x="a b"');
    expect(c.has('quiet')).toBe(true);
    expect(c.get('quiet')).toBeUndefined();
    expect(c.getBool('kho', false)).toBe(true);
    expect(c.getAll('reserve_mem')).toEqual(['1M:4K:log', '2M:2M:trace']);
    expect(c.get('x')).toBe('a b');
    expect(c.getBool('absent', true)).toBe(true);
  });

  it.each([
    ['kho=maybe', "EINVAL: command line: kho='maybe' is not a boolean (wanted on/off, 1/0, y/n)"],
  ])('refuses %s', (text, message) => {
    expect(() => new CommandLine(text).getBool('kho', true)).toThrow(message);
  });

  it('refuses an unterminated quote', () => {
    expect(() => new CommandLine('a="b')).toThrow('EINVAL: command line: unterminated quote in \'a="b\'');
  });
});

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
        throw new KernelError(Errno.EINVAL, 'original');
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AggregateError);
    expect((err as AggregateError).errors.map((e: Error) => e.message)).toEqual(['EINVAL: original', 'undo broke']);
  });

  it('refuses to push after commit', () => {
    const u = new Unwind();
    u.commit();
    expect(() => u.push(() => undefined)).toThrow('Unwind.push after the ladder was committed or unwound');
  });
});
