import { describeError, type Kernel } from '@kho/kernel';
import { PhysicalMemory, Slab, type PhysAddr } from '@kho/physmem';
import { KHO_GENERATIONS, Kho } from '@kho/kho-core';
import { KhoSlab } from '@kho/kho-slab';
import { KhoBlocks } from '@kho/kho-block';
import { Liveupdate, Vfs, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish, type Process } from '@kho/liveupdate';
import { MemfdFs } from '@kho/memfd';
import { DEMO_FILES, verifyDemoFiles, writeDemoFiles } from '../demo/files';
import { KHO_TEST_LOG_CMDLINE, KhoTest } from '../demo/kho-test';
import { kernelImage, machineFor } from '../system';
import { ScenarioWorkload, scenarioWorkloadModule, SeededBytes, type WorkloadCheck, type ScenarioWorkloadConfig } from '../scenario/workload';
import type { AnytimePath, PathRun } from './anytime';

/*
 * The paths the kexec-at-any-moment sweep runs (see anytime.ts): the demo's update under every KHO generation,
 * the scenario's subsystems, kmalloc objects, LUO sessions and files, a kho_block set growing. Sizes are small on
 * purpose (every moment reruns the path from a fresh machine); the code paths are the full ones.
 */

const KiB = 1024;
const MiB = 2 ** 20;
const RAM = 128 * MiB;
const SCRATCH = 'kho_scratch=16M,16M,16M';
const SEED = 16;

/** What the self-test's folios came back as; a checksum that differs is restoring wrong bytes, never a refusal. */
function checkSelfTest(next: Kernel, complete: boolean, problems: string[]): string {
  const t = next.get(KhoTest).lastRestore;
  if (!t) {
    if (complete) problems.push("the self-test's folios did not come back");
    return 'self-test absent';
  }
  if (!t.verified) problems.push(`the self-test's ${t.folios} folios came back with checksum ${t.checksumActual}, orders ${t.ordersMatch ? 'match' : 'differ'} (wanted ${t.checksumExpected})`);
  return `self-test ${t.folios} folios ${t.verified ? 'verified' : 'WRONG'}`;
}

/** The demo's update (prepare and serialize) from a kernel of generation `abi`, with the self-test and the demo files. */
function demoPath(abi: string): AnytimePath {
  const g = KHO_GENERATIONS.find((x) => x.id === abi)!;
  return {
    name: `demo kho_abi=${abi}`,
    title: `the demo's prepare and serialize (self-test folios, kstate, memfd files, reserve_mem log) writing ${g.compatible} with the ${g.tracker} tracker`,
    start(): PathRun {
      const machine = machineFor({ ram: RAM });
      const cmdline = `${KHO_TEST_LOG_CMDLINE} ${SCRATCH} kho_abi=${abi}`;
      const image = kernelImage({ mem: 256 * KiB, seed: SEED, maxOrder: 4 }, { tracker: g.tracker });
      const kernel = machine.boot({ image, cmdline });
      kernel.get(KhoTest).generate();
      writeDemoFiles(kernel, SEED);
      return {
        machine,
        kernel,
        next: { image, cmdline },
        run() {
          kernel.prepare();
          kernel.serialize();
        },
        verify(next, _p, complete) {
          const problems: string[] = [];
          const test = checkSelfTest(next, complete, problems);
          const files = verifyDemoFiles(next, SEED);
          const wrong = files.problems.filter((p) => !p.includes('ENOENT'));
          problems.push(...wrong.map((p) => `memfd ${p}`));
          if (files.files > 0 && files.files < DEMO_FILES.length) problems.push(`${files.files} of the ${DEMO_FILES.length} memfd files came back (wanted all or none)`);
          if (complete && files.files < DEMO_FILES.length) problems.push('the memfd files did not come back');
          return { found: `${test}; memfd ${files.files} files${files.files > 0 ? (wrong.length === 0 ? ' verified' : ' WRONG') : ''}`, problems };
        },
      };
    },
  };
}

