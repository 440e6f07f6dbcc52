import { addSmall, canon, diffSmall, fromWords, hiWord, loWord, sub, toU64 } from './u64';

describe('u64 numbers: numbers below 2^53, bigints from there', () => {
  it.each<[unknown, number | bigint | undefined]>([
    [0, 0],
    [-0, 0],
    [2 ** 53 - 1, 2 ** 53 - 1],
    [2 ** 53, undefined],
    [-1, undefined],
    [0.5, undefined],
    [NaN, undefined],
    [5n, 5],
    [2n ** 53n, 2n ** 53n],
    [2n ** 64n - 1n, 2n ** 64n - 1n],
    [2n ** 64n, undefined],
    [-1n, undefined],
    ['5', undefined],
  ])('toU64(%p) is %p', (v, want) => {
    expect(toU64(v)).toBe(want);
    if (typeof want === 'number') expect(Object.is(toU64(v), want)).toBe(true);
  });

  it.each<[number, number, number | bigint]>([
    [0, 0, 0],
    [0xffffffff, 0x1fffff, 2 ** 53 - 1],
    [0, 0x200000, 2n ** 53n],
    [0xffffffff, 0xffffffff, 2n ** 64n - 1n],
  ])('fromWords(%d, %d) is %p, and splits back', (lo, hi, v) => {
    expect(fromWords(lo, hi)).toBe(v);
    expect([loWord(v), hiWord(v)]).toEqual([lo, hi]);
  });

  it('adds, subtracts and compares across 2^53 exactly', () => {
    expect(addSmall(2 ** 53 - 2, 1)).toBe(2 ** 53 - 1);
    expect(addSmall(2 ** 53 - 1, 1)).toBe(2n ** 53n);
    expect(addSmall(2n ** 64n - 2n, 1)).toBe(2n ** 64n - 1n);
    expect(addSmall(2n ** 64n - 1n, 1)).toBeUndefined();
    expect(sub(2n ** 53n + 5n, 2n ** 53n)).toBe(5);
    expect(sub(2n ** 60n, 1)).toBe(2n ** 60n - 1n);
    expect(diffSmall(2n ** 60n + 7n, 2n ** 60n)).toBe(7);
    expect(canon(7n)).toBe(7);
  });
});
