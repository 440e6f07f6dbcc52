import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PAGE_SIZE } from '@kho/physmem';
import { readImageFile, writeImageFile } from '@kho/image';
import type { BusEventName, PreservationEvent } from '@kho/kernel';
import { DEFAULT_DEMO, runDemo, type DemoOptions } from './demo/run';
import { runCli } from './main';

const MiB = 2 ** 20;
const SMALL: DemoOptions = { ...DEFAULT_DEMO, ram: 256 * MiB, mem: 8 * MiB, seed: 3, cmdline: 'kho_scratch=24M,24M,24M' };

describe('a real live update on the machine bus', () => {
  it('publishes the boots, the kexec, and a preservation event for every block preserved and restored', () => {
    const order: string[] = [];
    const preserved: PreservationEvent[] = [];
    const unpreserved: PreservationEvent[] = [];
    const restored: PreservationEvent[] = [];
    const r = runDemo(SMALL, (bus) => {
      for (const name of ['kernel:boot', 'kernel:up', 'kexec', 'kernel:down'] as BusEventName[]) {
        (bus.on as (n: BusEventName, f: (e: { generation?: number; from?: number; to?: number }) => void) => void)(name, (e) =>
          order.push(`${name} ${e.generation ?? `${e.from}->${e.to}`}`),
        );
      }
      bus.on('kho:preserve', (e) => preserved.push(e));
      bus.on('kho:unpreserve', (e) => unpreserved.push(e));
      bus.on('kho:restore', (e) => restored.push(e));
    });
    expect(r.ok).toBe(true);
    expect(order).toEqual(['kernel:boot 1', 'kernel:up 1', 'kexec 1->2', 'kernel:down 1', 'kernel:boot 2', 'kernel:up 2']);
    // what generation 1 preserved and did not take back is exactly what the tracker held at the jump
    const held = new Map(preserved.filter((e) => e.generation === 1).map((e) => [e.phys, e]));
    for (const e of unpreserved.filter((x) => x.generation === 1)) held.delete(e.phys);
    expect(held.size).toBe(r.first.blocksPreserved);
    // every folio of the self-test: preserved by kho-test in generation 1, restored by kho-test in generation 2
    const folios = preserved.filter((e) => e.owner === 'kho-test');
    expect(folios).toHaveLength(r.first.folios);
    expect(folios.reduce((n, e) => n + PAGE_SIZE * 2 ** e.order, 0)).toBe(SMALL.mem);
    // (kho-test also takes back the pages of its folio list, through kstate)
    const back = new Set(restored.filter((e) => e.generation === 2 && e.owner === 'kho-test').map((e) => `${e.phys}:${e.order}`));
    for (const e of folios) expect(back).toContain(`${e.phys}:${e.order}`);
    expect(back.size).toBeGreaterThan(folios.length);
    // the owners the report names blocks by
    expect([...new Set([...held.values()].map((e) => e.owner))].sort()).toEqual(['kho', 'kho-test', 'kstate', 'memfd', 'reserve_mem']);
    // nothing preserved by generation 1 is left unrestored in generation 2
    expect(new Set(restored.filter((e) => e.generation === 2).map((e) => e.phys))).toEqual(new Set(held.keys()));
  });
});

describe('dead kernels are gone', () => {
  /**
   * 1,000 kexecs of the real kernel image on a small machine, in a child process with --expose-gc (jest's sandbox
   * makes each boot ten times slower): prints the heap and array buffers in use, after a forced collection, at
   * generations 101 and 1001.
   */
  const CHILD = `
    require('reflect-metadata');
    const { kernelImage, machineFor } = require(${JSON.stringify(join(__dirname, 'system.ts'))});
    const used = () => { global.gc(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
    const machine = machineFor({ ram: 32 * 2 ** 20 });
    let k = machine.boot({ image: kernelImage(), cmdline: 'kho_scratch=4M,4M,4M' });
    for (let i = 0; i < 100; i++) k = k.kexec();
    const at100 = used();
    // one synchronous run: anything a dead kernel leaves for the event loop to drop stays alive here
    for (let i = 100; i < 1000; i++) k = k.kexec();
    process.stdout.write(JSON.stringify({ generation: k.generation, at100, at1000: used() }));
  `;

  it('1,000 generations of a small machine leave host memory flat', () => {
    const root = join(__dirname, '../../..');
    const r = spawnSync(process.execPath, ['--expose-gc', '--conditions=@kho/source', '-r', require.resolve('@swc-node/register', { paths: [root] }), '-e', CHILD], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, SWC_NODE_PROJECT: join(root, 'tsconfig.base.json') },
      timeout: 120_000,
    });
    expect(r.stderr).toBe('');
    const { generation, at100, at1000 } = JSON.parse(r.stdout);
    expect(generation).toBe(1001);
    // a dead kernel kept alive holds its memmap and buddy allocator (0.15 MB here): 900 of them would be 140 MB
    expect((at1000 - at100) / MiB).toBeLessThan(16);
  }, 120_000);
});

describe('errors from constructors stay errors', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'kho-bus-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("kho=maybe in the image's command line: exit 2 with the one line of the KernelError, not a dependency-injection chain", () => {
    const image = join(dir, 'a.kho');
    const cli = (...argv: string[]) => {
      let out = '';
      let err = '';
      const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
      return { code, out, err };
    };
    expect(cli('kexec', '--ram', '256M', '--mem', '4M', '--cmdline', 'kho_scratch=24M,24M,24M', '--image', image).code).toBe(0);
    const img = readImageFile(image);
    const bad = join(dir, 'maybe.kho');
    writeImageFile(bad, { ...img, machine: { ...img.machine, cmdline: `${String(img.machine.cmdline)} kho=maybe` } });
    const r = cli('boot', '--image', bad);
    expect(r.err).toBe("kho: command line: kho='maybe' is not a boolean (wanted on/off, 1/0, y/n)\n");
    expect(r.code).toBe(2);
  });
});
