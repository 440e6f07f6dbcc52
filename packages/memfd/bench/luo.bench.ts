import type { Kernel } from '@kho/kernel';
import { defineBench } from '@kho/kernel/bench';
import { PAGE_SIZE, createMachine, physmemModule } from '@kho/physmem';
import { khoModule } from '@kho/kho-core';
// Benchmarks, like tests, boot whole KHO kernels: memblock and radix-tracker are devDependencies of this package.
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { vmallocModule } from '@kho/vmalloc';
import { Vfs, liveupdateModule, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish } from '@kho/liveupdate';
import { MemfdFs, memfdLuoModule } from '../src/index';

const GiB = 2 ** 30;
const image = () => [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), vmallocModule(), liveupdateModule(), memfdLuoModule()];

function round(v: number): number {
  return +v.toFixed(3);
}

/**
 * Preserve and retrieve cost of memfds through LUO. Per file: `files` one-page memfds preserved (PRESERVE_FD, each
 * allocating its record, pinning, preserving its folio and its folio array) in one session, then, after the kexec,
 * retrieved (RETRIEVE_FD: the array restored, the folio restored and put in a new page cache). Per GiB: one memfd
 * of 2 MiB folios (only their first page written: the cost is per folio, not per byte).
 */
function perFile(files: number): { preserveUs: number; retrieveUs: number } {
  const m = createMachine({ mem: '1G' });
  let k: Kernel = m.boot({ image: image(), cmdline: 'liveupdate=on' });
  const fs = k.get(MemfdFs);
  const p = k.get(Vfs).spawn('bench');
  const fds = Array.from({ length: files }, (_, i) => {
    const fd = fs.memfdCreate(p, `f${i}`);
    p.pwrite(fd, 0, new Uint8Array([i & 0xff]));
    return fd;
  });
  const s = luoCreateSession(p, luoOpenDevice(p), 'bench');
  let t0 = performance.now();
  fds.forEach((fd, i) => luoPreserveFd(p, s, fd, i));
  const preserveUs = ((performance.now() - t0) * 1000) / files;
  k = k.liveUpdate();
  const q = k.get(Vfs).spawn('bench');
  const s2 = luoRetrieveSession(q, luoOpenDevice(q), 'bench');
  t0 = performance.now();
  for (let i = 0; i < files; i++) luoRetrieveFd(q, s2, i);
  const retrieveUs = ((performance.now() - t0) * 1000) / files;
  for (let i = 0; i < files; i += 97) if (q.pread(luoRetrieveFd(q, s2, i), 0, 1)[0] !== (i & 0xff)) throw new Error(`luo bench: file ${i} came back different`);
  luoSessionFinish(q, s2);
  return { preserveUs, retrieveUs };
}

function perGib(bytes: number): { preserveMs: number; retrieveMs: number; folios: number } {
  const m = createMachine({ mem: `${Math.ceil(bytes / GiB) + 2}G` });
  let k: Kernel = m.boot({ image: image(), cmdline: 'liveupdate=on transparent_hugepage_shmem=always' });
  const p = k.get(Vfs).spawn('bench');
  const fd = k.get(MemfdFs).memfdCreate(p, 'guest');
  p.ftruncate(fd, bytes);
  const map = p.mmap(fd);
  for (let i = 0; i < bytes / PAGE_SIZE; i += 512) map.page(i)[0] = (i / 512) & 0xff;
  map.unmap();
  const s = luoCreateSession(p, luoOpenDevice(p), 'vm');
  let t0 = performance.now();
  luoPreserveFd(p, s, fd, 1);
  const preserveMs = performance.now() - t0;
  k = k.liveUpdate();
  const q = k.get(Vfs).spawn('bench');
  const s2 = luoRetrieveSession(q, luoOpenDevice(q), 'vm');
  t0 = performance.now();
  const back = luoRetrieveFd(q, s2, 1);
  const retrieveMs = performance.now() - t0;
  if (q.pread(back, 2 ** 21, 1)[0] !== 1) throw new Error('luo bench: the second folio came back different');
  const f = q.fget(back);
  const folios = k.get(MemfdFs).inodeOf(f).folios.size;
  f.put();
  luoSessionFinish(q, s2);
  return { preserveMs, retrieveMs, folios };
}

defineBench({
  name: 'luo/memfd-per-file',
  run({ quick }) {
    const files = quick ? 200 : 1000;
    const best = Array.from({ length: quick ? 2 : 3 }, () => perFile(files)).reduce((a, b) => ({ preserveUs: Math.min(a.preserveUs, b.preserveUs), retrieveUs: Math.min(a.retrieveUs, b.retrieveUs) }));
    return [
      { bench: 'luo/preserve-per-file', value: round(best.preserveUs), unit: 'us/file', files, fileBytes: PAGE_SIZE },
      { bench: 'luo/retrieve-per-file', value: round(best.retrieveUs), unit: 'us/file', files, fileBytes: PAGE_SIZE },
    ];
  },
});

defineBench({
  name: 'luo/memfd-per-gib',
  run({ quick }) {
    const bytes = quick ? GiB / 4 : 2 * GiB;
    const r = perGib(bytes);
    const gib = bytes / GiB;
    return [
      { bench: 'luo/preserve-per-gib', value: round(r.preserveMs / gib), unit: 'ms/GiB', memfdBytes: bytes, folios: r.folios, folioOrder: 9 },
      { bench: 'luo/retrieve-per-gib', value: round(r.retrieveMs / gib), unit: 'ms/GiB', memfdBytes: bytes, folios: r.folios, folioOrder: 9 },
    ];
  },
});
