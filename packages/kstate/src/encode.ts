import { Errno, KernelError, isKernelError, describeError, KernelBug } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { KHO_VMALLOC_SIZE } from '@kho/vmalloc/abi';
import { offsetTable } from '@kho/struct';
import { KSTATE_LIMITS, KSTATE_PRESENT, KSTATE_RECORD_HEADER_SIZE, KStateEndStruct, KStateFolioStruct, KStatePhysRangeStruct, KStateRecordStruct, KStateRecordType } from './abi';
import { crc32c } from '@kho/kernel';
import { idKey, showId, showInstance, type Description, type Field, type InstanceId } from './model';
import { descSchema, writeKey, writeSchemaBody } from './schema';
import { ByteWriter } from './wire';

/** Field offsets of a record header, patched in place once its body is written. */
const RECORD = offsetTable(KStateRecordStruct);

/**
 * What the encoder calls for fields that own memory: preserve it (the implementation records the undo) and
 * return what the stream holds. `where` names the field for messages.
 */
export interface MemorySaver {
  /** Preserves a folio. */
  folio(f: { readonly pfn: number; readonly order: number; readonly phys: number }, where: string): void;
  /** Preserves the vmalloc area at `addr`; returns its 16-byte kho_vmalloc descriptor. */
  vmalloc(addr: number, where: string): Uint8Array;
  /** Preserves the pages of [start, start + size). */
  physRange(start: number, size: number, where: string): void;
}

/** One registered object: what a section is written from. */
export interface Registration {
  readonly desc: Description;
  readonly instance: InstanceId;
  readonly obj: object;
}

const TWO_64 = 2n ** 64n;
const TWO_63 = 2n ** 63n;
const MAX_PHYS = 2 ** 50;
const utf8 = new TextEncoder();

/** Starts a record of `type`; returns the mark {@link endRecord} needs. */
export function beginRecord(w: ByteWriter, type: number): number {
  const mark = w.pos;
  w.ensure(KSTATE_RECORD_HEADER_SIZE);
  w.u8(type);
  w.zeros(KSTATE_RECORD_HEADER_SIZE - 1);
  return mark;
}

/** Ends a record begun at `mark`: fills in its body length and its CRC32C (header bytes 0..7, then the body). */
export function endRecord(w: ByteWriter, mark: number): void {
  const bodyStart = mark + KSTATE_RECORD_HEADER_SIZE;
  w.view.setUint32(mark + RECORD.body_len, w.pos - bodyStart, true);
  const crc = crc32c(w.buf, bodyStart, w.pos, crc32c(w.buf, mark, mark + RECORD.crc));
  w.view.setUint32(mark + RECORD.crc, crc, true);
}

/**
 * Encodes the logical stream (spec in ./abi): one SCHEMA record per description reachable from the
 * registrations, one SECTION per registration, the END record. Memory owned by fields is preserved through
 * `mem` as it is met. Throws EINVAL for a value that does not fit its field (naming the section and the field),
 * EEXIST when two different descriptions share an id, and whatever `mem` or a custom save callback throws
 * (a custom callback's non-KernelError becomes EIO).
 */
export function encodeStream(regs: Iterable<Registration>, mem: MemorySaver, initialBytes = 64 * 1024): { bytes: Uint8Array; schemas: number; sections: number } {
  const list = [...regs];
  const w = new ByteWriter(initialBytes);
  const byId = new Map<string, Description>();
  for (const r of list) {
    for (const d of r.desc.reachable) {
      const k = idKey(d.id);
      const seen = byId.get(k);
      if (seen && seen !== d) throw new KernelError(Errno.EEXIST, `kstate: descriptions '${seen.name}' and '${d.name}' share id ${showId(d.id)}`);
      byId.set(k, d);
    }
  }
  for (const d of byId.values()) {
    const mark = beginRecord(w, KStateRecordType.SCHEMA);
    writeSchemaBody(w, descSchema(d));
    endRecord(w, mark);
  }
  const enc = new RecordEncoder(w, mem);
  for (const r of list) enc.section(r.desc, r.instance, r.obj);
  const mark = beginRecord(w, KStateRecordType.END);
  w.struct(KStateEndStruct, { nr_schemas: byId.size, nr_sections: list.length });
  endRecord(w, mark);
  if (w.pos > KSTATE_LIMITS.maxStreamBytes) throw new KernelError(Errno.E2BIG, `kstate: the stream needs ${w.pos} bytes (at most ${KSTATE_LIMITS.maxStreamBytes})`);
  return { bytes: w.finish(), schemas: byId.size, sections: list.length };
}

/** Writes SECTION records: a description's fields, in order, then its needed subsections. */
export class RecordEncoder {
  private desc: Description | undefined;
  private instance: InstanceId = 0;

  constructor(
    private readonly w: ByteWriter,
    private readonly mem: MemorySaver,
  ) {}

