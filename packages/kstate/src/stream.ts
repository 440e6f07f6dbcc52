import { Errno, KernelError, hex, type Unwind } from '@kho/kernel';
import { MAX_PAGE_ORDER, PAGE_SIZE, type PhysAddr } from '@kho/physmem';
import { offsetTable } from '@kho/struct';
import {
  KSTATE_END_BODY_SIZE,
  KSTATE_FORMAT_VERSION,
  KSTATE_LIMITS,
  KSTATE_MAGIC,
  KSTATE_RECORD_HEADER_SIZE,
  KSTATE_SEGMENT_CRC_SPAN,
  KSTATE_SEGMENT_HEADER_SIZE,
  KStateEndStruct,
  KStateRecordStruct,
  KStateRecordType,
  KStateSegmentStruct,
} from './abi';
import { crc32c } from '@kho/kernel';
import { decodeRecord, type DecodedRecord } from './decode';
import { idKey, instanceKey, showId, showInstance, type DescId, type InstanceId } from './model';
import { readKey, readSchemaBody, validateSchemas, type DescSchema } from './schema';
import { ByteReader } from './wire';

/** Field offsets of a record header, read in place per record. */
const RECORD = offsetTable(KStateRecordStruct);
/** Field offsets of a segment header, checked one by one before it is decoded. */
const SEGMENT = offsetTable(KStateSegmentStruct);

/** What reading a stream needs of RAM (PhysicalMemory has it). */
export interface RamReader {
  isRam(addr: number, size?: number): boolean;
  read(addr: number, len: number): Uint8Array;
}

/** What writing a stream needs of RAM. */
export interface RamWriter extends RamReader {
  write(addr: number, bytes: Uint8Array): void;
}

/** Preserved pages for the stream (KHO's allocPreserve / unpreserveFree). */
export interface StreamPages {
  allocPreserve(size: number): PhysAddr;
  unpreserveFree(phys: PhysAddr): void;
}

/** One segment of a stream in RAM. */
export interface Segment {
  readonly phys: PhysAddr;
  readonly order: number;
  /** Stream bytes it holds. */
  readonly payload: number;
}

/** Stream bytes a segment of `order` holds. */
export function segmentCapacity(order: number): number {
  return PAGE_SIZE * 2 ** order - KSTATE_SEGMENT_HEADER_SIZE;
}

/** Orders of the segments a stream of `len` bytes is written into: 4 MiB blocks, then the smallest block that fits the rest. */
export function planSegments(len: number): number[] {
  const orders: number[] = [];
  let left = len;
  do {
    let order = 0;
    while (order < MAX_PAGE_ORDER && segmentCapacity(order) < left) order++;
    orders.push(order);
    left -= Math.min(left, segmentCapacity(order));
  } while (left > 0);
  return orders;
}

interface SegmentHeader {
  index: number;
  nrSegments: number;
  next: number;
  totalLen: number;
  payloadLen: number;
  order: number;
}

/** The 48 bytes of a segment header, CRC included. */
export function encodeSegmentHeader(h: SegmentHeader): Uint8Array {
  const value = {
    magic: KSTATE_MAGIC,
    version: KSTATE_FORMAT_VERSION,
    header_size: KSTATE_SEGMENT_HEADER_SIZE,
    index: h.index,
    nr_segments: h.nrSegments,
    next: h.next,
    total_len: BigInt(h.totalLen),
    payload_len: h.payloadLen,
    order: h.order,
    header_crc: 0,
  };
  const out = KStateSegmentStruct.encode(value);
  value.header_crc = crc32c(out, 0, KSTATE_SEGMENT_CRC_SPAN);
  KStateSegmentStruct.encodeInto(out, 0, value);
  return out;
}

/**
 * Writes `bytes` into newly allocated preserved segments (each undo pushed on `u`). Returns the segments, the
 * root first. Throws what `pages.allocPreserve` throws (ENOMEM, EOPNOTSUPP).
 */
