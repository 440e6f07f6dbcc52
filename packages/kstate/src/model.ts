import { Errno, KernelError, hex } from '@kho/kernel';
import { KHO_VMALLOC_SIZE } from '@kho/vmalloc/abi';
import { KSTATE_FOLIO_SIZE, KSTATE_LIMITS, KSTATE_PHYS_RANGE_SIZE } from './abi';
import { crc32c } from '@kho/kernel';
import { utf8Bytes, type FieldReader, type FieldWriter } from './wire';

/** A description's stable id: a string (1..255 bytes of UTF-8) or a non-negative safe integer. */
export type DescId = string | number;

/** Fixed-size base types. u64 and i64 values are bigints; phys values are numbers (addresses are below 2^53). */
export type ScalarKind = 'u8' | 'u16' | 'u32' | 'u64' | 'i8' | 'i16' | 'i32' | 'i64' | 'bool' | 'phys';
/** Every field kind. */
export type FieldKind = ScalarKind | 'str' | 'bytes' | 'struct' | 'ptr' | 'array' | 'folio' | 'vmalloc' | 'physRange' | 'custom';

/** Bytes of each scalar kind. */
export const SCALAR_SIZE: Readonly<Record<ScalarKind, number>> = {
  u8: 1,
  u16: 2,
  u32: 4,
  u64: 8,
  i8: 1,
  i16: 2,
  i32: 4,
  i64: 8,
  bool: 1,
  phys: 8,
};

/** True for the scalar kinds. */
export function isScalarKind(k: string): k is ScalarKind {
  return Object.prototype.hasOwnProperty.call(SCALAR_SIZE, k);
}

/** Where a field exists: from version `since` (the `_V` form) and before version `until` (deprecated). */
export interface VersionOptions {
  /** The field exists from this version on; older data lacks it and the object keeps its default. */
  readonly since?: number;
  /** Deprecated from this version on: read from older data and dropped, never written. */
  readonly until?: number;
}

/** A custom field's callbacks. Their errors are propagated (as KernelError) and reported, never ignored. */
export interface CustomCodec<T = object> {
  save(w: FieldWriter, obj: T): void;
  restore(r: FieldReader, obj: T): void;
}

/** One field: the object property `name` and how its value is saved. Build fields with the functions below. */
export interface Field<N extends string = string> {
  readonly name: N;
  readonly kind: FieldKind;
  /** Bytes of a fixed-size value (the element size for an array of scalars); 0 when length-prefixed. */
  readonly size: number;
  readonly since?: number;
  readonly until?: number;
  /** The nested description of a struct, ptr, or array of records. */
  readonly desc?: Description;
  /** The element of an array: a scalar kind, or 'struct' (then `desc`). */
  readonly elem?: ScalarKind | 'struct';
  /** Elements of an array to save (default: the array's length). */
  length?(obj: object): number;
  /** A custom field's callbacks. */
  readonly codec?: CustomCodec;
}

/** A subsection: a further description of the same object, written when `needed(obj)` (default: always). */
export interface Subsection<T = object> {
  readonly desc: Description;
  needed?(obj: T): boolean;
}

/** An explicit upgrade step: takes the values of version v (by field name) and returns those of version v + 1. */
export type UpgradeStep = (values: Record<string, unknown>) => Record<string, unknown>;

/** The property names a description of T may map: T's keys, or any name when T names none (`object`). */
export type FieldName<T> = [keyof T] extends [never] ? string : Extract<keyof T, string>;

/** What `describe` takes. */
export interface DescribeOptions<T extends object> {
  readonly name: string;
  /** Stable id (default: the name). */
  readonly id?: DescId;
  /** The version this code writes (1..65535). */
  readonly version: number;
  /** The oldest data version this code reads (default: `version`). */
  readonly minVersion?: number;
  /**
   * The oldest code version that can read what this version writes (default: `version`, i.e. older code
   * refuses it). Lower it when a version only adds what older readers may skip (a field, a subsection).
   */
  readonly oldestReader?: number;
  readonly fields: ReadonlyArray<Field<FieldName<T>>>;
  readonly subsections?: ReadonlyArray<Subsection<T>>;
  /** `{ v: step }`: step v turns version-v values into version v + 1 values; applied in order. */
  readonly upgrade?: Readonly<Record<number, UpgradeStep>>;
  /** Makes the object a restore fills when no target is given (default: `{}`). */
  readonly create?: () => T;
}