  /** Writes one SECTION record for `obj` under (desc.id, instance). */
  section(desc: Description, instance: InstanceId, obj: object): void {
    this.desc = desc;
    this.instance = instance;
    const w = this.w;
    const mark = beginRecord(w, KStateRecordType.SECTION);
    writeKey(w, desc.id);
    writeKey(w, instance);
    this.record(desc, obj, '', 0);
    endRecord(w, mark);
  }

  private record(desc: Description, obj: object, path: string, depth: number): void {
    if (depth > KSTATE_LIMITS.maxDepth) this.fail(path, `nesting deeper than ${KSTATE_LIMITS.maxDepth}`);
    if (typeof obj !== 'object' || obj === null) this.fail(path.slice(0, -1), `is ${describeJs(obj)} (wanted an object for '${desc.name}')`);
    const fields = desc.written;
    const o = obj as Record<string, unknown>;
    for (let i = 0; i < fields.length; i++) this.field(fields[i], o[fields[i].name], obj, path, depth);
    const subs = desc.subsections;
    if (subs.length === 0) {
      this.w.u8(0);
      return;
    }
    const needed = subs.filter((s) => {
      if (!s.needed) return true;
      try {
        return s.needed(obj) === true;
      } catch (e) {
        return this.callbackFailed(`subsection '${s.desc.name}' needed()`, e);
      }
    });
    this.w.uleb(needed.length);
    for (const s of needed) {
      writeKey(this.w, s.desc.id);
      const m = this.w.beginLength();
      this.record(s.desc, obj, path, depth + 1);
      this.w.endLength(m);
    }
  }

  private field(f: Field, v: unknown, obj: object, path: string, depth: number): void {
    const w = this.w;
    switch (f.kind) {
      case 'u8':
        return w.u8(this.int(f, v, path, 0, 0xff));
      case 'u16':
        return w.u16(this.int(f, v, path, 0, 0xffff));
      case 'u32':
        return w.u32(this.int(f, v, path, 0, 0xffffffff));
      case 'i8':
        return w.u8(this.int(f, v, path, -0x80, 0x7f) & 0xff);
      case 'i16':
        return w.u16(this.int(f, v, path, -0x8000, 0x7fff) & 0xffff);
      case 'i32':
        return w.u32(this.int(f, v, path, -0x80000000, 0x7fffffff));
      case 'u64':
        return w.u64(this.big(f, v, path, 0n, TWO_64 - 1n));
      case 'i64':
        return w.u64(this.big(f, v, path, -TWO_63, TWO_63 - 1n));
      case 'phys': {
        const p = typeof v === 'bigint' && v >= 0n && v < 2n ** 53n ? Number(v) : v;
        return w.u64(this.int(f, p, path, 0, Number.MAX_SAFE_INTEGER));
      }
      case 'bool':
        if (typeof v !== 'boolean') this.bad(f, path, v);
        return w.u8(v ? 1 : 0);
      case 'str':
        return this.str(f, v, path);
      case 'bytes':
        if (!(v instanceof Uint8Array) || v.length !== f.size) this.fail(path + f.name, `is ${describeJs(v)} (wanted a Uint8Array of ${f.size} bytes)`);
        return w.bytes(v);
      case 'struct': {
        const m = w.beginLength();
        this.record(f.desc!, v as object, `${path}${f.name}.`, depth + 1);
        return w.endLength(m);
      }
      case 'ptr': {
        if (v === null || v === undefined) return w.u8(0);
        w.u8(1);
        const m = w.beginLength();
        this.record(f.desc!, v as object, `${path}${f.name}.`, depth + 1);
        return w.endLength(m);
      }
      case 'array':
        return this.array(f, v, obj, path, depth);
      case 'folio':
        return this.folio(f, v, path);
      case 'vmalloc':
        return this.vmalloc(f, v, path);
      case 'physRange':
        return this.physRange(f, v, path);
      case 'custom': {
        const m = w.beginLength();
        try {
          f.codec!.save(w, obj);
        } catch (e) {
          this.callbackFailed(`custom field '${path}${f.name}' save`, e);
        }
        return w.endLength(m);
      }
    }
  }

  /** The section being written, as messages name it. */
  private get where(): string {
    return `'${this.desc?.name}' instance ${showInstance(this.instance)}`;
  }

  private int(f: Field, v: unknown, path: string, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.bad(f, path, v);
    return v;
  }

  private big(f: Field, v: unknown, path: string, min: bigint, max: bigint): bigint {
    const b = typeof v === 'bigint' ? v : typeof v === 'number' && Number.isSafeInteger(v) ? BigInt(v) : undefined;
    if (b === undefined || b < min || b > max) this.bad(f, path, v);
    return b;
  }

