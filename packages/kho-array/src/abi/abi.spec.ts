import {
  KA_V0_MAX_STARTPOS,
  KA_V0_NR_ENTRIES,
  KA_V1_BLOCK_SPACE,
  KA_V1_HEADER_SIZE,
  KA_V1_MAX_ENTRIES,
  KA_V1_MAX_POS_INCREMENT,
  KHO_ARRAY_DESC_SIZE,
  KHO_ARRAY_MAGIC,
  KHO_ARRAY_PAGE_SIZE,
  KaPageV0Layout,
  KaPageV1Layout,
  KhoArrayLayout,
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
    expect(KhoArrayLayout).toEqual({ magic: 0, version: 4, reserved: 6, first: 8 });
    expect(KhoArrayLayout.first + 8).toBe(KHO_ARRAY_DESC_SIZE);
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
    expect(KaPageV0Layout).toEqual({ next: 0, startpos: 8, entries: 16 });
    expect(KaPageV0Layout.entries + KA_V0_NR_ENTRIES * 8).toBe(KHO_ARRAY_PAGE_SIZE);
    expect(KA_V0_MAX_STARTPOS % 510n).toBe(0n);
    expect(KA_V0_MAX_STARTPOS + 509n).toBeLessThanOrEqual(2n ** 64n - 1n);
    expect(KA_V0_MAX_STARTPOS + 510n + 509n).toBeGreaterThan(2n ** 64n - 1n);
  });

  it('version 1: a 24-byte header, then 4072 bytes of blocks', () => {
    expect(KaPageV1Layout).toEqual({ next: 0, firstPos: 8, nrBlocks: 16, used: 18, reserved: 20, blocks: 24 });
    expect(KA_V1_HEADER_SIZE).toBe(KaPageV1Layout.blocks);
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
