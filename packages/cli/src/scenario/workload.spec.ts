import fc from 'fast-check';
import { KernelError } from '@kho/kernel';
import type { DependencyContainer } from 'tsyringe';
import { BuddyAllocator, FaultInjector, PhysicalMemory } from '@kho/physmem';
import { KState } from '@kho/kstate';
import { ReserveMem } from '@kho/memblock';
import { Memfd } from '@kho/memfd';
import { Vmalloc } from '@kho/vmalloc';
import { kernelImage, machineFor } from '../system';
import { parseScenario, type Scenario } from './schema';
import { cmdlineOf, runScenario } from './run';
import { SeededBytes, ScenarioWorkload, scenarioWorkloadModule } from './workload';
import { inKernel } from './in-kernel';

const MiB = 2 ** 20;

/** parseScenario's whole message for a bad scenario (the test compares it exactly). */
function refusal(text: string): string {
  try {
    parseScenario(text, 'bad.yaml');
  } catch (e) {
    if (e instanceof KernelError) return e.message;
    throw e;
  }
  throw new Error('the scenario was accepted');
}

const gen = (preserve: string, more = ''): string => `${more}generations:\n  - preserve: ${preserve}`;

describe('scenario schema: the workloads', () => {
  it.each([
    // vmalloc
    [gen('{ vmalloc: [{ size: 0 }] }'), 'generations[0].preserve.vmalloc[0].size: must be above 0'],
    [gen('{ vmalloc: [{ size: 4M, huge: yes }] }'), 'generations[0].preserve.vmalloc[0].huge: Invalid input: expected boolean, received string'],
    [gen('{ vmalloc: [{ size: 4M, order: 3 }] }'), 'generations[0].preserve.vmalloc[0]: Unrecognized key: "order"'],
    [gen('{ vmalloc: [{ size: 4Q }] }'), "generations[0].preserve.vmalloc[0].size: '4Q' is not a size (wanted bytes, or a number with a K, M, G or T suffix)"],
    [gen('{ vmalloc: { size: 4M } }'), 'generations[0].preserve.vmalloc: Invalid input: expected array, received object'],
    // reserveMem
    [gen('{ reserveMem: [{ name: "my log", size: 1M }] }'), 'generations[0].preserve.reserveMem[0].name: must be 1..15 characters of [A-Za-z0-9_.,+-]'],
    [gen('{ reserveMem: [{ name: a_very_long_name_x, size: 1M }] }'), 'generations[0].preserve.reserveMem[0].name: must be 1..15 characters of [A-Za-z0-9_.,+-]'],
    [gen('{ reserveMem: [{ name: kho_test_log, size: 1M }] }'), "generations[0].preserve.reserveMem[0].name: 'kho_test_log' is the self-test's log region"],
    [gen('{ reserveMem: [{ name: log, size: 5000 }] }'), 'generations[0].preserve.reserveMem[0].size: must be a multiple of the page size (4096)'],
    [gen('{ reserveMem: [{ name: log, size: 0 }] }'), 'generations[0].preserve.reserveMem[0].size: must be above 0'],
    [gen('{ reserveMem: [{ name: log, size: 1M, align: 3K }] }'), 'generations[0].preserve.reserveMem[0].align: must be a power of two from 4096 to 1G'],
    [gen('{ reserveMem: [{ name: log }] }'), 'generations[0].preserve.reserveMem[0].size: Invalid input'],
    [gen('{ reserveMem: [{ name: log, size: 1M }, { name: log, size: 1M }] }'), "generations[0].preserve.reserveMem[1].name: region 'log' is listed twice"],
    [
      'generations:\n  - preserve: { reserveMem: [{ name: log, size: 1M }] }\n  - preserve: { reserveMem: [{ name: log, size: 2M }] }',
      "generations[1].preserve.reserveMem[0].size: region 'log' has size 1048576 at generations[0].preserve.reserveMem[0] (a region keeps its size and alignment for the whole chain)",
    ],
    [
      'generations:\n  - preserve: { reserveMem: [{ name: log, size: 1M }] }\n  - preserve: { reserveMem: [{ name: log, size: 1M, align: 1M }] }',
      "generations[1].preserve.reserveMem[0].align: region 'log' has align 4096 at generations[0].preserve.reserveMem[0] (a region keeps its size and alignment for the whole chain)",
    ],
    [
      gen('{ reserveMem: [{ name: log, size: 1M }] }', 'cmdline: reserve_mem=1M:4K:log\n'),
      "generations[0].preserve.reserveMem[0].name: region 'log' is also asked for by a reserve_mem= of a command line (declare it in one place)",
    ],
    [
      `cmdline: reserve_mem=4K:4K:a reserve_mem=4K:4K:b\ngenerations:\n  - preserve: { reserveMem: [${[1, 2, 3, 4, 5, 6].map((i) => `{ name: r${i}, size: 4K }`).join(', ')}] }\n  - preserve: { reserveMem: [{ name: r7, size: 4K }] }`,
      'generations[1].preserve.reserveMem[0].name: one region too many: a kernel takes at most 8 reserve_mem regions, those of its command line included (a declared region stays on every later command line)',
    ],
    // kstate
    [gen('{ kstate: { objects: 0 } }'), 'generations[0].preserve.kstate.objects: Too small: expected number to be >=1'],
    [gen('{ kstate: { objects: 100001 } }'), 'generations[0].preserve.kstate.objects: Too big: expected number to be <=100000'],
    [gen('{ kstate: { objects: 2, size: 5M } }'), 'generations[0].preserve.kstate.size: must be at most 4194304 (one folio of order 10)'],
    [gen('{ kstate: { size: 4K } }'), 'generations[0].preserve.kstate.objects: Invalid input: expected number, received undefined'],
    [gen('{ kstate: { objects: 2, fields: 3 } }'), 'generations[0].preserve.kstate: Unrecognized key: "fields"'],
    // memfd
    [gen('{ memfd: [{ name: a/b, size: 4K }] }'), "generations[0].preserve.memfd[0].name: must be 1..63 bytes of UTF-8 without '/' or NUL"],
    [gen('{ memfd: [{ name: "", size: 4K }] }'), "generations[0].preserve.memfd[0].name: must be 1..63 bytes of UTF-8 without '/' or NUL"],
    [gen('{ memfd: [{ name: f, size: 2G }] }'), 'generations[0].preserve.memfd[0].size: must be at most 1073741824 (1G)'],
    [gen('{ memfd: [{ name: f, size: 0 }] }'), 'generations[0].preserve.memfd[0].size: must be above 0'],
    [gen('{ memfd: [{ name: f, size: 4K, sparse: 1 }] }'), 'generations[0].preserve.memfd[0].sparse: Invalid input: expected boolean, received number'],
    [gen('{ memfd: [{ name: f, size: 4K }, { name: g, size: 4K }, { name: f, size: 8K }] }'), "generations[0].preserve.memfd[2].name: file 'f' is listed twice"],
  ])('%s is refused: %s', (text, message) => {
    expect(refusal(text)).toBe(`EINVAL: scenario bad.yaml: ${message}`);
  });

  it('applies the workloads’ defaults and keeps paths of repeated generations as the file has them', () => {
    const s = parseScenario(
      gen('{ vmalloc: [{ size: 5000 }], reserveMem: [{ name: log, size: 8K }], kstate: { objects: 3 }, memfd: [{ name: f, size: 1M }] }\n    repeat: 2'),
      'x.yaml',
    );
    const preserve = { vmalloc: [{ size: 5000, huge: false }], reserveMem: [{ name: 'log', size: 8192, align: 4096 }], kstate: { objects: 3, size: 0 }, memfd: [{ name: 'f', size: MiB, sparse: false }] };
    expect(s.generations).toEqual([{ preserve }, { preserve }]);
    expect(refusal('generations:\n  - preserve: {}\n    repeat: 3\n  - preserve: { memfd: [{ name: f, size: 0 }] }')).toBe(
      'EINVAL: scenario bad.yaml: generations[1].preserve.memfd[0].size: must be above 0',
    );
  });

  it('a region, once declared, stays on the command line of every later kernel', () => {
    const s = parseScenario(
      'cmdline: kho_scratch=16M\ngenerations:\n  - preserve: {}\n  - preserve: { reserveMem: [{ name: log, size: 64K, align: 64K }] }\n    cmdline: kho=on\n  - preserve: { reserveMem: [{ name: trace, size: 1M }] }\n  - preserve: {}',
      'x.yaml',
    );
    expect([1, 2, 3, 4, 5].map((g) => cmdlineOf(s, g))).toEqual([
      'kho_scratch=16M',
      'kho_scratch=16M reserve_mem=64K:64K:log',
      'kho=on reserve_mem=64K:64K:log reserve_mem=1M:4K:trace',
      'kho_scratch=16M reserve_mem=64K:64K:log reserve_mem=1M:4K:trace',
      'kho_scratch=16M reserve_mem=64K:64K:log reserve_mem=1M:4K:trace',
    ]);
  });
});

