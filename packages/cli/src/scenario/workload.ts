import { inject, injectable, type DependencyContainer } from 'tsyringe';
import { Errno, KernelError, KernelLog, crc32c, formatBytes, hex, registerPerBoot, withUnwind, type KernelModule, type KernelPlugin, type PluginReport, describeError } from '@kho/kernel';
import { BuddyAllocator, Folio, MAX_PAGE_ORDER, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KState, array, bool, bytes, describe, folio, phys, str, u32, u64, vmallocBuf } from '@kho/kstate';
import { RESERVE_MEM_NAME_MAX, ReserveMem } from '@kho/memblock';
import { MEMFD_MAX_FILE_SIZE, MEMFD_NAME_MAX, Memfd } from '@kho/memfd';
import { VMALLOC_HUGE_ORDER, Vmalloc } from '@kho/vmalloc';
import { SeededWords } from '../demo/data';

/**
 * The scenario's workloads beyond the self-test's folios: vmalloc areas, reserve_mem regions, kstate objects and
 * memfd files, each filled with seeded bytes in one kernel and verified in the next.
 *
 * What crosses the kexec: the workload's handover state, a kstate description (`scenario_workload`, instance
 * 0) listing every item with its seed (and the vmalloc buffers themselves, as `vmallocBuf` fields); the
 * objects, each a kstate section (`scenario_object`, instance = its index) with its payload folio; the memfd
 * files (memfd's own handover); the reserve_mem regions (reserve_mem's handover). The next kernel reads only
 * those: it recomputes the expected bytes from the seeds in the state, never from its own configuration.
 */

/** Most kstate objects a generation registers, and the largest payload of one (a folio of order 10). */
export const WORKLOAD_OBJECTS_MAX = 100_000;
export const WORKLOAD_PAYLOAD_MAX = PAGE_SIZE * 2 ** MAX_PAGE_ORDER;
/** A sparse memfd file holds data in every other chunk of this size (the odd ones); the rest are holes. */
export const WORKLOAD_SPARSE_CHUNK = 64 * 1024;
/** Bytes generated and compared at a time. */
const CHUNK = 2 ** 20;

// ------------------------------------------------------------------------------------------ configuration

/** What one generation's kernel makes and hands over (from the scenario's `preserve`), injected per boot. */
export const ScenarioWorkloadConfig = Symbol('ScenarioWorkloadConfig');
export interface ScenarioWorkloadConfig {
  /** The generation this kernel is (recorded in the state as the writer). */
  readonly generation: number;
  /** Every item's seed derives from this one. */
  readonly seed: number;
  readonly vmalloc: ReadonlyArray<{ readonly size: number; readonly huge: boolean }>;
  readonly reserveMem: ReadonlyArray<{ readonly name: string; readonly size: number; readonly align: number }>;
  readonly kstate?: { readonly objects: number; readonly size: number };
  readonly memfd: ReadonlyArray<{ readonly name: string; readonly size: number; readonly sparse: boolean }>;
}

// ------------------------------------------------------------------------------------------ handover state

interface VmallocEntry {
  seed: number;
  size: bigint;
  huge: boolean;
  /** The area: its address here; kstate hands it over as a kho_vmalloc descriptor and maps it anew. */
  buf: number;
}

interface RegionEntry {
  name: string;
  start: number;
  size: bigint;
  seed: number;
  /** The generation that filled it (an earlier one when carried forward unchanged). */
  writtenBy: number;
}

interface FileEntry {
  name: string;
  size: bigint;
  sparse: boolean;
  seed: number;
}

/** The workload's handover state (kstate `scenario_workload`, instance 0). */
export interface WorkloadState {
  generation: number;
  seed: number;
  vmalloc: VmallocEntry[];
  regions: RegionEntry[];
  files: FileEntry[];
  /** kstate objects registered (instances 0..objects-1 of `scenario_object`) and their payload size. */
  objects: number;
  objectSize: number;
}