/** A problem line of the workload's checks that says the bytes or fields are wrong (rather than absent). */
const WRONG_DATA = /byte \d+ is|size \d+ \(wanted|csum |tag differs|payload|id 0x|name '|mapped with blocks|the state says|at 0x[0-9a-f]+ \+\d+ \(the previous/;

/** The scenario workload's generation 1 (what the next kernel, generation 2, verifies). */
function workloadConfig(generation: number): ScenarioWorkloadConfig {
  if (generation > 1) return { generation, seed: SEED, vmalloc: [], reserveMem: [], memfd: [] };
  return {
    generation,
    seed: SEED,
    vmalloc: [
      { size: 20_000, huge: false },
      { size: 2 * MiB + 5, huge: true },
    ],
    reserveMem: [{ name: 'sweep_region', size: 64 * KiB, align: 4 * KiB }],
    kstate: { objects: 3, size: 5000 },
    memfd: [
      { name: 'sweep-dense', size: 100_000, sparse: false },
      { name: 'sweep-sparse', size: 300_000, sparse: true },
    ],
  };
}

/** The scenario's subsystems: self-test folios, vmalloc areas, kstate objects, a reserve_mem region, memfd files. */
const subsystemsPath: AnytimePath = {
  name: 'subsystems',
  title: 'the scenario workload made and handed over: folios, vmalloc (pages and huge), kstate objects, a reserve_mem region, memfd files',
  start(): PathRun {
    const machine = machineFor({ ram: RAM });
    const cmdline = `${SCRATCH} reserve_mem=64K:4K:sweep_region`;
    const image = (gen: number) => [...kernelImage({ mem: 128 * KiB, seed: SEED, maxOrder: 3 }), scenarioWorkloadModule(workloadConfig(gen))];
    const kernel = machine.boot({ image: image(1), cmdline });
    return {
      machine,
      kernel,
      next: { image: image(2), cmdline },
      run() {
        kernel.get(KhoTest).generate();
        kernel.get(ScenarioWorkload).generate();
        kernel.prepare();
        kernel.serialize();
      },
      verify(next, _p, complete) {
        const problems: string[] = [];
        const test = checkSelfTest(next, complete, problems);
        const r = next.get(ScenarioWorkload).lastRestore;
        const want = workloadConfig(1);
        const counts = { vmalloc: want.vmalloc.length, reserveMem: want.reserveMem.length, kstate: want.kstate!.objects, memfd: want.memfd.length };
        const found: string[] = [test];
        for (const key of ['vmalloc', 'reserveMem', 'kstate', 'memfd'] as const) {
          const c: WorkloadCheck | undefined = r?.[key];
          const verified = c?.verified ?? 0;
          found.push(`${key} ${verified}/${counts[key]}`);
          for (const p of c?.problems ?? []) if (WRONG_DATA.test(p)) problems.push(`${key}: ${p}`);
          if (verified > 0 && verified < counts[key]) problems.push(`${key}: ${verified} of ${counts[key]} came back (wanted all or none)`);
          if (complete && verified !== counts[key]) problems.push(`${key}: ${verified} of ${counts[key]} came back (the operation was complete)`);
        }
        return { found: found.join(', '), problems };
      },
    };
  },
};

/** The bytes kmalloc object `tag` holds. */
function objectBytes(tag: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let j = 0; j < len; j++) out[j] = (tag * 37 + j * 11 + 5) & 0xff;
  return out;
}

/** kmalloc objects preserved one by one (sharing slabs, one large kmalloc), one unpreserved again. */
const slabPath: AnytimePath = {
  name: 'slab',
  title: 'kmalloc objects preserved one by one (objects sharing slabs, a large kmalloc), one unpreserved again',
  start(): PathRun {
    const machine = machineFor({ ram: RAM });
    const image = kernelImage();
    const kernel = machine.boot({ image, cmdline: SCRATCH });
    const slab = kernel.get(Slab);
    const ram = kernel.get(PhysicalMemory);
    const objs = [32, 32, 200, 3000, 20_000, 96].map((size, tag) => {
      const ptr = slab.kmalloc(size);
      ram.write(ptr, objectBytes(tag, size));
      return { ptr, size, tag };
    });
    // the operations, in order; `done` counts those that returned
    const ops: Array<{ op: 'preserve' | 'unpreserve'; obj: number }> = [...objs.map((_, i) => ({ op: 'preserve' as const, obj: i })), { op: 'unpreserve', obj: 1 }, { op: 'preserve', obj: 1 }, { op: 'unpreserve', obj: 4 }];
    let done = 0;
    return {
      machine,
      kernel,
      next: { image, cmdline: SCRATCH },
      run() {
        const ks = kernel.get(KhoSlab);
        for (const { op, obj } of ops) {
          if (op === 'preserve') ks.preserveSlab(objs[obj].ptr);
          else ks.unpreserveSlab(objs[obj].ptr);
          done++;
        }
      },
      progress: () => done,
      verify(next, progress) {
        const completed = progress as number;
        const problems: string[] = [];
        const ks = next.get(KhoSlab);
        const nextSlab = next.get(Slab);
        const nextRam = next.get(PhysicalMemory);
        let back = 0;
        objs.forEach((o, i) => {
          // preserved for sure, not for sure, or in flight (the operation the kexec interrupted)
          let state: 'yes' | 'no' = 'no';
          for (const x of ops.slice(0, completed)) if (x.obj === i) state = x.op === 'preserve' ? 'yes' : 'no';
          const inFlight = completed < ops.length && ops[completed].obj === i;
          let ok = false;
          try {
            ks.restoreSlab(o.ptr);
            ok = true;
          } catch (e) {
            if (state === 'yes' && !inFlight) problems.push(`object ${i} (${o.size} bytes) was preserved but did not come back: ${describeError(e, { errno: true })}`);
          }
          if (!ok) return;
          back++;
          if (state === 'no' && !inFlight) problems.push(`object ${i} (${o.size} bytes) came back although it was not preserved`);
          if (Buffer.compare(nextRam.read(o.ptr, o.size), objectBytes(o.tag, o.size)) !== 0) problems.push(`object ${i} came back with other bytes`);
          nextSlab.kfree(o.ptr);
        });
        return { found: `${back} objects`, problems };
      },
    };
  },
};