describe('seeded bytes', () => {
  it('the same seed gives the same bytes however the stream is cut', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 12 }), (seed, cuts) => {
        const total = cuts.reduce((a, b) => a + b, 0);
        const whole = new SeededBytes(seed).next(total);
        const s = new SeededBytes(seed);
        const parts = Buffer.concat(cuts.map((n) => s.next(n)));
        expect(Buffer.compare(parts, whole)).toBe(0);
      }),
    );
    expect(Buffer.compare(new SeededBytes(1).next(64), new SeededBytes(2).next(64))).not.toBe(0);
  });
});

const SMALL = 'machine: { ram: 256M, nodes: 2 }\ncmdline: kho_scratch=16M,16M,16M\n';

function scenario(body: string): Scenario {
  return parseScenario(`${SMALL}${body}`, 'x.yaml');
}

/** Every plugin of a scenario kernel: a test plugin that runs after them all. */
/** The byte at `addr` of RAM flipped; returns the old and new values as the error messages write them. */
function flip(read: () => number, write: (b: number) => void): { was: string; now: string } {
  const b = read();
  write(b ^ 0xa5);
  const h = (x: number): string => `0x${x.toString(16).padStart(2, '0')}`;
  return { was: h(b), now: h(b ^ 0xa5) };
}

describe('each workload across live updates', () => {
  it('vmalloc areas, huge and not, come back byte for byte in the next kernel and are freed', () => {
    const r = runScenario(scenario('generations:\n  - preserve: { vmalloc: [{ size: 5000 }, { size: 3M, huge: true }, { size: 64K }] }\n  - preserve: { vmalloc: [{ size: 4K }] }'));
    expect(r.errors).toEqual([]);
    expect(r.generations.map((g) => g.preserved.vmalloc)).toEqual([
      { areas: 3, bytes: 5000 + 3 * MiB + 65536 },
      { areas: 1, bytes: 4096 },
    ]);
    expect(r.generations.map((g) => g.verifiedByNext?.vmalloc)).toEqual([
      { areas: 3, bytes: 5000 + 3 * MiB + 65536, verified: true },
      { areas: 1, bytes: 4096, verified: true },
    ]);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });

  it('reserve_mem regions come back at the same address; a region not filled again is carried over and verified by every later kernel', () => {
    const s = scenario(
      'generations:\n  - preserve: { reserveMem: [{ name: log, size: 256K, align: 64K }, { name: trace, size: 1M, align: 1M }] }\n  - preserve: {}\n  - preserve: { reserveMem: [{ name: log, size: 256K, align: 64K }] }\n  - preserve: {}',
    );
    const starts: number[][] = [];
    const r = runScenario(s, { modules: inKernel('bootLate', (c) => starts.push(c.resolve(ReserveMem).regions.map((x) => x.start))) });
    expect(r.errors).toEqual([]);
    expect(r.generations.map((g) => [g.preserved.reserveMem.regions, g.preserved.reserveMem.carried])).toEqual([
      [2, 0],
      [2, 2],
      [2, 1],
      [2, 2],
    ]);
    expect(r.generations.map((g) => g.verifiedByNext?.reserveMem)).toEqual(Array(4).fill({ regions: 2, bytes: 256 * 1024 + MiB, verified: true }));
    expect(new Set(starts.map((x) => x.join()))).toHaveProperty('size', 1); // the same addresses in every kernel
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });

  it('kstate objects are restored by key and compared field by field, with the counts of kstate’s reports', () => {
    const r = runScenario(scenario('generations:\n  - preserve: { kstate: { objects: 40, size: 5000 } }\n  - preserve: { kstate: { objects: 7 } }'));
    expect(r.errors).toEqual([]);
    expect(r.generations.map((g) => g.preserved.kstate)).toEqual([
      { objects: 40, bytes: 200_000 },
      { objects: 7, bytes: 0 },
    ]);
    expect(r.generations.map((g) => g.verifiedByNext?.kstate)).toEqual([
      { objects: 40, fieldsRestored: 240, fieldsDefaulted: 0, verified: true },
      { objects: 7, fieldsRestored: 42, fieldsDefaulted: 0, verified: true },
    ]);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });

  it('memfd files, dense and sparse, come back with every byte and hole, and are unlinked', () => {
    let names: string[] = [];
    const r = runScenario(
      scenario('generations:\n  - preserve: { memfd: [{ name: dense, size: 1000001 }, { name: holes, size: 300K, sparse: true }] }\n  - preserve: { memfd: [{ name: dense, size: 4K, sparse: true }] }'),
      { modules: inKernel('serialize', (c) => (names = c.resolve(Memfd).list().map((f) => f.name))) },
    );
    expect(r.errors).toEqual([]);
    expect(names).toEqual(['dense']); // generation 2 unlinked what it verified, then made its own
    expect(r.generations.map((g) => g.verifiedByNext?.memfd)).toEqual([
      { files: 2, bytes: 1000001 + 300 * 1024, verified: true },
      { files: 1, bytes: 4096, verified: true },
    ]);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });
});

