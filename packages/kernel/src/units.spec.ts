import { Errno, KernelError } from './errno';
import { formatBytes, formatSizeExact, hex, parseSize } from './units';

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

describe('parseSize edges', () => {
  it('ignores surrounding whitespace and names a plain "size" by default', () => {
    expect(parseSize(' 4K\n')).toBe(4096);
    expect(parseSize('0')).toBe(0);
    expect(parseSize('1P')).toBe(2 ** 50);
    let err: unknown;
    try {
      parseSize('four');
    } catch (e) {
      err = e;
    }
    expect((err as KernelError).errno).toBe(Errno.EINVAL);
    expect((err as KernelError).message).toBe("EINVAL: size: 'four' is not a size (wanted a number with an optional K, M, G, T or P suffix)");
  });

  it('refuses a size of 2^53 bytes or more with ERANGE', () => {
    expect(parseSize('0x1fffffffffffff')).toBe(2 ** 53 - 1);
    expect(() => parseSize('8P')).toThrow(expect.objectContaining({ errno: Errno.ERANGE }));
    expect(() => parseSize('8P')).toThrow("ERANGE: size: '8P' is too large (wanted at most 2^53 - 1 bytes)");
  });
});

describe('formatSizeExact', () => {
  it.each([
    [0, '0'],
    [1, '1'],
    [1023, '1023'],
    [1024, '1K'],
    [1536, '1536'],
    [3 * 2 ** 10, '3K'],
    [2 ** 20, '1M'],
    [2 ** 20 + 2 ** 10, '1025K'],
    [256 * 2 ** 20, '256M'],
    [2 ** 30, '1G'],
    [3 * 2 ** 40, '3T'],
    [2 ** 50, '1P'],
    [2048 * 2 ** 50, '2048P'],
  ])('%d is %s', (bytes, text) => {
    expect(formatSizeExact(bytes)).toBe(text);
  });
});

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.00 KiB'],
    [1536, '1.50 KiB'],
    [5 * 2 ** 20, '5.00 MiB'],
    [2 ** 30, '1.00 GiB'],
    [2 ** 40, '1.00 TiB'],
    [2 ** 50, '1.00 PiB'],
    // PiB is the largest unit: larger sizes stay in it
    [2 ** 60, '1024.00 PiB'],
    [-2048, '-2.00 KiB'],
  ])('%d is %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('hex', () => {
  it('prints 0x and lower-case digits, for numbers and bigints', () => {
    expect(hex(0)).toBe('0x0');
    expect(hex(0xabc000)).toBe('0xabc000');
    expect(hex(0xffff_ffff_ffff_ffffn)).toBe('0xffffffffffffffff');
  });
});