/** Seeded bytes of a LUO test file. */
function fileBytes(seed: number, len: number): Uint8Array {
  return new SeededBytes(seed).next(len);
}

/** LUO: two sessions, three memfds (one with holes), one session closed again (its files unpreserved), the freeze. */
const luoPath: AnytimePath = {
  name: 'luo',
  title: 'LUO: create sessions, preserve memfds (memfd-v2), close a session (unpreserve), then the freeze and serialize',
  start(): PathRun {
    const machine = machineFor({ ram: RAM });
    const image = kernelImage();
    const cmdline = `${SCRATCH} liveupdate=on`;
    const kernel = machine.boot({ image, cmdline });
    const p = kernel.get(Vfs).spawn('vmm');
    const dev = luoOpenDevice(p);
    const fs = kernel.get(MemfdFs);
    const files = [
      { token: 1, size: 20 * KiB, holes: false },
      { token: 2, size: 200 * KiB, holes: true },
      { token: 3, size: 8 * KiB, holes: false },
    ].map((f) => {
      const fd = fs.memfdCreate(p, `file-${f.token}`);
      p.ftruncate(fd, f.size);
      // with holes: only the second half is written (preservation fills the holes with zero pages)
      const from = f.holes ? f.size / 2 : 0;
      p.pwrite(fd, from, fileBytes(f.token, f.size - from));
      return { ...f, fd, from };
    });
    let frozen = false;
    return {
      machine,
      kernel,
      next: { image, cmdline },
      run() {
        const s1 = luoCreateSession(p, dev, 's1');
        luoPreserveFd(p, s1, files[0].fd, files[0].token);
        luoPreserveFd(p, s1, files[1].fd, files[1].token);
        const s2 = luoCreateSession(p, dev, 's2');
        luoPreserveFd(p, s2, files[2].fd, files[2].token);
        p.close(s2); // an outgoing session's close unpreserves its files
        kernel.prepare();
        kernel.serialize();
      },
      progress: () => (frozen = kernel.get(Liveupdate).status().frozen),
      verify(next, _p, complete) {
        const problems: string[] = [];
        const q: Process = next.get(Vfs).spawn('vmm');
        const ndev = luoOpenDevice(q);
        const sessions = next.get(Liveupdate).status().incoming.map((s) => s.name);
        const want = frozen || complete;
        if (want ? sessions.join() !== 's1' : sessions.length > 0) problems.push(`incoming sessions [${sessions.join(', ')}] (wanted ${want ? '[s1]: LUO had frozen' : 'none: LUO had not frozen'})`);
        let back = 0;
        if (sessions.includes('s1')) {
          const s = luoRetrieveSession(q, ndev, 's1');
          for (const f of files.slice(0, 2)) {
            try {
              const fd = luoRetrieveFd(q, s, f.token);
              const got = q.pread(fd, 0, q.fsize(fd));
              const expect = new Uint8Array(f.size);
              expect.set(fileBytes(f.token, f.size - f.from), f.from);
              if (got.length !== f.size || Buffer.compare(got, expect) !== 0) problems.push(`memfd token ${f.token} came back with other bytes (${got.length} bytes, wanted ${f.size})`);
              back++;
              q.close(fd);
            } catch (e) {
              problems.push(`memfd token ${f.token}: ${describeError(e, { errno: true })}`);
            }
          }
          luoSessionFinish(q, s);
        }
        if (sessions.includes('s2')) problems.push("session 's2' came back although it was closed (its files unpreserved)");
        q.exit();
        return { found: `${sessions.length} sessions, ${back} memfds`, problems };
      },
    };
  },
};

