import { SeededByteStream } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';

/**
 * What fills and checks guest memory. The VMM demo writes it page by page through its mapping of the guest memfd
 * and the next kernel checks every byte the same way, from the seed alone.
 */
export interface GuestPattern {
  readonly name: string;
  /** Whether page `index` carries data (the others stay zero and are not even touched). */
  carries(index: number): boolean;
  /** Writes page `index` (a 4 KiB view of RAM). */
  fillPage(page: Uint8Array, index: number): void;
  /** The offset of the first byte of page `index` that differs from what fillPage wrote, or -1. A missing page reads as zero. */
  checkPage(page: Uint8Array | undefined, index: number): number;
}

/**
 * Seeded bytes from the workspace's generator (@kho/kernel's SeededByteStream), one stream per page seeded from the
 * pattern's seed and the page index, so any page can be checked on its own. `sparse`: only one page in `stride`
 * carries data, the rest stay zero (their bytes are still checked) — for guests larger than the host memory the
 * run may spend (the benchmark's 16 GiB guest).
 */
export class SeededPages implements GuestPattern {
  readonly name: string;
  /** What a data page should hold, for checkPage (one page, reused). */
  private readonly want = new Uint8Array(PAGE_SIZE);

  constructor(
    readonly seed: number,
    readonly stride = 1,
  ) {
    this.name = stride === 1 ? `seeded bytes, seed ${seed}` : `seeded bytes in one page of ${stride}, seed ${seed}`;
  }

  carries(index: number): boolean {
    return index % this.stride === 0;
  }

  fillPage(page: Uint8Array, index: number): void {
    if (!this.carries(index)) return;
    new SeededByteStream(this.pageSeed(index)).fill(page.subarray(0, PAGE_SIZE));
  }

  checkPage(page: Uint8Array | undefined, index: number): number {
    if (!this.carries(index)) {
      if (!page) return -1;
      const i = page.findIndex((b) => b !== 0);
      return i;
    }
    if (!page) return 0;
    const want = this.want;
    new SeededByteStream(this.pageSeed(index)).fill(want);
    if (Buffer.compare(page.subarray(0, PAGE_SIZE), want) === 0) return -1;
    for (let i = 0; i < PAGE_SIZE; i++) if (page[i] !== want[i]) return i;
    return -1;
  }

  /** The stream seed of page `index`: a splitmix-style mix of the pattern's seed and the index (any index below 2^53). */
  private pageSeed(index: number): number {
    let h = (this.seed ^ 0x9e3779b9) >>> 0;
    h = Math.imul(h ^ (index >>> 0), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13) ^ Math.floor(index / 2 ** 32), 0xc2b2ae35) >>> 0;
    return (h ^ (h >>> 16)) >>> 0;
  }
}
