import type { ReadIncomingOptions } from '@kho/kho-core';
import { injectable } from 'tsyringe';
import { KernelLog, hex, withUnwind } from '@kho/kernel';
import { BuddyAllocator, MAX_PAGE_ORDER, Memmap, PAGE_SIZE, PhysicalMemory, ORDER_0, toOrder, type Pfn } from '@kho/physmem';
import { offsetTable } from '@kho/struct';
import {
  KHOSER_BITMAP_SIZE,
  KHOSER_CHUNK_ENTRY_SIZE,
  KHOSER_MEM_CHUNK_HDR_SIZE,
  KHO_V1_COMPATIBLE,
  KhoserChunkEntryStruct,
  KhoserMemChunkHdrStruct,
  encodeKhoserChunkHdr,
} from './abi';
import { BitmapMapChecker, BitmapTracker, readIncomingBitmaps, type BitmapRef, type IncomingBitmapBlocks, type ParsedBitmapMap, type SerialisedForm } from './bitmap-tracker';

/** Field offsets of a chunk entry, read and written in place. */
const ENTRY = offsetTable(KhoserChunkEntryStruct);

/** Field offsets of a chunk header, read and written in place. */
const HDR = offsetTable(KhoserMemChunkHdrStruct);

const LABEL = 'bitmap chunks';

/**
 * The bitmap tracker serialised as upstream kho-v1's chunk list (root compatible `kho-v1`): at `serialize`, one
 * page per chunk, a new chunk for every order and every 255 bitmaps, each entry `{phys_start, bitmap}` naming a
 * bitmap page of this kernel; `preserved-memory-map` is the first chunk. See {@link BitmapTracker}.
 */
@injectable()
export class BitmapChunksTracker extends BitmapTracker {
  readonly compatible = KHO_V1_COMPATIBLE;
  readonly kind = 'bitmap-chunks';
  readonly defaultGeneration = 'v1';
  protected readonly label = LABEL;

  constructor(ram: PhysicalMemory, memmap: Memmap, buddy: BuddyAllocator, log: KernelLog) {
    super(ram, memmap, buddy, log);
  }

  protected writeForm(bitmaps: readonly BitmapRef[]): SerialisedForm {
    return writeBitmapChunks(this.ram, this.buddy, bitmaps);
  }

  protected parseForm(mapPhys: number): ParsedBitmapMap {
    return parseBitmapChunks(this.ram, mapPhys);
  }
}

/**
 * Writes the chunk list of `bitmaps` (in walk order: orders ascending) into zeroed order-0 pages from `buddy`.
 * A map with no bitmap is one empty chunk, so that `preserved-memory-map` is never 0. Returns the first chunk's
 * phys and how to free the chunks. Throws ENOMEM having freed every chunk it allocated.
 */
export function writeBitmapChunks(ram: PhysicalMemory, buddy: BuddyAllocator, bitmaps: readonly BitmapRef[]): SerialisedForm {
  const chunks = withUnwind((u) => {
    const out: number[] = [];
    let cur = 0;
    let curOrder = -1;
    let n = 0;
    const newChunk = (order: number): void => {
      const pfn = buddy.allocPages(0);
      u.push(() => buddy.freePages(pfn, ORDER_0));
      const phys = pfn * PAGE_SIZE;
      ram.fill(phys, PAGE_SIZE, 0);
      ram.write(phys, encodeKhoserChunkHdr({ next: 0n, order, numElms: 0 }));
      if (cur !== 0) ram.writeU64(cur + HDR.next, phys);
      out.push(phys);
      cur = phys;
      curOrder = order;
      n = 0;
    };
    for (const b of bitmaps) {
      if (b.order !== curOrder || n === KHOSER_BITMAP_SIZE) newChunk(b.order);
      // An entry per bitmap, written in place at its declared offsets (the chunk page is zeroed).
      const entry = cur + KHOSER_MEM_CHUNK_HDR_SIZE + n * KHOSER_CHUNK_ENTRY_SIZE;
      ram.writeU64(entry + ENTRY.phys_start, b.physStart);
      ram.writeU64(entry + ENTRY.bitmap, b.bitmap);
      ram.writeU32(cur + HDR.num_elms, ++n);
    }
    if (out.length === 0) newChunk(0);
    return out;
  });
  return {
    map: chunks[0],
    nrPages: chunks.length,
    free: () => {
      for (let i = chunks.length - 1; i >= 0; i--) buddy.freePages((chunks[i] / PAGE_SIZE) as Pfn, ORDER_0);
    },
  };
}

/**
 * Reads the chunk list at `mapPhys` as the next kernel does, treating it as hostile: every chunk and bitmap
 * pointer must be a page of RAM, page-aligned and reached once (no cycles, no shared pages); a chunk's order is
 * 0..10 and its num_elms at most 255; a `phys_start` is a multiple of what its bitmap covers, and no order has
 * two bitmaps at one `phys_start`. The bits are not checked here (see checkBitmapBlocks). Returns the bitmaps in
 * chain order and the pages in checksum order (each chunk, then its bitmaps); throws KernelError(EINVAL)
 * `bitmap chunks: …` naming the chunk and what was wrong.
 */
export function parseBitmapChunks(ram: PhysicalMemory, mapPhys: number): ParsedBitmapMap {
  const c = new BitmapMapChecker(ram, LABEL);
  if (mapPhys === 0) throw c.fail('the first chunk pointer is 0');
  if (!Number.isSafeInteger(mapPhys) || mapPhys < 0) throw c.fail(`the first chunk pointer ${Number.isFinite(mapPhys) ? String(mapPhys) : '(>= 2^53)'} is outside RAM`);
  let next = BigInt(mapPhys);
  let from = 'preserved-memory-map';
  while (next !== 0n) {
    const chunk = c.page(next, 'chunk', from);
    const raw = ram.readU32(chunk + HDR.order);
    const num = ram.readU32(chunk + HDR.num_elms);
    if (raw > MAX_PAGE_ORDER) throw c.fail(`chunk ${hex(chunk)} has order ${raw} (wanted 0..${MAX_PAGE_ORDER})`);
    const order = toOrder(raw); // a u32 at most MAX_PAGE_ORDER
    if (num > KHOSER_BITMAP_SIZE) throw c.fail(`chunk ${hex(chunk)} has num_elms ${num} (wanted at most ${KHOSER_BITMAP_SIZE})`);
    for (let i = 0; i < num; i++) {
      const entry = chunk + KHOSER_MEM_CHUNK_HDR_SIZE + i * KHOSER_CHUNK_ENTRY_SIZE;
      c.bitmap(order, ram.readU64n(entry + ENTRY.phys_start), ram.readU64n(entry + ENTRY.bitmap), `chunk ${hex(chunk)} entry ${i}`);
    }
    next = ram.readU64n(chunk + HDR.next);
    from = `next of chunk ${hex(chunk)}`;
  }
  return c.result();
}

/**
 * Reads every block of the chunk list at `mapPhys` (as `kho inspect` does): the structure as in
 * {@link parseBitmapChunks}, then every set bit a block inside RAM, all before returning anything. Throws
 * KernelError(EINVAL) `bitmap chunks: …`.
 */
export function readIncomingBitmapChunks(ram: PhysicalMemory, mapPhys: number, opts: ReadIncomingOptions = {}): IncomingBitmapBlocks {
  return readIncomingBitmaps(ram, parseBitmapChunks(ram, mapPhys), LABEL, opts);
}
