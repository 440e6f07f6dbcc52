import { KernelError, hex } from '@kho/kernel';
import { PAGE_SIZE, pfn, toOrder } from '@kho/physmem';
import { KHO_ARRAY_MAGIC, decodeKhoArrayDescriptor } from './abi';
import { openKhoArray } from './array';
import { parseBitmapArray, readIncomingBitmapArray } from './bitmap-array';
import { bitmapTestMachine, pageHex } from './testing';

const TIB_PFN = 2 ** 40 / PAGE_SIZE;
/** Two order-0 bitmaps (at 0 and at 1 TiB) and one of order 9. */
const BASE: Array<[number, number]> = [
  [0x10, 0],
  [0x11, 0],
  [TIB_PFN + 5, 0],
  [0x200, 9],
];

function u64(v: number | bigint): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b.toString('hex');
}

function u32(v: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b.toString('hex');
}

/** A serialised map of BASE and where its parts are: descriptor page, array pages, record page, bitmaps. */
function built() {
  const m = bitmapTestMachine('array', BASE);
  for (const [p, o] of BASE) m.tracker.add(pfn(p), toOrder(o));
  const map = m.tracker.serialize();
  const first = Number(decodeKhoArrayDescriptor(m.ram.read(map, 16)).first);
  const records = m.ram.readU64(first + 32); // the first entry (v1 page: 24-byte header, block header, entries)
  const pfns = m.tracker.metadataPfns();
  const bitmaps = pfns.slice(3).map((p) => p * PAGE_SIZE);
  return { ...m, map, first, records, bitmaps, pfns };
}

describe('the kho-v1-karr map in RAM', () => {
  it('is a descriptor page, a version-1 array of pointers, and 24-byte records (golden bytes)', () => {
    const { ram, map, first, records, bitmaps, pfns } = built();
    const [bm0, bmTib, bm9] = bitmaps;
    expect(pfns.slice(0, 3)).toEqual([map / PAGE_SIZE, first / PAGE_SIZE, records / PAGE_SIZE]);
    expect(decodeKhoArrayDescriptor(ram.read(map, 16))).toEqual({ magic: KHO_ARRAY_MAGIC, version: 1, reserved: 0, first: BigInt(first) });
    expect(ram.read(map + 16, PAGE_SIZE - 16).every((b) => b === 0)).toBe(true);
    expect(Buffer.from(ram.read(records, PAGE_SIZE)).toString('hex')).toBe(
      pageHex([
        [0, u64(0) + u32(0) + u32(0) + u64(bm0)],
        [24, u64(2 ** 40) + u32(0) + u32(0) + u64(bmTib)],
        [48, u64(0) + u32(9) + u32(0) + u64(bm9)],
      ]),
    );
    const entries = openKhoArray({ ram, memmap: undefined as never, buddy: undefined as never }, map, 'read').readAll();
    expect(entries).toEqual([
      [0, records],
      [1, records + 24],
      [2, records + 48],
    ]);
    expect(Buffer.from(ram.read(bm0, PAGE_SIZE)).toString('hex')).toBe(pageHex([[2, '03']]));
  });

  it('packs 170 records to a page', () => {
    const blocks: Array<[number, number]> = Array.from({ length: 171 }, (_, i) => [i * 32768, 0]);
    const m = bitmapTestMachine('array', blocks);
    for (const [p, o] of blocks) m.tracker.add(pfn(p), toOrder(o));
    const map = m.tracker.serialize();
    expect(m.tracker.stats().metadataPages).toBe(171 + 1 + 1 + 2); // bitmaps, descriptor, array page, record pages
    const r = readIncomingBitmapArray(m.ram, map);
    expect(r.pfns).toEqual(blocks.map(([p]) => p));
    expect(r.metadataPages).toBe(175);
  });

  it('reads a hand-written map: any order of records, a version-0 array, records anywhere in a page', () => {
    const { ram } = bitmapTestMachine('array', [[2 ** 18, 3]]);
    const at = 2 ** 40;
    const [desc, page, rec, bm] = [at, at + PAGE_SIZE, at + 2 * PAGE_SIZE, at + 3 * PAGE_SIZE];
    ram.write(desc, Buffer.from(u32(KHO_ARRAY_MAGIC) + '0000' + '0000' + u64(page), 'hex'));
    // version 0 page: next, startpos 0, entries[510]: entry 7 points at a record at offset 1000
    ram.write(page, Buffer.from(u64(0) + u64(0), 'hex'));
    ram.writeU64(page + 16 + 7 * 8, rec + 1000);
    ram.write(rec + 1000, Buffer.from(u64(2 ** 30) + u32(3) + u32(0) + u64(bm), 'hex'));
    ram.writeU8(bm, 1);
    expect(readIncomingBitmapArray(ram, desc)).toEqual({ count: 1, pfns: [2 ** 18], orders: [3], metadataPages: 4 });
  });

  it('an empty tracker is a descriptor with no pages', () => {
    const { tracker, ram } = bitmapTestMachine('array');
    const map = tracker.serialize();
    expect(decodeKhoArrayDescriptor(ram.read(map, 16))).toEqual({ magic: KHO_ARRAY_MAGIC, version: 1, reserved: 0, first: 0n });
    expect(readIncomingBitmapArray(ram, map)).toEqual({ count: 0, pfns: [], orders: [], metadataPages: 1 });
  });
});

