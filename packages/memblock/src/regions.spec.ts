import fc from 'fast-check';
import { RangeSet } from './regions';

type Op = readonly ['add' | 'remove', number, number];

function build(ops: readonly Op[]): RangeSet {
  const set = new RangeSet();
  for (const [op, base, size] of ops) set[op](base, size);
  return set;
}

describe('RangeSet', () => {
  it.each<[string, Op[], Array<[number, number]>]>([
    ['nothing', [], []],
    ['one range', [['add', 10, 5]], [[10, 15]]],
    ['disjoint ranges, added in any order', [['add', 30, 5], ['add', 10, 5], ['add', 20, 5]], [[10, 15], [20, 25], [30, 35]]],
    ['overlapping ranges', [['add', 10, 10], ['add', 15, 10]], [[10, 25]]],
    ['a range inside another', [['add', 10, 20], ['add', 12, 3]], [[10, 30]]],
    ['the same range twice', [['add', 10, 5], ['add', 10, 5]], [[10, 15]]],
    ['touching ranges', [['add', 10, 5], ['add', 15, 5]], [[10, 20]]],
    ['touching ranges added in reverse', [['add', 15, 5], ['add', 10, 5]], [[10, 20]]],
    ['touching ranges added in separate batches', [['add', 10, 5], ['remove', 0, 1], ['add', 15, 5]], [[10, 20]]],
    ['a range bridging two others', [['add', 0, 10], ['add', 20, 10], ['add', 10, 10]], [[0, 30]]],
    ['empty and negative sizes are ignored', [['add', 10, 0], ['add', 20, -5]], []],
    ['remove splits a range', [['add', 0, 100], ['remove', 40, 20]], [[0, 40], [60, 100]]],
    ['remove trims both ends', [['add', 0, 100], ['remove', 0, 10], ['remove', 90, 50]], [[10, 90]]],
    ['remove across several ranges', [['add', 0, 10], ['add', 20, 10], ['add', 40, 10], ['remove', 5, 40]], [[0, 5], [45, 50]]],
    ['remove of a whole range', [['add', 0, 10], ['add', 20, 10], ['remove', 20, 10]], [[0, 10]]],
    ['remove of what is not there', [['add', 10, 10], ['remove', 0, 10], ['remove', 20, 10]], [[10, 20]]],
    ['remove of nothing leaves the range whole', [['add', 0, 100], ['remove', 50, 0]], [[0, 100]]],
    ['remove of a negative size changes nothing', [['add', 0, 100], ['remove', 50, -10]], [[0, 100]]],
    ['add after remove re-merges', [['add', 0, 100], ['remove', 40, 20], ['add', 40, 20]], [[0, 100]]],
  ])('%s', (_what, ops, expected) => {
    const set = build(ops);
    expect(set.ranges()).toEqual(expected);
    expect(set.count).toBe(expected.length);
  });

  it('counts bytes within [min, max)', () => {
    const set = build([
      ['add', 0, 10],
      ['add', 20, 10],
      ['add', 40, 10],
    ]);
    expect([set.bytesWithin(), set.bytesWithin(5), set.bytesWithin(5, 25), set.bytesWithin(10, 20), set.bytesWithin(45, 1000)]).toEqual([
      30, 25, 10, 0, 5,
    ]);
  });

  it.each<[number, number, boolean, boolean]>([
    // base, size, overlaps, covers — against [10, 20) and [30, 40)
    [10, 10, true, true],
    [12, 3, true, true],
    [5, 10, true, false],
    [15, 10, true, false],
    [0, 10, false, false],
    [20, 10, false, false],
    [19, 1, true, true],
    [20, 1, false, false],
    [15, 20, true, false],
    [0, 100, true, false],
    [39, 1, true, true],
    [40, 5, false, false],
  ])('[%d, +%d) overlaps %p and is covered %p', (base, size, overlaps, covers) => {
    const set = build([
      ['add', 30, 10],
      ['add', 10, 10],
    ]);
    expect(set.overlaps(base, size)).toBe(overlaps);
    expect(set.covers(base, size)).toBe(covers);
  });

  it('covers a span across the seam of touching ranges', () => {
    const set = build([
      ['add', 10, 10],
      ['add', 20, 10],
    ]);
    expect(set.covers(15, 10)).toBe(true);
  });

  it('gives the same union whether additions come sorted, in a few ascending runs or in many (property)', () => {
    const range = fc.tuple(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 40 }));
    fc.assert(
      fc.property(fc.array(range, { maxLength: 300 }), fc.integer({ min: 1, max: 4 }), (ranges, parts) => {
        const bits = new Uint8Array(5100);
        for (const [b, n] of ranges) bits.fill(1, b, b + n);
        const want: Array<[number, number]> = [];
        for (let p = 0; p < bits.length; p++) {
          if (!bits[p]) continue;
          const start = p;
          while (bits[p]) p++;
          want.push([start, p]);
        }
        const sorted = [...ranges].sort((x, y) => x[0] - y[0]);
        // `parts` ascending runs, as a KHO boot's walk gives them (one per order).
        const runs = Array.from({ length: parts }, (_, i) => sorted.filter((_r, j) => j % parts === i)).flat();
        for (const input of [ranges, sorted, runs]) {
          const set = new RangeSet();
          for (const [b, n] of input) set.add(b, n);
          expect(set.ranges()).toEqual(want);
        }
      }),
      { numRuns: 200 },
    );
  });

  describe('against a page bitmap (256 pages)', () => {
    const PAGES = 256;
    const op = fc.tuple(fc.constantFrom<'add' | 'remove'>('add', 'remove'), fc.integer({ min: 0, max: PAGES - 1 }), fc.integer({ min: -2, max: 64 }));
    const query = fc.tuple(fc.integer({ min: 0, max: PAGES }), fc.integer({ min: 1, max: 64 }));

    function model(ops: ReadonlyArray<readonly ['add' | 'remove', number, number]>): Uint8Array {
      const bits = new Uint8Array(PAGES + 64);
      for (const [kind, base, size] of ops) for (let p = base; p < base + size; p++) bits[p] = kind === 'add' ? 1 : 0;
      return bits;
    }

    function runs(bits: Uint8Array): Array<[number, number]> {
      const out: Array<[number, number]> = [];
      for (let p = 0; p < bits.length; p++) {
        if (!bits[p]) continue;
        const start = p;
        while (p < bits.length && bits[p]) p++;
        out.push([start, p]);
      }
      return out;
    }

    it('gives the same ranges and answers, with queries between operations', () => {
      fc.assert(
        fc.property(fc.array(fc.tuple(op, fc.boolean()), { maxLength: 40 }), fc.array(query, { maxLength: 10 }), (steps, queries) => {
          const set = new RangeSet();
          const done: Array<readonly ['add' | 'remove', number, number]> = [];
          for (const [[kind, base, size], peek] of steps) {
            set[kind](base, size);
            done.push([kind, base, size]);
            // Queries normalise: mixing them in exercises merging of pending additions into merged ranges.
            if (peek) expect(set.ranges()).toEqual(runs(model(done)));
          }
          const bits = model(done);
          expect(set.ranges()).toEqual(runs(bits));
          for (const [base, size] of queries) {
            const slice = bits.subarray(base, base + size);
            expect(set.overlaps(base, size)).toBe(slice.some((b) => b === 1));
            expect(set.covers(base, size)).toBe(slice.every((b) => b === 1));
            expect(set.bytesWithin(base, base + size)).toBe(slice.reduce((n, b) => n + b, 0));
          }
        }),
        { numRuns: 300 },
      );
    });
  });
});
