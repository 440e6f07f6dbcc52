import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { PAGE_SIZE } from '@kho/physmem/abi';
import { layoutTable, offsetTable } from '@kho/struct';
import { checkGolden, hexBytes } from '@kho/struct/testing';
import {
  KHO_VMALLOC_CHUNK_ENTRIES,
  KHO_VMALLOC_CHUNK_SIZE,
  KHO_VMALLOC_SIZE,
  KhoVmallocChunkStruct,
  KhoVmallocStruct,
  decodeKhoVmalloc,
  decodeKhoVmallocChunk,
  encodeKhoVmalloc,
  encodeKhoVmallocChunk,
} from './abi';

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('struct kho_vmalloc (golden bytes)', () => {
  it('is 16 little-endian bytes: first u64, total_pages u32, flags u16, order u16', () => {
    const bytes = encodeKhoVmalloc({ first: 0x1234_5000, totalPages: 1023, flags: 0x3, order: 9 });
    expect(bytes.length).toBe(KHO_VMALLOC_SIZE);
    expect(hexOf(bytes)).toBe('0050341200000000' + 'ff030000' + '0300' + '0900');
    expect(decodeKhoVmalloc(bytes)).toEqual({ first: 0x1234_5000, totalPages: 1023, flags: 3, order: 9 });
  });

  it('writes the high half of first above 4 GiB', () => {
    expect(hexOf(encodeKhoVmalloc({ first: 0x12_3456_7000, totalPages: 0xffffffff, flags: 1, order: 0 }))).toBe(
      '0070563412000000' + 'ffffffff' + '0100' + '0000',
    );
  });

  it.each([
    [{ first: -4096, totalPages: 1, flags: 1, order: 0 }, 'EINVAL: kho_vmalloc: first -4096 does not fit (wanted an integer in 0..9007199254740991)'],
    [{ first: 2 ** 53, totalPages: 1, flags: 1, order: 0 }, 'EINVAL: kho_vmalloc: first 9007199254740992 does not fit (wanted an integer in 0..9007199254740991)'],
    [{ first: 4096, totalPages: 2 ** 32, flags: 1, order: 0 }, 'EINVAL: kho_vmalloc: total_pages 4294967296 does not fit (wanted an integer in 0..4294967295)'],
    [{ first: 4096, totalPages: 1, flags: 0x10000, order: 0 }, 'EINVAL: kho_vmalloc: flags 65536 does not fit (wanted an integer in 0..65535)'],
    [{ first: 4096, totalPages: 1, flags: 1, order: 1.5 }, 'EINVAL: kho_vmalloc: order 1.5 does not fit (wanted an integer in 0..65535)'],
  ])('refuses to encode %o', (d, message) => {
    expect(() => encodeKhoVmalloc(d)).toThrow(message);
  });

  it.each([0, 15, 17, 4096])('refuses to decode %d bytes', (n) => {
    expect(() => decodeKhoVmalloc(new Uint8Array(n))).toThrow(`EINVAL: kho_vmalloc is ${n} bytes (wanted 16)`);
  });

  it('decodes a first pointer at or above 2^53 as Infinity (so range checks refuse it), other fields as found', () => {
    const b = new Uint8Array(16).fill(0xff);
    expect(decodeKhoVmalloc(b)).toEqual({ first: Infinity, totalPages: 0xffffffff, flags: 0xffff, order: 0xffff });
    const edge = encodeKhoVmalloc({ first: 2 ** 53 - 1, totalPages: 0, flags: 0, order: 0 });
    expect(decodeKhoVmalloc(edge).first).toBe(2 ** 53 - 1);
    edge[0] = 0;
    edge[6] = 0x20; // 2^53 exactly
    expect(decodeKhoVmalloc(edge).first).toBe(Infinity);
  });

  it('round-trips every value that fits', () => {
    fc.assert(
      fc.property(
        fc.record({
          first: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
          totalPages: fc.nat({ max: 0xffffffff }),
          flags: fc.nat({ max: 0xffff }),
          order: fc.nat({ max: 0xffff }),
        }),
        (d) => {
          expect(decodeKhoVmalloc(encodeKhoVmalloc(d))).toEqual(d);
        },
      ),
    );
  });
});