/** A validated, frozen description (see {@link describe}). */
export interface Description<T extends object = object> {
  readonly name: string;
  readonly id: DescId;
  readonly version: number;
  readonly minVersion: number;
  readonly oldestReader: number;
  readonly fields: readonly Field[];
  readonly subsections: readonly Subsection<T>[];
  readonly upgrade: ReadonlyMap<number, UpgradeStep>;
  create?(): T;
  /** The fields this version writes (those without `until`), in order. */
  readonly written: readonly Field[];
  /** Every description reachable from this one (itself first), each id once. */
  readonly reachable: readonly Description[];
}

// ------------------------------------------------------------------------------------------------ builders

function field<N extends string>(name: N, kind: FieldKind, size: number, opts: VersionOptions, extra: Partial<Field> = {}): Field<N> {
  checkName('field name', name);
  const { since, until } = opts;
  if (since !== undefined) checkVersionNumber(`field '${name}': since`, since);
  if (until !== undefined) checkVersionNumber(`field '${name}': until`, until);
  if (since !== undefined && until !== undefined && since >= until) {
    throw new KernelError(Errno.EINVAL, `kstate: field '${name}': since ${since} is not below until ${until} (it would exist in no version)`);
  }
  const f: Field<N> = { ...extra, name, kind, size };
  if (since !== undefined) (f as { since?: number }).since = since;
  if (until !== undefined) (f as { until?: number }).until = until;
  return Object.freeze(f);
}

export const u8 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'u8', 1, opts);
export const u16 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'u16', 2, opts);
export const u32 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'u32', 4, opts);
/** A u64; the property holds a bigint (a non-negative safe integer number is accepted when saving). */
export const u64 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'u64', 8, opts);
export const i8 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'i8', 1, opts);
export const i16 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'i16', 2, opts);
export const i32 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'i32', 4, opts);
/** An i64; the property holds a bigint (a safe integer number is accepted when saving). */
export const i64 = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'i64', 8, opts);
export const bool = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'bool', 1, opts);
/** A physical address (u64 in the stream); the property holds a number below 2^53. */
export const phys = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'phys', 8, opts);

/** A fixed char[n]: a string of at most n bytes of UTF-8, without NUL. */
export function str<N extends string>(name: N, n: number, opts: VersionOptions = {}): Field<N> {
  checkFixedSize(name, n);
  return field(name, 'str', n, opts);
}

/** A fixed byte array of exactly n bytes (a Uint8Array). */
export function bytes<N extends string>(name: N, n: number, opts: VersionOptions = {}): Field<N> {
  checkFixedSize(name, n);
  return field(name, 'bytes', n, opts);
}

/** A nested struct saved by value, with its own description and version. */
export function struct<N extends string>(name: N, desc: Description, opts: VersionOptions = {}): Field<N> {
  return field(name, 'struct', 0, opts, { desc: checkDesc(name, desc) });
}

/**
 * A pointer to an object saved by value (or null). Restore fills the object the property already points at,
 * or creates one.
 */
export function ptr<N extends string>(name: N, desc: Description, opts: VersionOptions = {}): Field<N> {
  return field(name, 'ptr', 0, opts, { desc: checkDesc(name, desc) });
}

/** Options of an array field. */
export interface ArrayOptions<O> extends VersionOptions {
  /** How many elements to save (default: the array's length); the restored array has that many. */
  length?(obj: O): number;
}

