import { Errno, KernelError, isKernelError, describeError } from '@kho/kernel';
import { KSTATE_LIMITS } from './abi';
import { CustomBytes, DecodedRecord, FolioRef, PhysRangeRef, VmallocRef, memoryOf, type MemoryRef } from './decode';
import { describeJs } from './encode';
import { idKey, isScalarKind, type DescId, type Description, type Field, type InstanceId, type ScalarKind } from './model';
import type { DescSchema } from './schema';
import { ByteReader, utf8Length } from './wire';

/** What a restore did, field by field (paths: `count`, `extra/flags` for a subsection, `cfg.level`, `items[].x`). */
export interface RestoreReport<T extends object = object> {
  /** The object restored into (the target given, or a new one). */
  readonly object: T;
  readonly id: DescId;
  readonly instance: InstanceId;
  /** The data's version and this code's. */
  readonly version: { readonly data: number; readonly code: number };
  /** Upgrade steps applied, e.g. `'foo' 1->2`. */
  readonly upgrades: readonly string[];
  /** Fields of the object (and of its subsections) set from the data. */
  readonly restored: readonly string[];
  /** Fields the data lacks (older data, or a subsection not written): the object keeps its default. */
  readonly defaulted: readonly string[];
  /** Deprecated fields (`until`) read from old data and dropped. */
  readonly dropped: readonly string[];
  /** Subsections in the data this code does not know, skipped by length. */
  readonly skippedSubsections: readonly string[];
  /** Fields in the data this code does not know, skipped by name. */
  readonly skippedFields: readonly string[];
  /** Memory restored, e.g. `buf: folio 0x1000 order 2`. */
  readonly memory: readonly string[];
  /** Memory the data refers to in dropped or skipped fields and subsections: it stays preserved and is reported at finish. */
  readonly strandedMemory: readonly string[];
}

/** A memory field to restore: `set` receives what the restore returned. */
export interface MemoryTask {
  readonly path: string;
  readonly ref: MemoryRef;
  set(value: unknown): void;
}

/**
 * What restoring a record into an object will do, computed without touching memory or the object: custom
 * restores to run, memory to restore, and property assignments to commit. Building it checks version windows,
 * applies upgrade steps and checks every value against the reader's fields.
 */
export class RestorePlan {
  readonly customs: Array<() => void> = [];
  readonly memory: MemoryTask[] = [];
  // Property assignments to commit, as three parallel arrays (no closure per field).
  private readonly cTarget: Array<Record<string, unknown>> = [];
  private readonly cName: string[] = [];
  private readonly cValue: unknown[] = [];
  readonly restored: string[] = [];
  readonly defaulted: string[] = [];
  readonly dropped: string[] = [];
  readonly skippedSubsections: string[] = [];
  readonly skippedFields: string[] = [];
  readonly upgrades: string[] = [];
  readonly stranded: Array<{ path: string; ref: MemoryRef }> = [];

  /** `where` names the section in messages, e.g. `'foo' instance 3` (a function is called only for a message). */
  constructor(private readonly whereOf: string | (() => string)) {}

  /** The section, as messages name it. */
  get where(): string {
    return typeof this.whereOf === 'string' ? this.whereOf : this.whereOf();
  }

  /** Sets every planned property. Cannot fail. */
  commit(): void {
    for (let i = 0; i < this.cTarget.length; i++) this.cTarget[i][this.cName[i]] = this.cValue[i];
  }

