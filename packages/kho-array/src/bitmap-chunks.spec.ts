import { KernelError, hex } from '@kho/kernel';
import { PAGE_SIZE, type PhysicalMemory, pfn, toOrder } from '@kho/physmem';
import { pagesCrc } from '@kho/kho-core';
import { parseBitmapChunks, readIncomingBitmapChunks } from './bitmap-chunks';
import { bitmapTestMachine, pageHex } from './testing';

const TIB_PFN = 2 ** 40 / PAGE_SIZE;
/** Two order-0 bitmaps (at 0 and at 1 TiB) and one of order 9. */
const BASE: Array<[number, number]> = [
  [0x10, 0],
  [0x11, 0],
  [TIB_PFN + 5, 0],
  [0x200, 9],
];

/** Little-endian hex of a u64. */
function u64(v: number | bigint): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b.toString('hex');
}

/** Little-endian hex of a u32. */
function u32(v: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b.toString('hex');
}

function built() {
  const m = bitmapTestMachine('chunks', BASE);
  for (const [p, o] of BASE) m.tracker.add(pfn(p), toOrder(o));
  const map = m.tracker.serialize();
  const chunk1 = m.ram.readU64(map);
  const bitmaps = m.tracker.metadataPfns().filter((p) => p !== map / PAGE_SIZE && p !== chunk1 / PAGE_SIZE).map((p) => p * PAGE_SIZE);
  return { ...m, map, chunks: [map, chunk1], bitmaps };
}