/** An array of records (a description) or of scalars (a scalar kind), its length taken from the object. */
export function array<N extends string, O extends object = object>(name: N, elem: Description | ScalarKind, opts: ArrayOptions<O> = {}): Field<N> {
  const extra: { elem: ScalarKind | 'struct'; desc?: Description; length?(obj: object): number } =
    typeof elem === 'string' ? { elem: checkScalar(name, elem) } : { elem: 'struct', desc: checkDesc(name, elem) };
  if (opts.length) extra.length = opts.length as (obj: object) => number;
  return field(name, 'array', typeof elem === 'string' ? SCALAR_SIZE[elem] : 0, opts, extra);
}

/** A folio (physmem's Folio, or null): saved as phys + order, preserved with preserveFolio, restored with restoreFolio. */
export const folio = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'folio', KSTATE_FOLIO_SIZE, opts);

/** A vmalloc buffer (its address, or 0/null): preserved with preserveVmalloc, saved as its 16-byte kho_vmalloc descriptor. */
export const vmallocBuf = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'vmalloc', KHO_VMALLOC_SIZE, opts);

/** A physical range `{ start, size }` (page-aligned, or null): its pages are preserved and restored with the KHO page split. */
export const physRange = <N extends string>(name: N, opts: VersionOptions = {}): Field<N> => field(name, 'physRange', KSTATE_PHYS_RANGE_SIZE, opts);

/** A custom field: `save(w, obj)` writes bytes, `restore(r, obj)` reads them back. */
export function custom<N extends string, T extends object = object>(name: N, codec: CustomCodec<T>, opts: VersionOptions = {}): Field<N> {
  if (typeof codec?.save !== 'function' || typeof codec?.restore !== 'function') {
    throw new KernelError(Errno.EINVAL, `kstate: custom field '${name}' needs save and restore functions`);
  }
  return field(name, 'custom', 0, opts, { codec: codec as CustomCodec });
}

// ------------------------------------------------------------------------------------------------ describe

/**
 * Validates and freezes a description. Throws EINVAL naming the description and the problem: a bad name, id
 * or version; a field name used twice (subsections included: they describe the same object); a field whose
 * `since` or `until` is above `version`; an upgrade step outside minVersion..version-1; a subsection id used
 * twice or equal to the description's; two different descriptions with one id anywhere below it.
 */