  /** Plans restoring `rec` into `target` with `desc`. Throws EINVAL (version window, a value that does not fit). */
  record(desc: Description, rec: DecodedRecord, target: object, path = '', top = true, depth = 0): void {
    if (depth > KSTATE_LIMITS.maxDepth) this.fail(path, `nests deeper than ${KSTATE_LIMITS.maxDepth}`);
    checkWindow(desc, rec.schema);
    let values = rec.values;
    for (let v = rec.schema.version; v < desc.version; v++) {
      const step = desc.upgrade.get(v);
      if (!step) continue;
      values = this.upgrade(desc, v, step, values);
      once(this.upgrades, `${path}'${desc.name}' ${v}->${v + 1}`);
    }
    const o = target as Record<string, unknown>;
    const fields = desc.fields;
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i];
      const has = Object.prototype.hasOwnProperty.call(values, f.name);
      if (f.until !== undefined) {
        if (has) {
          once(this.dropped, path + f.name);
          this.strand(values[f.name], path + f.name);
        }
        continue;
      }
      if (!has) {
        once(this.defaulted, path + f.name);
        continue;
      }
      this.value(f, values[f.name], o, path, depth);
      if (top) this.restored.push(path + f.name);
    }
    const known = fieldNames(desc);
    for (const k in values) {
      if (known.has(k)) continue;
      once(this.skippedFields, path + k);
      this.strand(values[k], path + k);
    }
    for (const s of rec.subsections) {
      const mine = desc.subsections.find((x) => idKey(x.desc.id) === idKey(s.id));
      if (!mine) {
        once(this.skippedSubsections, `${path}${s.schema.name}`);
        for (const m of memoryOf(s.record, `${path}${s.schema.name}/`)) this.stranded.push(m);
        continue;
      }
      this.record(mine.desc, s.record, target, `${path}${mine.desc.name}/`, top, depth + 1);
    }
  }

  private upgrade(desc: Description, v: number, step: (x: Record<string, unknown>) => Record<string, unknown>, values: Record<string, unknown>): Record<string, unknown> {
    let out: unknown;
    try {
      out = step(Object.assign(Object.create(null) as Record<string, unknown>, values));
    } catch (e) {
      const msg = describeError(e, { errno: true });
      throw new KernelError(isKernelError(e) ? e.errno : Errno.EINVAL, `kstate: ${this.where}: upgrade step ${v}->${v + 1} of '${desc.name}' failed: ${msg}`, { cause: e });
    }
    if (typeof out !== 'object' || out === null) {
      throw new KernelError(Errno.EINVAL, `kstate: ${this.where}: upgrade step ${v}->${v + 1} of '${desc.name}' returned ${describeJs(out)} (wanted an object of values)`);
    }
    return Object.assign(Object.create(null) as Record<string, unknown>, out);
  }

  private strand(v: unknown, path: string): void {
    if (v instanceof FolioRef || v instanceof VmallocRef || v instanceof PhysRangeRef) this.stranded.push({ path, ref: v });
    else if (v instanceof DecodedRecord) for (const m of memoryOf(v, `${path}.`)) this.stranded.push(m);
    else if (Array.isArray(v)) v.forEach((x, i) => this.strand(x, `${path}[${i}]`));
  }

  private value(f: Field, v: unknown, target: Record<string, unknown>, path: string, depth: number): void {
    const name = path + f.name;
    const set = (x: unknown): void => {
      this.cTarget.push(target);
      this.cName.push(f.name);
      this.cValue.push(x);
    };
    if (isScalarKind(f.kind)) return set(this.scalar(f.kind, v, name));
    switch (f.kind) {
      case 'str': {
        if (typeof v !== 'string') return this.mismatch(name, v, `str[${f.size}]`);
        if (utf8Length(v) > f.size || v.includes('\0')) this.fail(name, `holds ${describeJs(v)}, which does not fit str[${f.size}]`);
        return set(v);
      }
      case 'bytes':
        if (!(v instanceof Uint8Array) || v.length !== f.size) return this.mismatch(name, v, `bytes[${f.size}]`);
        return set(v);
      case 'struct':
      case 'ptr': {
        if (v === null && f.kind === 'ptr') return set(null);
        const rec = this.nested(f, v, name);
        const existing = target[f.name];
        const t = typeof existing === 'object' && existing !== null ? existing : newObject(f.desc!);
        this.record(f.desc!, rec, t, `${name}.`, false, depth + 1);
        if (t !== existing) set(t);
        return;
      }
      case 'array': {
        if (!Array.isArray(v)) return this.mismatch(name, v, 'an array');
        if (f.elem === 'struct') {
          const out = v.map((x) => {
            const t = newObject(f.desc!);
            this.record(f.desc!, this.nested(f, x, `${name}[]`), t, `${name}[].`, false, depth + 1);
            return t;
          });
          return set(out);
        }
        const elem = f.elem as ScalarKind;
        return set(v.map((x) => this.scalar(elem, x, `${name}[]`)));
      }
      case 'folio':
      case 'vmalloc':
      case 'physRange': {
        if (v === null) return set(null);
        const want = f.kind === 'folio' ? FolioRef : f.kind === 'vmalloc' ? VmallocRef : PhysRangeRef;
        if (!(v instanceof want)) return this.mismatch(name, v, `a ${f.kind}`);
        this.memory.push({ path: name, ref: v, set: (x) => (target[f.name] = x) });
        return;
      }
      case 'custom': {
        if (!(v instanceof CustomBytes)) return this.mismatch(name, v, 'custom bytes');
        const codec = f.codec!;
        this.customs.push(() => {
          const r = new ByteReader(v.bytes, 0, v.bytes.length, `${this.where}: custom field '${name}'`);
          try {
            codec.restore(r, target);
          } catch (e) {
            const msg = describeError(e, { errno: true });
            throw new KernelError(isKernelError(e) ? e.errno : Errno.EIO, `kstate: ${this.where}: custom field '${name}' restore failed: ${msg}`, { cause: e });
          }
        });
        return;
      }
    }
  }

  private nested(f: Field, v: unknown, name: string): DecodedRecord {
    if (!(v instanceof DecodedRecord)) return this.mismatch(name, v, `a '${f.desc!.name}' record`);
    if (idKey(v.schema.id) !== idKey(f.desc!.id)) this.fail(name, `holds a '${v.schema.name}' record (wanted '${f.desc!.name}')`);
    return v;
  }

  /** Converts a value to a scalar kind when it fits. */
  scalar(kind: ScalarKind, v: unknown, name: string): unknown {
    if (kind === 'bool') {
      if (typeof v !== 'boolean') this.mismatch(name, v, 'bool');
      return v;
    }
    if (kind !== 'u64' && kind !== 'i64' && typeof v === 'number') {
      // The common case stays in numbers: every bound below is exact as a double.
      const [lo, hi] = NUM_RANGE[kind];
      if (!Number.isInteger(v)) return this.mismatch(name, v, kind);
      if (v < lo || v > hi) this.fail(name, `holds ${describeJs(v)}, which does not fit ${kind}`);
      return v;
    }
    const [min, max] = RANGE[kind];
    let b: bigint;
    if (typeof v === 'bigint') b = v;
    else if (typeof v === 'number' && Number.isSafeInteger(v)) b = BigInt(v);
    else return this.mismatch(name, v, kind);
    if (b < min || b > max) this.fail(name, `holds ${describeJs(v)}, which does not fit ${kind}`);
    return kind === 'u64' || kind === 'i64' ? b : Number(b);
  }

  private mismatch(name: string, v: unknown, want: string): never {
    return this.fail(name, `holds ${describeData(v)} in the data (wanted ${want})`);
  }

  private fail(name: string, why: string): never {
    throw new KernelError(Errno.EINVAL, `kstate: ${this.where}: field '${name}' ${why}`);
  }

  /** The report of a plan that ran. */
  report<T extends object>(object: T, id: DescId, instance: InstanceId, data: number, code: number, memory: readonly string[]): RestoreReport<T> {
    return {
      object,
      id,
      instance,
      version: { data, code },
      upgrades: this.upgrades,
      restored: this.restored,
      defaulted: this.defaulted,
      dropped: this.dropped,
      skippedSubsections: this.skippedSubsections,
      skippedFields: this.skippedFields,
      memory,
      strandedMemory: this.stranded.map((m) => `${m.path}: ${m.ref}`),
    };
  }
}

