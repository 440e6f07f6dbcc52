import fc from 'fast-check';
import { Errno, KernelError } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { offsetTable } from '@kho/struct';
import {
  MEMFD_FILE_SIZE,
  MEMFD_FOLIO_SIZE,
  MEMFD_HEADER_SIZE,
  MEMFD_MAGIC,
  MEMFD_MAX_FILES,
  MEMFD_MAX_FOLIOS,
  MEMFD_NAME_FIELD,
  MEMFD_TABLE_MAX_SIZE,
  MemfdFileStruct,
  MemfdFolioStruct,
  MemfdHeaderStruct,
} from './abi';
import { checkGolden, hexBytes } from '@kho/struct/testing';
import { decodeMemfdTable, encodeMemfdTable, memfdTableChecksum, memfdTableSize, sealMemfdTable, type MemfdTableFile } from './memfd.table';

const MiB = 2 ** 20;

/** Two files: 'a' with a hole between an order-1 folio and an order-0 one, and an empty 'b'. */
const SAMPLE: MemfdTableFile[] = [
  {
    name: 'a',
    size: 5 * PAGE_SIZE + 100,
    folios: [
      { offset: 0, phys: 8 * MiB, order: 1 },
      { offset: 5 * PAGE_SIZE, phys: 9 * MiB, order: 0 },
    ],
  },
  { name: 'b', size: 0, folios: [] },
];

/** A sealed encoding of SAMPLE, after `edit` changed its bytes (the edit may break the seal on purpose). */
function sampleWith(edit: (v: DataView, bytes: Uint8Array) => void, reseal = true): Uint8Array {
  const bytes = encodeMemfdTable(SAMPLE);
  edit(new DataView(bytes.buffer), bytes);
  return reseal ? sealMemfdTable(bytes) : bytes;
}

const FILE0 = MEMFD_HEADER_SIZE;
const FILE1 = MEMFD_HEADER_SIZE + MEMFD_FILE_SIZE;
const FOLIO0 = MEMFD_HEADER_SIZE + 2 * MEMFD_FILE_SIZE;
const FOLIO1 = FOLIO0 + MEMFD_FOLIO_SIZE;