export function writeSegments(ram: RamWriter, bytes: Uint8Array, pages: StreamPages, u: Unwind): Segment[] {
  const orders = planSegments(bytes.length);
  const phys: PhysAddr[] = [];
  for (const order of orders) {
    const p = pages.allocPreserve(PAGE_SIZE * 2 ** order);
    u.push(() => pages.unpreserveFree(p));
    phys.push(p);
  }
  // `next` = 0 ends the chain, so only the root may lie at phys 0: move such a block first (segments carry
  // their own order and payload length, so any order of them holds the stream).
  const zero = phys.findIndex((p) => p === 0);
  if (zero > 0) {
    phys.unshift(...phys.splice(zero, 1));
    orders.unshift(...orders.splice(zero, 1));
  }
  const segments: Segment[] = [];
  let off = 0;
  orders.forEach((order, i) => {
    const payload = Math.min(segmentCapacity(order), bytes.length - off);
    const header = encodeSegmentHeader({
      index: i,
      nrSegments: orders.length,
      next: i + 1 < orders.length ? phys[i + 1] : 0,
      totalLen: bytes.length,
      payloadLen: payload,
      order,
    });
    ram.write(phys[i], header);
    ram.write(phys[i] + KSTATE_SEGMENT_HEADER_SIZE, bytes.subarray(off, off + payload));
    segments.push({ phys: phys[i], order, payload });
    off += payload;
  });
  return segments;
}

function refuse(why: string, errno = Errno.EINVAL): never {
  throw new KernelError(errno, `kstate: ${why}`);
}

/**
 * Reads the segments of the stream whose root is at `rootPhys` and returns the logical stream's bytes. Treats RAM
 * as hostile: magic then format version first, then the header CRC, sizes, alignment, RAM ranges, index order, a
 * segment count limit, no segment reached twice or overlapping another, and payload lengths that add up. Throws
 * KernelError: EOPNOTSUPP for an unknown format version, EINVAL for anything else.
 */
export function readSegments(ram: RamReader, rootPhys: number): { bytes: Uint8Array; segments: Segment[] } {
  const L = SEGMENT;
  const segments: Segment[] = [];
  const chunks: Uint8Array[] = [];
  const seen = new Set<number>();
  let nr = 1;
  let total = 0;
  let got = 0;
  let p = rootPhys;
  for (let i = 0; i < nr; i++) {
    const what = i === 0 ? `stream root at ${showPhys(p)}` : `segment ${i} at ${showPhys(p)}`;
    if (!Number.isSafeInteger(p) || p < 0 || p % PAGE_SIZE !== 0 || !ram.isRam(p, PAGE_SIZE)) refuse(`${what} is not a page of RAM`);
    if (seen.has(p)) refuse(`${what} is reached twice (a cycle)`);
    seen.add(p);
    const h = ram.read(p, KSTATE_SEGMENT_HEADER_SIZE);
    // Magic first, then version, size, checksum and reserved bytes, each with its own message, before the
    // header is decoded as a whole (which then cannot fail).
    const v = new DataView(h.buffer, h.byteOffset, h.byteLength);
    const magic = v.getUint32(L.magic, true);
    if (magic !== KSTATE_MAGIC) refuse(`${what}: magic ${hex(magic)} (wanted ${hex(KSTATE_MAGIC)} 'KSTA')`);
    const version = v.getUint16(L.version, true);
    if (version !== KSTATE_FORMAT_VERSION) refuse(`${what}: format version ${version} (this kernel reads version ${KSTATE_FORMAT_VERSION})`, Errno.EOPNOTSUPP);
    const hsize = v.getUint16(L.header_size, true);
    if (hsize !== KSTATE_SEGMENT_HEADER_SIZE) refuse(`${what}: header size ${hsize} (wanted ${KSTATE_SEGMENT_HEADER_SIZE})`);
    const crc = v.getUint32(L.header_crc, true);
    const want = crc32c(h, 0, KSTATE_SEGMENT_CRC_SPAN);
    if (crc !== want) refuse(`${what}: header checksum ${hex(crc)} (computed ${hex(want)})`);
    for (let b = L.reserved; b < L.header_crc; b++) if (h[b] !== 0) refuse(`${what}: reserved byte ${b} is ${h[b]} (wanted 0)`);
    const hd = KStateSegmentStruct.decode(h);
    const index = hd.index;
    if (index !== i) refuse(`${what}: index ${index} (wanted ${i})`);
    const nrSegments = hd.nr_segments;
    const totalLen = Number(hd.total_len);
    if (i === 0) {
      if (nrSegments < 1 || nrSegments > KSTATE_LIMITS.maxSegments) refuse(`${what}: ${nrSegments} segments (wanted 1..${KSTATE_LIMITS.maxSegments})`);
      if (totalLen < KSTATE_RECORD_HEADER_SIZE || totalLen > KSTATE_LIMITS.maxStreamBytes || totalLen > nrSegments * segmentCapacity(MAX_PAGE_ORDER)) {
        refuse(`${what}: stream length ${totalLen} does not fit ${nrSegments} segments`);
      }
      nr = nrSegments;
      total = totalLen;
    } else if (nrSegments !== nr || totalLen !== total) {
      refuse(`${what}: says ${nrSegments} segments and ${totalLen} bytes (the root says ${nr} and ${total})`);
    }
    const order = hd.order;
    if (order > MAX_PAGE_ORDER) refuse(`${what}: order ${order} (wanted 0..${MAX_PAGE_ORDER})`);
    const size = PAGE_SIZE * 2 ** order;
    if (p % size !== 0 || !ram.isRam(p, size)) refuse(`${what}: a block of order ${order} there is not aligned RAM`);
    const payload = hd.payload_len;
    if (payload === 0 || payload > segmentCapacity(order) || got + payload > total) {
      refuse(`${what}: payload ${payload} bytes (wanted 1..${Math.min(segmentCapacity(order), total - got)})`);
    }
    chunks.push(ram.read(p + KSTATE_SEGMENT_HEADER_SIZE, payload));
    segments.push({ phys: p as PhysAddr, order, payload }); // checked above: aligned RAM of its order
    got += payload;
    const next = hd.next;
    if (i + 1 === nr) {
      if (next !== 0) refuse(`${what}: the last segment points at ${showPhys(next)}`);
      if (got !== total) refuse(`${what}: segments hold ${got} bytes (the root says ${total})`);
    } else if (next === 0) refuse(`${what}: chain ends after ${i + 1} of ${nr} segments`);
    p = next;
  }
  const sorted = segments.slice().sort((a, b) => a.phys - b.phys);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (prev.phys + PAGE_SIZE * 2 ** prev.order > sorted[i].phys) refuse(`segments at ${hex(prev.phys)} and ${hex(sorted[i].phys)} overlap`);
  }
  const bytes = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.length;
  }
  return { bytes, segments };
}