export function describe<T extends object = Record<string, unknown>>(opts: DescribeOptions<T>): Description<T> {
  const name = opts.name;
  checkName('description name', name);
  const where = `describe('${name}')`;
  const fail = (why: string): never => {
    throw new KernelError(Errno.EINVAL, `kstate: ${where}: ${why}`);
  };
  const id = opts.id ?? name;
  checkDescId(id, where);
  const version = opts.version;
  checkVersionNumber(`${where}: version`, version);
  const minVersion = opts.minVersion ?? version;
  checkVersionNumber(`${where}: minVersion`, minVersion);
  if (minVersion > version) fail(`minVersion ${minVersion} is above version ${version}`);
  const oldestReader = opts.oldestReader ?? version;
  checkVersionNumber(`${where}: oldestReader`, oldestReader);
  if (oldestReader > version) fail(`oldestReader ${oldestReader} is above version ${version}`);
  const fields = [...(opts.fields ?? [])] as Field[];
  if (fields.length > KSTATE_LIMITS.maxFields) fail(`${fields.length} fields (at most ${KSTATE_LIMITS.maxFields})`);
  const names = new Set<string>();
  for (const f of fields) {
    if (!f || typeof f.name !== 'string' || typeof f.kind !== 'string') fail('a field is not built with a field function (u32, str, ...)');
    if (names.has(f.name)) fail(`field '${f.name}' is listed twice`);
    names.add(f.name);
    if (f.since !== undefined && f.since > version) fail(`field '${f.name}': since ${f.since} is above version ${version}`);
    if (f.until !== undefined && f.until > version) {
      fail(`field '${f.name}': until ${f.until} is above version ${version} (a field is deprecated from a version that exists)`);
    }
  }
  const subsections = [...(opts.subsections ?? [])];
  if (subsections.length > KSTATE_LIMITS.maxSubsections) fail(`${subsections.length} subsections (at most ${KSTATE_LIMITS.maxSubsections})`);
  const subIds = new Set<string>([idKey(id)]);
  for (const s of subsections) {
    if (!s || !isDescription(s.desc)) fail('a subsection has no description made by describe()');
    const k = idKey(s.desc.id);
    if (subIds.has(k)) fail(`subsection id ${showId(s.desc.id)} is used twice or equals the description's id`);
    subIds.add(k);
    for (const n of objectFieldNames(s.desc)) {
      if (names.has(n)) fail(`subsection '${s.desc.name}' field '${n}' has the name of another field of the same object`);
      names.add(n);
    }
  }
  const upgrade = new Map<number, UpgradeStep>();
  for (const [k, step] of Object.entries(opts.upgrade ?? {})) {
    const v = Number(k);
    if (!Number.isInteger(v) || v < minVersion || v >= version) {
      fail(`upgrade step ${k} is outside ${minVersion}..${version - 1} (step v turns version v into v + 1)`);
    }
    if (typeof step !== 'function') fail(`upgrade step ${k} is not a function`);
    upgrade.set(v, step);
  }
  const desc = {
    name,
    id,
    version,
    minVersion,
    oldestReader,
    fields: Object.freeze(fields),
    subsections: Object.freeze(subsections),
    upgrade,
    written: Object.freeze(fields.filter((f) => f.until === undefined)),
    reachable: [] as Description[],
  } as { -readonly [K in keyof Description<T>]: Description<T>[K] };
  if (opts.create) desc.create = opts.create;
  desc.reachable = Object.freeze(collectReachable(desc as Description, where));
  const depth = 1 + Math.max(0, ...[...fields.flatMap((f) => (f.desc ? [f.desc] : [])), ...subsections.map((s) => s.desc)].map((d) => DEPTH.get(d) ?? 1));
  if (depth > KSTATE_LIMITS.maxDepth + 1) fail(`descriptions nest ${depth} levels deep (at most ${KSTATE_LIMITS.maxDepth + 1})`);
  DESCRIPTIONS.add(desc);
  DEPTH.set(desc, depth);
  return Object.freeze(desc) as Description<T>;
}

/** {@link describe} under a name that does not shadow jest's `describe` in test files. */
export const describeState = describe;

const DESCRIPTIONS = new WeakSet<object>();
/** How many levels each description nests (itself: 1). */
const DEPTH = new WeakMap<object, number>();

/** True for an object made by {@link describe}. */
export function isDescription(d: unknown): d is Description {
  return typeof d === 'object' && d !== null && DESCRIPTIONS.has(d);
}

/** Names of the object properties a description and its subsections (recursively) map. */
function objectFieldNames(d: Description): string[] {
  return [...d.fields.map((f) => f.name), ...d.subsections.flatMap((s) => objectFieldNames(s.desc))];
}

function collectReachable(root: Description, where: string): Description[] {
  const byId = new Map<string, Description>();
  const out: Description[] = [];
  const visit = (d: Description): void => {
    const k = idKey(d.id);
    const seen = byId.get(k);
    if (seen) {
      if (seen !== d) throw new KernelError(Errno.EINVAL, `kstate: ${where}: descriptions '${seen.name}' and '${d.name}' share id ${showId(d.id)}`);
      return;
    }
    byId.set(k, d);
    out.push(d);
    const children = d === root ? [...d.fields.flatMap((f) => (f.desc ? [f.desc] : [])), ...d.subsections.map((s) => s.desc)] : d.reachable;
    for (const c of children) visit(c);
  };
  visit(root);
  return out;
}

function checkDesc(name: string, d: Description): Description {
  if (!isDescription(d)) throw new KernelError(Errno.EINVAL, `kstate: field '${name}' needs a description made by describe()`);
  return d;
}

function checkScalar(name: string, k: string): ScalarKind {
  if (!isScalarKind(k)) throw new KernelError(Errno.EINVAL, `kstate: array '${name}': element kind '${k}' is not a scalar kind or a description`);
  return k;
}

function checkFixedSize(name: string, n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > KSTATE_LIMITS.maxFixedBytes) {
    throw new KernelError(Errno.EINVAL, `kstate: field '${name}': size ${n} (wanted 1..${KSTATE_LIMITS.maxFixedBytes})`);
  }
}

