import { hex } from '@kho/kernel';
import { MAX_PAGE_ORDER, PAGE_SIZE, type PhysAddr } from '@kho/physmem';
import { KHO_VMALLOC_SIZE, decodeKhoVmalloc } from '@kho/vmalloc/abi';
import { KSTATE_LIMITS, KSTATE_PRESENT, KStateFolioStruct, KStatePhysRangeStruct } from './abi';
import { SCALAR_SIZE, idKey, showId, type DescId, type ScalarKind } from './model';
import { readKey, writtenFields, type DescSchema, type FieldSchema } from './schema';
import { ByteReader } from './wire';

const MAX_PHYS = 2 ** 50;

/** A folio a stream refers to (not restored). */
export class FolioRef {
  constructor(
    readonly phys: PhysAddr,
    readonly order: number,
  ) {}

  toString(): string {
    return `folio ${hex(this.phys)} order ${this.order}`;
  }
}

/** A vmalloc buffer a stream refers to: its 16-byte kho_vmalloc descriptor (not restored). */
export class VmallocRef {
  constructor(
    readonly desc: Uint8Array,
    readonly first: number,
    readonly totalPages: number,
    readonly flags: number,
    readonly order: number,
  ) {}

  toString(): string {
    return `vmalloc ${this.totalPages} pages (first chunk ${hex(this.first)}, order ${this.order})`;
  }
}

/** A physical range a stream refers to (its pages not restored). */
export class PhysRangeRef {
  constructor(
    readonly start: PhysAddr,
    readonly size: number,
  ) {}

  toString(): string {
    return `phys range ${hex(this.start)}+${hex(this.size)}`;
  }
}

/** Memory a stream refers to. */
export type MemoryRef = FolioRef | VmallocRef | PhysRangeRef;

/** The bytes a custom field's save callback wrote. */
export class CustomBytes {
  constructor(readonly bytes: Uint8Array) {}
}

/** A subsection found in a record. */
export interface DecodedSubsection {
  readonly id: DescId;
  readonly schema: DescSchema;
  readonly record: DecodedRecord;
}

/**
 * A record decoded with the writer's schema alone: values by field name (a null-prototype object, so a hostile
 * name cannot reach a prototype). Scalars are numbers (u64 and i64: bigints), str a string, bytes a Uint8Array,
 * struct a DecodedRecord, ptr a DecodedRecord or null, array a JS array, memory fields a MemoryRef or null,
 * custom a CustomBytes.
 */
export class DecodedRecord {
  constructor(
    readonly schema: DescSchema,
    readonly values: Record<string, unknown>,
    readonly subsections: readonly DecodedSubsection[],
  ) {}
}

/**
 * Decodes a record of `schema` from `r` up to `r.end` exactly. Every length, count and value is checked before
 * it is used; throws only KernelError(EINVAL), naming the field and the offset.
 */
export function decodeRecord(r: ByteReader, schema: DescSchema, schemas: ReadonlyMap<string, DescSchema>, depth = 0): DecodedRecord {
  if (depth > KSTATE_LIMITS.maxDepth) r.fail(`records nested deeper than ${KSTATE_LIMITS.maxDepth}`);
  const values = Object.create(null) as Record<string, unknown>;
  const fields = writtenFields(schema);
  for (let i = 0; i < fields.length; i++) values[fields[i].name] = decodeField(r, fields[i], schemas, depth);
  const n = r.count('subsection count', schema.subsections.length);
  if (n === 0) {
    if (r.pos !== r.end) r.fail(`${r.end - r.pos} bytes left over after '${schema.name}'`);
    return new DecodedRecord(schema, values, NO_SUBSECTIONS);
  }
  const subs: DecodedSubsection[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const id = readKey(r, false) as DescId;
    const k = idKey(id);
    if (!schema.subsections.some((s) => idKey(s) === k)) r.fail(`subsection ${showId(id)} is not one of '${schema.name}'`);
    if (seen.has(k)) r.fail(`subsection ${showId(id)} appears twice`);
    seen.add(k);
    const sub = schemas.get(k)!;
    subs.push({ id, schema: sub, record: nested(r, sub, schemas, depth) });
  }
  if (r.pos !== r.end) r.fail(`${r.end - r.pos} bytes left over after '${schema.name}'`);
  return new DecodedRecord(schema, values, subs);
}

const NO_SUBSECTIONS: readonly DecodedSubsection[] = Object.freeze([]);

/** A uleb-length-prefixed record of `schema`, read with the reader's end narrowed to that length. */
function nested(r: ByteReader, schema: DescSchema, schemas: ReadonlyMap<string, DescSchema>, depth: number): DecodedRecord {
  const len = r.uleb();
  r.need(len);
  const end = r.end;
  r.end = r.pos + len;
  const rec = decodeRecord(r, schema, schemas, depth + 1);
  r.end = end;
  return rec;
}

