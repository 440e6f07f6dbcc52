import { Errno, KernelError, hex } from '@kho/kernel';
import {
  KSTATE_FIELD_HAS_SINCE,
  KSTATE_FIELD_HAS_UNTIL,
  KSTATE_FOLIO_SIZE,
  KSTATE_LIMITS,
  KSTATE_PHYS_RANGE_SIZE,
  KStateKeyTag,
  KStateKind,
} from './abi';
import { crc32c } from '@kho/kernel';
import { KHO_VMALLOC_SIZE } from '@kho/vmalloc/abi';
import { SCALAR_SIZE, idKey, isScalarKind, showId, type DescId, type Description, type FieldKind, type InstanceId, type ScalarKind } from './model';
import { utf8Bytes, type ByteReader, type ByteWriter } from './wire';

/** One field as the stream (and a schema snapshot) records it. */
export interface FieldSchema {
  readonly name: string;
  readonly kind: FieldKind;
  readonly size: number;
  readonly since?: number;
  readonly until?: number;
  /** Element of an array. */
  readonly elem?: ScalarKind | 'struct';
  /** Id of the nested description of a struct, ptr or array of records. */
  readonly ref?: DescId;
}

/** One description as the stream records it: what a reader with none of the writer's code maps by. */
export interface DescSchema {
  readonly id: DescId;
  readonly name: string;
  readonly version: number;
  readonly minVersion: number;
  readonly oldestReader: number;
  readonly fields: readonly FieldSchema[];
  readonly subsections: readonly DescId[];
  /** Versions v with an upgrade step v -> v + 1 (in snapshots only; the stream does not carry code). */
  readonly upgrades?: readonly number[];
}

/** The format of {@link SchemaSnapshot}s. */
export const KSTATE_SCHEMA_FORMAT = 1;

/** A description and every description below it, as JSON: what `compat` compares offline. */
export interface SchemaSnapshot {
  readonly format: typeof KSTATE_SCHEMA_FORMAT;
  readonly root: DescId;
  readonly descriptions: readonly DescSchema[];
}

const KIND_CODE: Readonly<Record<FieldKind, number>> = KStateKind;
const CODE_KIND = new Map<number, FieldKind>(Object.entries(KStateKind).map(([k, v]) => [v, k as FieldKind]));

/** The schema of one description. */
export function descSchema(d: Description): DescSchema {
  return {
    id: d.id,
    name: d.name,
    version: d.version,
    minVersion: d.minVersion,
    oldestReader: d.oldestReader,
    fields: d.fields.map((f) => {
      const s: { -readonly [K in keyof FieldSchema]: FieldSchema[K] } = { name: f.name, kind: f.kind, size: f.size };
      if (f.since !== undefined) s.since = f.since;
      if (f.until !== undefined) s.until = f.until;
      if (f.elem !== undefined) s.elem = f.elem;
      if (f.desc) s.ref = f.desc.id;
      return s;
    }),
    subsections: d.subsections.map((s) => s.desc.id),
  };
}

/**
 * A JSON snapshot of `desc` and every description below it (root first): commit it beside the code and
 * compare later versions against it with `compat`.
 */
export function schemaOf(desc: Description): SchemaSnapshot {
  return {
    format: KSTATE_SCHEMA_FORMAT,
    root: desc.id,
    descriptions: desc.reachable.map((d) => ({ ...descSchema(d), upgrades: [...d.upgrade.keys()].sort((a, b) => a - b) })),
  };
}

const WRITTEN = new WeakMap<DescSchema, readonly FieldSchema[]>();

/** The fields a version of a schema writes: those without `until` (computed once per schema object). */
export function writtenFields(s: DescSchema): readonly FieldSchema[] {
  let w = WRITTEN.get(s);
  if (!w) {
    w = s.fields.filter((f) => f.until === undefined);
    WRITTEN.set(s, w);
  }
  return w;
}

// ------------------------------------------------------------------------------------------------ validation

