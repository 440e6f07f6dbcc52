import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { PAGE_SIZE } from '@kho/physmem/abi';
import { layoutTable, offsetTable } from '@kho/struct';
import { checkGolden, hexBytes } from '@kho/struct/testing';
import {
  KA_V0_MAX_STARTPOS,
  KA_V0_NR_ENTRIES,
  KA_V1_BLOCK_SPACE,
  KA_V1_HEADER_SIZE,
  KA_V1_MAX_ENTRIES,
  KA_V1_MAX_POS_INCREMENT,
  KA_V1_NUM_ENTRIES_BITS,
  KA_V1_NUM_ENTRIES_SHIFT,
  KA_V1_POS_INCREMENT_BITS,
  KA_V1_POS_INCREMENT_SHIFT,
  KHO_ARRAY_DESC_SIZE,
  KHO_ARRAY_MAGIC,
  KHO_ARRAY_PAGE_SIZE,
  KaBlockHeaderStruct,
  KaPageV0Struct,
  KaPageV1Struct,
  KhoArrayStruct,
  decodeKaBlockHeader,
  decodeKhoArrayDescriptor,
  encodeKaBlockHeader,
  encodeKhoArrayDescriptor,
  isTaggedValue,
  isValidEntry,
  tagValue,
  untagValue,
} from './index';

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('struct kho_array', () => {
  it('is 16 packed bytes: magic, version, reserved, first', () => {
    expect(offsetTable(KhoArrayStruct)).toEqual({ magic: 0, version: 4, reserved: 6, first: 8 });
    expect(KhoArrayStruct.offsetOf('first') + 8).toBe(KHO_ARRAY_DESC_SIZE);
    expect(KHO_ARRAY_MAGIC).toBe(0x4b415252);
    expect(Buffer.from('KARR').readUInt32BE(0)).toBe(KHO_ARRAY_MAGIC);
  });

  it.each<[number, number | bigint, string]>([
    [0, 0, '5252414b 0000 0000 0000000000000000'],
    [1, 0x12345000, '5252414b 0100 0000 0050341200000000'],
    [1, 0xfedcba9876543000n, '5252414b 0100 0000 0030547698badcfe'],
  ])('encodes version %d, first %s as %s', (version, first, hex) => {
    const bytes = encodeKhoArrayDescriptor(version, first);
    expect(hexOf(bytes)).toBe(hex.replace(/ /g, ''));
    expect(decodeKhoArrayDescriptor(bytes)).toEqual({ magic: KHO_ARRAY_MAGIC, version, reserved: 0, first: BigInt(first) });
  });

  it('decodes the fields as they are, reserved included', () => {
    const bytes = Buffer.from('00000000 ffff 0100 0100000000000080'.replace(/ /g, ''), 'hex');
    expect(decodeKhoArrayDescriptor(bytes)).toEqual({ magic: 0, version: 0xffff, reserved: 1, first: 2n ** 63n + 1n });
  });
});

describe('pages', () => {
  it('version 0: next, startpos and 510 entries fill the page', () => {
    expect(offsetTable(KaPageV0Struct)).toEqual({ next: 0, startpos: 8, entries: 16 });
    expect(KaPageV0Struct.offsetOf('entries') + KA_V0_NR_ENTRIES * 8).toBe(KHO_ARRAY_PAGE_SIZE);
    expect(KA_V0_MAX_STARTPOS % 510n).toBe(0n);
    expect(KA_V0_MAX_STARTPOS + 509n).toBeLessThanOrEqual(2n ** 64n - 1n);
    expect(KA_V0_MAX_STARTPOS + 510n + 509n).toBeGreaterThan(2n ** 64n - 1n);
  });

  it('version 1: a 24-byte header, then 4072 bytes of blocks', () => {
    expect(offsetTable(KaPageV1Struct)).toEqual({ next: 0, first_pos: 8, nr_blocks: 16, used: 18, reserved: 20 });
    expect(KA_V1_HEADER_SIZE).toBe(KaPageV1Struct.size);
    expect(KA_V1_HEADER_SIZE + KA_V1_BLOCK_SPACE).toBe(KHO_ARRAY_PAGE_SIZE);
    expect([KA_V1_MAX_ENTRIES, KA_V1_MAX_POS_INCREMENT]).toEqual([8191, 2 ** 50 - 1]);
  });

  it.each<[boolean, number, number, string]>([
    [false, 1, 0, '0200000000000000'],
    [false, 3, 93, '0640170000000000'],
    [true, 501, 0, 'eb03000000000000'],
    [false, 8191, 0, 'fe3f000000000000'],
    [false, 506, 2 ** 50 - 1, 'f4c3ffffffffffff'],
  ])('block header: absolute %s, %d entries, pos_increment %d is %s', (absolute, numEntries, posIncrement, hex) => {
    const word = encodeKaBlockHeader({ absolute, numEntries, posIncrement });
    const bytes = new Uint8Array(new BigUint64Array([word]).buffer);
    expect(hexOf(bytes)).toBe(hex);
    expect(decodeKaBlockHeader(word)).toEqual({ absolute, numEntries, posIncrement });
  });
});