describe('a workload that does not verify is reported', () => {
  const tamper = (body: string, atJump: (c: DependencyContainer, g: number) => void) => runScenario(scenario(`generations:\n  - preserve: ${body}`), { modules: inKernel('serialize', atJump) });

  it('vmalloc: a byte changed before the jump', () => {
    let f = { was: '', now: '' };
    const r = tamper('{ vmalloc: [{ size: 8K }, { size: 2M, huge: true }] }', (k) => {
      const vm = k.resolve(Vmalloc);
      const addr = k.resolve(ScenarioWorkload).outgoing.vmalloc[1];
      f = flip(() => vm.readU8(addr + 12345), (b) => vm.write(addr + 12345, Uint8Array.of(b)));
    });
    expect(r.ok).toBe(false);
    expect(r.errors).toEqual([`generation 2 could not verify generation 1's vmalloc area 1 (2.00 MiB, huge): byte 12345 is ${f.now} (wanted ${f.was})`]);
    expect(r.generations[0].verifiedByNext?.vmalloc).toEqual({ areas: 1, bytes: 8192 + 2 * MiB, verified: false });
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot); // what did not verify is freed all the same
  });

  it('reserve_mem: a byte of the region changed before the jump, two kexecs after it was written', () => {
    let f = { was: '', now: '' };
    const r = runScenario(scenario('generations:\n  - preserve: { reserveMem: [{ name: log, size: 64K }] }\n  - preserve: {}\n  - preserve: {}'), {
      modules: inKernel('serialize', (k, g) => {
        if (g !== 3) return;
        const ram = k.resolve(PhysicalMemory);
        const start = k.resolve(ReserveMem).find('log').start;
        f = flip(() => ram.readU8(start + 4097), (b) => ram.write(start + 4097, Uint8Array.of(b)));
      }),
    });
    expect(r.errors).toEqual([`generation 4 could not verify generation 3's reserve_mem region 'log' (written by generation 1): byte 4097 is ${f.now} (wanted ${f.was})`]);
    expect(r.generations.map((g) => g.verifiedByNext?.reserveMem.verified)).toEqual([true, true, false]);
  });

  it('kstate: a payload byte changed before the jump', () => {
    let f = { was: '', now: '' };
    const r = tamper('{ kstate: { objects: 5, size: 100 } }', (k) => {
      const ram = k.resolve(PhysicalMemory);
      const p = k.resolve(ScenarioWorkload).outgoing.objects[3].payload!;
      f = flip(() => ram.readU8(p.phys + 99), (b) => ram.write(p.phys + 99, Uint8Array.of(b)));
    });
    expect(r.errors).toEqual([`generation 2 could not verify generation 1's kstate object 3: payload byte 99 is ${f.now} (wanted ${f.was})`]);
    expect(r.generations[0].verifiedByNext?.kstate).toEqual({ objects: 4, fieldsRestored: 30, fieldsDefaulted: 0, verified: false });
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });

  it('memfd: a byte of a sparse file changed before the jump', () => {
    let f = { was: '', now: '' };
    let offset = -1;
    const r = tamper('{ memfd: [{ name: holes, size: 256K, sparse: true }] }', (k) => {
      const ram = k.resolve(PhysicalMemory);
      const [file] = k.resolve(Memfd).preservedFiles();
      const { folio } = file.folios[0];
      offset = file.folios[0].offset;
      f = flip(() => ram.readU8(folio.phys + 10), (b) => ram.write(folio.phys + 10, Uint8Array.of(b)));
    });
    expect(offset).toBe(65536); // a sparse file's first data is its second 64 KiB
    expect(r.errors).toEqual([`generation 2 could not verify generation 1's memfd file 'holes' (sparse): byte 65546 is ${f.now} (wanted ${f.was})`]);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });

  it('a next kernel booted with kho=off fails every workload', () => {
    const s = scenario(
      'generations:\n  - preserve: { vmalloc: [{ size: 1M }], reserveMem: [{ name: log, size: 64K }], kstate: { objects: 4, size: 4K }, memfd: [{ name: f, size: 8K }, { name: g, size: 8K }] }\n    cmdline: kho=off',
    );
    const r = runScenario(s);
    expect(r.ok).toBe(false);
    expect(r.errors).toEqual([
      'generation 2 did not boot from the handover: KHO disabled',
      "generation 2 could not verify generation 1's 1 vmalloc areas: no workload state came back",
      "generation 2 could not verify generation 1's 1 reserve_mem regions: no workload state came back",
      "generation 2 could not verify generation 1's 4 kstate objects: no workload state came back",
      "generation 2 could not verify generation 1's 2 memfd files: no workload state came back",
    ]);
    expect(r.generations[0].verifiedByNext).toEqual({
      vmalloc: { areas: 0, bytes: 0, verified: false },
      reserveMem: { regions: 0, bytes: 0, verified: false },
      kstate: { objects: 0, fieldsRestored: 0, fieldsDefaulted: 0, verified: false },
      memfd: { files: 0, bytes: 0, verified: false },
      guests: { guests: 0, folios: 0, bytes: 0, stamps: 0, verified: true }, // none were handed over
    });
    // a kho=off kernel reserves nothing it was handed: its free pages are a cold kho=off boot's
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });
});