const VmallocEntryDesc = describe<VmallocEntry>({ name: 'scenario_vmalloc', version: 1, fields: [u32('seed'), u64('size'), bool('huge'), vmallocBuf('buf')] });
const RegionEntryDesc = describe<RegionEntry>({
  name: 'scenario_region',
  version: 1,
  fields: [str('name', RESERVE_MEM_NAME_MAX), phys('start'), u64('size'), u32('seed'), u32('writtenBy')],
});
const FileEntryDesc = describe<FileEntry>({ name: 'scenario_file', version: 1, fields: [str('name', MEMFD_NAME_MAX), u64('size'), bool('sparse'), u32('seed')] });

/** The description of the workload's handover state. */
export const WorkloadStateDesc = describe<WorkloadState>({
  name: 'scenario_workload',
  version: 1,
  fields: [u32('generation'), u32('seed'), array('vmalloc', VmallocEntryDesc), array('regions', RegionEntryDesc), array('files', FileEntryDesc), u32('objects'), u32('objectSize')],
});

/** One kstate object of the workload. */
export interface WorkloadObject {
  /** (writer generation << 32) | index. */
  id: bigint;
  name: string;
  /** 16 seeded bytes. */
  tag: Uint8Array;
  /** Payload bytes, in `payload` (a folio of the smallest order that holds them; null when 0). */
  size: number;
  /** CRC32C of the payload bytes. */
  csum: number;
  payload: Folio | null;
}

/** The description of a workload object (kstate `scenario_object`, instance = its index). */
export const WorkloadObjectDesc = describe<WorkloadObject>({
  name: 'scenario_object',
  version: 1,
  fields: [u64('id'), str('name', 32), bytes('tag', 16), u32('size'), u32('csum'), folio('payload')],
});

// ------------------------------------------------------------------------------------------ seeded bytes

/** The seed of item `index` of `kind` (a string hash with shifts and exact multiplies: no Math.imul). */
export function itemSeed(seed: number, kind: string, index: number): number {
  let s = seed >>> 0;
  for (const c of `${kind}#${index}`) s = (s * 31 + c.charCodeAt(0)) >>> 0;
  return s;
}

/** A stream of seeded bytes (xorshift32 words, little-endian): the same seed gives the same bytes however it is cut. */
export class SeededBytes {
  private x: number;
  private word = 0;
  private left = 0;

  constructor(seed: number) {
    this.x = new SeededWords(seed).state;
  }

  /** The next `len` bytes. */
  next(len: number): Uint8Array {
    const out = new Uint8Array(len);
    let i = 0;
    while (this.left > 0 && i < len) out[i++] = (this.word >>> (8 * (4 - this.left--))) & 0xff;
    const words = Math.floor((len - i) / 4);
    if (words > 0) {
      const w = i === 0 ? new Uint32Array(out.buffer, 0, words) : new Uint32Array(words);
      let x = this.x;
      for (let j = 0; j < words; j++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        w[j] = x;
      }
      this.x = x;
      if (i !== 0) out.set(new Uint8Array(w.buffer), i);
      i += words * 4;
    }
    if (i < len) {
      let x = this.x;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.x = x >>> 0;
      this.word = this.x;
      this.left = 4;
      while (i < len) out[i++] = (this.word >>> (8 * (4 - this.left--))) & 0xff;
    }
    return out;
  }
}

/** The first index where `got` and `want` differ, or -1. */
function firstDiff(got: Uint8Array, want: Uint8Array): number {
  if (got.length === want.length && Buffer.compare(got, want) === 0) return -1;
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) return i;
  return n;
}

const byte = (b: number | undefined): string => (b === undefined ? 'missing' : `0x${b.toString(16).padStart(2, '0')}`);

/**
 * Compares `size` bytes read chunk by chunk through `read(offset, len)` with `expected(offset, len)`. Returns a
 * problem naming the first byte that differs, or undefined.
 */
function compareBytes(size: number, read: (off: number, len: number) => Uint8Array, expected: (off: number, len: number) => Uint8Array): string | undefined {
  for (let off = 0; off < size; off += CHUNK) {
    const len = Math.min(CHUNK, size - off);
    const got = read(off, len);
    const want = expected(off, len);
    const d = firstDiff(got, want);
    if (d >= 0) return `byte ${off + d} is ${byte(got[d])} (wanted ${byte(want[d])})`;
  }
  return undefined;
}