/**
 * Checks a set of schemas (from a stream or a snapshot) as hostile input: names, ids, versions, kinds, sizes,
 * since/until, unique names and ids, references that resolve, and no reference cycles. Returns them by id key.
 * Throws EINVAL naming `where`, the description and the problem.
 */
export function validateSchemas(list: readonly DescSchema[], where: string): Map<string, DescSchema> {
  const byId = new Map<string, DescSchema>();
  const fail = (s: DescSchema | undefined, why: string): never => {
    throw new KernelError(Errno.EINVAL, `kstate: ${where}: ${s ? `schema ${showId(s.id)}: ` : ''}${why}`);
  };
  for (const s of list) {
    if (typeof s !== 'object' || s === null) fail(undefined, 'a description is not an object');
    checkIdValue(s.id, () => fail(undefined, `description id ${JSON.stringify(s.id)} is not a string of 1..255 bytes or a non-negative integer`));
    if (!okName(s.name)) fail(s, `name ${JSON.stringify(s.name)} is not 1..255 bytes`);
    for (const [k, v] of [['version', s.version], ['minVersion', s.minVersion], ['oldestReader', s.oldestReader]] as const) {
      if (!okVersion(v)) fail(s, `${k} ${v} (wanted 1..${KSTATE_LIMITS.maxVersion})`);
    }
    if (s.minVersion > s.version) fail(s, `minVersion ${s.minVersion} is above version ${s.version}`);
    if (s.oldestReader > s.version) fail(s, `oldestReader ${s.oldestReader} is above version ${s.version}`);
    const k = idKey(s.id);
    if (byId.has(k)) fail(s, 'the id is described twice');
    byId.set(k, s);
    if (!Array.isArray(s.fields) || s.fields.length > KSTATE_LIMITS.maxFields) fail(s, 'fields is not a list of at most 1024');
    if (!Array.isArray(s.subsections) || s.subsections.length > KSTATE_LIMITS.maxSubsections) fail(s, 'subsections is not a list of at most 256');
    const names = new Set<string>();
    for (const f of s.fields) {
      if (typeof f !== 'object' || f === null || !okName(f.name)) fail(s, 'a field has no valid name');
      if (names.has(f.name)) fail(s, `field '${f.name}' is listed twice`);
      names.add(f.name);
      const why = fieldProblem(f, s.version);
      if (why) fail(s, `field '${f.name}': ${why}`);
    }
    if (s.upgrades !== undefined && (!Array.isArray(s.upgrades) || s.upgrades.some((v) => !Number.isInteger(v) || v < s.minVersion || v >= s.version))) {
      fail(s, `upgrades ${JSON.stringify(s.upgrades)} (wanted versions in ${s.minVersion}..${s.version - 1})`);
    }
    const subs = new Set<string>([k]);
    for (const id of s.subsections) {
      checkIdValue(id, () => fail(s, `subsection id ${JSON.stringify(id)} is not valid`));
      if (subs.has(idKey(id))) fail(s, `subsection ${showId(id)} is listed twice or is the description itself`);
      subs.add(idKey(id));
    }
  }
  // References resolve, and no description contains itself (a writer cannot produce a cycle).
  // Each description's nesting depth (itself: 1) is computed once; the recursion is bounded by the depth limit.
  const depth = new Map<string, number>();
  const onPath = new Set<string>();
  const visit = (s: DescSchema): number => {
    const k = idKey(s.id);
    const known = depth.get(k);
    if (known !== undefined) return known;
    if (onPath.has(k)) fail(s, 'it contains itself (a reference cycle)');
    if (onPath.size > KSTATE_LIMITS.maxDepth) fail(s, `descriptions nest deeper than ${KSTATE_LIMITS.maxDepth + 1} levels`);
    onPath.add(k);
    let d = 1;
    for (const ref of [...s.fields.flatMap((f) => (f.ref !== undefined ? [f.ref] : [])), ...s.subsections]) {
      const t = byId.get(idKey(ref));
      if (!t) return fail(s, `it refers to ${showId(ref)}, which the stream does not describe`);
      d = Math.max(d, 1 + visit(t));
    }
    onPath.delete(k);
    depth.set(k, d);
    return d;
  };
  for (const s of byId.values()) visit(s);
  return byId;
}

