import type { Kernel } from '@kho/kernel';
import { defineBench } from '@kho/kernel/bench';
import { PAGE_SIZE, PhysicalMemory, createMachine, physmemModule } from '@kho/physmem';
import { khoModule } from '@kho/kho-core';
import { KhoBlocks, KHO_BLOCK_SIZE, entriesPerBlock } from '@kho/kho-block';
// Benchmarks, like tests, boot whole KHO kernels: memblock and radix-tracker are devDependencies of this package.
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { Vfs, liveupdateModule, luoCreateSession, luoOpenDevice, luoRetrieveSession, luoSessionFinish } from '../src/index';

const image = () => [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), liveupdateModule()];

function round(v: number): number {
  return +v.toFixed(3);
}

/**
 * kho_block with the real KHO behind it (each block a kho.allocPreserve'd page in the radix tracker): grow +
 * reserve + write of n 64-byte entries (LUO's file records), the kexec, then restore + read + destroy in the next
 * kernel. `kho-block/...` measures the block code alone.
 */
defineBench({
  name: 'luo/kho-block-entries',
  run({ quick }) {
    const n = quick ? 20_000 : 200_000;
    let best = { write: Infinity, read: Infinity };
    for (let r = 0; r < (quick ? 2 : 4); r++) {
      const m = createMachine({ mem: '1G' });
      let k: Kernel = m.boot({ image: image() });
      const set = k.get(KhoBlocks).createSet(64, 'bench');
      const entry = new Uint8Array(64);
      let t0 = performance.now();
      set.grow(n);
      const it = set.iterator();
      const ram = k.get(PhysicalMemory);
      for (let i = 0; i < n; i++) {
        entry[0] = i & 0xff;
        ram.write(it.reserveEntry()!, entry);
      }
      const write = performance.now() - t0;
      const head = set.headPa;
      k = k.kexec();
      const ram2 = k.get(PhysicalMemory);
      t0 = performance.now();
      const back = k.get(KhoBlocks).createSet(64, 'bench');
      back.restore(head);
      let sum = 0;
      for (const e of back.entries()) sum += ram2.readU8(e);
      back.destroy();
      const read = performance.now() - t0;
      let want = 0;
      for (let i = 0; i < n; i++) want += i & 0xff;
      if (sum !== want) throw new Error(`luo/kho-block-entries: read back ${sum} (wanted ${want})`);
      best = { write: Math.min(best.write, write), read: Math.min(best.read, read) };
    }
    const blocks = Math.ceil(n / entriesPerBlock(64));
    return [
      { bench: 'luo/kho-block-write', value: Math.round(n / (best.write / 1000)), unit: 'entries/s', entries: n, entrySize: 64, blocks, ms: round(best.write) },
      { bench: 'luo/kho-block-read', value: Math.round(n / (best.read / 1000)), unit: 'entries/s', entries: n, entrySize: 64, ms: round(best.read), bytesPerEntry: round((blocks * KHO_BLOCK_SIZE) / n) },
    ];
  },
});

/** CREATE_SESSION, then (after the kexec) RETRIEVE_SESSION + FINISH, per session: the session records are kho_block entries. */
defineBench({
  name: 'luo/sessions',
  run({ quick }) {
    const n = quick ? 500 : 2000;
    let best = { create: Infinity, retrieve: Infinity };
    for (let r = 0; r < (quick ? 2 : 3); r++) {
      const m = createMachine({ mem: '512M' });
      let k: Kernel = m.boot({ image: image(), cmdline: 'liveupdate=on' });
      const p = k.get(Vfs).spawn('bench');
      const dev = luoOpenDevice(p);
      let t0 = performance.now();
      for (let i = 0; i < n; i++) luoCreateSession(p, dev, `s${i}`);
      const create = performance.now() - t0;
      k = k.liveUpdate();
      const q = k.get(Vfs).spawn('bench');
      t0 = performance.now();
      const d2 = luoOpenDevice(q);
      for (let i = 0; i < n; i++) luoSessionFinish(q, luoRetrieveSession(q, d2, `s${i}`));
      const retrieve = performance.now() - t0;
      best = { create: Math.min(best.create, create), retrieve: Math.min(best.retrieve, retrieve) };
    }
    return [
      { bench: 'luo/create-session', value: round((best.create * 1000) / n), unit: 'us/session', sessions: n, blocks: Math.ceil(n / 51), blockBytes: Math.ceil(n / 51) * PAGE_SIZE },
      { bench: 'luo/retrieve-finish-session', value: round((best.retrieve * 1000) / n), unit: 'us/session', sessions: n },
    ];
  },
});
