import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { inject, injectable } from 'tsyringe';
import { Errno, KernelError, KernelPlugin, SeededWords, hex, registerPerBoot, withUnwind, type KernelModule, type PluginReport } from '@kho/kernel';
import { BuddyAllocator, Memmap, PhysicalMemory, Slab, type PhysAddr } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KhoSlab } from '@kho/kho-slab';
import { struct, u32, u64 } from '@kho/struct';
import { parseScenario, type Scenario } from '../scenario/schema';
import { runScenario, type ScenarioResult } from '../scenario/run';

/*
 * The long soak (issue 16): a chain of live updates where each generation preserves a seeded random mix of
 * subsystems (the self-test's folios, vmalloc areas, kstate objects, reserve_mem regions, memfd files, LUO
 * sessions of memfds, and kmalloc objects through kho-slab). The scenario runner checks each generation: every
 * byte handed over is verified by the next kernel, and after its finish the free pages (tracker pages counted as
 * free) equal a cold boot's. Kmalloc objects are this file's own plugin: they come back through kho-slab, their
 * bytes are compared, and they are freed. The host side is measured too: the heap after a full collection and the
 * RSS at chosen generations, and at the end how many of the dead kernels are still reachable (each kernel's
 * plugin instance is watched through a WeakRef; a dead kernel that stays reachable keeps its container, memmap
 * and everything else it built).
 */

const KiB = 1024;
const MiB = 2 ** 20;

/** Subsystems a generation may preserve. */
export const SOAK_SUBSYSTEMS = ['folios', 'vmalloc', 'kstate', 'reserveMem', 'memfd', 'slab', 'luo'] as const;
export type SoakSubsystem = (typeof SOAK_SUBSYSTEMS)[number];

/** kmalloc objects generation g preserves (sizes; empty: none). */
type SlabPlan = readonly number[];

/** The soak's plan: a scenario for the runner and what each generation preserves through kmalloc. */
export interface SoakPlan {
  readonly scenario: Scenario;
  /** Per generation (index 0 is generation 1): the subsystems it preserves. */
  readonly mix: ReadonlyArray<readonly SoakSubsystem[]>;
  readonly slab: readonly SlabPlan[];
}

/** Builds the seeded plan of `generations` updates on a machine of `ram` bytes. */
export function soakPlan(generations: number, seed: number, ram: number): SoakPlan {
  const words = new SeededWords(seed);
  const r = (): number => words.float();
  const pick = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const pages = (lo: number, hi: number): number => pick(lo, hi) * 4 * KiB;
  const mix: SoakSubsystem[][] = [];
  const slab: number[][] = [];
  const gens: unknown[] = [];
  for (let g = 1; g <= generations; g++) {
    const chosen = SOAK_SUBSYSTEMS.filter(() => r() < 0.5);
    mix.push(chosen);
    const preserve: Record<string, unknown> = {};
    let luo: unknown;
    const has = (s: SoakSubsystem): boolean => chosen.includes(s);
    if (has('folios')) preserve.folios = { total: pages(16, 512), maxOrder: pick(0, 6) };
    if (has('vmalloc')) preserve.vmalloc = Array.from({ length: pick(1, 2) }, () => (r() < 0.2 ? { size: 2 * MiB + pick(1, 5000), huge: true } : { size: pick(1, 300_000) }));
    if (has('kstate')) preserve.kstate = { objects: pick(1, 16), size: r() < 0.5 ? 0 : pick(1, 6000) };
    // the same two names and sizes every time: a region is declared on the command line of every later kernel
    if (has('reserveMem')) preserve.reserveMem = r() < 0.5 ? [{ name: 'soak_a', size: '64K' }] : [{ name: 'soak_b', size: '128K', align: '64K' }];
    if (has('memfd')) preserve.memfd = Array.from({ length: pick(1, 2) }, (_, i) => ({ name: `soak-${i}`, size: pick(1, 200_000), sparse: r() < 0.3 }));
    if (has('luo')) {
      luo = {
        sessions: Array.from({ length: pick(1, 2) }, (_, i) => ({
          name: `soak-${i}`,
          files: Array.from({ length: pick(0, 3) }, (_, t) => ({ token: t + 1, size: pick(0, 64) * 1024, sparse: r() < 0.3 })),
        })),
      };
    }
    slab.push(has('slab') ? Array.from({ length: pick(1, 12) }, () => [8, 24, 96, 200, 700, 3000, 8000, 20_000][pick(0, 7)]) : []);
    gens.push({ preserve, ...(luo ? { luo } : {}) });
  }
  const text = JSON.stringify({ name: `soak of ${generations} generations (seed ${seed})`, seed, machine: { ram }, cmdline: 'kho_scratch=32M,32M,32M', generations: gens });
  return { scenario: parseScenario(text, 'the soak plan'), mix, slab };
}

/** The soak's kmalloc table: a header and one entry per object, in a preserved blob (subtree `soak-slab`). */
const SoakSlabHeaderStruct = struct('soak_slab_header', { count: u32(), generation: u32() }, 8);
const SoakSlabEntryStruct = struct('soak_slab_entry', { ptr: u64(), size: u32(), tag: u32() }, 16);
const SOAK_SLAB_SUBTREE = 'soak-slab';