function fieldProblem(f: FieldSchema, version: number): string | undefined {
  if (!Object.prototype.hasOwnProperty.call(KIND_CODE, f.kind)) return `kind ${JSON.stringify(f.kind)} is unknown`;
  if (f.since !== undefined && (!okVersion(f.since) || f.since > version)) return `since ${f.since} (wanted 1..${version})`;
  if (f.until !== undefined && (!okVersion(f.until) || f.until > version)) return `until ${f.until} (wanted 1..${version})`;
  if (f.since !== undefined && f.until !== undefined && f.since >= f.until) return `since ${f.since} is not below until ${f.until}`;
  const wantRef = f.kind === 'struct' || f.kind === 'ptr' || (f.kind === 'array' && f.elem === 'struct');
  if (wantRef) {
    if (f.ref === undefined || !okId(f.ref)) return 'needs the id of its nested description';
  } else if (f.ref !== undefined) return 'has a nested description it cannot have';
  if (f.kind !== 'array' && f.elem !== undefined) return 'has an element kind but is not an array';
  const size = expectedSize(f);
  if (typeof size === 'string') return size;
  if (f.size !== size) return `size ${f.size} (wanted ${size})`;
  return undefined;
}

/** The size a field of this kind must have, or why the field is malformed. */
function expectedSize(f: FieldSchema): number | string {
  if (isScalarKind(f.kind)) return SCALAR_SIZE[f.kind];
  switch (f.kind) {
    case 'str':
    case 'bytes':
      return Number.isInteger(f.size) && f.size >= 1 && f.size <= KSTATE_LIMITS.maxFixedBytes ? f.size : `size ${f.size} (wanted 1..${KSTATE_LIMITS.maxFixedBytes})`;
    case 'array':
      if (f.elem === 'struct') return 0;
      return f.elem !== undefined && isScalarKind(f.elem) ? SCALAR_SIZE[f.elem] : `element kind ${JSON.stringify(f.elem)} is unknown`;
    case 'folio':
      return KSTATE_FOLIO_SIZE;
    case 'vmalloc':
      return KHO_VMALLOC_SIZE;
    case 'physRange':
      return KSTATE_PHYS_RANGE_SIZE;
    default:
      return 0; // struct, ptr, custom: length-prefixed
  }
}

function okVersion(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= KSTATE_LIMITS.maxVersion;
}

function okName(s: unknown): s is string {
  return typeof s === 'string' && s.length > 0 && utf8Bytes(s).length <= KSTATE_LIMITS.maxNameBytes;
}

function okId(id: unknown): id is DescId {
  return typeof id === 'number' ? Number.isSafeInteger(id) && id >= 0 : okName(id);
}

function checkIdValue(id: unknown, fail: () => never): void {
  if (!okId(id)) fail();
}

// ------------------------------------------------------------------------------------------------ binary

/** Writes a description id or an instance id as a tagged key. */
export function writeKey(w: ByteWriter, key: DescId | InstanceId): void {
  if (typeof key === 'number') {
    w.u8(KStateKeyTag.UINT);
    w.uleb(key);
  } else if (typeof key === 'string') {
    w.u8(KStateKeyTag.STRING);
    w.string(key);
  } else {
    w.u8(KStateKeyTag.NAMED);
    w.u32(key.hash);
    w.string(key.name);
  }
}

