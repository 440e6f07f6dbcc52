import { Errno, KernelBug, KernelError, describeError, errnoName, findKernelError, isKernelError } from './errno';

describe('KernelError', () => {
  it('keeps the reason apart from the errno; the message is "<ERRNO>: <reason>"', () => {
    const e = new KernelError(Errno.EBUSY, 'device is open');
    expect(e.reason).toBe('device is open');
    expect(e.message).toBe('EBUSY: device is open');
    expect(e.code).toBe('EBUSY');
    expect(e.errno).toBe(16);
    expect(e.name).toBe('KernelError');
    expect(new KernelBug('x').name).toBe('KernelBug');
    expect(String(new KernelBug('x'))).toBe('KernelBug: x');
  });

  it.each([
    [Errno.ENOTTY, 'ENOTTY', 25],
    [Errno.EBADF, 'EBADF', 9],
    [Errno.ENODATA, 'ENODATA', 61],
    [Errno.EFBIG, 'EFBIG', 27],
  ])('errno %p is %s = %p, as in Linux', (errno, name, value) => {
    expect(errnoName(errno)).toBe(name);
    expect(Number(errno)).toBe(value);
  });

  it('names an unknown errno by its number', () => {
    expect(errnoName(999 as Errno)).toBe('E?999');
  });
});

describe('describeError', () => {
  it.each<[string, unknown, string]>([
    ['a KernelError: its reason only', new KernelError(Errno.EINVAL, 'bad order 12 (wanted 0..10)'), 'bad order 12 (wanted 0..10)'],
    ['a KernelBug', new KernelBug('free list corrupt'), 'BUG: free list corrupt'],
    ['a plain Error: its message only', new Error('no such file'), 'no such file'],
    ['another Error', new RangeError('Invalid typed array length: 5'), 'RangeError: Invalid typed array length: 5'],
    ['a string', 'plain', 'plain'],
    ['undefined', undefined, 'undefined'],
  ])('%s', (_what, e, text) => {
    expect(describeError(e)).toBe(text);
  });

  it('finds the KernelError a wrapper carries as its cause (as a DI container wraps constructor errors)', () => {
    const inner = new KernelError(Errno.EINVAL, "command line: kho='maybe' is not a boolean");
    const outer = new Error('Cannot inject the dependency "kho"', { cause: new Error('while resolving', { cause: inner }) });
    expect(findKernelError(outer)).toBe(inner);
    expect(describeError(outer)).toBe("command line: kho='maybe' is not a boolean");
    expect(findKernelError(new Error('no cause'))).toBeUndefined();
  });

  it('looks 32 levels deep into a chain of causes, no further', () => {
    const wrap = (inner: unknown, levels: number): unknown => {
      let e = inner;
      for (let i = 0; i < levels; i++) e = new Error(`wrapper ${i}`, { cause: e });
      return e;
    };
    const inner = new KernelError(Errno.EIO, 'deep');
    expect(findKernelError(wrap(inner, 31))).toBe(inner);
    expect(findKernelError(wrap(inner, 32))).toBeUndefined();
  });

  it('stops on a cause chain that loops', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(findKernelError(a)).toBeUndefined();
  });
});

describe('isKernelError', () => {
  it('matches the class, and the errno when one is given', () => {
    const e = new KernelError(Errno.ENOENT, 'x');
    expect(isKernelError(e)).toBe(true);
    expect(isKernelError(e, Errno.ENOENT)).toBe(true);
    expect(isKernelError(e, Errno.EINVAL)).toBe(false);
    expect(isKernelError(new Error('x'))).toBe(false);
  });
});
