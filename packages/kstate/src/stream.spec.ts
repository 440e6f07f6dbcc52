import fc from 'fast-check';
import { Errno, KernelError, Unwind } from '@kho/kernel';
import { PhysicalMemory, type PhysAddr } from '@kho/physmem';
import { KSTATE_RECORD_HEADER_SIZE, KSTATE_SEGMENT_HEADER_SIZE, KStateRecordType, KStateSegmentStruct } from './abi';
import { crc32c } from '@kho/kernel';
import { beginRecord, encodeStream, endRecord, type MemorySaver, type Registration } from './encode';
import { array, bool, bytes, describeState, i16, i32, i64, i8, phys, ptr, str, struct, u16, u32, u64, u8, type Description } from './model';
import { RestorePlan } from './restore';
import { writeKey, writeSchemaBody, type DescSchema } from './schema';
import { encodeSegmentHeader, openStream, parseStream, planSegments, readSegments, segmentCapacity, writeSegments } from './stream';
import { BareMachine } from './testing';
import { ByteWriter } from './wire';

const MiB = 2 ** 20;

/** Field kinds without memory never call the saver. */
const NO_MEMORY: MemorySaver = {
  folio: () => {
    throw new Error('no memory here');
  },
  vmalloc: () => {
    throw new Error('no memory here');
  },
  physRange: () => {
    throw new Error('no memory here');
  },
};

function errorOf(fn: () => unknown): KernelError | undefined {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof KernelError)) throw new Error(`not a KernelError: ${String(e)}`, { cause: e });
    return e;
  }
  return undefined;
}

/** Encodes, parses, decodes and restores every registration: what a next kernel would see. */
function roundTrip(regs: Registration[]): object[] {
  const stream = parseStream(encodeStream(regs, NO_MEMORY).bytes);
  return regs.map((r) => {
    const rec = stream.decode(stream.find(r.desc.id, r.instance)!);
    const obj = {};
    const plan = new RestorePlan('test');
    plan.record(r.desc, rec, obj);
    plan.commit();
    return obj;
  });
}

describe('layouts', () => {
  it('pins the segment header and the record header', () => {
    expect(KSTATE_SEGMENT_HEADER_SIZE).toBe(48);
    expect(KSTATE_RECORD_HEADER_SIZE).toBe(12);
    expect(KStateSegmentStruct.offsetOf('header_crc') + 4).toBe(KSTATE_SEGMENT_HEADER_SIZE);
    const h = encodeSegmentHeader({ index: 1, nrSegments: 2, next: 0x1234000, totalLen: 5000, payloadLen: 952, order: 0 });
    expect(Buffer.from(h).toString('hex')).toBe(
      '4b535441' + '0100' + '3000' + '01000000' + '02000000' + '0040230100000000' + '8813000000000000' + 'b8030000' + '00' + '00000000000000' + Buffer.from(h.subarray(44)).toString('hex'),
    );
    expect(new DataView(h.buffer).getUint32(44, true)).toBe(crc32c(h, 0, 44));
  });

  it('golden bytes: one description, one section, the END record', () => {
    const G = describeState<{ a: number; b: number; s: string }>({ name: 'g', version: 2, minVersion: 1, fields: [u8('a'), u32('b', { since: 2 }), str('s', 4)] });
    const { bytes: out } = encodeStream([{ desc: G, instance: 7, obj: { a: 1, b: 0x01020304, s: 'hi' } }], NO_MEMORY);
    expect(Buffer.from(out).toString('hex')).toBe(
      [
        // SCHEMA, 30 bytes: key 'g', name 'g', version 2, min 1, oldest reader 2, 3 fields, 0 subsections
        '01000000', '1e000000', '1d72c7fe', '020167', '0167', '0200', '0100', '0200', '03',
        '0161' + '01' + '00' + '01', // a: u8, size 1
        '0162' + '03' + '01' + '04' + '0200', // b: u32, size 4, since 2
        '0173' + '0b' + '00' + '04', // s: str[4]
        '00',
        // SECTION, 15 bytes: key 'g', instance 7, a, b, s, 0 subsections
        '02000000', '0f000000', '837506c1', '020167', '0107', '01', '04030201', '68690000', '00',
        // END: 1 schema, 1 section
        '03000000', '08000000', 'f7fa934b', '01000000', '01000000',
      ].join(''),
    );
  });

  it('plans 4 MiB segments, then the smallest block that holds the rest', () => {
    expect(planSegments(100)).toEqual([0]);
    expect(planSegments(segmentCapacity(0))).toEqual([0]);
    expect(planSegments(segmentCapacity(0) + 1)).toEqual([1]);
    expect(planSegments(segmentCapacity(10) + 1)).toEqual([10, 0]);
    expect(planSegments(2 * segmentCapacity(10) + 5000)).toEqual([10, 10, 1]);
  });
});