/** Reads a key; `named` allows the NAMED tag (instances only). Throws EINVAL for anything malformed. */
export function readKey(r: ByteReader, named: boolean): DescId | InstanceId {
  const tag = r.u8();
  if (tag === KStateKeyTag.UINT) return r.uleb();
  if (tag === KStateKeyTag.STRING) return readName(r, 'a string key');
  if (tag === KStateKeyTag.NAMED && named) {
    const hash = r.u32();
    const name = readName(r, 'a named instance');
    if (crc32c(utf8Bytes(name)) !== hash) r.fail(`named instance '${name}' carries hash ${hex(hash)} (its name hashes to ${hex(crc32c(utf8Bytes(name)))})`);
    return { hash, name };
  }
  return r.fail(`key tag ${tag} (wanted ${named ? '1, 2 or 3' : '1 or 2'})`);
}

function readName(r: ByteReader, what: string): string {
  const s = r.string(KSTATE_LIMITS.maxNameBytes);
  if (s.length === 0) r.fail(`${what} is empty`);
  return s;
}

/** Writes a SCHEMA record's body. */
export function writeSchemaBody(w: ByteWriter, s: DescSchema): void {
  writeKey(w, s.id);
  w.string(s.name);
  w.u16(s.version);
  w.u16(s.minVersion);
  w.u16(s.oldestReader);
  w.uleb(s.fields.length);
  for (const f of s.fields) {
    w.string(f.name);
    w.u8(KIND_CODE[f.kind]);
    w.u8((f.since !== undefined ? KSTATE_FIELD_HAS_SINCE : 0) | (f.until !== undefined ? KSTATE_FIELD_HAS_UNTIL : 0));
    w.uleb(f.size);
    if (f.since !== undefined) w.u16(f.since);
    if (f.until !== undefined) w.u16(f.until);
    if (f.kind === 'array') w.u8(f.elem === 'struct' ? KStateKind.struct : KIND_CODE[f.elem!]);
    if (f.ref !== undefined) writeKey(w, f.ref);
  }
  w.uleb(s.subsections.length);
  for (const id of s.subsections) writeKey(w, id);
}

/** Reads a SCHEMA record's body (its consistency is checked later by {@link validateSchemas}). Throws EINVAL. */
export function readSchemaBody(r: ByteReader): DescSchema {
  const id = readKey(r, false) as DescId;
  const name = readName(r, 'a description name');
  const version = r.u16();
  const minVersion = r.u16();
  const oldestReader = r.u16();
  const nFields = r.count('field count', KSTATE_LIMITS.maxFields);
  const fields: FieldSchema[] = [];
  for (let i = 0; i < nFields; i++) {
    const fname = readName(r, 'a field name');
    const code = r.u8();
    const kind = CODE_KIND.get(code);
    if (!kind) r.fail(`field '${fname}' has kind code ${code}`);
    const flags = r.u8();
    if (flags & ~(KSTATE_FIELD_HAS_SINCE | KSTATE_FIELD_HAS_UNTIL)) r.fail(`field '${fname}' has unknown flags ${flags}`);
    const f: { -readonly [K in keyof FieldSchema]: FieldSchema[K] } = { name: fname, kind: kind!, size: r.uleb() };
    if (flags & KSTATE_FIELD_HAS_SINCE) f.since = r.u16();
    if (flags & KSTATE_FIELD_HAS_UNTIL) f.until = r.u16();
    if (kind === 'array') {
      const e = r.u8();
      const ek = CODE_KIND.get(e);
      if (e === KStateKind.struct) f.elem = 'struct';
      else if (ek && isScalarKind(ek)) f.elem = ek;
      else r.fail(`array '${fname}' has element kind code ${e}`);
    }
    if (kind === 'struct' || kind === 'ptr' || (kind === 'array' && f.elem === 'struct')) f.ref = readKey(r, false) as DescId;
    fields.push(f);
  }
  const nSubs = r.count('subsection count', KSTATE_LIMITS.maxSubsections);
  const subsections: DescId[] = [];
  for (let i = 0; i < nSubs; i++) subsections.push(readKey(r, false) as DescId);
  return { id, name, version, minVersion, oldestReader, fields, subsections };
}