/** The data extents of a memfd file: all of it, or (sparse) the odd WORKLOAD_SPARSE_CHUNK chunks. */
function fileExtents(size: number, sparse: boolean): Array<[number, number]> {
  if (!sparse) return [[0, size]];
  const out: Array<[number, number]> = [];
  for (let off = WORKLOAD_SPARSE_CHUNK; off < size; off += 2 * WORKLOAD_SPARSE_CHUNK) out.push([off, Math.min(WORKLOAD_SPARSE_CHUNK, size - off)]);
  return out;
}

/** The expected contents of a memfd file, chunk by chunk in order: the seeded stream in the extents, zeros in the holes. */
function fileExpectation(size: number, sparse: boolean, seed: number): (off: number, len: number) => Uint8Array {
  const stream = new SeededBytes(seed);
  const extents = fileExtents(size, sparse);
  return (off, len) => {
    const out = new Uint8Array(len);
    for (const [s, n] of extents) {
      const a = Math.max(s, off);
      const b = Math.min(s + n, off + len);
      if (a < b) out.set(stream.next(b - a), a - off);
    }
    return out;
  };
}

/** The expected fields of object `index` of a state written by generation `generation` with seed `seed`. */
function expectedObject(seed: number, generation: number, index: number, size: number): { id: bigint; name: string; tag: Uint8Array; payload: Uint8Array } {
  const stream = new SeededBytes(itemSeed(seed, 'object', index));
  return { id: (BigInt(generation) << 32n) | BigInt(index), name: `g${generation}-object-${index}`, tag: stream.next(16), payload: stream.next(size) };
}

/** The smallest folio order that holds `size` bytes. */
function orderFor(size: number): number {
  let order = 0;
  while (PAGE_SIZE * 2 ** order < size) order++;
  return order;
}

// ------------------------------------------------------------------------------------------ results

/** What a kernel made and handed over (the harness compares it with what the next one verifies). */
export interface WorkloadPreserved {
  readonly vmalloc: { readonly areas: number; readonly bytes: number };
  /** Regions handed over: those filled now and those carried forward unchanged from an earlier generation. */
  readonly reserveMem: { readonly regions: number; readonly bytes: number; readonly carried: number };
  readonly kstate: { readonly objects: number; readonly bytes: number };
  readonly memfd: { readonly files: number; readonly bytes: number };
}

/** What the next kernel found of one workload. */
export interface WorkloadCheck {
  /** Items the handover state lists. */
  readonly listed: number;
  /** Items that came back with every byte (every field) as expected. */
  readonly verified: number;
  /** Bytes compared. */
  readonly bytes: number;
  /** What did not verify, one line each (`vmalloc area 0 (4.00 MiB): byte 7 is 0x00 (wanted 0x3c)`). */
  readonly problems: readonly string[];
}

/** kstate objects: also the fields kstate's RestoreReports say it restored and left at their default. */
export interface KstateCheck extends WorkloadCheck {
  readonly fieldsRestored: number;
  readonly fieldsDefaulted: number;
}

/** What the restore half found, from the handover state alone. */
export interface WorkloadRestore {
  /** The generation that wrote the state (as the state says). */
  readonly writtenBy: number;
  readonly vmalloc: WorkloadCheck;
  readonly reserveMem: WorkloadCheck;
  readonly kstate: KstateCheck;
  readonly memfd: WorkloadCheck;
}

/** What generate made in this kernel (tests use it to damage data before the jump). */
export interface WorkloadOutgoing {
  readonly vmalloc: readonly number[];
  readonly regions: readonly string[];
  readonly objects: readonly WorkloadObject[];
  readonly files: readonly string[];
}

class Tally {
  listed = 0;
  verified = 0;
  bytes = 0;
  readonly problems: string[] = [];
  done(): WorkloadCheck {
    return { listed: this.listed, verified: this.verified, bytes: this.bytes, problems: this.problems };
  }
}


// ------------------------------------------------------------------------------------------ the plugin