describe('round trips', () => {
  interface Inner {
    v: number;
    t: bigint;
  }
  interface All {
    a: number;
    b: number;
    c: number;
    d: bigint;
    e: number;
    f: number;
    g: number;
    h: bigint;
    ok: boolean;
    p: number;
    s: string;
    raw: Uint8Array;
    xs: number[];
    inner: Inner;
    maybe: Inner | null;
    list: Inner[];
  }
  const InnerD = describeState<Inner>({ name: 'inner', version: 1, fields: [u16('v'), i64('t')] });
  const AllD: Description<All> = describeState<All>({
    name: 'all',
    id: 42,
    version: 1,
    fields: [
      u8('a'),
      u16('b'),
      u32('c'),
      u64('d'),
      i8('e'),
      i16('f'),
      i32('g'),
      i64('h'),
      bool('ok'),
      phys('p'),
      str('s', 16),
      bytes('raw', 5),
      array('xs', 'i32'),
      struct('inner', InnerD),
      ptr('maybe', InnerD),
      array('list', InnerD),
    ],
  });
  const utf8 = new TextEncoder();
  const inner = fc.record({ v: fc.integer({ min: 0, max: 0xffff }), t: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) });
  const all: fc.Arbitrary<All> = fc.record({
    a: fc.integer({ min: 0, max: 0xff }),
    b: fc.integer({ min: 0, max: 0xffff }),
    c: fc.integer({ min: 0, max: 0xffffffff }),
    d: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    e: fc.integer({ min: -128, max: 127 }),
    f: fc.integer({ min: -32768, max: 32767 }),
    g: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
    h: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    ok: fc.boolean(),
    p: fc.maxSafeNat(),
    s: fc.string({ unit: 'grapheme', maxLength: 6 }).filter((s) => !s.includes('\0') && utf8.encode(s).length <= 16),
    raw: fc.uint8Array({ minLength: 5, maxLength: 5 }),
    xs: fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { maxLength: 8 }),
    inner,
    maybe: fc.option(inner, { nil: null }),
    list: fc.array(inner, { maxLength: 4 }),
  });

  it('decode(encode(x)) = x for every kind without memory, with string, number and named instances', () => {
    fc.assert(
      fc.property(fc.array(all, { minLength: 1, maxLength: 4 }), (objs) => {
        const regs = objs.map((obj, i) => ({ desc: AllD as Description, instance: i % 2 ? `i${i}` : i, obj }));
        expect(roundTrip(regs)).toEqual(objs);
      }),
      { numRuns: 60 },
    );
  });

  it('writes a stream into segments and reads the same bytes back, whatever its size', () => {
    const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 64 * MiB, node: 0 }] });
    let next = 16 * MiB;
    const pages = {
      allocPreserve: (size: number) => {
        next = Math.ceil(next / size) * size;
        const p = next;
        next += size;
        return p as PhysAddr;
      },
      unpreserveFree: () => undefined,
    };
    for (const len of [12, 4048, 4049, segmentCapacity(10), segmentCapacity(10) + 1, 3 * segmentCapacity(10) + 77]) {
      const b = Uint8Array.from({ length: len }, (_, i) => (i * 7) & 0xff);
      const segs = writeSegments(ram, b, pages, new Unwind());
      const back = readSegments(ram, segs[0].phys);
      expect(back.segments).toEqual(segs);
      expect(Buffer.compare(back.bytes, b)).toBe(0);
    }
  });

  it('a block at phys 0 becomes the root: no other segment can sit at 0, as next = 0 ends the chain', () => {
    const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 32 * MiB, node: 0 }] });
    const given = [8 * MiB, 0] as PhysAddr[];
    const pages = { allocPreserve: () => given.shift()!, unpreserveFree: () => undefined };
    const b = Uint8Array.from({ length: segmentCapacity(10) + 100 }, (_, i) => i & 0xff);
    const segs = writeSegments(ram, b, pages, new Unwind());
    expect(segs.map((s) => [s.phys, s.order])).toEqual([
      [0, 0],
      [8 * MiB, 10],
    ]);
    expect(Buffer.compare(readSegments(ram, 0).bytes, b)).toBe(0);
  });
});

