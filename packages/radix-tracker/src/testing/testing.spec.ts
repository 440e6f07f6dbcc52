import { radixW2Sequence, radixWorkload } from './index';

describe('the benchmark workloads', () => {
  it("reproduce radix_ref.c's W2 exactly: its distinct count and the walk checksum it prints", () => {
    const seq = radixW2Sequence();
    const distinct = [...new Set(seq)];
    expect(seq.length).toBe(100_000);
    expect(distinct.length).toBe(99_978);
    // radix_ref W2 prints "walk_checksum":"0x00c36ad42c244000": the sum of phys ^ order over its blocks, mod 2^64.
    const sum = distinct.reduce((s, pfn) => (s + BigInt(pfn) * 4096n) & ((1n << 64n) - 1n), 0n);
    expect(sum).toBe(0x00c36ad42c244000n);
    expect(radixWorkload('sparse', false).pfns).toEqual(distinct);
  });
});
