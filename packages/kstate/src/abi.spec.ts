import { KhoVmallocStruct } from '@kho/vmalloc/abi';
import { checkGolden } from '@kho/struct/testing';
import { crc32c } from '@kho/kernel';
import { offsetTable } from '@kho/struct';
import {
  KSTATE_END_BODY_SIZE,
  KSTATE_FOLIO_SIZE,
  KSTATE_PHYS_RANGE_SIZE,
  KSTATE_PRESENT,
  KSTATE_RECORD_HEADER_SIZE,
  KSTATE_SEGMENT_CRC_SPAN,
  KSTATE_SEGMENT_HEADER_SIZE,
  KStateEndStruct,
  KStateFolioStruct,
  KStatePhysRangeStruct,
  KStateRecordStruct,
  KStateSegmentStruct,
} from './abi';
import * as abi from './abi';
import { describeState, vmallocBuf } from './model';
import { descSchema } from './schema';
import { encodeSegmentHeader } from './stream';
import { ByteReader } from './wire';

describe('the stream layouts, declared once', () => {
  it('have the sizes and offsets of format version 1 (a change here is a new KSTATE_FORMAT_VERSION)', () => {
    expect([KSTATE_SEGMENT_HEADER_SIZE, KSTATE_RECORD_HEADER_SIZE, KSTATE_END_BODY_SIZE, KSTATE_FOLIO_SIZE, KSTATE_PHYS_RANGE_SIZE]).toEqual([48, 12, 8, 16, 16]);
    expect(offsetTable(KStateSegmentStruct)).toEqual({
      magic: 0,
      version: 4,
      header_size: 6,
      index: 8,
      nr_segments: 12,
      next: 16,
      total_len: 24,
      payload_len: 32,
      order: 36,
      reserved: 37,
      header_crc: 44,
    });
    expect(KSTATE_SEGMENT_CRC_SPAN).toBe(44);
    expect(offsetTable(KStateRecordStruct)).toEqual({ type: 0, reserved0: 1, reserved1: 2, body_len: 4, crc: 8 });
  });

  it('struct kstate_segment: golden bytes, and encodeSegmentHeader writes them with the CRC of bytes 0..43', () => {
    const golden = `4b 53 54 41 01 00 30 00 01 00 00 00 03 00 00 00
                    00 70 56 34 12 00 00 00 89 67 45 23 01 00 00 00
                    d0 0f 00 00 0a 00 00 00 00 00 00 00 75 68 f6 54`;
    const value = {
      magic: 0x4154534b,
      version: 1,
      header_size: 48,
      index: 1,
      nr_segments: 3,
      next: 0x12_3456_7000,
      total_len: 0x1_2345_6789n,
      payload_len: 4048,
      order: 10,
      header_crc: 0x54f66875,
    };
    checkGolden(KStateSegmentStruct, value, golden);
    const h = encodeSegmentHeader({ index: 1, nrSegments: 3, next: 0x12_3456_7000, totalLen: 0x1_2345_6789, payloadLen: 4048, order: 10 });
    expect(h).toEqual(KStateSegmentStruct.encode(value));
    expect(crc32c(h, 0, 44)).toBe(0x54f66875);
  });

  it('struct kstate_record, kstate_end, kstate_folio, kstate_phys_range: golden bytes', () => {
    checkGolden(KStateRecordStruct, { type: 2, body_len: 0x0f, crc: 0xc1067583 }, '02 00 00 00 | 0f 00 00 00 | 83 75 06 c1');
    checkGolden(KStateEndStruct, { nr_schemas: 1, nr_sections: 2 }, '01 00 00 00 | 02 00 00 00');
    checkGolden(KStateFolioStruct, { phys: 0x12_3456_6000, order: 1, flags: KSTATE_PRESENT }, '00 60 56 34 12 00 00 00 | 01 00 00 00 | 01 00 00 00');
    checkGolden(KStatePhysRangeStruct, { start: 0x4000_0000, size: 0x20_0000 }, '00 00 00 40 00 00 00 00 | 00 00 20 00 00 00 00 00');
  });

  it('a record header with a reserved byte set does not decode', () => {
    const b = KStateRecordStruct.encode({ type: 1, body_len: 0, crc: 0 });
    b[KStateRecordStruct.offsetOf('reserved1') + 1] = 1;
    expect(() => KStateRecordStruct.decode(b)).toThrow('EINVAL: kstate_record.reserved1 byte 1 is 0x1 (wanted 0: reserved)');
  });

  it('a vmalloc value is struct kho_vmalloc, whose size @kho/vmalloc declares (kstate does not)', () => {
    const D = describeState<{ buf: number }>({ name: 'v', version: 1, fields: [vmallocBuf('buf')] });
    expect(descSchema(D).fields[0].size).toBe(KhoVmallocStruct.size);
    expect(Object.keys(abi).filter((k) => k.includes('VMALLOC'))).toEqual([]);
  });
});

describe('ByteReader.struct', () => {
  const bytes = KStateFolioStruct.encode({ phys: 0x5000, order: 2, flags: 1 });

  it('decodes a struct at the position and moves past it', () => {
    const r = new ByteReader(bytes, 0, bytes.length, 'test');
    expect(r.struct(KStateFolioStruct)).toEqual({ phys: 0x5000, order: 2, flags: 1 });
    expect(r.pos).toBe(16);
  });

  it.each([
    [7, 'EINVAL: kstate: test: truncated: 8 bytes wanted, 7 left at byte 0'],
    [12, 'EINVAL: kstate: test: truncated: 4 bytes wanted, 0 left at byte 12'],
    [15, 'EINVAL: kstate: test: truncated: 4 bytes wanted, 3 left at byte 12'],
  ])('with %d bytes left fails at the first field that does not fit, as field-by-field reads do', (left, message) => {
    const r = new ByteReader(bytes, 0, left, 'test');
    expect(() => r.struct(KStateFolioStruct)).toThrow(message);
    const byField = new ByteReader(bytes, 0, left, 'test');
    expect(() => (byField.u64(), byField.u32(), byField.u32())).toThrow(message);
  });
});
