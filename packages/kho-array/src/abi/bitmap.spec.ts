import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PAGE_SIZE } from '@kho/physmem/abi';
import { layoutTable, offsetTable } from '@kho/struct';
import { checkGolden, hexBytes } from '@kho/struct/testing';
import {
  KHOSER_BITMAP_PTRS_PER_PAGE,
  KHOSER_BITMAP_SIZE,
  KHOSER_CHUNK_ENTRY_SIZE,
  KHOSER_MEM_BITMAP_PTR_SIZE,
  KHOSER_MEM_CHUNK_HDR_SIZE,
  KHO_V1_COMPATIBLE,
  KHO_V1_KARR_ARRAY_VERSION,
  KHO_V1_KARR_COMPATIBLE,
  KhoserChunkEntryStruct,
  KhoserMemBitmapPtrStruct,
  KhoserMemChunkHdrStruct,
  KhoserMemChunkStruct,
  PRESERVE_BITS,
  bitmapCoverageLog2,
  bitmapPhysStart,
  decodeKhoserChunkEntry,
  decodeKhoserChunkHdr,
  decodeKhoserMemBitmapPtr,
  encodeKhoserChunkEntry,
  encodeKhoserChunkHdr,
  encodeKhoserMemBitmapPtr,
} from './index';

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('the kho-v1 bitmap contracts', () => {
  it('names the two root compatibles and the bitmap size', () => {
    expect([KHO_V1_COMPATIBLE, KHO_V1_KARR_COMPATIBLE]).toEqual(['kho-v1', 'kho-v1-karr']);
    expect(PRESERVE_BITS).toBe(4096 * 8);
    expect(KHO_V1_KARR_ARRAY_VERSION).toBe(1);
  });

  it.each<[number, number | bigint, bigint]>([
    [0, 0, 0n],
    [0, 1, 0x800_0000n], // 128 MiB
    [0, 8192, 2n ** 40n],
    [9, 1, 2n ** 36n], // 64 GiB
    [10, 3, 3n * 2n ** 37n],
    [10, 2n ** 27n - 1n, 2n ** 64n - 2n ** 37n], // the last bitmap of order 10: phys_start just below 2^64
  ])('bitmap of order %d, index %s starts at %s', (order, index, start) => {
    expect(bitmapPhysStart(order, index)).toBe(start);
    expect(start % 2n ** BigInt(bitmapCoverageLog2(order))).toBe(0n);
  });

  it('a chunk is a 16-byte header and 255 entries of 16 bytes: one page', () => {
    expect(offsetTable(KhoserMemChunkHdrStruct)).toEqual({ next: 0, order: 8, num_elms: 12 });
    expect(offsetTable(KhoserChunkEntryStruct)).toEqual({ phys_start: 0, bitmap: 8 });
    expect([KHOSER_MEM_CHUNK_HDR_SIZE, KHOSER_CHUNK_ENTRY_SIZE, KHOSER_BITMAP_SIZE]).toEqual([16, 16, 255]);
    expect(KHOSER_MEM_CHUNK_HDR_SIZE + KHOSER_BITMAP_SIZE * KHOSER_CHUNK_ENTRY_SIZE).toBe(4096);
  });

  it.each<[bigint, number, number, string]>([
    [0n, 0, 0, '0000000000000000 00000000 00000000'],
    [0x12345000n, 9, 255, '0050341200000000 09000000 ff000000'],
    [0xfedcba9876543000n, 10, 1, '0030547698badcfe 0a000000 01000000'],
  ])('chunk header next %s, order %d, num_elms %d is %s', (next, order, numElms, hex) => {
    const bytes = encodeKhoserChunkHdr({ next, order, numElms });
    expect(hexOf(bytes)).toBe(hex.replace(/ /g, ''));
    expect(decodeKhoserChunkHdr(bytes)).toEqual({ next, order, numElms });
  });

  it('chunk entry {phys_start, bitmap}', () => {
    const bytes = encodeKhoserChunkEntry({ physStart: 2n ** 40n, bitmap: 0x3c00000n });
    expect(hexOf(bytes)).toBe('0000000000010000' + '0000c00300000000');
    expect(decodeKhoserChunkEntry(bytes)).toEqual({ physStart: 2n ** 40n, bitmap: 0x3c00000n });
  });

  it('a khoser_mem_bitmap_ptr is 24 bytes, 170 to a page', () => {
    expect(offsetTable(KhoserMemBitmapPtrStruct)).toEqual({ phys_start: 0, order: 8, reserved: 12, bitmap: 16 });
    expect(KhoserMemBitmapPtrStruct.offsetOf('bitmap') + 8).toBe(KHOSER_MEM_BITMAP_PTR_SIZE);
    expect(KHOSER_BITMAP_PTRS_PER_PAGE).toBe(170);
    const r = { physStart: 0x4000000000n, order: 9, reserved: 0, bitmap: 0x1234000n };
    const bytes = encodeKhoserMemBitmapPtr(r);
    expect(hexOf(bytes)).toBe('0000000040000000' + '09000000' + '00000000' + '0040230100000000');
    expect(decodeKhoserMemBitmapPtr(bytes)).toEqual(r);
    expect(decodeKhoserMemBitmapPtr(Buffer.from('00'.repeat(8) + 'ffffffff' + '01000000' + '00'.repeat(8), 'hex'))).toEqual({
      physStart: 0n,
      order: 0xffffffff,
      reserved: 1,
      bitmap: 0n,
    });
  });
});