function showPhys(p: number): string {
  return Number.isSafeInteger(p) && p >= 0 ? hex(p) : '>= 2^53';
}

/** One section of an incoming stream (its body decoded on demand). */
export interface IncomingSection {
  readonly id: DescId;
  readonly instance: InstanceId;
  readonly schema: DescSchema;
  /** Offset of its record header in the stream. */
  readonly offset: number;
  /** Bytes of its record, header included. */
  readonly size: number;
  readonly crc: number;
  /** Offset of its record data (after the keys) and the end of its body. */
  readonly dataStart: number;
  readonly end: number;
}

/** The key of a section as a map key. */
export function sectionKey(id: DescId, instance: InstanceId): string {
  return `${idKey(id)}|${instanceKey(instance)}`;
}

/** Sections by (id, instance), without building a string per lookup: numbers and hashes key their own maps. */
export class SectionIndex {
  // Keyed by the id itself: a Map keeps the number 1 and the string '1' apart.
  private readonly byId = new Map<DescId, { n: Map<number, IncomingSection>; s: Map<string, IncomingSection>; h: Map<number, IncomingSection> }>();

  get(id: DescId, instance: InstanceId): IncomingSection | undefined {
    const m = this.byId.get(id);
    if (!m) return undefined;
    return typeof instance === 'number' ? m.n.get(instance) : typeof instance === 'string' ? m.s.get(instance) : m.h.get(instance.hash);
  }

  /** Adds a section; false when its key is taken. */
  add(sec: IncomingSection): boolean {
    let m = this.byId.get(sec.id);
    if (!m) {
      m = { n: new Map(), s: new Map(), h: new Map() };
      this.byId.set(sec.id, m);
    }
    const inst = sec.instance;
    if (typeof inst === 'number') {
      if (m.n.has(inst)) return false;
      m.n.set(inst, sec);
    } else if (typeof inst === 'string') {
      if (m.s.has(inst)) return false;
      m.s.set(inst, sec);
    } else {
      if (m.h.has(inst.hash)) return false;
      m.h.set(inst.hash, sec);
    }
    return true;
  }
}

/**
 * A validated stream: its schemas and its sections by key. Every record's CRC has been checked; section bodies
 * are decoded on demand ({@link IncomingStream.decode}), with the same hostile-input rules.
 */
export class IncomingStream {
  private readonly view: DataView;

