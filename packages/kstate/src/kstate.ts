import { inject, injectable } from 'tsyringe';
import { Errno, KernelError, KernelLog, Unwind, formatBytes, hex, isKernelError, describeError } from '@kho/kernel';
import { Folio, PAGE_SIZE, PhysicalMemory, pfn as toPfn, type Order, type Pfn } from '@kho/physmem';
import { KSTATE_SEGMENT_HEADER_SIZE, KSTATE_SUBTREE } from './abi';
import { KStateBackend } from './backend';
import { FolioRef, PhysRangeRef, VmallocRef, memoryOf, type MemoryRef } from './decode';
import { encodeStream, type MemorySaver, type Registration } from './encode';
import { checkInstance, idKey, isDescription, showInstance, type Description, type InstanceId } from './model';
import { RestorePlan, type RestoreReport } from './restore';
import { openStream, sectionKey, writeSegments, type IncomingSection, type IncomingStream } from './stream';

/** What a save wrote. */
export interface SaveStats {
  /** Phys of the root segment (what the `kstate` subtree points at); 0 when nothing was registered. */
  readonly rootPhys: number;
  /** Bytes of the logical stream. */
  readonly bytes: number;
  readonly segments: number;
  /** Pages the segments occupy. */
  readonly pages: number;
  readonly sections: number;
  readonly schemas: number;
  /** Memory the fields preserved: folios, vmalloc buffers, phys ranges (distinct). */
  readonly folios: number;
  readonly vmallocs: number;
  readonly physRanges: number;
}

/** A section nobody restored, and the memory it refers to (which stays preserved). */
export interface UnrestoredSection {
  readonly id: string;
  readonly name: string;
  readonly instance: string;
  readonly memory: readonly string[];
  /** Why its restore failed, when one was tried. */
  readonly failed?: string;
}

/** What `finish` reports. */
export interface FinishReport {
  readonly sections: number;
  readonly restored: number;
  readonly unrestored: readonly UnrestoredSection[];
  /** Memory referred to by dropped or skipped fields and subsections of restored sections. */
  readonly strandedMemory: readonly string[];
  /** Stream pages freed. */
  readonly streamPagesFreed: number;
}

interface Registered extends Registration {
  readonly key: string;
}

interface Incoming {
  readonly stream?: IncomingStream;
  readonly error?: KernelError;
  /** Why there is no stream (no KHO boot, or no kstate subtree). */
  readonly none?: string;
}

/** At most this many unrestored sections are listed one by one in the finish report. */
const FINISH_LIST_MAX = 64;

/**
 * kstate: declarative state saved into preserved memory at `prepare` and restored by key in the next kernel
 * (docs/abi/kstate.md). One instance per boot; its plugin (KStatePlugin, 'kstate', after 'kho') drives it.
 *
 * Outgoing: `register(desc, instance, obj)` (EEXIST for a duplicate key); `save()` at prepare writes the stream
 * into preserved segments, preserving what memory fields point at, and adds the `kstate` subtree; `cancel()`
 * undoes all of it. Incoming: `restore(desc, instance, target?)` returns a report; `peek` reads without
 * restoring anything (usable from boot:early on); `finish` names the sections nobody restored and frees the
 * stream's pages.
 */