function decodeField(r: ByteReader, f: FieldSchema, schemas: ReadonlyMap<string, DescSchema>, depth: number): unknown {
  switch (f.kind) {
    case 'struct':
      return nested(r, schemas.get(idKey(f.ref!))!, schemas, depth);
    case 'ptr': {
      const present = r.u8();
      if (present === 0) return null;
      if (present !== 1) r.fail(`ptr '${f.name}' has presence byte ${present} (wanted 0 or 1)`);
      return nested(r, schemas.get(idKey(f.ref!))!, schemas, depth);
    }
    case 'array': {
      const count = r.uleb();
      if (f.elem === 'struct') {
        if (count > r.remaining) r.fail(`array '${f.name}' claims ${count} records in ${r.remaining} bytes`);
        const s = schemas.get(idKey(f.ref!))!;
        const out: DecodedRecord[] = new Array<DecodedRecord>(count);
        for (let i = 0; i < count; i++) out[i] = nested(r, s, schemas, depth);
        return out;
      }
      const size = SCALAR_SIZE[f.elem as ScalarKind];
      if (count * size > r.remaining) r.fail(`array '${f.name}' claims ${count} elements of ${size} bytes in ${r.remaining} bytes`);
      const elem: FieldSchema = { name: `${f.name}[]`, kind: f.elem as ScalarKind, size };
      const out: unknown[] = new Array<unknown>(count);
      for (let i = 0; i < count; i++) out[i] = decodeField(r, elem, schemas, depth);
      return out;
    }
    case 'custom':
      return new CustomBytes(r.bytes(r.uleb()));
    default:
      return decodeFixed(r, f);
  }
}

/** A fixed-size value. */
function decodeFixed(r: ByteReader, f: FieldSchema): unknown {
  switch (f.kind) {
    case 'u8':
      return r.u8();
    case 'u16':
      return r.u16();
    case 'u32':
      return r.u32();
    case 'u64':
      return r.u64n();
    case 'i8':
      return r.i8();
    case 'i16':
      return r.i16();
    case 'i32':
      return r.i32();
    case 'i64':
      return r.i64();
    case 'bool': {
      const b = r.u8();
      if (b > 1) r.fail(`bool '${f.name}' holds ${b} (wanted 0 or 1)`);
      return b === 1;
    }
    case 'phys': {
      const p = r.u64();
      if (p > Number.MAX_SAFE_INTEGER) r.fail(`phys '${f.name}' is at or above 2^53`);
      return p;
    }
    case 'str': {
      const start = r.pos;
      r.need(f.size);
      const bytes = r.bytes_;
      let end = start;
      while (end < start + f.size && bytes[end] !== 0) end++;
      for (let i = end; i < start + f.size; i++) if (bytes[i] !== 0) r.fail(`str '${f.name}' has a non-zero byte after its NUL`);
      const s = r.utf8(start, end);
      r.pos = start + f.size;
      return s;
    }
    case 'bytes':
      return r.bytes(f.size);
    case 'folio': {
      const at = r.pos;
      const { phys, order, flags } = r.struct(KStateFolioStruct);
      if (flags === 0) {
        if (phys !== 0 || order !== 0) r.fail(`folio '${f.name}' is absent but has phys or order set`);
        return null;
      }
      if (flags !== KSTATE_PRESENT) r.fail(`folio '${f.name}' has flags ${flags} (wanted ${KSTATE_PRESENT})`);
      if (order > MAX_PAGE_ORDER) r.fail(`folio '${f.name}' has order ${order} (wanted 0..${MAX_PAGE_ORDER})`);
      if (!(phys < MAX_PHYS) || phys % (PAGE_SIZE * 2 ** order) !== 0) {
        r.pos = at;
        r.fail(`folio '${f.name}' at ${Number.isFinite(phys) ? hex(phys) : '>= 2^53'} is not aligned to order ${order} below 2^50`);
      }
      return new FolioRef(phys as PhysAddr, order); // checked above: aligned, below 2^50
    }
    case 'vmalloc': {
      const desc = r.bytes(KHO_VMALLOC_SIZE);
      const { first, totalPages, flags, order } = decodeKhoVmalloc(desc);
      if (first === 0) {
        if (desc.some((b) => b !== 0)) r.fail(`vmalloc '${f.name}' has no first chunk but other fields set`);
        return null;
      }
      if (!(first < MAX_PHYS) || first % PAGE_SIZE !== 0) r.fail(`vmalloc '${f.name}' first chunk is not a page below 2^50`);
      return new VmallocRef(desc, first, totalPages, flags, order);
    }
    case 'physRange': {
      const { start, size } = r.struct(KStatePhysRangeStruct);
      if (size === 0) {
        if (start !== 0) r.fail(`physRange '${f.name}' has size 0 but start ${hex(start)}`);
        return null;
      }
      if (!(start + size <= MAX_PHYS) || start % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0) {
        r.fail(`physRange '${f.name}' is not a page-aligned range below 2^50`);
      }
      return new PhysRangeRef(start as PhysAddr, size); // checked above: page-aligned, below 2^50
    }
    default:
      return r.fail(`field '${f.name}' has kind ${f.kind}, which has no fixed encoding`);
  }
}

/** Every memory reference in a record (and below it), with the path of its field. */
export function memoryOf(rec: DecodedRecord, prefix = ''): Array<{ path: string; ref: MemoryRef }> {
  const out: Array<{ path: string; ref: MemoryRef }> = [];
  const value = (v: unknown, p: string): void => {
    if (v instanceof FolioRef || v instanceof VmallocRef || v instanceof PhysRangeRef) out.push({ path: p, ref: v });
    else if (v instanceof DecodedRecord) record(v, `${p}.`);
    else if (Array.isArray(v)) v.forEach((x, i) => value(x, `${p}[${i}]`));
  };
  const record = (r: DecodedRecord, p: string): void => {
    for (const [k, x] of Object.entries(r.values)) value(x, p + k);
    for (const s of r.subsections) record(s.record, `${p}${s.schema.name}/`);
  };
  record(rec, prefix);
  return out;
}