describe('the memfd table, version 1', () => {
  it('has the sizes and offsets of its layout (a change here is a new version)', () => {
    expect([MEMFD_HEADER_SIZE, MEMFD_FILE_SIZE, MEMFD_FOLIO_SIZE, MEMFD_NAME_FIELD]).toEqual([32, 80, 16, 64]);
    expect(offsetTable(MemfdHeaderStruct)).toEqual({ magic: 0, version: 4, reserved0: 6, nr_files: 8, nr_folios: 12, table_size: 16, crc32: 20, reserved1: 24 });
    expect(offsetTable(MemfdFileStruct)).toEqual({ name: 0, size: 64, first_folio: 72, nr_folios: 76 });
    expect(offsetTable(MemfdFolioStruct)).toEqual({ offset: 0, phys_order: 8 });
    expect([MEMFD_TABLE_MAX_SIZE, MEMFD_MAX_FOLIOS]).toEqual([4 * MiB, 262142]);
  });

  it('encodes to the golden bytes', () => {
    const bytes = sealMemfdTable(encodeMemfdTable(SAMPLE));
    expect(bytes.length).toBe(32 + 2 * 80 + 2 * 16);
    const hexOf = (from: number, to: number): string => Buffer.from(bytes.subarray(from, to)).toString('hex');
    expect(hexOf(0, 32)).toBe('4d454d46' + '0100' + '0000' + '02000000' + '02000000' + 'e0000000' + hexOf(20, 24) + '0000000000000000');
    expect(hexOf(20, 24)).toBe(Buffer.from(Uint32Array.of(memfdTableChecksum(bytes)).buffer).toString('hex'));
    expect(hexOf(FILE0, FILE0 + 2)).toBe('6100'); // 'a', NUL
    expect(bytes.subarray(FILE0 + 1, FILE0 + 64).every((b) => b === 0)).toBe(true);
    expect(hexOf(FILE0 + 64, FILE1)).toBe('6450000000000000' + '00000000' + '02000000'); // size 20580, folios 0..1
    expect(hexOf(FILE1 + 64, FILE1 + 80)).toBe('0000000000000000' + '02000000' + '00000000'); // 'b': empty, first_folio 2
    expect(hexOf(FOLIO0, FOLIO1)).toBe('0000000000000000' + '0100800000000000'); // offset 0, 8 MiB | order 1
    expect(hexOf(FOLIO1, FOLIO1 + 16)).toBe('0050000000000000' + '0000900000000000'); // offset 20480, 9 MiB | 0
    expect(new DataView(bytes.buffer).getUint32(0, true)).toBe(MEMFD_MAGIC);
  });

  it('decodes what it encodes, from a block larger than the table', () => {
    const tables = fc
      .array(
        fc.record({
          name: fc
            .string({ unit: 'grapheme', minLength: 1, maxLength: 12 })
            .filter((s) => !s.includes('/') && !s.includes('\0') && new TextEncoder().encode(s).length <= 63),
          folios: fc.array(fc.record({ gap: fc.nat({ max: 3 }), order: fc.nat({ max: 9 }) }), { maxLength: 6 }),
          tail: fc.nat({ max: 3 * PAGE_SIZE }),
        }),
        { maxLength: 8 },
      )
      .map((specs) => {
        let phys = 64 * MiB;
        const seen = new Set<string>();
        return specs
          .filter((s) => !seen.has(s.name) && seen.add(s.name))
          .map((s): MemfdTableFile => {
            let page = 0;
            const folios = s.folios.map(({ gap, order }) => {
              const n = 2 ** order;
              page = Math.ceil((page + gap) / n) * n;
              const bytes = n * PAGE_SIZE;
              phys = Math.ceil(phys / bytes) * bytes;
              const f = { offset: page * PAGE_SIZE, phys, order };
              page += n;
              phys += bytes;
              return f;
            });
            const last = folios[folios.length - 1];
            return { name: s.name, size: last ? last.offset + 1 + s.tail : s.tail, folios };
          });
      });
    fc.assert(
      fc.property(tables, fc.nat({ max: 100 }), (files, slack) => {
        const table = sealMemfdTable(encodeMemfdTable(files));
        const block = new Uint8Array(table.length + slack);
        block.set(table);
        expect(decodeMemfdTable(block)).toEqual(files);
      }),
    );
  });

  const set32 = (at: number, x: number) => (v: DataView) => v.setUint32(at, x, true);
  const set64 = (at: number, x: bigint) => (v: DataView) => v.setBigUint64(at, x, true);
  const setBytes = (at: number, xs: number[]) => (_v: DataView, b: Uint8Array) => b.set(xs, at);

  it.each<[string, (v: DataView, b: Uint8Array) => void, string]>([
    ['a bad magic', set32(0, 0x12345678), 'table magic 0x12345678 (wanted 0x464d454d)'],
    ['a reserved header field set', set64(MemfdHeaderStruct.offsetOf('reserved1'), 1n << 40n), 'reserved header fields are 0x0, 0x10000000000 (wanted 0)'],
    ['too many files', set32(MemfdHeaderStruct.offsetOf('nr_files'), 257), 'table has 257 files (at most 256)'],
    ['too many folios', set32(MemfdHeaderStruct.offsetOf('nr_folios'), 0xffffffff), 'table has 4294967295 folios (at most 262142)'],
    ['one more file than its size says', set32(MemfdHeaderStruct.offsetOf('nr_files'), 3), 'table_size 224 (wanted 304 for 3 files and 2 folios)'],
    ['a name with no NUL', setBytes(FILE0, new Array(64).fill(0x61)), 'file 0: name is not NUL-terminated within 64 bytes'],
    ['an empty name', setBytes(FILE1, [0]), 'file 1: name is empty'],
    ['bytes after the NUL', setBytes(FILE0 + 10, [1]), 'file 0: name field has bytes after its NUL (wanted zero)'],
    ['a name that is not UTF-8', setBytes(FILE0, [0xc3, 0x28, 0]), 'file 0: name is not UTF-8'],
    ["a name with '/'", setBytes(FILE1, [0x2f, 0x62, 0]), "file 1: name '/b' contains '/'"],
    ['a name twice', setBytes(FILE1, [0x61]), "file 1: name 'a' appears twice"],
    ['a file larger than 1 GiB', set64(FILE1 + MemfdFileStruct.offsetOf('size'), 2n ** 30n + 1n), "file 'b': size 1073741825 (at most 1073741824)"],
    ['folio runs out of order', set32(FILE1 + MemfdFileStruct.offsetOf('first_folio'), 1), "file 'b': first_folio 1 (wanted 2: the folio runs tile the array in order)"],
    ['a run past the folio array', set32(FILE0 + MemfdFileStruct.offsetOf('nr_folios'), 3), "file 'a': folios 0..2 run past the 2 folio entries"],
    ['a gap between folio runs', set32(FILE0 + MemfdFileStruct.offsetOf('nr_folios'), 1), "file 'b': first_folio 2 (wanted 1: the folio runs tile the array in order)"],
    [
      'a folio owned by no file',
      (v) => (v.setUint32(FILE0 + MemfdFileStruct.offsetOf('nr_folios'), 1, true), v.setUint32(FILE1 + MemfdFileStruct.offsetOf('first_folio'), 1, true)),
      'the files own 1 folio entries (wanted all 2)',
    ],
    ['reserved phys_order bits', set64(FOLIO1 + 8, BigInt(9 * MiB) | 0x10n), "file 'a' folio 1: reserved bits of phys_order 0x900010 are set"],
    ['an order above 9', set64(FOLIO1 + 8, BigInt(16 * MiB) | 10n), "file 'a' folio 1: order 10 (wanted 0..9)"],
    ['a phys not aligned to its order', set64(FOLIO0 + 8, BigInt(8 * MiB + PAGE_SIZE) | 1n), "file 'a' folio 0: phys 0x801000 is not aligned to its size (order 1)"],
    ['a phys beyond any RAM', set64(FOLIO1 + 8, 2n ** 50n), "file 'a' folio 1: phys 0x4000000000000 order 0 ends above 0x4000000000000"],
    ['an offset not aligned to its order', set64(FOLIO0, BigInt(PAGE_SIZE)), "file 'a' folio 0: offset 4096 is not a multiple of its size 8192"],
    ['an offset past the end of the file', set64(FOLIO1, BigInt(6 * PAGE_SIZE)), "file 'a' folio 1: offset 24576 is not inside the file (size 20580)"],
    ['folios overlapping in the file', set64(FOLIO1, BigInt(PAGE_SIZE)), "file 'a' folio 1: offset 4096 overlaps the folio before it, which ends at 8192"],
    ['folios overlapping in memory', set64(FOLIO1 + 8, BigInt(8 * MiB + PAGE_SIZE)), "folios at 0x800000 (file 'a') and 0x801000 (file 'a') overlap in memory"],
  ])('refuses a table with %s (EINVAL)', (_what, edit, message) => {
    expect(() => decodeMemfdTable(sampleWith(edit))).toThrow(new KernelError(Errno.EINVAL, `memfd: ${message}`));
  });

  it('refuses another version (EOPNOTSUPP), a damaged or unsealed table, a short block and a table past its block', () => {
    expect(() => decodeMemfdTable(sampleWith((v) => v.setUint16(MemfdHeaderStruct.offsetOf('version'), 2, true)))).toThrow(
      new KernelError(Errno.EOPNOTSUPP, 'memfd: table version 2 (this kernel reads version 1)'),
    );
    const sealed = sealMemfdTable(encodeMemfdTable(SAMPLE));
    const crc = new DataView(sealed.buffer).getUint32(MemfdHeaderStruct.offsetOf('crc32'), true).toString(16);
    const damaged = sampleWith((_v, b) => (b[FOLIO1 + 9] ^= 1), false);
    expect(() => decodeMemfdTable(damaged)).toThrow(/^EINVAL: memfd: table crc32 is 0x[0-9a-f]+ but its bytes give 0x[0-9a-f]+ \(not sealed at serialize, or damaged\)$/);
    expect(() => decodeMemfdTable(encodeMemfdTable(SAMPLE))).toThrow(`memfd: table crc32 is 0x0 but its bytes give 0x${crc} (not sealed at serialize, or damaged)`);
    expect(() => decodeMemfdTable(sealed.subarray(0, 31))).toThrow('EINVAL: memfd: table block is 31 bytes (wanted at least 32)');
    expect(() => decodeMemfdTable(sealed.subarray(0, sealed.length - 1))).toThrow('EINVAL: memfd: table_size 224 runs past its block of 223 bytes');
  });

  it('sizes tables up to the largest preserved block, and no further', () => {
    expect(memfdTableSize(0, 0)).toBe(32);
    expect(memfdTableSize(2, 2)).toBe(224);
    expect(memfdTableSize(0, MEMFD_MAX_FOLIOS)).toBe(MEMFD_TABLE_MAX_SIZE);
    expect(memfdTableSize(MEMFD_MAX_FILES, 260862)).toBe(MEMFD_TABLE_MAX_SIZE);
    expect(() => memfdTableSize(MEMFD_MAX_FILES, 260863)).toThrow(
      new KernelError(Errno.E2BIG, 'memfd: a table of 256 files and 260863 folios needs 4194320 bytes (at most 4194304)'),
    );
    expect(() => memfdTableSize(257, 0)).toThrow(new KernelError(Errno.ENOSPC, 'memfd: 257 files (a table holds at most 256)'));
    expect(() => encodeMemfdTable([{ name: 'x'.repeat(64), size: 0, folios: [] }])).toThrow(
      `EINVAL: memfd: name '${'x'.repeat(64)}' is 64 bytes (at most 63)`,
    );
  });
});