describe('the free-page baseline', () => {
  const ALL =
    'generations:\n  - preserve: { folios: { total: 4M }, vmalloc: [{ size: 2M, huge: true }, { size: 9000 }], reserveMem: [{ name: log, size: 128K }], kstate: { objects: 20, size: 10K }, memfd: [{ name: f, size: 1M, sparse: true }] }\n  - preserve: { vmalloc: [{ size: 64K }], kstate: { objects: 3, size: 1 }, memfd: [{ name: f, size: 12K }] }\n  - preserve: { reserveMem: [{ name: trace, size: 64K }] }';

  it('holds at every generation when every workload is restored and freed', () => {
    const made: number[] = [];
    // every generation that prepares an update is heard on the bus
    const r = runScenario(scenario(ALL), { observe: (bus) => bus.on('phase:start', (e) => e.phase === 'prepare' && made.push(e.generation)) });
    // runScenario compares every kernel's free pages after finish with a cold boot of its command line
    expect(r.errors).toEqual([]);
    expect(made).toEqual([1, 2, 3]);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });

  it('catches a page the next kernel keeps', () => {
    const keep = (k: DependencyContainer): void => {
      const m = k.resolve(Memfd);
      const fd = m.create('kept');
      m.write(fd, 0, Uint8Array.of(1)); // one page that nobody frees
      m.close(fd);
    };
    const r = runScenario(scenario(ALL), { modules: inKernel('bootLate', (k, g) => g === 2 && keep(k)) });
    expect(r.ok).toBe(false);
    expect(r.errors).toEqual([expect.stringMatching(/^generation 2: \d+ free pages \(tracker pages counted as free\) after finish, a cold boot has \d+$/)]);
  });
});