@injectable()
export class KState {
  private readonly regs = new Map<string, Registered>();
  private readonly idOwners = new Map<string, { desc: Description; count: number }>();
  private saved: { readonly u: Unwind; readonly stats: SaveStats } | undefined;
  private inc: Incoming | undefined;
  private claimed: Folio[] | undefined;
  private readonly restoredSections = new Set<IncomingSection>();
  private readonly failures = new Map<IncomingSection, string>();
  private readonly restoredMemory = new Map<string, unknown>();
  private readonly stranded: string[] = [];
  private finished = false;

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
    @inject(KStateBackend) private readonly backend: KStateBackend,
  ) {}

  // ---------------------------------------------------------------- outgoing

  /**
   * Registers `obj` under (desc.id, instance) for the next save. Throws EINVAL for a description not made by
   * `describe`, a bad instance id or a non-object; EEXIST for a key already registered (for named instances,
   * naming the colliding name) or a description id already used by another description; EBUSY while a save is
   * live (between prepare and cancel or kexec).
   */
  register<T extends object>(desc: Description<T>, instance: InstanceId, obj: T): void {
    const d = desc as unknown as Description;
    if (!isDescription(d)) throw new KernelError(Errno.EINVAL, 'kstate: register: the description was not made by describe()');
    checkInstance(instance);
    const what = `'${d.name}' instance ${showInstance(instance)}`;
    if (typeof obj !== 'object' || obj === null) throw new KernelError(Errno.EINVAL, `kstate: register(${what}): the object is ${obj === null ? 'null' : typeof obj}`);
    if (this.saved) throw new KernelError(Errno.EBUSY, `kstate: register(${what}): the state is saved for a live update (cancel it first)`);
    const key = sectionKey(d.id, instance);
    const old = this.regs.get(key);
    if (old) {
      const o = old.instance;
      if (typeof o === 'object' && typeof instance === 'object' && o.name !== instance.name) {
        throw new KernelError(Errno.EEXIST, `kstate: register(${what}): its instance id ${hex(instance.hash)} collides with '${o.name}' (same hash)`);
      }
      throw new KernelError(Errno.EEXIST, `kstate: register(${what}): already registered`);
    }
    for (const r of d.reachable) {
      const owner = this.idOwners.get(idKey(r.id));
      if (owner && owner.desc !== r) throw new KernelError(Errno.EEXIST, `kstate: register(${what}): id of '${r.name}' is already used by description '${owner.desc.name}'`);
    }
    for (const r of d.reachable) {
      const owner = this.idOwners.get(idKey(r.id));
      if (owner) owner.count++;
      else this.idOwners.set(idKey(r.id), { desc: r, count: 1 });
    }
    this.regs.set(key, { desc: d, instance, obj, key });
  }

  /** Forgets a registration. Throws ENOENT when it is not registered, EBUSY while a save is live. */
  unregister(desc: Description, instance: InstanceId): void {
    const what = `'${desc.name}' instance ${showInstance(instance)}`;
    const key = sectionKey(desc.id, instance);
    const r = this.regs.get(key);
    if (!r || r.desc !== desc) throw new KernelError(Errno.ENOENT, `kstate: unregister(${what}): not registered`);
    if (this.saved) throw new KernelError(Errno.EBUSY, `kstate: unregister(${what}): the state is saved for a live update (cancel it first)`);
    this.regs.delete(key);
    for (const d of r.desc.reachable) {
      const owner = this.idOwners.get(idKey(d.id))!;
      if (--owner.count === 0) this.idOwners.delete(idKey(d.id));
    }
  }

  /** The registrations, in registration order. */
  registrations(): ReadonlyArray<{ readonly desc: Description; readonly instance: InstanceId; readonly obj: object }> {
    return [...this.regs.values()];
  }

  /**
   * Writes every registered object into a new stream in preserved memory and adds the `kstate` subtree.
   * Memory that fields point at is preserved on the way. On any failure everything this save preserved,
   * allocated or added is undone (reverse order) and the error propagates: EINVAL for a value that does not fit
   * its field, ENOMEM, EOPNOTSUPP (KHO off), EEXIST (a `kstate` subtree exists), a custom callback's error.
   * Throws EBUSY when a save is live already. Returns what it wrote.
   */
  save(): SaveStats {
    if (this.saved) throw new KernelError(Errno.EBUSY, 'kstate: save: the state is saved already (cancel first)');
    const u = new Unwind();
    try {
      const stats = this.regs.size === 0 ? emptyStats() : this.writeStream(u);
      this.saved = { u, stats };
      if (stats.rootPhys !== 0) {
        this.log.info(
          'kstate',
          `saved ${stats.sections} sections of ${stats.schemas} descriptions: ${formatBytes(stats.bytes)} in ${stats.segments} segments at ${hex(stats.rootPhys)}`,
        );
      }
      return stats;
    } catch (e) {
      const undoErrors = u.unwind();
      if (undoErrors.length > 0) throw new AggregateError([e, ...undoErrors], `kstate: unwinding a failed save also failed ${undoErrors.length} time(s)`);
      throw e;
    }
  }

  private writeStream(u: Unwind): SaveStats {
    const saver = new Saver(this.backend, u);
    const { bytes, schemas, sections } = encodeStream(this.regs.values(), saver);
    const segs = writeSegments(this.ram, bytes, this.backend, u);
    const root = segs[0].phys;
    this.backend.addSubtree(KSTATE_SUBTREE, root, KSTATE_SEGMENT_HEADER_SIZE + segs[0].payload);
    u.push(() => this.backend.removeSubtree(root));
    return {
      rootPhys: root,
      bytes: bytes.length,
      segments: segs.length,
      pages: segs.reduce((n, s) => n + 2 ** s.order, 0),
      sections,
      schemas,
      folios: saver.folios.size,
      vmallocs: saver.vmallocs.size,
      physRanges: saver.ranges.size,
    };
  }

  /** What the live save wrote, if one is live. */
  get savedStats(): SaveStats | undefined {
    return this.saved?.stats;
  }

  /**
   * Undoes a live save: removes the subtree, frees the stream's pages and unpreserves everything the fields
   * preserved, in reverse order. Nothing to do without a live save.
   */
  cancel(): void {
    const s = this.saved;
    if (!s) return;
    this.saved = undefined;
    const errors = s.u.unwind();
    if (errors.length > 0) throw new AggregateError(errors, `kstate: cancel failed ${errors.length} time(s)`);
    this.log.info('kstate', 'save cancelled: everything it preserved is unpreserved');
  }

  // ---------------------------------------------------------------- incoming

  /**
   * The previous kernel's stream, read and validated (not claimed: usable from boot:early on). Undefined when
   * there is none (no KHO boot, or no `kstate` subtree). Throws the KernelError that refused it.
   */
  incoming(): IncomingStream | undefined {
    if (!this.inc) this.inc = this.open();
    if (this.inc.error) throw this.inc.error;
    return this.inc.stream;
  }

  private open(): Incoming {
    if (!this.backend.isKhoBoot()) return { none: 'this boot has no incoming KHO handover' };
    let root: number;
    try {
      root = this.backend.retrieveSubtree(KSTATE_SUBTREE);
    } catch (e) {
      if (isKernelError(e, Errno.ENOENT)) return { none: 'the previous kernel handed over no kstate stream' };
      return { error: asKernelError(e) };
    }
    try {
      const stream = openStream(this.ram, root);
      this.log.info('kstate', `incoming stream at ${hex(root)}: ${stream.sections.length} sections, ${formatBytes(stream.size)}`);
      return { stream };
    } catch (e) {
      const error = asKernelError(e);
      this.log.error('kstate', `incoming stream refused: ${error.message}`);
      return { error };
    }
  }

  /** The incoming stream, claimed (its segments restored from KHO). Throws ENOENT when there is none. */
  private stream(): IncomingStream {
    const stream = this.incoming();
    if (!stream) throw new KernelError(Errno.ENOENT, `kstate: ${this.inc!.none}`);
    if (!this.claimed) {
      const claimed: Folio[] = [];
      try {
        for (const s of stream.segments) {
          const f = this.backend.restoreFolio(s.phys);
          claimed.push(f);
          if (f.order !== s.order) throw new KernelError(Errno.EINVAL, `kstate: segment at ${hex(s.phys)} was preserved with order ${f.order} (its header says ${s.order})`);
        }
      } catch (e) {
        for (const f of claimed) this.backend.freeFolio(f);
        const error = asKernelError(e);
        this.log.error('kstate', `incoming stream refused: its pages are not all preserved: ${error.message}`);
        this.inc = { error: new KernelError(error.errno, `kstate: the stream's pages are not all preserved: ${error.message}`) };
        throw this.inc.error;
      }
      this.claimed = claimed;
    }
    return stream;
  }

  /** The incoming section keyed (desc.id, instance). Throws ENOENT; EINVAL when a named instance's name differs. */
  private section(stream: IncomingStream, desc: Description, instance: InstanceId): IncomingSection {
    const s = stream.find(desc.id, instance);
    if (s && typeof instance !== 'object') return s;
    const what = `'${desc.name}' instance ${showInstance(instance)}`;
    if (!s) throw new KernelError(Errno.ENOENT, `kstate: no section for ${what} in the incoming stream`);
    if (typeof instance === 'object' && typeof s.instance === 'object' && s.instance.name !== instance.name) {
      throw new KernelError(Errno.EINVAL, `kstate: section ${what}: the stream's instance of that hash is named '${s.instance.name}'`);
    }
    return s;
  }

  /**
   * Restores the section keyed (desc.id, instance) into `target` (or a new object): checks the version window,
   * applies upgrade steps, maps fields by name, runs custom restores, restores the memory fields refer to, then
   * sets the properties. Returns the report. Throws ENOENT (no stream, no such section), EINVAL (restored
   * already; a refused stream; data outside the version window; a value that does not fit; a malformed body;
   * memory that was not preserved), EOPNOTSUPP (a vmalloc buffer in a kernel without vmalloc), or a custom
   * restore's error. On a failure the memory this call restored is freed again and the target's properties are
   * untouched (custom restores that ran may have set theirs).
   */
  restore<T extends object>(desc: Description<T>, instance: InstanceId, target?: T): RestoreReport<T> {
    const d = desc as unknown as Description;
    if (!isDescription(d)) throw new KernelError(Errno.EINVAL, 'kstate: restore: the description was not made by describe()');
    checkInstance(instance);
    const stream = this.stream();
    const s = this.section(stream, d, instance);
    const where = (): string => `'${d.name}' instance ${showInstance(instance)}`;
    if (this.restoredSections.has(s)) throw new KernelError(Errno.EINVAL, `kstate: ${where()} was restored already`);
    try {
      const rec = stream.decode(s);
      const obj = (target ?? (d.create ? d.create() : {})) as T;
      const plan = new RestorePlan(where);
      plan.record(d, rec, obj);
      for (const c of plan.customs) c();
      const results = this.restoreAll(plan);
      plan.commit();
      plan.memory.forEach((t, i) => t.set(results[i]));
      this.restoredSections.add(s);
      this.failures.delete(s);
      const report = plan.report(obj, d.id, instance, rec.schema.version, d.version, plan.memory.map((t) => `${t.path}: ${t.ref}`));
      for (const m of report.strandedMemory) this.stranded.push(`${where()}: ${m}`);
      return report;
    } catch (e) {
      this.failures.set(s, describeError(e, { errno: true }));
      throw e;
    }
  }

  /**
   * Reads the section keyed (desc.id, instance) into a new object without restoring anything: memory fields
   * hold the references (`FolioRef`, `VmallocRef`, `PhysRangeRef`, the latter shaped `{ start, size }`) and
   * custom restores run on the new object. Works from boot:early on (the stream is read, not claimed), so an
   * early user such as `reserve_mem` can look up its regions. Throws like {@link restore}.
   */
  peek<T extends object>(desc: Description<T>, instance: InstanceId): RestoreReport<T> {
    const d = desc as unknown as Description;
    if (!isDescription(d)) throw new KernelError(Errno.EINVAL, 'kstate: peek: the description was not made by describe()');
    checkInstance(instance);
    const stream = this.incoming();
    if (!stream) throw new KernelError(Errno.ENOENT, `kstate: ${this.inc!.none}`);
    const s = this.section(stream, d, instance);
    const rec = stream.decode(s);
    const obj = (d.create ? d.create() : {}) as T;
    const plan = new RestorePlan(`'${d.name}' instance ${showInstance(instance)}`);
    plan.record(d, rec, obj);
    for (const c of plan.customs) c();
    plan.commit();
    for (const t of plan.memory) t.set(t.ref);
    return plan.report(obj, d.id, instance, rec.schema.version, d.version, []);
  }

  /** Restores every memory task of a plan; on a failure frees what this call restored and rethrows. */
  private restoreAll(plan: RestorePlan): unknown[] {
    const u = new Unwind();
    try {
      const out = plan.memory.map((t) => this.restoreMemory(t.ref, t.path, plan.where, u));
      u.commit();
      return out;
    } catch (e) {
      u.unwind();
      throw e;
    }
  }

  private restoreMemory(ref: MemoryRef, path: string, where: string, u: Unwind): unknown {
    const k = memoryKey(ref);
    if (this.restoredMemory.has(k)) return this.restoredMemory.get(k);
    try {
      return this.restoreOne(ref, k, path, where, u);
    } catch (e) {
      if (!(e instanceof KernelError) || e.message.includes(`field '${path}'`)) throw e;
      throw new KernelError(e.errno, `kstate: ${where}: field '${path}': ${e.message}`, { cause: e });
    }
  }

  private restoreOne(ref: MemoryRef, k: string, path: string, where: string, u: Unwind): unknown {
    const b = this.backend;
    let value: unknown;
    let undo: () => void;
    if (ref instanceof FolioRef) {
      const f = b.restoreFolio(ref.phys);
      if (f.order !== ref.order) {
        b.freeFolio(f);
        throw new KernelError(Errno.EINVAL, `kstate: ${where}: field '${path}': folio ${hex(ref.phys)} was preserved with order ${f.order} (the data says ${ref.order})`);
      }
      value = f;
      undo = () => b.freeFolio(f);
    } else if (ref instanceof VmallocRef) {
      if (!b.vmalloc) throw new KernelError(Errno.EOPNOTSUPP, `kstate: ${where}: field '${path}' is a vmalloc buffer and this kernel has no vmalloc`);
      const vm = b.vmalloc;
      const addr = vm.restoreVmalloc(ref.desc);
      value = addr;
      undo = () => vm.vfree(addr);
    } else {
      const n = ref.size / PAGE_SIZE;
      const pfn = b.restorePages(ref.start, n);
      value = { start: ref.start, size: ref.size };
      undo = () => b.freePages(pfn, n);
    }
    this.restoredMemory.set(k, value);
    u.push(() => {
      this.restoredMemory.delete(k);
      undo();
    });
    return value;
  }

  /**
   * Names every section nobody restored and the memory it refers to (which stays preserved, and is also in
   * KHO's own finish report), and frees the stream's pages. Returns the report; undefined without an incoming
   * stream (or on a second call). A refused stream is reported as `{ error }`.
   */
  finish(): FinishReport | { readonly error: string } | undefined {
    if (this.finished) return undefined;
    this.finished = true;
    let stream: IncomingStream | undefined;
    try {
      stream = this.stream();
    } catch (e) {
      if (isKernelError(e, Errno.ENOENT)) return undefined;
      return { error: asKernelError(e).message };
    }
    const unrestored: UnrestoredSection[] = [];
    let count = 0;
    for (const s of stream.sections) {
      if (this.restoredSections.has(s)) continue;
      count++;
      if (unrestored.length >= FINISH_LIST_MAX) continue;
      let memory: string[];
      try {
        memory = memoryOf(stream.decode(s)).map((m) => `${m.path}: ${m.ref}`);
      } catch (e) {
        memory = [`(undecodable: ${describeError(e, { errno: true })})`];
      }
      const entry: { -readonly [K in keyof UnrestoredSection]: UnrestoredSection[K] } = {
        id: typeof s.id === 'number' ? String(s.id) : s.id,
        name: s.schema.name,
        instance: showInstance(s.instance),
        memory,
      };
      const failed = this.failures.get(s);
      if (failed) entry.failed = failed;
      unrestored.push(entry);
    }
    let pages = 0;
    for (const f of this.claimed ?? []) {
      this.backend.freeFolio(f);
      pages += f.nrPages;
    }
    this.claimed = [];
    if (count > 0) {
      this.log.warn(
        'kstate',
        `finish: ${count} of ${stream.sections.length} sections were never restored: ${unrestored
          .slice(0, 8)
          .map((u) => `'${u.name}' instance ${u.instance}${u.memory.length ? ` (${u.memory.join(', ')})` : ''}`)
          .join('; ')}${count > 8 ? '; …' : ''}`,
      );
    }
    if (this.stranded.length > 0) this.log.warn('kstate', `finish: memory of dropped or skipped fields stays preserved: ${this.stranded.slice(0, 8).join('; ')}`);
    const report: FinishReport = {
      sections: stream.sections.length,
      restored: stream.sections.length - count,
      unrestored,
      strandedMemory: this.stranded.slice(),
      streamPagesFreed: pages,
    };
    return report;
  }

  /**
   * Opens and claims the incoming stream (its segments restored from KHO, so they are this kernel's to free at
   * finish) and returns what it holds; undefined when there is none. Throws the error that refused it.
   */
  claimIncoming(): { sections: number; schemas: number; bytes: number; segments: number } | undefined {
    let stream: IncomingStream;
    try {
      stream = this.stream();
    } catch (e) {
      if (isKernelError(e, Errno.ENOENT)) return undefined;
      throw e;
    }
    return { sections: stream.sections.length, schemas: stream.schemas.size, bytes: stream.size, segments: stream.segments.length };
  }
}