/** The bytes of kmalloc object `tag` of generation `gen`. */
function objectBytes(gen: number, tag: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let j = 0; j < len; j++) out[j] = (gen * 131 + tag * 37 + j * 11 + 5) & 0xff;
  return out;
}

/**
 * Watches objects of each boot (its plugin instance, allocator, memmap, KHO) through a FinalizationRegistry: a
 * kernel counts as reachable while any of them is. Not WeakRefs: a WeakRef made during the synchronous run would
 * keep its target alive until the run's job ends.
 */
export class KernelWatch {
  private booted = 0;
  /** Per boot, how many of its watched objects are not collected yet. */
  private readonly pending = new Map<number, number>();
  private readonly registry = new FinalizationRegistry<number>((boot) => {
    const left = (this.pending.get(boot) ?? 1) - 1;
    if (left > 0) this.pending.set(boot, left);
    else this.pending.delete(boot);
  });
  add(...objects: object[]): void {
    const boot = ++this.booted;
    this.pending.set(boot, objects.length);
    for (const o of objects) this.registry.register(o, boot);
  }
  get watched(): number {
    return this.booted;
  }
  /** Boots with an object not yet collected (meaningful after full collections and turns of the event loop). */
  get reachable(): number {
    return this.pending.size;
  }
}

const SoakSlabConfig = Symbol('SoakSlabConfig');
interface SoakSlabConfigValue {
  readonly generation: number;
  readonly sizes: SlabPlan;
  readonly watch: KernelWatch;
}

/** The soak's kmalloc objects: made and preserved at prepare, restored, compared and freed by the next kernel. */
@injectable()
class SoakSlab implements KernelPlugin {
  readonly name = 'soak-slab';
  readonly after = ['kho', 'kho-slab'];
  private made: Array<{ ptr: number; size: number }> = [];
  private blob = 0 as PhysAddr;

  constructor(
    private readonly kho: Kho,
    private readonly ks: KhoSlab,
    private readonly slab: Slab,
    private readonly ram: PhysicalMemory,
    @inject(SoakSlabConfig) private readonly config: SoakSlabConfigValue,
    buddy: BuddyAllocator,
    memmap: Memmap,
  ) {
    // what a dead kernel keeps when something holds on to it: its container (this plugin), allocator, memmap
    config.watch.add(this, buddy, memmap, kho);
  }

  prepare(): void {
    const { sizes, generation } = this.config;
    if (sizes.length === 0) return;
    withUnwind((u) => {
      const made: Array<{ ptr: number; size: number }> = [];
      u.push(() => {
        for (const o of made.reverse()) this.slab.kfree(o.ptr);
      });
      for (const [tag, size] of sizes.entries()) {
        const ptr = this.slab.kmalloc(size);
        made.push({ ptr, size });
        this.ram.write(ptr, objectBytes(generation, tag, size));
      }
      for (const o of made) {
        this.ks.preserveSlab(o.ptr);
        u.push(() => this.ks.unpreserveSlab(o.ptr));
      }
      const size = SoakSlabHeaderStruct.size + made.length * SoakSlabEntryStruct.size;
      const blob = this.kho.allocPreserve(size);
      u.push(() => this.kho.unpreserveFree(blob));
      SoakSlabHeaderStruct.write(this.ram, blob, { count: made.length, generation });
      made.forEach((o, tag) => SoakSlabEntryStruct.write(this.ram, blob + SoakSlabHeaderStruct.size + tag * SoakSlabEntryStruct.size, { ptr: o.ptr, size: o.size, tag }));
      this.kho.addSubtree(SOAK_SLAB_SUBTREE, blob, size);
      this.made = made;
      this.blob = blob;
    });
  }

  cancel(): void {
    if (!this.blob) return;
    this.kho.removeSubtree(this.blob);
    this.kho.unpreserveFree(this.blob);
    for (const o of [...this.made].reverse()) {
      this.ks.unpreserveSlab(o.ptr);
      this.slab.kfree(o.ptr);
    }
    this.made = [];
    this.blob = 0 as PhysAddr;
  }

  /** Takes back the previous generation's objects, compares every byte and frees them; EIO on a difference. */
  restore(): PluginReport | void {
    if (!this.kho.isKhoBoot()) return;
    let phys: PhysAddr;
    try {
      phys = this.kho.retrieveSubtree(SOAK_SLAB_SUBTREE).phys;
    } catch (e) {
      if (e instanceof KernelError && e.errno === Errno.ENOENT) return;
      throw e;
    }
    const head = SoakSlabHeaderStruct.read(this.ram, phys);
    const wrong: string[] = [];
    for (let tag = 0; tag < head.count; tag++) {
      const e = SoakSlabEntryStruct.read(this.ram, phys + SoakSlabHeaderStruct.size + tag * SoakSlabEntryStruct.size);
      const ptr = this.ks.restoreSlab(e.ptr);
      if (Buffer.compare(this.ram.read(ptr, e.size), objectBytes(head.generation, e.tag, e.size)) !== 0) wrong.push(hex(ptr));
      this.slab.kfree(ptr);
    }
    this.kho.restoreFree(phys);
    if (wrong.length > 0) throw new KernelError(Errno.EIO, `soak-slab: ${wrong.length} of generation ${head.generation}'s ${head.count} kmalloc objects came back with other bytes (first at ${wrong[0]})`);
    return { objects: head.count };
  }
}