describe('generate', () => {
  it('undoes every step when an allocation fails, whichever it is, and a retry succeeds', () => {
    const machine = machineFor({ ram: 256 * MiB });
    const config = {
      generation: 1,
      seed: 5,
      vmalloc: [
        { size: 3 * 4096, huge: false },
        { size: 2 * MiB, huge: true },
      ],
      reserveMem: [{ name: 'log', size: 64 * 1024, align: 4096 }],
      kstate: { objects: 3, size: 5000 },
      memfd: [
        { name: 'a', size: 20_000, sparse: false },
        { name: 'b', size: 200_000, sparse: true },
      ],
    };
    const k = machine.boot({ image: [...kernelImage(), scenarioWorkloadModule(config)], cmdline: 'reserve_mem=64K:4K:log' });
    const w = k.get(ScenarioWorkload);
    const faults = k.get(FaultInjector);
    const buddy = k.get(BuddyAllocator);
    const free0 = buddy.nrFreePages;
    const areas0 = k.get(Vmalloc).areas().length;
    faults.reset();
    faults.configure({ failNth: 10_000 });
    w.generate();
    const allocations = faults.calls;
    expect(allocations).toBeGreaterThan(8);
    // undo the successful run by hand, as a failed one must
    for (const a of w.outgoing.vmalloc) k.get(Vmalloc).vfree(a);
    for (const o of w.outgoing.objects) buddy.folioPut(o.payload!);
    for (const n of w.outgoing.files) k.get(Memfd).unlink(n);
    for (const r of k.get(KState).registrations()) k.get(KState).unregister(r.desc, r.instance);
    expect(buddy.nrFreePages).toBe(free0);
    for (let nth = 1; nth <= allocations; nth++) {
      faults.configure({ failNth: nth });
      expect(() => w.generate()).toThrow(/^ENOMEM: /);
      expect([buddy.nrFreePages, k.get(Vmalloc).areas().length, k.get(Memfd).list().length, k.get(KState).registrations().length]).toEqual([free0, areas0, 0, 0]);
    }
    faults.reset();
    const made = w.generate();
    expect(made).toEqual({
      vmalloc: { areas: 2, bytes: 3 * 4096 + 2 * MiB },
      reserveMem: { regions: 1, bytes: 65536, carried: 0 },
      kstate: { objects: 3, bytes: 15_000 },
      memfd: { files: 2, bytes: 220_000 },
    });
    const k2 = k.liveUpdate();
    k2.restore();
    expect(k2.get(ScenarioWorkload).lastRestore).toMatchObject({ writtenBy: 1, vmalloc: { verified: 2 }, reserveMem: { verified: 1 }, kstate: { verified: 3 }, memfd: { verified: 2 } });
    machine.shutdown();
  });
});