/** The range of each integer-valued scalar kind (phys: addresses below 2^53). */
export const RANGE: Readonly<Record<Exclude<ScalarKind, 'bool'>, readonly [bigint, bigint]>> = {
  u8: [0n, 0xffn],
  u16: [0n, 0xffffn],
  u32: [0n, 0xffffffffn],
  u64: [0n, 2n ** 64n - 1n],
  i8: [-0x80n, 0x7fn],
  i16: [-0x8000n, 0x7fffn],
  i32: [-0x80000000n, 0x7fffffffn],
  i64: [-(2n ** 63n), 2n ** 63n - 1n],
  phys: [0n, 2n ** 53n - 1n],
};

const NUM_RANGE: Readonly<Record<Exclude<ScalarKind, 'bool' | 'u64' | 'i64'>, readonly [number, number]>> = {
  u8: [0, 0xff],
  u16: [0, 0xffff],
  u32: [0, 0xffffffff],
  i8: [-0x80, 0x7f],
  i16: [-0x8000, 0x7fff],
  i32: [-0x80000000, 0x7fffffff],
  phys: [0, Number.MAX_SAFE_INTEGER],
};

/**
 * The version window: data older than `minVersion` is refused; data newer than `version` is refused unless its
 * writer declared that code of this version can read it (`oldestReader`). Throws EINVAL naming the description
 * and both versions.
 */
export function checkWindow(desc: Description, data: DescSchema): void {
  const v = data.version;
  if (v < desc.minVersion || (v > desc.version && data.oldestReader > desc.version)) {
    const why = v > desc.version ? ` (its writer needs readers of version ${data.oldestReader} or later)` : '';
    throw new KernelError(Errno.EINVAL, `kstate: '${desc.name}' data is version ${v}, this code reads versions ${desc.minVersion}..${desc.version}${why}`);
  }
}

function once(list: string[], s: string): void {
  if (!list.includes(s)) list.push(s);
}

const FIELD_NAMES = new WeakMap<Description, ReadonlySet<string>>();

/** Names of a description's own fields (deprecated ones included), computed once per description. */
function fieldNames(desc: Description): ReadonlySet<string> {
  let names = FIELD_NAMES.get(desc);
  if (!names) {
    names = new Set(desc.fields.map((f) => f.name));
    FIELD_NAMES.set(desc, names);
  }
  return names;
}

function newObject(desc: Description): object {
  const o = desc.create ? desc.create() : {};
  if (typeof o !== 'object' || o === null) throw new KernelError(Errno.EINVAL, `kstate: '${desc.name}' create() returned ${describeJs(o)} (wanted an object)`);
  return o;
}

/** A decoded value as a message shows it. */
function describeData(v: unknown): string {
  if (v instanceof DecodedRecord) return `a '${v.schema.name}' record`;
  if (v instanceof FolioRef || v instanceof VmallocRef || v instanceof PhysRangeRef) return `a ${v}`;
  if (v instanceof CustomBytes) return `custom bytes (${v.bytes.length})`;
  return describeJs(v);
}
