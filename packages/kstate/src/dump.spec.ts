import { Errno, KernelError, hex } from '@kho/kernel';
import { Folio, PAGE_SIZE } from '@kho/physmem';
import { dumpIncoming, dumpStream } from './dump';
import { beginRecord, endRecord } from './encode';
import { KStateRecordType } from './abi';
import { bool, custom, describeState, folio, i16, instanceIdOf, phys, physRange, str, u64, u8, vmallocBuf } from './model';
import { writeKey, writeSchemaBody } from './schema';
import { parseStream } from './stream';
import { BareMachine } from './testing';
import { ByteWriter } from './wire';

describe('dumpStream', () => {
  it('dumps schemas and every section by field name, from the stream alone', () => {
    const Extra = describeState<{ on: boolean }>({ name: 'ext', version: 1, fields: [bool('on')] });
    const Thing = describeState<{ n: number; big: bigint; neg: number; at: number; tag: string; tag2: string; f: Folio | null; r: { start: number; size: number } | null; v: number; c: number }>({
      name: 'thing',
      id: 7,
      version: 3,
      minVersion: 2,
      fields: [u8('n'), u64('big', { since: 2 }), i16('neg'), phys('at'), str('tag', 4, { until: 3 }), str('tag2', 4), folio('f'), physRange('r'), vmallocBuf('v'), custom('c', { save: (w) => w.u16(0xbeef), restore: () => undefined })],
      subsections: [{ desc: Extra }],
    });
    const k = new BareMachine({ mem: 16 * 2 ** 20 }).boot();
    const f = k.buddy.folioAlloc(1);
    const pfn = k.buddy.allocPages(0);
    k.kstate.register(Thing, instanceIdOf('a'), { n: 1, big: 2n ** 64n - 1n, neg: -2, at: 0x1234000, tag: 'ab', tag2: 'cd', f, r: { start: pfn * PAGE_SIZE, size: PAGE_SIZE }, v: 0, c: 0, on: true } as never);
    const st = k.kstate.save();
    const d = dumpStream(k.ram, st.rootPhys);
    expect(d).toEqual({
      format: 1,
      root: hex(st.rootPhys),
      bytes: st.bytes,
      segments: [{ phys: hex(st.rootPhys), order: 0, bytes: st.bytes }],
      schemas: [
        {
          id: 7,
          name: 'thing',
          version: 3,
          minVersion: 2,
          oldestReader: 3,
          fields: [
            { name: 'n', kind: 'u8', size: 1 },
            { name: 'big', kind: 'u64', size: 8, since: 2 },
            { name: 'neg', kind: 'i16', size: 2 },
            { name: 'at', kind: 'phys', size: 8 },
            { name: 'tag', kind: 'str', size: 4, until: 3 },
            { name: 'tag2', kind: 'str', size: 4 },
            { name: 'f', kind: 'folio', size: 16 },
            { name: 'r', kind: 'physRange', size: 16 },
            { name: 'v', kind: 'vmalloc', size: 16 },
            { name: 'c', kind: 'custom', size: 0 },
          ],
          subsections: ['ext'],
        },
        { id: 'ext', name: 'ext', version: 1, minVersion: 1, oldestReader: 1, fields: [{ name: 'on', kind: 'bool', size: 1 }], subsections: [] },
      ],
      sections: [
        {
          id: 7,
          name: 'thing',
          instance: { name: 'a', hash: hex(instanceIdOf('a').hash) },
          version: 3,
          offset: expect.any(Number),
          bytes: expect.any(Number),
          crc: expect.stringMatching(/^0x[0-9a-f]+$/),
          fields: {
            n: 1,
            big: '18446744073709551615',
            neg: -2,
            at: '0x1234000',
            tag2: 'cd',
            f: { folio: { phys: hex(f.phys), order: 1 } },
            r: { physRange: { start: hex(pfn * PAGE_SIZE), size: '0x1000' } },
            v: null,
            c: { custom: 'efbe' },
          },
          subsections: [{ id: 'ext', name: 'ext', version: 1, fields: { on: true } }],
        },
      ],
    });
  });

  it('lists a section whose body does not decode with its error, and refuses a corrupt stream', () => {
    const w = new ByteWriter();
    let m = beginRecord(w, KStateRecordType.SCHEMA);
    writeSchemaBody(w, { id: 'x', name: 'x', version: 1, minVersion: 1, oldestReader: 1, fields: [{ name: 'a', kind: 'bool', size: 1 }], subsections: [] });
    endRecord(w, m);
    m = beginRecord(w, KStateRecordType.SECTION);
    writeKey(w, 'x');
    writeKey(w, 1);
    w.u8(9);
    w.u8(0);
    endRecord(w, m);
    m = beginRecord(w, KStateRecordType.END);
    w.u32(1);
    w.u32(1);
    endRecord(w, m);
    const d = dumpIncoming(parseStream(w.finish()));
    expect((d.sections as Array<Record<string, unknown>>)[0].error).toBe("EINVAL: kstate: section 'x' instance 1: bool 'a' holds 9 (wanted 0 or 1) at byte 48");
    const ram = new BareMachine({ mem: 4 * 2 ** 20 }).boot().ram;
    expect(() => dumpStream(ram, 0x1000)).toThrow(new KernelError(Errno.EINVAL, "kstate: stream root at 0x1000: magic 0x0 (wanted 0x4154534b 'KSTA')"));
  });
});