describe('a hostile stream never crashes the reader', () => {
  const Small = describeState<{ n: number; s: string; xs: number[] }>({
    name: 'small',
    version: 1,
    fields: [u32('n'), str('s', 8), array('xs', 'u16')],
    subsections: [{ desc: describeState<{ extra: boolean }>({ name: 'small-extra', version: 1, fields: [bool('extra')] }) }],
  });

  function smallStream(): { ram: PhysicalMemory; root: number; len: number } {
    const k = new BareMachine({ mem: 8 * MiB }).boot();
    k.kstate.register(Small, 1, { n: 5, s: 'abc', xs: [1, 2, 3], extra: true } as never);
    k.kstate.register(Small, 'two', { n: 6, s: 'de', xs: [], extra: false } as never);
    const st = k.kstate.save();
    return { ram: k.ram, root: st.rootPhys, len: KSTATE_SEGMENT_HEADER_SIZE + st.bytes };
  }

  /** Opens the stream and decodes every section, as restore and dumpStream would. */
  function readAll(ram: PhysicalMemory, root: number): void {
    const s = openStream(ram, root);
    for (const sec of s.sections) s.decode(sec);
  }

  it('every byte of a small stream flipped in turn is refused with a KernelError (every bit, too)', () => {
    const { ram, root, len } = smallStream();
    readAll(ram, root);
    const seen = new Map<string, number>();
    for (let i = 0; i < len; i++) {
      const orig = ram.readU8(root + i);
      for (const mask of [0xff, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80]) {
        ram.writeU8(root + i, orig ^ mask);
        const e = errorOf(() => readAll(ram, root));
        expect(e).toBeDefined();
        expect([Errno.EINVAL, Errno.EOPNOTSUPP]).toContain(e!.errno);
        const kind = e!.message.replace(/0x[0-9a-f]+|\d+/g, 'N');
        seen.set(kind, (seen.get(kind) ?? 0) + 1);
      }
      ram.writeU8(root + i, orig);
    }
    readAll(ram, root);
    // Payload bytes are caught by the record checksums, header bytes by the header checks.
    expect([...seen.keys()].some((k) => k.includes('checksum N (computed N); the stream is corrupt'))).toBe(true);
    expect([...seen.keys()].some((k) => k.includes('header checksum'))).toBe(true);
  });

  it('random mutations of the segment are refused or read, never anything but a KernelError', () => {
    const { ram, root, len } = smallStream();
    const orig = ram.read(root, len);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(len - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), (edits) => {
        for (const [at, v] of edits) ram.writeU8(root + at, v);
        errorOf(() => readAll(ram, root));
        ram.write(root, orig);
      }),
      { numRuns: 300 },
    );
  });

  it('hostile section bodies behind valid checksums are refused with a KernelError', () => {
    const { ram, root } = smallStream();
    const good = readSegments(ram, root).bytes;
    const stream = parseStream(good);
    const bodies = stream.sections.map((s) => [s.offset, s.end] as const);
    let refused = 0;
    fc.assert(
      fc.property(fc.nat(bodies.length - 1), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), (which, edits) => {
        const b = good.slice();
        const [start, end] = bodies[which];
        const dataStart = start + KSTATE_RECORD_HEADER_SIZE;
        for (const [at, v] of edits) b[dataStart + (at % (end - dataStart))] = v;
        const v = new DataView(b.buffer);
        v.setUint32(start + 8, crc32c(b, dataStart, end, crc32c(b, start, start + 8)), true);
        if (errorOf(() => {
          const s = parseStream(b);
          for (const sec of s.sections) s.decode(sec);
        })) refused++;
      }),
      { numRuns: 400 },
    );
    expect(refused).toBeGreaterThan(100);
  });

  it('random bytes with a valid segment header are refused with a KernelError', () => {
    const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 1 * MiB, node: 0 }] });
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 4000 }), (payload) => {
        ram.write(0x1000, encodeSegmentHeader({ index: 0, nrSegments: 1, next: 0, totalLen: payload.length, payloadLen: payload.length, order: 0 }));
        ram.write(0x1000 + KSTATE_SEGMENT_HEADER_SIZE, payload);
        expect(errorOf(() => openStream(ram, 0x1000))).toBeDefined();
      }),
      { numRuns: 200 },
    );
  });
});