describe('entries', () => {
  it.each<[bigint, bigint]>([
    [0n, 1n],
    [5n, 0xbn],
    [2n ** 63n - 1n, 2n ** 64n - 1n],
  ])('value %s is stored as %s', (v, entry) => {
    expect(tagValue(v)).toBe(entry);
    expect(isTaggedValue(entry)).toBe(true);
    expect(untagValue(entry)).toBe(v);
  });

  it.each<[bigint, boolean]>([
    [0n, true],
    [1n, true],
    [0x1000n, true],
    [0x8n, true],
    [0x2n, false],
    [0x4n, false],
    [0x1006n, false],
  ])('entry %s is well formed: %s', (entry, ok) => {
    expect(isValidEntry(entry)).toBe(ok);
  });
});

describe('the declared layouts (@kho/struct)', () => {
  it('struct kho_array: golden bytes; its decode refuses a reserved field that is not 0', () => {
    checkGolden(KhoArrayStruct, { magic: KHO_ARRAY_MAGIC, version: 1, first: 0xfedcba9876543000n }, '52 52 41 4b | 01 00 | 00 00 | 00 30 54 76 98 ba dc fe');
    expect(encodeKhoArrayDescriptor(1, 0xfedcba9876543000n)).toEqual(hexBytes('52 52 41 4b 01 00 00 00 00 30 54 76 98 ba dc fe'));
    const bad = hexBytes('52 52 41 4b 01 00 00 01 00 00 00 00 00 00 00 00');
    expect(() => KhoArrayStruct.decode(bad)).toThrow('EINVAL: kho_array.reserved byte 1 is 0x1 (wanted 0: reserved)');
  });

  it('struct kho_array_page (version 0): one page, 510 entries after next and startpos', () => {
    expect([KaPageV0Struct.size, KA_V0_NR_ENTRIES]).toEqual([PAGE_SIZE, (PAGE_SIZE - 16) / 8]);
    const entries = new Array<bigint>(KA_V0_NR_ENTRIES).fill(0n);
    entries[0] = 0x1000n;
    entries[509] = 2n ** 64n - 1n;
    const golden = new Uint8Array(PAGE_SIZE);
    golden.set(hexBytes('00 50 34 12 00 00 00 00 | fe 01 00 00 00 00 00 00 | 00 10 00 00 00 00 00 00'));
    golden.fill(0xff, PAGE_SIZE - 8);
    checkGolden(KaPageV0Struct, { next: 0x12345000n, startpos: 510n, entries }, golden);
  });

  it('struct kho_array_page_v1: golden bytes of the 24-byte header', () => {
    checkGolden(
      KaPageV1Struct,
      { next: 0x12345000n, first_pos: 2n ** 63n, nr_blocks: 2, used: 4072 },
      '00 50 34 12 00 00 00 00 | 00 00 00 00 00 00 00 80 | 02 00 | e8 0f | 00 00 00 00',
    );
    expect(KaPageV1Struct.size + KA_V1_BLOCK_SPACE).toBe(PAGE_SIZE);
  });

  it('struct kho_array_block_header: the bit fields the cursor reads, as encodeKaBlockHeader writes them', () => {
    checkGolden(KaBlockHeaderStruct, { header: { flags: 0, num_entries: 3, pos_increment: 93 } }, '06 40 17 00 00 00 00 00');
    expect([KA_V1_NUM_ENTRIES_SHIFT, KA_V1_POS_INCREMENT_SHIFT, KA_V1_NUM_ENTRIES_BITS, KA_V1_POS_INCREMENT_BITS]).toEqual([1, 14, 13, 50]);
    fc.assert(
      fc.property(fc.boolean(), fc.nat({ max: KA_V1_MAX_ENTRIES }), fc.nat({ max: KA_V1_MAX_POS_INCREMENT }), (absolute, numEntries, posIncrement) => {
        const word = encodeKaBlockHeader({ absolute, numEntries, posIncrement });
        const bytes = new Uint8Array(new BigUint64Array([word]).buffer);
        expect(bytes).toEqual(KaBlockHeaderStruct.encode({ header: { flags: absolute ? 1 : 0, num_entries: numEntries, pos_increment: posIncrement } }));
      }),
    );
  });
});

describe('docs/abi/kho.md is the contract: its section 9 tables are the declared layouts', () => {
  const doc = readFileSync(join(__dirname, '../../../../docs/abi/kho.md'), 'utf8');
  it.each([KhoArrayStruct, KaPageV0Struct, KaPageV1Struct, KaBlockHeaderStruct].map((l) => [l.name, l] as const))('struct %s', (_name, layout) => {
    expect(doc).toContain(`layout: struct ${layout.name}\n${layoutTable(layout)}\n`);
  });
});