describe('the kho-lab-memfd-v1 layouts, declared once with @kho/struct', () => {
  it('struct memfd_header: golden bytes (reserved fields zero and refused when not)', () => {
    const header = { magic: MEMFD_MAGIC, version: 1, nr_files: 2, nr_folios: 3, table_size: 240, crc32: 0xdeadbeef };
    checkGolden(MemfdHeaderStruct, header, '4d 45 4d 46 | 01 00 | 00 00 | 02 00 00 00 | 03 00 00 00 | f0 00 00 00 | ef be ad de | 00 00 00 00 00 00 00 00');
    const bad = MemfdHeaderStruct.encode(header);
    bad[MemfdHeaderStruct.offsetOf('reserved0')] = 1;
    expect(() => MemfdHeaderStruct.decode(bad)).toThrow('EINVAL: memfd_header.reserved0 byte 0 is 0x1 (wanted 0: reserved)');
  });

  it('struct memfd_file: golden bytes', () => {
    const golden = new Uint8Array(80);
    golden.set(hexBytes('e2 82 ac 31'), 0); // '€1', NUL-padded
    golden.set(hexBytes('00 00 00 40 00 00 00 00 | 05 00 00 00 | 02 00 00 00'), 64);
    checkGolden(MemfdFileStruct, { name: '€1', size: 2n ** 30n, first_folio: 5, nr_folios: 2 }, golden);
  });

  it('struct memfd_folio: golden bytes (phys | order in one u64)', () => {
    checkGolden(MemfdFolioStruct, { offset: 0x20_0000n, phys_order: 0x12_3440_0000n | 9n }, '00 00 20 00 00 00 00 00 | 09 00 40 34 12 00 00 00');
  });

  it('the table is those structs back to back', () => {
    const bytes = encodeMemfdTable(SAMPLE);
    expect(MemfdHeaderStruct.decode(bytes)).toEqual({ magic: MEMFD_MAGIC, version: 1, nr_files: 2, nr_folios: 2, table_size: 224, crc32: 0 });
    expect(MemfdFileStruct.decode(bytes, FILE1)).toEqual({ name: 'b', size: 0n, first_folio: 2, nr_folios: 0 });
    expect(MemfdFolioStruct.decode(bytes, FOLIO1)).toEqual({ offset: BigInt(5 * PAGE_SIZE), phys_order: BigInt(9 * MiB) });
  });
});