  private str(f: Field, v: unknown, path: string): void {
    if (typeof v !== 'string') return this.bad(f, path, v);
    const w = this.w;
    w.ensure(f.size);
    const room = w.buf.subarray(w.pos, w.pos + f.size);
    const r = utf8.encodeInto(v, room);
    if (r.read !== v.length) this.fail(path + f.name, `${JSON.stringify(v)} needs more than ${f.size} bytes of UTF-8 (str[${f.size}])`);
    if (v.includes('\0')) this.fail(path + f.name, `${JSON.stringify(v)} holds a NUL (str[${f.size}] is NUL-padded)`);
    room.fill(0, r.written);
    w.pos += f.size;
  }

  private array(f: Field, v: unknown, obj: object, path: string, depth: number): void {
    const w = this.w;
    const name = path + f.name;
    if (!Array.isArray(v) && !ArrayBuffer.isView(v)) this.fail(name, `is ${describeJs(v)} (wanted an array)`);
    const arr = v as ArrayLike<unknown>;
    let count = arr.length;
    if (f.length) {
      try {
        count = f.length(obj);
      } catch (e) {
        this.callbackFailed(`array '${name}' length()`, e);
      }
      if (!Number.isInteger(count) || count < 0 || count > arr.length) this.fail(name, `length() gave ${count} (wanted 0..${arr.length}, the array's length)`);
    }
    w.uleb(count);
    if (f.elem === 'struct') {
      for (let i = 0; i < count; i++) {
        const m = w.beginLength();
        this.record(f.desc!, arr[i] as object, `${name}[${i}].`, depth + 1);
        w.endLength(m);
      }
      return;
    }
    const elem: Field = { name: '', kind: f.elem!, size: f.size };
    for (let i = 0; i < count; i++) this.field(elem, arr[i], obj, `${name}[${i}]`, depth);
  }

  private folio(f: Field, v: unknown, path: string): void {
    const w = this.w;
    if (v === null || v === undefined) return w.zeros(KStateFolioStruct.size);
    const folio = v as { pfn?: unknown; order?: unknown; phys?: unknown };
    if (typeof folio !== 'object' || typeof folio.pfn !== 'number' || typeof folio.order !== 'number' || typeof folio.phys !== 'number') {
      this.fail(path + f.name, `is ${describeJs(v)} (wanted a Folio or null)`);
    }
    const ff = folio as { pfn: number; order: number; phys: number };
    this.mem.folio(ff, `${this.where}: field '${path}${f.name}'`);
    w.struct(KStateFolioStruct, { phys: ff.phys, order: ff.order, flags: KSTATE_PRESENT });
  }

  private vmalloc(f: Field, v: unknown, path: string): void {
    const w = this.w;
    if (v === null || v === undefined || v === 0) return w.zeros(KHO_VMALLOC_SIZE);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) this.fail(path + f.name, `is ${describeJs(v)} (wanted a vmalloc address, 0 or null)`);
    const desc = this.mem.vmalloc(v, `${this.where}: field '${path}${f.name}'`);
    if (desc.length !== KHO_VMALLOC_SIZE) throw new KernelBug(`kstate: preserveVmalloc returned ${desc.length} bytes`);
    w.bytes(desc);
  }

  private physRange(f: Field, v: unknown, path: string): void {
    const w = this.w;
    if (v === null || v === undefined) return w.zeros(KStatePhysRangeStruct.size);
    const r = v as { start?: unknown; size?: unknown };
    const { start, size } = r;
    if (
      typeof r !== 'object' ||
      typeof start !== 'number' ||
      typeof size !== 'number' ||
      !Number.isSafeInteger(start) ||
      !Number.isSafeInteger(size) ||
      start < 0 ||
      size < 0 ||
      start % PAGE_SIZE !== 0 ||
      size % PAGE_SIZE !== 0 ||
      start + size > MAX_PHYS
    ) {
      this.fail(path + f.name, `is ${describeJs(v)} (wanted { start, size }, page-aligned, or null)`);
    }
    const s = start as number;
    const n = size as number;
    if (n === 0) {
      if (s !== 0) this.fail(path + f.name, `is an empty range at ${s} (an empty range is written as none: use null or start 0)`);
      return w.zeros(KStatePhysRangeStruct.size);
    }
    this.mem.physRange(s, n, `${this.where}: field '${path}${f.name}'`);
    w.struct(KStatePhysRangeStruct, { start: s, size: n });
  }

  private bad(f: Field, path: string, v: unknown): never {
    return this.fail(path + f.name, `is ${describeJs(v)} (does not fit ${f.kind})`);
  }

  private fail(field: string, why: string): never {
    throw new KernelError(Errno.EINVAL, `kstate: ${this.where}: field '${field}' ${why}`);
  }

  private callbackFailed(what: string, e: unknown): never {
    const msg = describeError(e, { errno: true });
    throw new KernelError(isKernelError(e) ? e.errno : Errno.EIO, `kstate: ${this.where}: ${what} failed: ${msg}`, { cause: e });
  }
}

/** A JS value as an error message shows it. */
export function describeJs(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v instanceof Uint8Array) return `a Uint8Array of ${v.length} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'function') return 'a function';
  return 'an object';
}
