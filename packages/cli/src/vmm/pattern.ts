import { PAGE_SIZE } from '@kho/physmem';

/**
 * What fills and checks guest memory. The VMM demo writes it page by page through its mapping of the guest memfd
 * and the next kernel checks every byte the same way, from the seed alone. Swappable: the workspace's seeded-bytes
 * generator can stand in for this one without touching the demo.
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
 * Seeded 32-bit words (xorshift32, as the demo's data helpers), seeded per page so any page can be checked on its
 * own. `sparse`: only one page in `stride` carries data, the rest stay zero (their bytes are still checked) — for
 * guests larger than the host memory the run may spend (the benchmark's 16 GiB guest).
 */
export class SeededPages implements GuestPattern {
  readonly name: string;

  constructor(
    readonly seed: number,
    readonly stride = 1,
  ) {
    this.name = stride === 1 ? `xorshift32 words, seed ${seed}` : `xorshift32 words in one page of ${stride}, seed ${seed}`;
  }

  carries(index: number): boolean {
    return index % this.stride === 0;
  }

  fillPage(page: Uint8Array, index: number): void {
    if (!this.carries(index)) return;
    const w = new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE / 4);
    let x = this.start(index);
    for (let j = 0; j < w.length; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      w[j] = x;
    }
  }

  checkPage(page: Uint8Array | undefined, index: number): number {
    if (!this.carries(index)) {
      if (!page) return -1;
      const i = page.findIndex((b) => b !== 0);
      return i;
    }
    if (!page) return 0;
    const w = new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE / 4);
    let x = this.start(index);
    for (let j = 0; j < w.length; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      if (w[j] !== x) return j * 4;
    }
    return -1;
  }

  private start(index: number): number {
    // splitmix-style mixing of seed and page index; never 0 (xorshift's fixed point)
    let h = (this.seed ^ 0x9e3779b9) >>> 0;
    h = Math.imul(h ^ (index >>> 0), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13) ^ Math.floor(index / 2 ** 32), 0xc2b2ae35) >>> 0;
    return (h ^ (h >>> 16)) >>> 0 || 1;
  }
}