describe('the declared layouts (@kho/struct)', () => {
  it('struct khoser_mem_chunk_hdr and khoser_mem_bitmap_ptr: golden bytes', () => {
    checkGolden(KhoserMemChunkHdrStruct, { next: 0x12345000n, order: 9, num_elms: 255 }, '00 50 34 12 00 00 00 00 | 09 00 00 00 | ff 00 00 00');
    checkGolden(KhoserChunkEntryStruct, { phys_start: 2n ** 40n, bitmap: 0x3c00000n }, '00 00 00 00 00 01 00 00 | 00 00 c0 03 00 00 00 00');
  });

  it('struct khoser_mem_chunk: a header and (PAGE_SIZE - 16) / 16 entries fill one page', () => {
    expect([KhoserMemChunkStruct.size, KHOSER_BITMAP_SIZE]).toEqual([PAGE_SIZE, (PAGE_SIZE - 16) / 16]);
    const bitmaps = Array.from({ length: KHOSER_BITMAP_SIZE }, () => ({ phys_start: 0n, bitmap: 0n }));
    bitmaps[254] = { phys_start: 0x8000000n, bitmap: 0x5000n };
    const golden = new Uint8Array(PAGE_SIZE);
    golden.set(hexBytes('00 00 00 00 00 00 00 00 | 00 00 00 00 | 01 00 00 00'));
    golden.set(hexBytes('00 00 00 08 00 00 00 00 | 00 50 00 00 00 00 00 00'), PAGE_SIZE - 16);
    checkGolden(KhoserMemChunkStruct, { hdr: { next: 0n, order: 0, num_elms: 1 }, bitmaps }, golden);
  });

  it('struct khoser_mem_bitmap_ptr_karr: golden bytes; its decode refuses a reserved field that is not 0', () => {
    checkGolden(
      KhoserMemBitmapPtrStruct,
      { phys_start: 0x4000000000n, order: 9, bitmap: 0x1234000n },
      '00 00 00 00 40 00 00 00 | 09 00 00 00 | 00 00 00 00 | 00 40 23 01 00 00 00 00',
    );
    const bad = encodeKhoserMemBitmapPtr({ physStart: 0n, order: 0, reserved: 1, bitmap: 0n });
    expect(() => KhoserMemBitmapPtrStruct.decode(bad)).toThrow('EINVAL: khoser_mem_bitmap_ptr_karr.reserved byte 0 is 0x1 (wanted 0: reserved)');
  });

  it('PRESERVE_BITS is PAGE_SIZE * 8, as upstream', () => {
    expect(PRESERVE_BITS).toBe(PAGE_SIZE * 8);
  });
});

describe('docs/abi/kho.md is the contract: its section 7 tables are the declared layouts', () => {
  const doc = readFileSync(join(__dirname, '../../../../docs/abi/kho.md'), 'utf8');
  const layouts = [KhoserMemChunkHdrStruct, KhoserChunkEntryStruct, KhoserMemChunkStruct, KhoserMemBitmapPtrStruct];
  it.each(layouts.map((l) => [l.name, l] as const))('struct %s', (_name, layout) => {
    expect(doc).toContain(`layout: struct ${layout.name}\n${layoutTable(layout)}\n`);
  });
});