/**
 * The scenario workload plugin. `generate()` (called by the scenario before the live update) makes this
 * generation's items, fills them with seeded bytes and registers the handover state with kstate; kstate, memfd
 * and reserve_mem preserve their memory at prepare. In the next kernel, `restore` takes the state back from
 * kstate and verifies every item it lists: vmalloc areas byte for byte (and their block order), reserve_mem
 * regions at the same physical address, kstate objects field by field, memfd files byte for byte with their
 * holes. `finish` frees what was restored: vfree, folio_put, unlink. Regions stay (they are reserve_mem's); a
 * verified region the new generation does not fill again is carried forward in its state unchanged.
 */
@injectable()
export class ScenarioWorkload implements KernelPlugin {
  readonly name = 'scenario-workload';
  readonly after = ['kho', 'kstate', 'memfd'];
  readonly afterIfPresent = ['reserve_mem'];

  /** The outcome of the restore, when the previous kernel handed a workload over. */
  lastRestore: WorkloadRestore | undefined;

  private readonly made = { vmalloc: [] as number[], regions: [] as string[], objects: [] as WorkloadObject[], files: [] as string[] };
  /** Regions verified at restore, carried forward when this generation does not fill them again. */
  private carried: RegionEntry[] = [];
  private toVfree: number[] = [];
  private toPut: Folio[] = [];
  private toUnlink: string[] = [];

  constructor(
    private readonly kho: Kho,
    private readonly buddy: BuddyAllocator,
    private readonly ram: PhysicalMemory,
    private readonly vm: Vmalloc,
    private readonly kstate: KState,
    private readonly reserveMem: ReserveMem,
    private readonly memfd: Memfd,
    private readonly log: KernelLog,
    @inject(ScenarioWorkloadConfig) private readonly config: ScenarioWorkloadConfig,
  ) {}

  /** What generate made in this kernel. */
  get outgoing(): WorkloadOutgoing {
    return this.made;
  }