describe('the kho-v1 chunk list in RAM', () => {
  it('is one chunk per order: {next, order, num_elms} and {phys_start, bitmap} entries (golden bytes)', () => {
    const { ram, map, chunks, bitmaps } = built();
    const [bm0, bmTib, bm9] = bitmaps;
    expect(Buffer.from(ram.read(chunks[0], PAGE_SIZE)).toString('hex')).toBe(
      pageHex([
        [0, u64(chunks[1]) + u32(0) + u32(2)],
        [16, u64(0) + u64(bm0)],
        [32, u64(2 ** 40) + u64(bmTib)],
      ]),
    );
    expect(Buffer.from(ram.read(chunks[1], PAGE_SIZE)).toString('hex')).toBe(pageHex([[0, u64(0) + u32(9) + u32(1)], [16, u64(0) + u64(bm9)]]));
    // a bitmap page: bit b of byte b/8 for block index b within the bitmap
    expect(Buffer.from(ram.read(bm0, PAGE_SIZE)).toString('hex')).toBe(pageHex([[2, '03']]));
    expect(Buffer.from(ram.read(bmTib, PAGE_SIZE)).toString('hex')).toBe(pageHex([[0, '20']]));
    expect(Buffer.from(ram.read(bm9, PAGE_SIZE)).toString('hex')).toBe(pageHex([[0, '02']]));
    expect(map).toBe(chunks[0]);
  });

  it('refuses more blocks than maxBlocks (E2BIG) and a stale checksum (EINVAL) before reading any block (issue 16, rows 8 and 9)', () => {
    const { ram, tracker, map, bitmaps } = built();
    let visited = 0;
    const want = 'E2BIG: bitmap chunks holds 4 blocks, more than the 3 a kernel of this lab reads (KHO_MAX_INCOMING_BLOCKS; wanted at most 3)';
    expect(() => tracker.walkIncoming(map, () => void visited++, { maxBlocks: 3 })).toThrow(want);
    expect(() => readIncomingBitmapChunks(ram, map, { maxBlocks: 3 })).toThrow(want);
    expect(visited).toBe(0);
    const crc = pagesCrc(ram, tracker.incomingMetadataPfns(map));
    expect(readIncomingBitmapChunks(ram, map, { crc, maxBlocks: 4 }).count).toBe(4);
    ram.writeU8(bitmaps[0] + 100, 0xff); // eight blocks more, outside nothing: only the checksum can tell
    expect(() => readIncomingBitmapChunks(ram, map, { crc })).toThrow(/^EINVAL: the tracker's pages fail their checksum/);
  });

  it('lists its pages for the checksum as each chunk, then its bitmaps', () => {
    const { tracker, map, chunks, bitmaps } = built();
    expect(tracker.metadataPfns()).toEqual([chunks[0], bitmaps[0], bitmaps[1], chunks[1], bitmaps[2]].map((p) => p / PAGE_SIZE));
    expect(tracker.incomingMetadataPfns(map)).toEqual(tracker.metadataPfns());
  });

  it('starts a new chunk every 255 bitmaps of an order', () => {
    const blocks: Array<[number, number]> = Array.from({ length: 256 + 255 + 1 }, (_, i) => [i * 32768, 0]);
    const m = bitmapTestMachine('chunks', blocks);
    for (const [p, o] of blocks) m.tracker.add(pfn(p), toOrder(o));
    const map = m.tracker.serialize();
    const counts: number[] = [];
    for (let c: number = map; c !== 0; c = m.ram.readU64(c)) counts.push(m.ram.readU32(c + 12));
    expect(counts).toEqual([255, 255, 2]);
    expect(readIncomingBitmapChunks(m.ram, map).pfns).toEqual(blocks.map(([p]) => p));
  });

  it('reads a hand-written list (the layout is the spec\'s, not the writer\'s habit): orders in any order, entries past num_elms ignored', () => {
    const { ram } = bitmapTestMachine('chunks', [
      [2 ** 18, 3],
      [2 ** 18 + 16, 3],
      [2 ** 15 + 15, 0],
    ]);
    const at = 2 ** 40; // 16 MiB of RAM the allocator never uses
    const [c0, c1, b0, b1] = [at, at + PAGE_SIZE, at + 2 * PAGE_SIZE, at + 3 * PAGE_SIZE];
    // chunk 0: order 3, one bitmap at phys_start 1 GiB (= 2^15 blocks of 32 KiB) with block 0 and block 2
    ram.write(c0, Buffer.from(u64(c1) + u32(3) + u32(1) + u64(2 ** 30) + u64(b0) + u64(0xdead) + u64(0xbeef), 'hex'));
    ram.writeU8(b0, 0b101);
    // chunk 1: order 0, one bitmap at 128 MiB (pfn 2^15) with block 15
    ram.write(c1, Buffer.from(u64(0) + u32(0) + u32(1) + u64(2 ** 27) + u64(b1), 'hex'));
    ram.writeU8(b1 + 1, 0x80);
    expect(readIncomingBitmapChunks(ram, c0)).toEqual({
      count: 3,
      pfns: [2 ** 18, 2 ** 18 + 16, 2 ** 15 + 15],
      orders: [3, 3, 0],
      metadataPages: 4,
    });
  });

  it('an empty tracker is one empty chunk', () => {
    const { tracker, ram } = bitmapTestMachine('chunks');
    const map = tracker.serialize();
    expect(Buffer.from(ram.read(map, PAGE_SIZE)).toString('hex')).toBe(pageHex([]));
    expect(readIncomingBitmapChunks(ram, map)).toEqual({ count: 0, pfns: [], orders: [], metadataPages: 1 });
  });
});

describe('the next kernel refuses a hostile chunk list before visiting anything', () => {
  type Built = ReturnType<typeof built>;
  const E = 'EINVAL: bitmap chunks: ';
  const entry = (chunk: number, i: number): number => chunk + 16 + 16 * i;
  const w64 = (ram: PhysicalMemory, at: number, v: number | bigint): void => ram.writeU64(at, v);

  it.each<[string, (b: Built) => number, (b: Built) => string]>([
    ['a valid list (control)', (b) => b.map, () => ''],
    ['map 0', () => 0, () => `${E}the first chunk pointer is 0`],
    ['the map outside RAM', () => 2 ** 45, () => `${E}chunk 0x200000000000 (preserved-memory-map) is outside RAM`],
    ['the map not page-aligned', (b) => b.map + 8, (b) => `${E}chunk ${hex(b.map + 8)} (preserved-memory-map) is not page-aligned`],
    [
      'a next pointer outside RAM',
      (b) => (w64(b.ram, b.chunks[1], 0x7_0000_0000), b.map),
      (b) => `${E}chunk 0x700000000 (next of chunk ${hex(b.chunks[1])}) is outside RAM`,
    ],
    [
      'a next pointer above 2^53',
      (b) => (w64(b.ram, b.chunks[1], 0xffff_ffff_ffff_f000n), b.map),
      (b) => `${E}chunk 0xfffffffffffff000 (next of chunk ${hex(b.chunks[1])}) is outside RAM`,
    ],
    [
      'a cycle',
      (b) => (w64(b.ram, b.chunks[1], b.map), b.map),
      (b) => `${E}chunk ${hex(b.map)} (next of chunk ${hex(b.chunks[1])}) is reached twice (a cycle or a shared page)`,
    ],
    ['num_elms 256', (b) => (b.ram.writeU32(b.map + 12, 256), b.map), (b) => `${E}chunk ${hex(b.map)} has num_elms 256 (wanted at most 255)`],
    ['order 11', (b) => (b.ram.writeU32(b.chunks[1] + 8, 11), b.map), (b) => `${E}chunk ${hex(b.chunks[1])} has order 11 (wanted 0..10)`],
    [
      'a bitmap pointer not page-aligned',
      (b) => (w64(b.ram, entry(b.map, 1) + 8, b.bitmaps[1] + 8), b.map),
      (b) => `${E}chunk ${hex(b.map)} entry 1: bitmap ${hex(b.bitmaps[1] + 8)} is not page-aligned`,
    ],
    [
      'a bitmap pointer outside RAM',
      (b) => (w64(b.ram, entry(b.map, 0) + 8, 2 ** 44), b.map),
      (b) => `${E}chunk ${hex(b.map)} entry 0: bitmap 0x100000000000 is outside RAM`,
    ],
    [
      'a bitmap that is a chunk',
      (b) => (w64(b.ram, entry(b.chunks[1], 0) + 8, b.map), b.map),
      (b) => `${E}chunk ${hex(b.chunks[1])} entry 0: bitmap ${hex(b.map)} is reached twice (a cycle or a shared page)`,
    ],
    [
      'two entries sharing a bitmap',
      (b) => (w64(b.ram, entry(b.map, 1) + 8, b.bitmaps[0]), b.map),
      (b) => `${E}chunk ${hex(b.map)} entry 1: bitmap ${hex(b.bitmaps[0])} is reached twice (a cycle or a shared page)`,
    ],
    [
      'a phys_start not aligned to what the bitmap covers',
      (b) => (w64(b.ram, entry(b.chunks[1], 0), 2 ** 27), b.map),
      (b) => `${E}chunk ${hex(b.chunks[1])} entry 0: phys_start 0x8000000 is not a multiple of 0x1000000000 (the 64.00 GiB a bitmap of order 9 covers)`,
    ],
    [
      'two bitmaps of an order at one phys_start',
      (b) => (w64(b.ram, entry(b.map, 1), 0), b.map),
      (b) => `${E}chunk ${hex(b.map)} entry 1: a second bitmap of order 0 at phys_start 0x0`,
    ],
    [
      'a set bit outside RAM',
      (b) => (b.ram.writeU8(b.bitmaps[0] + 4095, 0x80), b.map), // pfn 32767: 128 MiB - 4 KiB, beyond the 64 MiB of RAM
      (b) => `${E}block 0x7fff000 order 0 (bitmap ${hex(b.bitmaps[0])}) is outside RAM`,
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
    expect(() => readIncomingBitmapChunks(b.ram, map)).toThrow(msg);
  });

  it('parses the structure without reading the bits (they are checked separately, before any visit)', () => {
    const b = built();
    b.ram.writeU8(b.bitmaps[0] + 4095, 0x80);
    expect(parseBitmapChunks(b.ram, b.map).bitmaps).toHaveLength(3);
  });
});