describe('segment chain checks', () => {
  const RAM = 16 * MiB;
  type Header = Parameters<typeof encodeSegmentHeader>[0];
  const one = (over: Partial<Header> = {}): Header => ({ index: 0, nrSegments: 1, next: 0, totalLen: 20, payloadLen: 20, order: 0, ...over });

  it.each<[string, (ram: PhysicalMemory) => number, Errno, string]>([
    ['a root outside RAM', () => 2 ** 40, Errno.EINVAL, 'kstate: stream root at 0x10000000000 is not a page of RAM'],
    ['an unaligned root', () => 0x1008, Errno.EINVAL, 'kstate: stream root at 0x1008 is not a page of RAM'],
    [
      'a bad magic',
      (ram) => {
        ram.writeU32(0x2000, 0x12345678);
        return 0x2000;
      },
      Errno.EINVAL,
      "kstate: stream root at 0x2000: magic 0x12345678 (wanted 0x4154534b 'KSTA')",
    ],
    [
      'an unknown format version',
      (ram) => {
        const h = encodeSegmentHeader(one());
        h[4] = 2;
        ram.write(0x2000, h);
        return 0x2000;
      },
      Errno.EOPNOTSUPP,
      'kstate: stream root at 0x2000: format version 2 (this kernel reads version 1)',
    ],
    [
      'a header checksum mismatch',
      (ram) => {
        const h = encodeSegmentHeader(one());
        h[32] ^= 1;
        ram.write(0x2000, h);
        return 0x2000;
      },
      Errno.EINVAL,
      /* computed below */ 'HEADER_CRC',
    ],
    ['a non-zero index at the root', (ram) => put(ram, 0x2000, one({ index: 1 })), Errno.EINVAL, 'kstate: stream root at 0x2000: index 1 (wanted 0)'],
    ['no segments', (ram) => put(ram, 0x2000, one({ nrSegments: 0 })), Errno.EINVAL, 'kstate: stream root at 0x2000: 0 segments (wanted 1..65536)'],
    ['too many segments', (ram) => put(ram, 0x2000, one({ nrSegments: 70000 })), Errno.EINVAL, 'kstate: stream root at 0x2000: 70000 segments (wanted 1..65536)'],
    ['an order above 10', (ram) => put(ram, 0x2000, one({ order: 11 })), Errno.EINVAL, 'kstate: stream root at 0x2000: order 11 (wanted 0..10)'],
    ['a block not aligned to its order', (ram) => put(ram, 0x3000, one({ order: 1 })), Errno.EINVAL, 'kstate: stream root at 0x3000: a block of order 1 there is not aligned RAM'],
    ['a payload larger than the block', (ram) => put(ram, 0x2000, one({ totalLen: 5000, payloadLen: 5000, nrSegments: 2 })), Errno.EINVAL, 'kstate: stream root at 0x2000: payload 5000 bytes (wanted 1..4048)'],
    ['a last segment with a next', (ram) => put(ram, 0x2000, one({ next: 0x4000 })), Errno.EINVAL, 'kstate: stream root at 0x2000: the last segment points at 0x4000'],
    ['a chain ending early', (ram) => put(ram, 0x2000, one({ nrSegments: 2, totalLen: 40 })), Errno.EINVAL, 'kstate: stream root at 0x2000: chain ends after 1 of 2 segments'],
    [
      'a cycle',
      (ram) => {
        put(ram, 0x2000, one({ nrSegments: 3, totalLen: 60, next: 0x3000 }));
        put(ram, 0x3000, one({ index: 1, nrSegments: 3, totalLen: 60, next: 0x2000 }));
        return 0x2000;
      },
      Errno.EINVAL,
      'kstate: segment 2 at 0x2000 is reached twice (a cycle)',
    ],
    [
      'segments that disagree on the stream length',
      (ram) => {
        put(ram, 0x2000, one({ nrSegments: 2, totalLen: 40, next: 0x3000 }));
        put(ram, 0x3000, one({ index: 1, nrSegments: 2, totalLen: 41 }));
        return 0x2000;
      },
      Errno.EINVAL,
      'kstate: segment 1 at 0x3000: says 2 segments and 41 bytes (the root says 2 and 40)',
    ],
    [
      'payloads that do not add up',
      (ram) => {
        put(ram, 0x2000, one({ nrSegments: 2, totalLen: 40, next: 0x3000 }));
        put(ram, 0x3000, one({ index: 1, nrSegments: 2, totalLen: 40, payloadLen: 10 }));
        return 0x2000;
      },
      Errno.EINVAL,
      'kstate: segment 1 at 0x3000: segments hold 30 bytes (the root says 40)',
    ],
    [
      'overlapping segments',
      (ram) => {
        put(ram, 0x4000, one({ nrSegments: 2, totalLen: 40, next: 0x5000, order: 1 }));
        put(ram, 0x5000, one({ index: 1, nrSegments: 2, totalLen: 40 }));
        return 0x4000;
      },
      Errno.EINVAL,
      'kstate: segments at 0x4000 and 0x5000 overlap',
    ],
  ])('refuses %s', (_what, build, errno, message) => {
    const ram = new PhysicalMemory({ ranges: [{ start: 0, size: RAM, node: 0 }] });
    const root = build(ram);
    const e = errorOf(() => readSegments(ram, root));
    expect(e?.errno).toBe(errno);
    if (message === 'HEADER_CRC') expect(e?.message).toMatch(/^EINVAL: kstate: stream root at 0x2000: header checksum 0x[0-9a-f]+ \(computed 0x[0-9a-f]+\)$/);
    else expect(e?.message).toBe(`${Errno[errno]}: ${message}`);
  });

  function put(ram: PhysicalMemory, at: number, h: Header): number {
    ram.write(at, encodeSegmentHeader(h));
    return at;
  }
});

