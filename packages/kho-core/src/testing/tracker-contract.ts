import { deepStrictEqual, ok, strictEqual, throws } from 'node:assert/strict';
import { KernelError } from '@kho/kernel';
import { pfn, toOrder, type BuddyAllocator, type FaultInjector, type Order, type Pfn } from '@kho/physmem';
import type { Tracker } from '../ports';

/** A fresh tracker and the allocator it takes its pages from, for one contract case. */
export interface TrackerUnderTest {
  readonly tracker: Tracker;
  readonly buddy: BuddyAllocator;
  readonly faults: FaultInjector;
  /** Blocks inside this machine's RAM that the tracker can record (several orders, several leaves/bitmaps). */
  readonly blocks: ReadonlyArray<readonly [Pfn, Order]>;
}

/** One case of the contract: a name and a body that throws (node:assert) when the tracker breaks the contract. */
export type TrackerContractCase = [string, (make: () => TrackerUnderTest) => void];

const key = ([p, o]: readonly [number, number]): string => `${p}/${o}`;

function walked(t: Tracker): string[] {
  const out: string[] = [];
  t.walk((p, o) => void out.push(`${p}/${o}`));
  return out;
}

function incoming(t: Tracker, map: number): string[] {
  const out: string[] = [];
  t.walkIncoming(map, (p, o) => void out.push(`${p}/${o}`));
  return out;
}

/**
 * The Tracker port's contract, one list of cases for every tracker (radix tree, bitmap chunk list, bitmap KHO
 * array, and any new one): `it.each(trackerContract())('%s', (_, check) => check(make))`. Each case builds its
 * own tracker with `make`.
 */
export function trackerContract(): TrackerContractCase[] {
  return [
    [
      'records, finds and forgets blocks; add is idempotent; forgetting an unknown block returns false',
      (make) => {
        const { tracker, blocks } = make();
        tracker.init();
        for (const b of blocks) tracker.add(b[0], b[1]);
        for (const b of blocks) tracker.add(b[0], b[1]);
        strictEqual(tracker.stats().blocks, blocks.length);
        for (const b of blocks) ok(tracker.has(b[0], b[1]), `has ${key(b)}`);
        const [p, o] = blocks[0];
        ok(!tracker.has(p, toOrder(o + 1)), 'the same pfn at another order is another block');
        strictEqual(tracker.del(p, o), true);
        strictEqual(tracker.del(p, o), false);
        ok(!tracker.has(p, o));
        strictEqual(tracker.stats().blocks, blocks.length - 1);
      },
    ],
    [
      'walk visits every recorded block exactly once, and stops at a visitor that returns true',
      (make) => {
        const { tracker, blocks } = make();
        tracker.init();
        for (const b of blocks) tracker.add(b[0], b[1]);
        const seen = walked(tracker);
        deepStrictEqual([...seen].sort(), blocks.map(key).sort());
        let visits = 0;
        tracker.walk(() => ++visits === 2);
        strictEqual(visits, 2);
      },
    ],
    [
      'refuses a block above its maxOrder or not aligned to its order, changing nothing',
      (make) => {
        const { tracker } = make();
        tracker.init();
        throws(() => tracker.add(pfn(0), toOrder(tracker.maxOrder + 1)), KernelError);
        throws(() => tracker.add(pfn(1), toOrder(1)), KernelError);
        strictEqual(tracker.stats().blocks, 0);
      },
    ],
    [
      'an add that fails at any of its allocations leaves the tracker and the allocator as they were, and a retry succeeds',
      (make) => {
        for (let n = 1; n < 256; n++) {
          const { tracker, buddy, faults, blocks } = make();
          tracker.init();
          faults.configure({ failNth: n });
          let failedAt = -1;
          for (let i = 0; i < blocks.length && failedAt < 0; i++) {
            const free = buddy.nrFreePages;
            const before = walked(tracker);
            try {
              tracker.add(blocks[i][0], blocks[i][1]);
            } catch (e) {
              ok(e instanceof KernelError, `a KernelError, not ${String(e)}`);
              strictEqual(buddy.nrFreePages, free, `failure ${n} (adding ${key(blocks[i])}): the add kept pages`);
              deepStrictEqual(walked(tracker), before, `failure ${n}: the add changed the recorded blocks`);
              failedAt = i;
            }
          }
          faults.reset();
          if (failedAt < 0) return; // every allocation point has been failed once
          for (const b of blocks) tracker.add(b[0], b[1]);
          deepStrictEqual(walked(tracker).sort(), blocks.map(key).sort());
        }
        throw new Error('more than 255 allocation points for a handful of blocks');
      },
    ],
    [
      'serialize hands over a map the next kernel reads back as the same blocks; its pages are the ones it checksums',
      (make) => {
        const { tracker, blocks, buddy } = make();
        tracker.init();
        for (const b of blocks) tracker.add(b[0], b[1]);
        const map = tracker.serialize();
        ok(map !== 0, 'a map to hand over');
        deepStrictEqual(incoming(tracker, map).sort(), blocks.map(key).sort());
        const pfns = tracker.metadataPfns();
        deepStrictEqual(tracker.incomingMetadataPfns(map), pfns);
        for (const p of pfns) ok(!buddy.isFree(p), `metadata page ${p} is not free`);
        strictEqual(tracker.stats().metadataPages, pfns.length);
      },
    ],
    [
      'cancelSerialize gives back what serialize built',
      (make) => {
        const { tracker, blocks, buddy } = make();
        tracker.init();
        for (const b of blocks) tracker.add(b[0], b[1]);
        const free0 = buddy.nrFreePages;
        tracker.serialize();
        tracker.cancelSerialize();
        strictEqual(buddy.nrFreePages, free0);
        deepStrictEqual(walked(tracker).sort(), blocks.map(key).sort());
      },
    ],
  ];
}