function soakSlabModule(config: SoakSlabConfigValue): KernelModule {
  return {
    name: 'soak-slab',
    register(c) {
      c.register(SoakSlabConfig, { useValue: config });
      registerPerBoot(c, SoakSlab, { plugin: true });
    },
  };
}

/** A full collection, when this process can ask for one (v8's flag set at run time exposes gc in a new context). */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (() => void) | undefined;
  return typeof gc === 'function' ? gc : () => undefined;
}

/** The host at one generation. */
export interface SoakSample {
  readonly generation: number;
  /** Resident set of the whole process, MiB. */
  readonly rssMiB: number;
  /** V8 heap in use after a full collection, MiB. */
  readonly heapMiB: number;
  /** ArrayBuffers (simulated RAM chunks, memmap sections) in use after a full collection, MiB. */
  readonly arrayBuffersMiB: number;
  /** Milliseconds since the soak started. */
  readonly ms: number;
}

export interface SoakOptions {
  readonly generations: number;
  readonly seed: number;
  /** RAM of the machine (default 512 MiB). */
  readonly ram?: number;
  /** Generations whose boot is sampled (default 1, 100 and the last; every 100th too). */
  readonly sampleAt?: readonly number[];
  onSample?(s: SoakSample): void;
  /** Extra modules in every kernel (tests use them to break the soak on purpose). */
  readonly modules?: (gen: number) => readonly KernelModule[];
}

export interface SoakResult {
  readonly generations: number;
  readonly seed: number;
  readonly ok: boolean;
  /** Generations that preserved each subsystem. */
  readonly mix: Record<SoakSubsystem, number>;
  /** Generations with no error: what the previous one handed over verified, free pages as a cold boot's after finish, their own update made. */
  readonly verified: number;
  readonly freePagesAtEnd: number;
  readonly freePagesColdBoot: number;
  readonly samples: readonly SoakSample[];
  /** Kernels booted, and how many of them were still reachable after the run and a full collection (the last one's machine is gone too). */
  readonly kernels: { readonly booted: number; readonly reachableAfter: number };
  /** The first errors (at most 20) and how many there were. */
  readonly errors: readonly string[];
  readonly errorCount: number;
  readonly ms: number;
}

const mib = (n: number): number => Math.round((n / MiB) * 10) / 10;

/**
 * Runs the soak (see the file comment). Asynchronous only for its last check: finalizers of collected kernels run
 * between turns of the event loop. Throws what the scenario runner throws for bad input.
 */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const plan = soakPlan(opts.generations, opts.seed, opts.ram ?? 512 * MiB);
  const watch = new KernelWatch();
  const gc = collector();
  const t0 = performance.now();
  const sampleAt = new Set(opts.sampleAt ?? [1, 100, opts.generations, ...Array.from({ length: Math.floor(opts.generations / 100) }, (_, i) => (i + 1) * 100)]);
  const samples: SoakSample[] = [];
  let result: ScenarioResult | undefined;
  {
    // in a block of its own: nothing of the run stays referenced from here once it returns
    result = runScenario(plan.scenario, {
      modules: (gen) => [soakSlabModule({ generation: gen, sizes: plan.slab[gen - 1] ?? [], watch }), ...(opts.modules?.(gen) ?? [])],
      observe: (bus) => {
        bus.on('kernel:up', (e) => {
          if (!sampleAt.has(e.generation)) return;
          gc();
          const m = process.memoryUsage();
          const s = { generation: e.generation, rssMiB: mib(m.rss), heapMiB: mib(m.heapUsed), arrayBuffersMiB: mib(m.arrayBuffers), ms: Math.round(performance.now() - t0) };
          samples.push(s);
          opts.onSample?.(s);
        });
      },
    });
  }
  const ms = Math.round(performance.now() - t0);
  const mix = Object.fromEntries(SOAK_SUBSYSTEMS.map((s) => [s, plan.mix.filter((m) => m.includes(s)).length])) as Record<SoakSubsystem, number>;
  const gens = result.generations;
  const verified = gens.filter((g) => g.errors.length === 0).length;
  const { errors, freePagesAtEnd, freePagesColdBoot, ok } = result;
  result = undefined;
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return {
    generations: opts.generations,
    seed: opts.seed,
    ok,
    mix,
    verified,
    freePagesAtEnd,
    freePagesColdBoot,
    samples,
    kernels: { booted: watch.watched, reachableAfter: watch.reachable },
    errors: errors.slice(0, 20),
    errorCount: errors.length,
    ms,
  };
}