/** Records what a save's fields preserve, once per distinct block, with the undo of each on the ladder. */
class Saver implements MemorySaver {
  readonly folios = new Set<string>();
  readonly vmallocs = new Map<number, Uint8Array>();
  readonly ranges = new Set<string>();

  constructor(
    private readonly b: KStateBackend,
    private readonly u: Unwind,
  ) {}

  folio(f: { readonly pfn: Pfn; readonly order: Order; readonly phys: number }): void {
    const k = `${f.pfn}:${f.order}`;
    if (this.folios.has(k)) return;
    const folio = f instanceof Folio ? f : new Folio(f.pfn, f.order);
    this.b.preserveFolio(folio);
    this.folios.add(k);
    this.u.push(() => this.b.unpreserveFolio(folio));
  }

  vmalloc(addr: number, where: string): Uint8Array {
    const have = this.vmallocs.get(addr);
    if (have) return have;
    const vm = this.b.vmalloc;
    if (!vm) throw new KernelError(Errno.EOPNOTSUPP, `kstate: ${where} is a vmalloc buffer and this kernel has no vmalloc`);
    const desc = vm.preserveVmalloc(addr);
    this.vmallocs.set(addr, desc);
    this.u.push(() => vm.unpreserveVmalloc(desc));
    return desc;
  }

  physRange(start: number, size: number): void {
    const k = `${start}:${size}`;
    if (this.ranges.has(k)) return;
    const pfn = toPfn(start / PAGE_SIZE); // the encoder checked the range: page-aligned, non-negative
    const n = size / PAGE_SIZE;
    this.b.preservePages(pfn, n);
    this.ranges.add(k);
    this.u.push(() => this.b.unpreservePages(pfn, n));
  }
}

function memoryKey(ref: MemoryRef): string {
  if (ref instanceof FolioRef) return `f:${ref.phys}`;
  if (ref instanceof VmallocRef) return `v:${ref.first}`;
  return `r:${(ref as PhysRangeRef).start}:${(ref as PhysRangeRef).size}`;
}

function emptyStats(): SaveStats {
  return { rootPhys: 0, bytes: 0, segments: 0, pages: 0, sections: 0, schemas: 0, folios: 0, vmallocs: 0, physRanges: 0 };
}

function asKernelError(e: unknown): KernelError {
  if (e instanceof KernelError) return e;
  return new KernelError(Errno.EINVAL, `kstate: ${describeError(e, { errno: true })}`, { cause: e });
}
