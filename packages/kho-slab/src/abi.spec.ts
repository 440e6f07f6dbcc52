import { PAGE_SIZE } from '@kho/physmem/abi';
import { checkGolden, hexBytes } from '@kho/struct/testing';
import { offsetTable } from '@kho/struct';
import {
  KHO_SLAB_BITMAP_BYTES,
  KHO_SLAB_ENTRIES_PER_PAGE,
  KHO_SLAB_KIND_SLAB,
  KHO_SLAB_TABLE_MAGIC,
  KhoSlabEntryStruct,
  KhoSlabHeaderStruct,
  encodeSlabTableEntry,
  encodeSlabTableHeader,
} from './abi';

describe('the kho-slab table layouts, declared once', () => {
  it('have the sizes and offsets of kho-slab-v1 (a change here is a new compatible)', () => {
    expect([KhoSlabHeaderStruct.size, KhoSlabEntryStruct.size, KHO_SLAB_BITMAP_BYTES]).toEqual([16, 80, 64]);
    expect(offsetTable(KhoSlabHeaderStruct)).toEqual({ magic: 0, version: 4, nr_entries: 6, next: 8 });
    expect(offsetTable(KhoSlabEntryStruct)).toEqual({ phys: 0, object_size: 8, order: 12, kind: 13, nr_preserved: 14, bitmap: 16 });
    expect(KHO_SLAB_ENTRIES_PER_PAGE).toBe((PAGE_SIZE - 16) / 80);
  });

  it('struct kho_slab_table_header: golden bytes, as encodeSlabTableHeader writes them', () => {
    const value = { magic: KHO_SLAB_TABLE_MAGIC, version: 1, nr_entries: 51, next: 0x12_3456_7000n };
    checkGolden(KhoSlabHeaderStruct, value, '42 4c 53 4b | 01 00 | 33 00 | 00 70 56 34 12 00 00 00');
    expect(encodeSlabTableHeader(51, 0x12_3456_7000)).toEqual(KhoSlabHeaderStruct.encode(value));
  });

  it('struct kho_slab_entry: golden bytes, as encodeSlabTableEntry writes them (bit i at byte i / 8)', () => {
    const bitmap = new Uint8Array(64);
    bitmap[0] = 0x01;
    bitmap[63] = 0x80;
    const value = { phys: 0x1_0020_0000n, object_size: 8, order: 0, kind: KHO_SLAB_KIND_SLAB, nr_preserved: 2, bitmap };
    const golden = new Uint8Array(80);
    golden.set(hexBytes('00 00 20 00 01 00 00 00 | 08 00 00 00 | 00 | 01 | 02 00 | 01'));
    golden[79] = 0x80;
    checkGolden(KhoSlabEntryStruct, value, golden);
    expect(encodeSlabTableEntry({ phys: 0x1_0020_0000, order: 0, kind: 'slab', objectSize: 8, preserved: [0, 511] })).toEqual(golden);
  });
});
