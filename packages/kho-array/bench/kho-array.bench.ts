import { defineBench, seededRandom, timeNs, type BenchResult, type BenchTarget } from '@kho/kernel/bench';
import { PAGE_SIZE } from '@kho/physmem';
import { createKhoArray, type KhoArray } from '../src/array';
import { arrayTestMachine, type ArrayTestMachine } from '../src/testing';

/**
 * `kho-array/<pattern>-v0` and `-v1`: the cost of an array holding a pattern of positions, per entry:
 * `bytesPerEntry` (pages × 4096 / entries), `writeNsPerEntry` (create, `seek` + `set` for every entry, destroy)
 * and `readNsPerEntry` (a reader's `next` + `pos` + `get` over the whole array). Entries are tagged values `2i + 1`.
 */

/** 1 GiB of RAM: the worst layout (version 0, one page per entry) needs 100,000 pages. */
const RAM = 2 ** 30;

/** The best of nine timed runs after a warm-up: the machine is shared, and the best run is the least disturbed. */
function measure(fn: () => number, quick: boolean): number {
  timeNs(fn, quick ? 30 : 100);
  let best = Infinity;
  for (let i = 0; i < 9; i++) best = Math.min(best, timeNs(fn, quick ? 15 : 100).nsPerOp);
  return best;
}

function round(v: number): number {
  return +v.toFixed(2);
}

/** Positions as numbers (all below 2^53) or as bigints. */
type Positions = number[] | bigint[];

function write(m: ArrayTestMachine, version: number, pos: Positions): KhoArray {
  const a = createKhoArray(m.ctx, version);
  const n = pos.length;
  for (let i = 0; i < n; i++) {
    a.seek(pos[i]);
    a.set(2 * i + 1);
  }
  return a;
}

/** One machine for every bench (a new 1 GiB machine per bench would leave megabytes of garbage to the next one). */
let machine: ArrayTestMachine | undefined;

/**
 * The machine, made on first use; it then writes and reads a small array of each version a few times, so that
 * whichever bench runs first does not pay for the compiler learning the shared code paths (and both versions
 * are measured with the same type feedback).
 */
function sharedMachine(): ArrayTestMachine {
  if (machine) return machine;
  const m = (machine = arrayTestMachine(RAM));
  const pos = Array.from({ length: 20_000 }, (_, i) => i + Math.floor(i / 1000) * 5000);
  for (let round = 0; round < 20; round++) {
    for (const version of [0, 1]) {
      const a = write(m, version, pos);
      const r = a.reader();
      while (r.next()) r.get();
      a.destroy();
    }
  }
  return m;
}

function run(pattern: string, version: number, pos: Positions, quick: boolean): BenchResult {
  const m = sharedMachine();
  const n = pos.length;
  const free0 = m.buddy.nrFreePages;
  const writeNs = measure(() => {
    write(m, version, pos).destroy();
    return n;
  }, quick);
  if (m.buddy.nrFreePages !== free0) throw new Error(`kho-array bench: ${free0 - m.buddy.nrFreePages} pages leaked`);
  const a = write(m, version, pos);
  let sum = 0;
  let count = 0;
  let lastPos: number | bigint = -1;
  const readNs = measure(() => {
    // Locals in the loop (a captured variable holding a double would be boxed at every store).
    const r = a.reader();
    let s = 0;
    let c = 0;
    let last: number | bigint = -1;
    while (r.next()) {
      last = r.pos;
      s += r.get() as number;
      c++;
    }
    sum += s;
    count += c;
    lastPos = last;
    return n;
  }, quick);
  // The reads must have seen every entry, in order, with its value.
  const expectedSum = n * n; // sum of 2i + 1 for i < n
  if (count % n !== 0 || sum !== (count / n) * expectedSum || lastPos !== (typeof pos[n - 1] === 'bigint' ? pos[n - 1] : Number(pos[n - 1]))) {
    throw new Error(`kho-array bench ${pattern}-v${version}: read ${count} entries summing to ${sum}, last at ${String(lastPos)}`);
  }
  const pages = a.nrPages;
  const bytesPerEntry = (pages * PAGE_SIZE) / n;
  a.destroy();
  return {
    value: round(bytesPerEntry),
    unit: 'bytes/entry',
    bytesPerEntry: round(bytesPerEntry),
    writeNsPerEntry: round(writeNs),
    readNsPerEntry: round(readNs),
    readMEntriesPerSec: round(1e3 / readNs),
    entries: n,
    pages,
  };
}

interface Pattern {
  readonly name: string;
  /** The target of the v1 bench (v0 is the baseline it is read against: no target of its own). */
  readonly target?: string;
  readonly targets?: readonly BenchTarget[];
  positions(quick: boolean): Positions;
}

const PATTERNS: Pattern[] = [
  {
    name: 'dense',
    target: 'v1 <= 24 bytes/entry; read >= 50M entries/s (and within 10% of kho-array/dense-v0: read the two lines)',
    targets: [{ max: 24 }, { field: 'readMEntriesPerSec', min: 50 }],
    positions: (quick) => Array.from({ length: quick ? 2 ** 17 : 2 ** 20 }, (_, i) => i),
  },
  {
    name: 'clustered',
    target: 'v1 <= 24 bytes/entry',
    targets: [{ max: 24 }],
    positions: (quick) => {
      const runs = quick ? 1_000 : 10_000;
      return Array.from({ length: runs * 100 }, (_, i) => Math.floor(i / 100) * 10_000 + (i % 100));
    },
  },
  {
    name: 'sparse',
    target: 'v1 <= 24 bytes/entry',
    targets: [{ max: 24 }],
    positions: (quick) => Array.from({ length: quick ? 12_500 : 100_000 }, (_, i) => i * 2 ** 20),
  },
  {
    name: 'random62',
    target: 'v1 <= 24 bytes/entry',
    targets: [{ max: 24 }],
    positions: (quick) => {
      const n = quick ? 12_500 : 100_000;
      const rand = seededRandom(0x62b175);
      const set = new Set<bigint>();
      while (set.size < n) set.add((BigInt(Math.floor(rand() * 2 ** 30)) << 32n) | BigInt(Math.floor(rand() * 2 ** 32)));
      return [...set].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    },
  },
];

for (const pattern of PATTERNS) {
  for (const version of [0, 1]) {
    defineBench({
      name: `kho-array/${pattern.name}-v${version}`,
      ...(version === 1 ? { target: pattern.target, targets: pattern.targets } : {}),
      run: (ctx) => run(pattern.name, version, pattern.positions(ctx.quick), ctx.quick),
    });
  }
}