describe('the next kernel refuses a hostile kho-v1-karr map before visiting anything', () => {
  type Built = ReturnType<typeof built>;
  const E = 'EINVAL: bitmap array: ';
  /** Address of the i-th array entry (one block from byte 32 of the first array page). */
  const slot = (b: Built, i: number): number => b.first + 32 + 8 * i;

  it.each<[string, (b: Built) => number, (b: Built) => string]>([
    ['a valid map (control)', (b) => b.map, () => ''],
    ['the descriptor not at the start of a page', (b) => b.map + 16, (b) => `${E}descriptor page ${hex(b.map + 16)} (preserved-memory-map) is not page-aligned`],
    ['the descriptor outside RAM', () => 2 ** 45, () => `${E}descriptor page 0x200000000000 (preserved-memory-map) is outside RAM`],
    ['a bad array magic', (b) => (b.ram.writeU32(b.map, 0x12345678), b.map), () => "EOPNOTSUPP: bitmap array: kho array: open: descriptor magic 0x12345678 (wanted 0x4b415252, 'KARR')"],
    ['a bad array version', (b) => (b.ram.writeU16(b.map + 4, 7), b.map), () => 'EOPNOTSUPP: bitmap array: kho array: open: descriptor version 7 (wanted 0 or 1)'],
    [
      'an array page outside RAM',
      (b) => (b.ram.writeU64(b.map + 8, 2 ** 45), b.map),
      () => `${E}kho array: page 0x200000000000 (the descriptor's first) is outside RAM`,
    ],
    [
      'an array page that is the descriptor page (read as an array page, its header is refused)',
      (b) => (b.ram.writeU64(b.map + 8, b.map), b.map),
      (b) => `${E}kho array: page ${hex(b.map)}: used is 0 bytes (wanted a multiple of 8 in 16..4072)`,
    ],
    [
      'an entry that is not a pointer (low bits 100)',
      (b) => (b.ram.writeU64(slot(b, 1), b.records + 4), b.map),
      (b) => `${E}kho array: entry ${hex(b.records + 4)} at position 1 (page ${hex(b.first)}) is neither a tagged value nor an 8-byte-aligned pointer`,
    ],
    [
      'an entry that is a tagged value',
      (b) => (b.ram.writeU64(slot(b, 0), (5 << 1) | 1), b.map),
      () => `${E}the entry at position 0 is the tagged value 0x5 (wanted a pointer to a khoser_mem_bitmap_ptr)`,
    ],
    ['an entry pointing outside RAM', (b) => (b.ram.writeU64(slot(b, 2), 2 ** 45), b.map), () => `${E}record 0x200000000000 (position 2) is outside RAM`],
    [
      'an entry above 2^53',
      (b) => (b.ram.writeU64(slot(b, 2), 0xffff_ffff_ffff_f000n), b.map),
      () => `${E}record 0xfffffffffffff000 (position 2) is outside RAM`,
    ],
    [
      'a record crossing a page boundary',
      (b) => (b.ram.writeU64(slot(b, 0), b.records + 4088), b.map),
      (b) => `${E}record ${hex(b.records + 4088)} (position 0) crosses a page boundary`,
    ],
    [
      'a record inside a bitmap page',
      (b) => (b.ram.writeU64(slot(b, 2), b.bitmaps[0] + 8), b.map),
      (b) => `${E}record ${hex(b.bitmaps[0] + 8)} (position 2) lies in page ${hex(b.bitmaps[0])}, which the map uses as a whole page`,
    ],
    ['a record reached twice', (b) => (b.ram.writeU64(slot(b, 1), b.records), b.map), (b) => `${E}record ${hex(b.records)} (position 1) is reached twice`],
    ['order 11', (b) => (b.ram.writeU32(b.records + 24 + 8, 11), b.map), (b) => `${E}record ${hex(b.records + 24)} (position 1) has order 11 (wanted 0..10)`],
    ['reserved not 0', (b) => (b.ram.writeU32(b.records + 48 + 12, 1), b.map), (b) => `${E}record ${hex(b.records + 48)} (position 2) has reserved 0x1 (wanted 0)`],
    [
      'a bitmap pointer not page-aligned',
      (b) => (b.ram.writeU64(b.records + 16, b.bitmaps[0] + 0x800), b.map),
      (b) => `${E}record ${hex(b.records)} (position 0): bitmap ${hex(b.bitmaps[0] + 0x800)} is not page-aligned`,
    ],
    [
      'a bitmap that is the record page',
      (b) => (b.ram.writeU64(b.records + 24 + 16, b.records), b.map),
      (b) => `${E}record ${hex(b.records + 24)} (position 1): bitmap ${hex(b.records)} is reached twice (a cycle or a shared page)`,
    ],
    [
      'a bitmap that is the descriptor page',
      (b) => (b.ram.writeU64(b.records + 16, b.map), b.map),
      (b) => `${E}record ${hex(b.records)} (position 0): bitmap ${hex(b.map)} is reached twice (a cycle or a shared page)`,
    ],
    [
      'a phys_start not aligned to what the bitmap covers',
      (b) => (b.ram.writeU64(b.records + 24, 2 ** 40 + 4096), b.map),
      (b) => `${E}record ${hex(b.records + 24)} (position 1): phys_start 0x10000001000 is not a multiple of 0x8000000 (the 128.00 MiB a bitmap of order 0 covers)`,
    ],
    [
      'a set bit outside RAM',
      (b) => (b.ram.writeU8(b.bitmaps[1] + 512, 1), b.map), // block 4096 of the bitmap at 1 TiB: the 16 MiB of RAM there hold blocks 0..4095
      (b) => `${E}block 0x10001000000 order 0 (bitmap ${hex(b.bitmaps[1])}) is outside RAM`,
    ],
  ])('%s', (_name, corrupt, message) => {
    const b = built();
    const want = b.tracker.metadataPfns();
    const map = corrupt(b);
    const msg = message(b);
    let visited = 0;
    if (msg === '') {
      b.tracker.walkIncoming(map, () => void visited++);
      expect(visited).toBe(BASE.length);
      expect(b.tracker.incomingMetadataPfns(map)).toEqual(want);
      return;
    }
    let err: unknown;
    try {
      b.tracker.walkIncoming(map, () => void visited++);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).message).toBe(msg);
    expect(visited).toBe(0);
    expect(() => readIncomingBitmapArray(b.ram, map)).toThrow(msg);
  });

  it('parses the structure without reading the bits (they are checked separately, before any visit)', () => {
    const b = built();
    b.ram.writeU8(b.bitmaps[1] + 512, 1);
    expect(parseBitmapArray(b.ram, b.map).bitmaps).toHaveLength(3);
  });
});