describe('record checks', () => {
  const schema: DescSchema = { id: 'x', name: 'x', version: 1, minVersion: 1, oldestReader: 1, fields: [{ name: 'a', kind: 'bool', size: 1 }], subsections: [] };

  /** A logical stream from parts: each a record type and a body writer; `end` appends a correct END. */
  function stream(parts: Array<[number, (w: ByteWriter) => void]>, end: [number, number] | 'auto' | 'none' = 'auto'): Uint8Array {
    const w = new ByteWriter();
    let schemas = 0;
    let sections = 0;
    for (const [type, body] of parts) {
      const m = beginRecord(w, type);
      body(w);
      endRecord(w, m);
      if (type === KStateRecordType.SCHEMA) schemas++;
      if (type === KStateRecordType.SECTION) sections++;
    }
    if (end !== 'none') {
      const m = beginRecord(w, KStateRecordType.END);
      const [a, b] = end === 'auto' ? [schemas, sections] : end;
      w.u32(a);
      w.u32(b);
      endRecord(w, m);
    }
    return w.finish();
  }
  const S = (s: DescSchema = schema): [number, (w: ByteWriter) => void] => [KStateRecordType.SCHEMA, (w) => writeSchemaBody(w, s)];
  const SEC = (inst: number, data: number[] = [1, 0]): [number, (w: ByteWriter) => void] => [
    KStateRecordType.SECTION,
    (w) => {
      writeKey(w, 'x');
      writeKey(w, inst);
      for (const b of data) w.u8(b);
    },
  ];

  function decodeAll(b: Uint8Array): void {
    const s = parseStream(b);
    for (const sec of s.sections) s.decode(sec);
  }

  it('reads a well-formed stream', () => {
    expect(() => decodeAll(stream([S(), SEC(1), SEC(2)]))).not.toThrow();
  });

  it.each<[string, () => Uint8Array, string]>([
    ['no END record', () => stream([S()], 'none'), 'kstate: record at byte 30: truncated header (the stream has no END record)'],
    ['END counts that disagree', () => stream([S(), SEC(1)], [1, 2]), 'kstate: END record at byte 49: counts 1 schemas and 2 sections (the stream holds 1 and 1)'],
    ['bytes after END', () => Uint8Array.from([...stream([S()]), 0]), 'kstate: END record at byte 30: 1 bytes follow it'],
    ['an unknown record type', () => stream([[9, () => undefined], S()]), 'kstate: record at byte 0: type 9 (wanted 1 schema, 2 section or 3 end)'],
    ['a schema after a section', () => stream([S(), SEC(1), S({ ...schema, id: 'y' })]), 'kstate: record at byte 49: a schema after the first section'],
    ['the same section twice', () => stream([S(), SEC(1), SEC(1)]), "kstate: section record at byte 49: section 'x' instance 1 appears twice at byte 66"],
    ['a section without a schema', () => stream([SEC(1)]), "kstate: section record at byte 0: section of 'x', which has no schema at byte 17"],
    ['a schema described twice', () => stream([S(), S()]), "kstate: stream: schema 'x': the id is described twice"],
    [
      'a field newer than its description',
      () => stream([S({ ...schema, fields: [{ name: 'a', kind: 'bool', size: 1, since: 5 }] })]),
      "kstate: stream: schema 'x': field 'a': since 5 (wanted 1..1)",
    ],
    [
      'a wrong size for a kind',
      () => stream([S({ ...schema, fields: [{ name: 'a', kind: 'u32', size: 3 }] })]),
      "kstate: stream: schema 'x': field 'a': size 3 (wanted 4)",
    ],
    [
      'a reference to an undescribed id',
      () => stream([S({ ...schema, fields: [{ name: 'a', kind: 'struct', size: 0, ref: 'nope' }] })]),
      "kstate: stream: schema 'x': it refers to 'nope', which the stream does not describe",
    ],
    [
      'a reference cycle',
      () => stream([S({ ...schema, fields: [{ name: 'a', kind: 'ptr', size: 0, ref: 'x' }] })]),
      "kstate: stream: schema 'x': it contains itself (a reference cycle)",
    ],
    ['a bool that is neither 0 nor 1', () => stream([S(), SEC(1, [2, 0])]), "kstate: section 'x' instance 1: bool 'a' holds 2 (wanted 0 or 1) at byte 48"],
    ['trailing bytes in a section', () => stream([S(), SEC(1, [1, 0, 7])]), "kstate: section 'x' instance 1: 1 bytes left over after 'x' at byte 49"],
    ['an undeclared subsection', () => stream([S(), SEC(1, [1, 1, 1, 5])]), "kstate: section 'x' instance 1: subsection count 1 exceeds 0 at byte 49"],
    [
      'a named instance whose hash does not match',
      () =>
        stream([
          S(),
          [
            KStateRecordType.SECTION,
            (w) => {
              writeKey(w, 'x');
              writeKey(w, { hash: 1, name: 'a' });
            },
          ],
        ]),
      'kstate: section record at byte 30: named instance \'a\' carries hash 0x1 (its name hashes to 0xc1d04330) at byte 52',
    ],
  ])('refuses %s', (_what, build, message) => {
    const e = errorOf(() => decodeAll(build()));
    expect(e?.errno).toBe(Errno.EINVAL);
    expect(e?.message).toBe(`EINVAL: ${message}`);
  });

  it('refuses a record whose checksum does not match, and one whose length runs past the end', () => {
    const b = stream([S(), SEC(1)]);
    b[40] ^= 1;
    expect(errorOf(() => decodeAll(b))?.message).toMatch(/^EINVAL: kstate: record at byte 30: checksum 0x[0-9a-f]+ \(computed 0x[0-9a-f]+\); the stream is corrupt$/);
    const c = stream([S()]);
    new DataView(c.buffer).setUint32(4, 1000, true);
    expect(errorOf(() => decodeAll(c))?.message).toBe('EINVAL: kstate: record at byte 0: body of 1000 bytes runs past the stream\'s end (38 left)');
  });

  it('refuses descriptions nested deeper than the limit', () => {
    const chain: DescSchema[] = Array.from({ length: 40 }, (_, i) => ({
      id: i,
      name: `d${i}`,
      version: 1,
      minVersion: 1,
      oldestReader: 1,
      fields: i < 39 ? [{ name: 'n', kind: 'struct', size: 0, ref: i + 1 }] : [],
      subsections: [],
    }));
    const body = (w: ByteWriter): void => {
      writeKey(w, 0);
      writeKey(w, 1);
      // 39 nested lengths, then the innermost record (no fields, no subsections), then 39 subsection counts.
      const lens: number[] = [];
      let inner = 1;
      for (let i = 0; i < 39; i++) {
        lens.unshift(inner);
        inner += 2;
      }
      for (const l of lens) w.uleb(l);
      w.u8(0);
      for (let i = 0; i < 39; i++) w.u8(0);
    };
    const b = stream([...chain.map((s) => S(s)), [KStateRecordType.SECTION, body]]);
    expect(errorOf(() => decodeAll(b))?.message).toBe("EINVAL: kstate: stream: schema 33: descriptions nest deeper than 33 levels");
  });
});