  /**
   * Makes this generation's items and registers the handover state (saved by kstate at prepare). Returns what
   * will be handed over. Throws what an allocation or a service throws (ENOMEM, ENOENT for a region missing
   * from the command line, EEXIST for a file name in use), after undoing every step that succeeded.
   */
  generate(): WorkloadPreserved {
    const c = this.config;
    const state: WorkloadState = { generation: c.generation, seed: c.seed, vmalloc: [], regions: [], files: [], objects: 0, objectSize: 0 };
    const made = { vmalloc: [] as number[], regions: [] as string[], objects: [] as WorkloadObject[], files: [] as string[] };
    let vmallocBytes = 0;
    let fileBytes = 0;
    withUnwind((u) => {
      c.vmalloc.forEach((spec, i) => {
        const seed = itemSeed(c.seed, 'vmalloc', i);
        const addr = this.vm.vmalloc(spec.size, { huge: spec.huge });
        u.push(() => this.vm.vfree(addr));
        const stream = new SeededBytes(seed);
        for (let off = 0; off < spec.size; off += CHUNK) this.vm.write(addr + off, stream.next(Math.min(CHUNK, spec.size - off)));
        state.vmalloc.push({ seed, size: BigInt(spec.size), huge: spec.huge, buf: addr });
        made.vmalloc.push(addr);
        vmallocBytes += spec.size;
      });

      const filled = new Set(c.reserveMem.map((r) => r.name));
      for (const r of this.carried) if (!filled.has(r.name)) state.regions.push(r);
      for (const spec of c.reserveMem) {
        const region = this.reserveMem.find(spec.name);
        if (region.size !== spec.size) {
          throw new KernelError(Errno.EINVAL, `scenario: reserve_mem region '${spec.name}' has ${region.size} bytes (wanted ${spec.size})`);
        }
        const seed = itemSeed(c.seed, `region:${spec.name}`, c.generation);
        const stream = new SeededBytes(seed);
        for (let off = 0; off < region.size; off += CHUNK) this.ram.write(region.start + off, stream.next(Math.min(CHUNK, region.size - off)));
        state.regions.push({ name: spec.name, start: region.start, size: BigInt(region.size), seed, writtenBy: c.generation });
        made.regions.push(spec.name);
      }

      if (c.kstate) {
        const size = c.kstate.size;
        for (let i = 0; i < c.kstate.objects; i++) {
          const want = expectedObject(c.seed, c.generation, i, size);
          let payload: Folio | null = null;
          if (size > 0) {
            const f = this.buddy.folioAlloc(orderFor(size));
            u.push(() => this.buddy.folioPut(f));
            this.ram.write(f.phys, want.payload);
            payload = f;
          }
          const obj: WorkloadObject = { id: want.id, name: want.name, tag: want.tag, size, csum: crc32c(want.payload), payload };
          this.kstate.register(WorkloadObjectDesc, i, obj);
          u.push(() => this.kstate.unregister(WorkloadObjectDesc, i));
          made.objects.push(obj);
        }
        state.objects = c.kstate.objects;
        state.objectSize = size;
      }

      c.memfd.forEach((spec, i) => {
        const seed = itemSeed(c.seed, `memfd:${spec.name}`, i);
        const fd = this.memfd.create(spec.name);
        let open = true;
        u.push(() => {
          if (open) this.memfd.close(fd);
          this.memfd.unlink(spec.name);
        });
        const stream = new SeededBytes(seed);
        for (const [start, len] of fileExtents(spec.size, spec.sparse)) {
          for (let off = 0; off < len; off += CHUNK) this.memfd.write(fd, start + off, stream.next(Math.min(CHUNK, len - off)));
        }
        this.memfd.truncate(fd, spec.size); // a sparse file may end in a hole
        this.memfd.preserve(fd);
        this.memfd.close(fd);
        open = false;
        state.files.push({ name: spec.name, size: BigInt(spec.size), sparse: spec.sparse, seed });
        made.files.push(spec.name);
        fileBytes += spec.size;
      });

      if (state.vmalloc.length + state.regions.length + state.objects + state.files.length > 0) {
        this.kstate.register(WorkloadStateDesc, 0, state);
        u.push(() => this.kstate.unregister(WorkloadStateDesc, 0));
      }
    });
    Object.assign(this.made, made);
    const regionBytes = state.regions.reduce((n, r) => n + Number(r.size), 0);
    const carried = state.regions.length - made.regions.length;
    this.log.info(
      'scenario',
      `generation ${c.generation}: ${state.vmalloc.length} vmalloc areas, ${state.regions.length} reserve_mem regions (${carried} carried), ${state.objects} kstate objects, ${state.files.length} memfd files`,
    );
    return {
      vmalloc: { areas: state.vmalloc.length, bytes: vmallocBytes },
      reserveMem: { regions: state.regions.length, bytes: regionBytes, carried },
      kstate: { objects: state.objects, bytes: state.objects * state.objectSize },
      memfd: { files: state.files.length, bytes: fileBytes },
    };
  }

  /**
   * Takes the handover state back from kstate and verifies every item it lists. Verification failures are
   * collected in {@link lastRestore} (and the report), not thrown, so that every item is checked and every
   * restored one freed at finish. Throws what kstate throws for a state it cannot restore (other than ENOENT:
   * the previous kernel handed no workload over).
   */
  restore(): PluginReport | void {
    if (!this.kho.isKhoBoot()) return;
    let state: WorkloadState;
    try {
      state = this.kstate.restore(WorkloadStateDesc, 0).object;
    } catch (e) {
      if (e instanceof KernelError && e.errno === Errno.ENOENT) return;
      throw e;
    }
    // kstate mapped every vmalloc buffer anew: they are ours to free, whatever the checks find
    for (const v of state.vmalloc) if (v.buf) this.toVfree.push(v.buf);
    const r: WorkloadRestore = {
      writtenBy: state.generation,
      vmalloc: this.verifyVmalloc(state),
      reserveMem: this.verifyRegions(state),
      kstate: this.verifyObjects(state),
      memfd: this.verifyFiles(state),
    };
    this.lastRestore = r;
    const line = (w: WorkloadCheck): string => `${w.verified}/${w.listed}`;
    this.log.info('scenario', `generation ${state.generation}'s workload: vmalloc ${line(r.vmalloc)}, reserve_mem ${line(r.reserveMem)}, kstate ${line(r.kstate)}, memfd ${line(r.memfd)} verified`);
    return {
      writtenBy: r.writtenBy,
      vmalloc: line(r.vmalloc),
      reserveMem: line(r.reserveMem),
      kstate: line(r.kstate),
      memfd: line(r.memfd),
      problems: [r.vmalloc, r.reserveMem, r.kstate, r.memfd].reduce((n, w) => n + w.problems.length, 0),
    };
  }

