import { hex, describeError } from '@kho/kernel';
import { KSTATE_FORMAT_VERSION } from './abi';
import { CustomBytes, DecodedRecord, FolioRef, PhysRangeRef, VmallocRef } from './decode';
import { idKey, type InstanceId } from './model';
import { writtenFields, type DescSchema, type FieldSchema } from './schema';
import { openStream, type IncomingStream, type RamReader } from './stream';

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * Dumps the kstate stream whose root segment is at `rootPhys` as JSON, from the stream alone (no code of the
 * writer): the segments, every schema, and every section's fields by name. u64 and i64 values are decimal
 * strings, phys values and byte arrays hex strings, memory fields `{ folio | vmalloc | physRange: … }`, custom
 * fields `{ custom: "<hex>" }`. A section whose body does not decode is listed with its `error`. Throws
 * KernelError when the stream itself is refused (bad magic or version, a broken chain, a checksum mismatch, …).
 */
export function dumpStream(ram: RamReader, rootPhys: number): { [k: string]: Json } {
  return dumpIncoming(openStream(ram, rootPhys), rootPhys);
}

/** {@link dumpStream} of a stream already opened. */
export function dumpIncoming(stream: IncomingStream, rootPhys?: number): { [k: string]: Json } {
  const out: { [k: string]: Json } = { format: KSTATE_FORMAT_VERSION };
  if (rootPhys !== undefined) out.root = hex(rootPhys);
  out.bytes = stream.size;
  out.segments = stream.segments.map((s) => ({ phys: hex(s.phys), order: s.order, bytes: s.payload }));
  out.schemas = [...stream.schemas.values()].map(schemaJson);
  out.sections = stream.sections.map((s) => {
    const entry: { [k: string]: Json } = {
      id: s.id,
      name: s.schema.name,
      instance: instanceJson(s.instance),
      version: s.schema.version,
      offset: s.offset,
      bytes: s.size,
      crc: hex(s.crc),
    };
    try {
      const rec = stream.decode(s);
      Object.assign(entry, recordJson(rec, stream.schemas));
    } catch (e) {
      entry.error = describeError(e, { errno: true });
    }
    return entry;
  });
  return out;
}

function schemaJson(s: DescSchema): { [k: string]: Json } {
  return {
    id: s.id,
    name: s.name,
    version: s.version,
    minVersion: s.minVersion,
    oldestReader: s.oldestReader,
    fields: s.fields.map((f) => {
      const o: { [k: string]: Json } = { name: f.name, kind: f.kind, size: f.size };
      if (f.since !== undefined) o.since = f.since;
      if (f.until !== undefined) o.until = f.until;
      if (f.elem !== undefined) o.elem = f.elem;
      if (f.ref !== undefined) o.ref = f.ref;
      return o;
    }),
    subsections: [...s.subsections],
  };
}

function instanceJson(i: InstanceId): Json {
  return typeof i === 'object' ? { name: i.name, hash: hex(i.hash) } : i;
}

function recordJson(rec: DecodedRecord, schemas: ReadonlyMap<string, DescSchema>): { [k: string]: Json } {
  const fields: { [k: string]: Json } = {};
  for (const f of writtenFields(rec.schema)) fields[f.name] = valueJson(f, rec.values[f.name], schemas);
  const out: { [k: string]: Json } = { fields };
  if (rec.subsections.length > 0) {
    out.subsections = rec.subsections.map((s) => ({ id: s.id, name: s.schema.name, version: s.schema.version, ...recordJson(s.record, schemas) }));
  }
  return out;
}

function valueJson(f: FieldSchema, v: unknown, schemas: ReadonlyMap<string, DescSchema>): Json {
  if (v === null || v === undefined) return null;
  if (v instanceof DecodedRecord) return { version: v.schema.version, ...recordJson(v, schemas) };
  if (v instanceof FolioRef) return { folio: { phys: hex(v.phys), order: v.order } };
  if (v instanceof VmallocRef) return { vmalloc: { first: hex(v.first), totalPages: v.totalPages, flags: v.flags, order: v.order } };
  if (v instanceof PhysRangeRef) return { physRange: { start: hex(v.start), size: hex(v.size) } };
  if (v instanceof CustomBytes) return { custom: toHex(v.bytes) };
  if (v instanceof Uint8Array) return toHex(v);
  if (Array.isArray(v)) {
    const elem: FieldSchema = { name: f.name, kind: f.elem === 'struct' || f.elem === undefined ? 'struct' : f.elem, size: f.size };
    if (f.ref !== undefined && !schemas.has(idKey(f.ref))) return null;
    return v.map((x) => valueJson(elem, x, schemas));
  }
  if (typeof v === 'bigint') return v.toString();
  if (f.kind === 'phys' && typeof v === 'number') return hex(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string') return v;
  return String(v);
}

function toHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}