describe('chunk page (golden bytes)', () => {
  it('is next u64 then phys[511] u64, zero-filled to one page', () => {
    const bytes = encodeKhoVmallocChunk({ next: 0x0abc_d000, phys: [0x5000, 0x1_0000_7000, 0x3000] });
    expect(bytes.length).toBe(KHO_VMALLOC_CHUNK_SIZE);
    expect(hexOf(bytes.subarray(0, 40))).toBe(
      '00d0bc0a00000000' + '0050000000000000' + '0070000001000000' + '0030000000000000' + '0000000000000000',
    );
    expect(bytes.subarray(32).every((x) => x === 0)).toBe(true);
    expect(decodeKhoVmallocChunk(bytes)).toEqual({ next: 0x0abc_d000, phys: [0x5000, 0x1_0000_7000, 0x3000] });
  });

  it('holds exactly 511 entries: the last one ends at the last byte of the page', () => {
    const phys = Array.from({ length: KHO_VMALLOC_CHUNK_ENTRIES }, (_, i) => (i + 1) * 4096);
    const bytes = encodeKhoVmallocChunk({ next: 0, phys });
    expect(hexOf(bytes.subarray(4088))).toBe('00f01f0000000000'); // 511 * 4096 = 0x1ff000
    expect(decodeKhoVmallocChunk(bytes).phys).toEqual(phys);
    expect(() => encodeKhoVmallocChunk({ next: 0, phys: [...phys, 4096] })).toThrow('EINVAL: kho_vmalloc chunk: 512 entries (wanted at most 511)');
  });

  it('a reader stops at the first 0 entry', () => {
    const bytes = encodeKhoVmallocChunk({ next: 0, phys: [0x1000, 0x2000, 0x3000] });
    bytes.fill(0, 16, 24); // entry 1
    expect(decodeKhoVmallocChunk(bytes)).toEqual({ next: 0, phys: [0x1000] });
  });

  it.each([
    [{ next: 0, phys: [0x1000, 0] }, 'EINVAL: kho_vmalloc chunk: entry 1 is 0 (0 ends the list)'],
    [{ next: -1, phys: [] }, 'EINVAL: kho_vmalloc: chunk next -1 does not fit (wanted an integer in 0..9007199254740991)'],
    [{ next: 0, phys: [0.5] }, 'EINVAL: kho_vmalloc: chunk entry 0 0.5 does not fit (wanted an integer in 0..9007199254740991)'],
  ])('refuses to encode %o', (c, message) => {
    expect(() => encodeKhoVmallocChunk(c)).toThrow(message);
  });

  it('refuses to decode anything but a page', () => {
    expect(() => decodeKhoVmallocChunk(new Uint8Array(4095))).toThrow('EINVAL: kho_vmalloc chunk is 4095 bytes (wanted 4096)');
  });

  it('round-trips lists of non-zero entries', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        fc.array(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), { maxLength: KHO_VMALLOC_CHUNK_ENTRIES }),
        (next, phys) => {
          expect(decodeKhoVmallocChunk(encodeKhoVmallocChunk({ next, phys }))).toEqual({ next, phys });
        },
      ),
      { numRuns: 50 },
    );
  });
});

describe('the declared layouts', () => {
  it('have the sizes and offsets of upstream (a change here is a new format)', () => {
    expect([KhoVmallocStruct.size, KHO_VMALLOC_SIZE]).toEqual([16, 16]);
    expect(offsetTable(KhoVmallocStruct)).toEqual({ first: 0, total_pages: 8, flags: 12, order: 14 });
    expect([KhoVmallocChunkStruct.size, KHO_VMALLOC_CHUNK_SIZE, KHO_VMALLOC_CHUNK_ENTRIES]).toEqual([PAGE_SIZE, 4096, 511]);
    expect(offsetTable(KhoVmallocChunkStruct)).toEqual({ next: 0, phys: 8 });
  });

  it('struct kho_vmalloc: golden bytes', () => {
    checkGolden(KhoVmallocStruct, { first: 0x12_3456_7000, total_pages: 1023, flags: 3, order: 9 }, '00 70 56 34 12 00 00 00 | ff 03 00 00 | 03 00 | 09 00');
  });

  it('struct kho_vmalloc_chunk: golden bytes (next, then 511 entries, the unused ones 0)', () => {
    const phys = new Array<number>(KHO_VMALLOC_CHUNK_ENTRIES).fill(0);
    phys[0] = 0x5000;
    phys[510] = 0x1_0000_7000;
    const golden = new Uint8Array(PAGE_SIZE);
    golden.set(hexBytes('00 d0 bc 0a 00 00 00 00 | 00 50 00 00 00 00 00 00'), 0);
    golden.set(hexBytes('00 70 00 00 01 00 00 00'), 4088);
    checkGolden(KhoVmallocChunkStruct, { next: 0x0abc_d000, phys }, golden);
  });
});

describe('docs/abi/kho.md is the contract: its section 6 tables are the declared layouts', () => {
  const doc = readFileSync(join(__dirname, '../../../docs/abi/kho.md'), 'utf8');
  it.each([KhoVmallocStruct, KhoVmallocChunkStruct].map((l) => [l.name, l] as const))('struct %s', (_name, layout) => {
    expect(doc).toContain(`layout: struct ${layout.name}\n${layoutTable(layout)}\n`);
  });
});