function checkVersionNumber(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > KSTATE_LIMITS.maxVersion) {
    throw new KernelError(Errno.EINVAL, `kstate: ${what} ${v} (wanted an integer in 1..${KSTATE_LIMITS.maxVersion})`);
  }
}

function checkName(what: string, s: string): void {
  if (typeof s !== 'string' || s.length === 0 || utf8Bytes(s).length > KSTATE_LIMITS.maxNameBytes) {
    throw new KernelError(Errno.EINVAL, `kstate: ${what} ${JSON.stringify(s)} (wanted 1..${KSTATE_LIMITS.maxNameBytes} bytes of UTF-8)`);
  }
}

/** Checks a description id. Throws EINVAL. */
export function checkDescId(id: DescId, where: string): void {
  if (typeof id === 'number') {
    if (!Number.isSafeInteger(id) || id < 0) throw new KernelError(Errno.EINVAL, `kstate: ${where}: id ${id} (wanted a non-negative safe integer or a string)`);
  } else if (typeof id !== 'string' || id.length === 0 || utf8Bytes(id).length > KSTATE_LIMITS.maxNameBytes) {
    throw new KernelError(Errno.EINVAL, `kstate: ${where}: id ${JSON.stringify(id)} (wanted 1..${KSTATE_LIMITS.maxNameBytes} bytes of UTF-8, or a number)`);
  }
}

/** A map key for a description id (numbers and strings never collide). */
export function idKey(id: DescId): string {
  return typeof id === 'number' ? `n:${id}` : `s:${id}`;
}

/** A description id as messages show it: `'foo'` or `7`. */
export function showId(id: DescId): string {
  return typeof id === 'number' ? String(id) : `'${id}'`;
}

// ------------------------------------------------------------------------------------------------ instances

/** An instance named by a string and keyed by its 32-bit hash (see {@link instanceIdOf}). */
export interface NamedInstance {
  readonly hash: number;
  readonly name: string;
}

/**
 * A section's instance id, chosen by the caller and stable across kernels: a non-negative safe integer, a
 * string, or a named hash from {@link instanceIdOf}. Never the order of registration.
 */
export type InstanceId = number | string | NamedInstance;

/**
 * The instance id of a name (e.g. a `reserve_mem` region's): its CRC32C, with the name kept beside it so that a
 * registration whose hash collides with another name's is refused (EEXIST) and a restore checks the name.
 * Throws EINVAL for an empty name or one above 255 bytes.
 */
export function instanceIdOf(name: string): NamedInstance {
  checkName('instance name', name);
  return Object.freeze({ hash: crc32c(utf8Bytes(name)), name });
}

/** Checks an instance id. Throws EINVAL. */
export function checkInstance(inst: InstanceId): void {
  if (typeof inst === 'number') {
    if (!Number.isSafeInteger(inst) || inst < 0) throw new KernelError(Errno.EINVAL, `kstate: instance ${inst} (wanted a non-negative safe integer, a string or instanceIdOf(name))`);
  } else if (typeof inst === 'string') {
    checkName('instance', inst);
  } else if (typeof inst !== 'object' || inst === null || typeof inst.name !== 'string' || inst.hash !== crc32c(utf8Bytes(inst.name))) {
    throw new KernelError(Errno.EINVAL, `kstate: instance ${JSON.stringify(inst)} (a named instance must come from instanceIdOf(name))`);
  }
}

/** A map key for an instance id: named instances are keyed by their hash, so a collision is a duplicate. */
export function instanceKey(inst: InstanceId): string {
  return typeof inst === 'number' ? `n:${inst}` : typeof inst === 'string' ? `s:${inst}` : `h:${inst.hash}`;
}

/** An instance id as messages show it. */
export function showInstance(inst: InstanceId): string {
  return typeof inst === 'number' ? String(inst) : typeof inst === 'string' ? `'${inst}'` : `'${inst.name}' (${hex(inst.hash)})`;
}
