import { defineBench } from '@kho/kernel/bench';
import { KHO_BLOCK_SIZE, KhoBlockSet, entriesPerBlock } from '../src/index';
import { FakeBlockMemory } from '../src/testing';

/**
 * kho_block on its own (a bare allocator and a set standing in for KHO's tracker, so the figures are the block
 * code's): grow + reserve + write of `n` entries, then restore + read of all of them after the "kexec". The
 * same entry sizes as LUO's records: 80 bytes (sessions, 51 a block) and 64 (files, 63 a block). The cost with
 * the real KHO tracker is `luo/kho-block-entries`.
 */
function run(entrySize: number, n: number, rounds: number) {
  let writeMs = Infinity;
  let readMs = Infinity;
  let checksum = 0;
  for (let r = 0; r < rounds; r++) {
    const mem = new FakeBlockMemory(256 * 2 ** 20);
    const set = new KhoBlockSet(mem, entrySize);
    const entry = new Uint8Array(entrySize);
    let t0 = performance.now();
    set.grow(n);
    const it = set.iterator();
    for (let i = 0; i < n; i++) {
      entry[0] = i & 0xff;
      mem.ram.write(it.reserveEntry()!, entry);
    }
    writeMs = Math.min(writeMs, performance.now() - t0);
    const head = set.headPa;
    mem.handOver();
    t0 = performance.now();
    const back = new KhoBlockSet(mem, entrySize);
    back.restore(head);
    let sum = 0;
    for (const e of back.entries()) sum += mem.ram.readU8(e);
    readMs = Math.min(readMs, performance.now() - t0);
    checksum = sum;
    back.destroy();
  }
  let want = 0;
  for (let i = 0; i < n; i++) want += i & 0xff;
  if (checksum !== want) throw new Error(`kho-block bench: read back ${checksum} (wanted ${want})`);
  const blocks = Math.ceil(n / entriesPerBlock(entrySize));
  return { writeMs, readMs, blocks, bytesPerEntry: (blocks * KHO_BLOCK_SIZE) / n };
}

for (const [entrySize, label] of [
  [80, 'session'],
  [64, 'file'],
] as const) {
  defineBench({
    name: `kho-block/entries-${entrySize}b`,
    run({ quick }) {
      const n = quick ? 20_000 : 200_000;
      const r = run(entrySize, n, quick ? 2 : 5);
      return [
        { bench: `kho-block/write-${entrySize}b`, value: Math.round(n / (r.writeMs / 1000)), unit: 'entries/s', entries: n, blocks: r.blocks, ms: r.writeMs, like: `luo_${label}_ser` },
        { bench: `kho-block/read-${entrySize}b`, value: Math.round(n / (r.readMs / 1000)), unit: 'entries/s', entries: n, ms: r.readMs },
        { bench: `kho-block/bytes-per-entry-${entrySize}b`, value: r.bytesPerEntry, unit: 'bytes/entry', entrySize },
      ];
    },
  });
}