  constructor(
    readonly bytes: Uint8Array,
    readonly schemas: ReadonlyMap<string, DescSchema>,
    readonly sections: readonly IncomingSection[],
    private readonly index: SectionIndex,
    readonly segments: readonly Segment[],
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** The section keyed (id, instance), if any. */
  find(id: DescId, instance: InstanceId): IncomingSection | undefined {
    return this.index.get(id, instance);
  }

  /** The section's record decoded with the writer's schema (each call decodes anew). Throws EINVAL for a malformed body. */
  decode(s: IncomingSection): DecodedRecord {
    const r = new ByteReader(this.bytes, s.dataStart, s.end, () => `section '${s.schema.name}' instance ${showInstance(s.instance)}`, this.view);
    return decodeRecord(r, s.schema, this.schemas);
  }

  /** Bytes of the logical stream. */
  get size(): number {
    return this.bytes.length;
  }
}

/**
 * Parses the logical stream: every record's framing and CRC, the schemas (validated as a set), the section keys
 * (no duplicates, each with a schema), and the END record's counts. Throws KernelError(EINVAL) naming the offset.
 */
export function parseStream(bytes: Uint8Array, segments: readonly Segment[] = []): IncomingStream {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const schemaList: DescSchema[] = [];
  let schemas: Map<string, DescSchema> | undefined;
  const sections: IncomingSection[] = [];
  const index = new SectionIndex();
  let pos = 0;
  for (;;) {
    const at = pos;
    if (bytes.length - pos < KSTATE_RECORD_HEADER_SIZE) refuse(`record at byte ${at}: truncated header (the stream has no END record)`);
    const type = bytes[pos + RECORD.type];
    if (bytes[pos + RECORD.reserved0] !== 0 || view.getUint16(pos + RECORD.reserved1, true) !== 0) {
      refuse(`record at byte ${at}: reserved header bytes are not 0`);
    }
    const len = view.getUint32(pos + RECORD.body_len, true);
    const bodyStart = pos + KSTATE_RECORD_HEADER_SIZE;
    if (len > bytes.length - bodyStart) refuse(`record at byte ${at}: body of ${len} bytes runs past the stream's end (${bytes.length - bodyStart} left)`);
    const end = bodyStart + len;
    const crc = view.getUint32(pos + RECORD.crc, true);
    const want = crc32c(bytes, bodyStart, end, crc32c(bytes, pos, pos + RECORD.crc));
    if (crc !== want) refuse(`record at byte ${at}: checksum ${hex(crc)} (computed ${hex(want)}); the stream is corrupt`);
    pos = end;
    if (type === KStateRecordType.SCHEMA) {
      if (schemas) refuse(`record at byte ${at}: a schema after the first section`);
      const r = new ByteReader(bytes, bodyStart, end, () => `schema record at byte ${at}`, view);
      schemaList.push(readSchemaBody(r));
      if (r.pos !== end) r.fail(`${end - r.pos} bytes left over`);
    } else if (type === KStateRecordType.SECTION) {
      schemas ??= validateSchemas(schemaList, 'stream');
      const r = new ByteReader(bytes, bodyStart, end, () => `section record at byte ${at}`, view);
      const id = readKey(r, false) as DescId;
      const instance = readKey(r, true);
      const schema = schemas.get(idKey(id));
      if (!schema) r.fail(`section of ${showId(id)}, which has no schema`);
      const s: IncomingSection = { id, instance, schema: schema!, offset: at, size: end - at, crc, dataStart: r.pos, end };
      if (!index.add(s)) r.fail(`section ${showId(id)} instance ${showInstance(instance)} appears twice`);
      sections.push(s);
    } else if (type === KStateRecordType.END) {
      schemas ??= validateSchemas(schemaList, 'stream');
      if (len !== KSTATE_END_BODY_SIZE) refuse(`END record at byte ${at}: body of ${len} bytes (wanted ${KSTATE_END_BODY_SIZE})`);
      const { nr_schemas: nSchemas, nr_sections: nSections } = KStateEndStruct.decode(bytes, bodyStart);
      if (nSchemas !== schemaList.length || nSections !== sections.length) {
        refuse(`END record at byte ${at}: counts ${nSchemas} schemas and ${nSections} sections (the stream holds ${schemaList.length} and ${sections.length})`);
      }
      if (end !== bytes.length) refuse(`END record at byte ${at}: ${bytes.length - end} bytes follow it`);
      return new IncomingStream(bytes, schemas, sections, index, segments);
    } else refuse(`record at byte ${at}: type ${type} (wanted 1 schema, 2 section or 3 end)`);
  }
}

/** Reads and validates the stream whose root segment is at `rootPhys`. Throws KernelError (see readSegments, parseStream). */
export function openStream(ram: RamReader, rootPhys: number): IncomingStream {
  const { bytes, segments } = readSegments(ram, rootPhys);
  return parseStream(bytes, segments);
}
