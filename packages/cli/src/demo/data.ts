import { crc32, crc32Zeros, type SeededByteStream } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory, type Folio } from '@kho/physmem';

/**
 * The demo's data: folio contents from @kho/kernel's SeededByteStream (the seed's stream, in folio list order)
 * and a crc32 chained across folios in list order, both over zero-copy views of large spans of simulated RAM,
 * at memory speed. The folio orders are drawn with @kho/kernel's SeededWords.
 */

/** Bytes filled and then checksummed at a time: small enough to still be in the cache for the checksum. */
const PIECE = 256 * 1024;

/** The checksum of no bytes: crc32 starts from 0. */
export const CHECKSUM_SEED = 0;

/**
 * Fills the folio's bytes with the next bytes of `stream` and continues checksum `h` over them, a piece at a time
 * through zero-copy views of its chunks (so the checksum reads what the fill just wrote, from the cache). Returns
 * the checksum.
 */
export function fillAndChecksum(ram: PhysicalMemory, folio: Folio, stream: SeededByteStream, h: number): number {
  for (const view of ram.writeViews(folio.phys, folio.size)) {
    for (let off = 0; off < view.length; off += PIECE) {
      const piece = view.subarray(off, Math.min(view.length, off + PIECE));
      stream.fill(piece);
      h = crc32(piece, h);
    }
  }
  return h;
}

/** Continues checksum `h` (crc32) over the bytes of the block of `2^order` pages at `pfn`; never-written memory counts as zeros. */
export function checksumBlock(ram: PhysicalMemory, pfn: number, order: number, h: number): number {
  ram.readSpans(pfn * PAGE_SIZE, PAGE_SIZE * 2 ** order, (view, length) => {
    h = view ? crc32(view, h) : crc32Zeros(length, h);
  });
  return h;
}