  /** Frees everything restored: vfree the areas, put the payload folios, unlink the files. */
  finish(): PluginReport | void {
    const errors: string[] = [];
    const each = <T>(items: T[], free: (x: T) => void): void => {
      for (const x of items) {
        try {
          free(x);
        } catch (e) {
          errors.push(describeError(e, { errno: true }));
        }
      }
    };
    const freed = { vmalloc: this.toVfree.length, folios: this.toPut.length, files: this.toUnlink.length };
    each(this.toVfree, (a) => this.vm.vfree(a));
    each(this.toPut, (f) => this.buddy.folioPut(f));
    each(this.toUnlink, (n) => this.memfd.unlink(n));
    this.toVfree = [];
    this.toPut = [];
    this.toUnlink = [];
    if (errors.length > 0) throw new KernelError(Errno.EINVAL, `scenario workload: freeing what was restored failed: ${errors.join('; ')}`);
    if (freed.vmalloc + freed.folios + freed.files > 0) return { freed };
  }

  // ---------------------------------------------------------------------------------------- verification

  private verifyVmalloc(state: WorkloadState): WorkloadCheck {
    const t = new Tally();
    state.vmalloc.forEach((v, i) => {
      t.listed++;
      const size = Number(v.size);
      const what = `vmalloc area ${i} (${formatBytes(size)}${v.huge ? ', huge' : ''})`;
      const area = v.buf ? this.vm.findVmArea(v.buf) : undefined;
      if (!area || area.addr !== v.buf) return void t.problems.push(`${what}: did not come back`);
      if (!Number.isSafeInteger(size) || size <= 0 || size > area.size) return void t.problems.push(`${what}: the state says ${v.size} bytes, the area maps ${area.size}`);
      const order = v.huge ? VMALLOC_HUGE_ORDER : 0;
      if (area.order !== order) return void t.problems.push(`${what}: mapped with blocks of order ${area.order} (wanted ${order})`);
      const stream = new SeededBytes(v.seed);
      const bad = compareBytes(size, (off, len) => this.vm.read(v.buf + off, len), (_off, len) => stream.next(len));
      t.bytes += size;
      if (bad) return void t.problems.push(`${what}: ${bad}`);
      t.verified++;
    });
    return t.done();
  }

  private verifyRegions(state: WorkloadState): WorkloadCheck {
    const t = new Tally();
    for (const e of state.regions) {
      t.listed++;
      const size = Number(e.size);
      const what = `reserve_mem region '${e.name}' (written by generation ${e.writtenBy})`;
      const region = this.reserveMem.regions.find((x) => x.name === e.name);
      if (!region) {
        t.problems.push(`${what}: this kernel has no such region (its command line lacks reserve_mem=…:${e.name})`);
        continue;
      }
      if (!region.revived) {
        t.problems.push(`${what}: not revived${region.mismatch ? ` (${region.mismatch})` : ''}; a new one was allocated at ${hex(region.start)}`);
        continue;
      }
      if (region.start !== e.start || region.size !== size) {
        t.problems.push(`${what}: at ${hex(region.start)} +${region.size} (the previous kernel's was at ${hex(e.start)} +${size})`);
        continue;
      }
      const stream = new SeededBytes(e.seed);
      const bad = compareBytes(size, (off, len) => this.ram.read(region.start + off, len), (_off, len) => stream.next(len));
      t.bytes += size;
      if (bad) {
        t.problems.push(`${what}: ${bad}`);
        continue;
      }
      t.verified++;
      this.carried.push({ ...e });
    }
    return t.done();
  }