/** The kho_block path's record: the set's head and how many entries were committed. */
const BLOCKS_SUBTREE = 'sweep-kho-block';
const ENTRY = 64;
const entryValue = (i: number): number => 0x5eed_0000 + i;

/**
 * A kho_block set growing in rounds (70, then 200 entries: 2 then 4 blocks) and shrinking to two full blocks. Its
 * owner hands it over the way LUO does: the head and entry count in a record of its own (its own subtree), set to
 * 0 while the set changes and written again after each round. Upstream's format cannot do better: grow links an
 * empty block before its first entry, and shrink frees the last block before it ends the chain, so a chain
 * published during a change is refused by the next kernel (count 0, or a block nobody preserved).
 */
const khoBlockPath: AnytimePath = {
  name: 'kho_block',
  title: 'a kho_block set of 64-byte entries growing (2, then 4 blocks) and shrinking (2), handed over between rounds',
  start(): PathRun {
    const machine = machineFor({ ram: RAM });
    const image = kernelImage();
    const kernel = machine.boot({ image, cmdline: SCRATCH });
    const kho = kernel.get(Kho);
    const ram = kernel.get(PhysicalMemory);
    const rec = kho.allocPreserve(16);
    kho.addSubtree(BLOCKS_SUBTREE, rec, 16);
    let committed = 0;
    return {
      machine,
      kernel,
      next: { image, cmdline: SCRATCH },
      run() {
        const set = kernel.get(KhoBlocks).createSet(ENTRY, 'sweep');
        let it: ReturnType<typeof set.iterator> | undefined;
        let written = 0;
        const commit = (n: number): void => {
          ram.writeU64(rec, set.headPa);
          ram.writeU64(rec + 8, n);
        };
        for (const n of [70, 200]) {
          commit(0); // withdrawn while it changes
          set.grow(n);
          it ??= set.iterator(); // an iterator starts at the first block: make it once there is one
          for (; written < n; written++) ram.writeU64(it.reserveEntry()!, entryValue(written));
          commit(n);
        }
        commit(0);
        set.shrink(2 * set.perBlock);
        commit(2 * set.perBlock);
      },
      progress: () => (committed = ram.readU64(rec + 8)),
      verify(next, _p, complete) {
        const problems: string[] = [];
        const nkho = next.get(Kho);
        const nram = next.get(PhysicalMemory);
        let phys: PhysAddr;
        try {
          phys = nkho.retrieveSubtree(BLOCKS_SUBTREE).phys;
        } catch (e) {
          problems.push(`the record did not come back: ${describeError(e, { errno: true })}`);
          return { found: 'no record', problems };
        }
        const count = nram.readU64(phys + 8);
        const head = count > 0 ? nram.readU64(phys) : 0;
        if (count !== committed) problems.push(`the record says ${count} entries (the owner had committed ${committed})`);
        const set = next.get(KhoBlocks).createSet(ENTRY, 'sweep');
        let entries = 0;
        try {
          set.restore(head);
          for (const e of set.entries()) {
            if (nram.readU64(e) !== entryValue(entries)) problems.push(`entry ${entries} holds ${nram.readU64(e)} (wanted ${entryValue(entries)})`);
            entries++;
          }
          if (entries !== count) problems.push(`the set holds ${entries} entries (${count} were committed)`);
          set.destroy();
        } catch (e) {
          problems.push(`the set was refused: ${describeError(e, { errno: true })}`);
        }
        nkho.restoreFree(phys);
        if (complete && entries !== 2 * set.perBlock) problems.push(`${entries} entries came back (wanted ${2 * set.perBlock})`);
        return { found: `${entries} entries (${count} committed)`, problems };
      },
    };
  },
};

/** Every path of the sweep, in report order: the demo under each KHO generation, then the subsystems. */
export const ANYTIME_PATHS: readonly AnytimePath[] = [...KHO_GENERATIONS.map((g) => demoPath(g.id)), subsystemsPath, slabPath, luoPath, khoBlockPath];

/** The path named `name`, or undefined. */
export function anytimePath(name: string): AnytimePath | undefined {
  return ANYTIME_PATHS.find((p) => p.name === name);
}