  private verifyObjects(state: WorkloadState): KstateCheck {
    const t = new Tally();
    let fieldsRestored = 0;
    let fieldsDefaulted = 0;
    const n = state.objects;
    const size = state.objectSize;
    if (n > WORKLOAD_OBJECTS_MAX || size > WORKLOAD_PAYLOAD_MAX) {
      t.problems.push(`kstate objects: the state lists ${n} objects of ${size} bytes (at most ${WORKLOAD_OBJECTS_MAX} of ${WORKLOAD_PAYLOAD_MAX})`);
      return { ...t.done(), fieldsRestored, fieldsDefaulted };
    }
    for (let i = 0; i < n; i++) {
      t.listed++;
      const what = `kstate object ${i}`;
      let obj: WorkloadObject;
      try {
        const r = this.kstate.restore(WorkloadObjectDesc, i);
        fieldsRestored += r.restored.length;
        fieldsDefaulted += r.defaulted.length;
        obj = r.object;
      } catch (e) {
        t.problems.push(`${what}: ${describeError(e, { errno: true })}`);
        continue;
      }
      if (obj.payload) this.toPut.push(obj.payload);
      const want = expectedObject(state.seed, state.generation, i, size);
      const wrong: string[] = [];
      if (obj.id !== want.id) wrong.push(`id ${hex(obj.id)} (wanted ${hex(want.id)})`);
      if (obj.name !== want.name) wrong.push(`name '${obj.name}' (wanted '${want.name}')`);
      if (!(obj.tag instanceof Uint8Array) || firstDiff(obj.tag, want.tag) >= 0) wrong.push('tag differs');
      if (obj.size !== size) wrong.push(`size ${obj.size} (wanted ${size})`);
      const wantCsum = crc32c(want.payload);
      if (obj.csum !== wantCsum) wrong.push(`csum ${hex(obj.csum)} (wanted ${hex(wantCsum)})`);
      if (size === 0 && obj.payload) wrong.push('a payload folio where none was written');
      if (size > 0) {
        if (!obj.payload) wrong.push('no payload folio');
        else if (obj.payload.size < size) wrong.push(`payload folio of ${obj.payload.size} bytes (wanted at least ${size})`);
        else {
          const got = this.ram.read(obj.payload.phys, size);
          t.bytes += size;
          const d = firstDiff(got, want.payload);
          if (d >= 0) wrong.push(`payload byte ${d} is ${byte(got[d])} (wanted ${byte(want.payload[d])})`);
          else if (crc32c(got) !== obj.csum) wrong.push(`payload CRC32C ${hex(crc32c(got))} differs from its csum ${hex(obj.csum)}`);
        }
      }
      if (wrong.length > 0) t.problems.push(`${what}: ${wrong.join(', ')}`);
      else t.verified++;
    }
    return { ...t.done(), fieldsRestored, fieldsDefaulted };
  }

  private verifyFiles(state: WorkloadState): WorkloadCheck {
    const t = new Tally();
    for (const f of state.files) {
      t.listed++;
      const size = Number(f.size);
      const what = `memfd file '${f.name}'`;
      if (!Number.isSafeInteger(size) || size <= 0 || size > MEMFD_MAX_FILE_SIZE) {
        t.problems.push(`${what}: the state says ${f.size} bytes (wanted 1..${MEMFD_MAX_FILE_SIZE})`);
        continue;
      }
      let fd: number;
      try {
        fd = this.memfd.open(f.name);
      } catch (e) {
        t.problems.push(`${what}: ${describeError(e, { errno: true })}`);
        continue;
      }
      this.toUnlink.push(f.name);
      try {
        const got = this.memfd.size(fd);
        if (got !== size) {
          t.problems.push(`${what}: size ${got} (wanted ${size})`);
          continue;
        }
        const bad = compareBytes(size, (off, len) => this.memfd.read(fd, off, len), fileExpectation(size, f.sparse, f.seed));
        t.bytes += size;
        if (bad) {
          t.problems.push(`${what}${f.sparse ? ' (sparse)' : ''}: ${bad}`);
          continue;
        }
        t.verified++;
      } finally {
        this.memfd.close(fd);
      }
    }
    return t.done();
  }
}

/** The kernel-image module of the scenario workload, configured with what this boot's generation makes. */
export function scenarioWorkloadModule(config: ScenarioWorkloadConfig): KernelModule {
  return {
    name: 'scenario-workload',
    register(c: DependencyContainer) {
      c.register(ScenarioWorkloadConfig, { useValue: config });
      registerPerBoot(c, ScenarioWorkload, { plugin: true });
    },
  };
}
