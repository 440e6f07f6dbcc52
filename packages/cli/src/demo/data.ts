import { PAGE_SIZE, PhysicalMemory, type Folio } from '@kho/physmem';

/**
 * Seeded random contents and a checksum over folios, page by page through zero-copy views of simulated RAM.
 * The generator is xorshift32 (fast, deterministic); the checksum is FNV-1a over 32-bit words, chained across
 * folios in list order.
 */
export class SeededWords {
  /** The generator's state; fillFolio runs the same steps inline on it. */
  state: number;
  constructor(seed: number) {
    this.state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  }
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }
  /** A float in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }
}

function pageWords(ram: PhysicalMemory, pfn: number): Uint32Array {
  const p = ram.page(pfn);
  return new Uint32Array(p.buffer, p.byteOffset, PAGE_SIZE / 4);
}

/** Fills every page of `folio` with words from `rng`. */
export function fillFolio(ram: PhysicalMemory, folio: Folio, rng: SeededWords): void {
  let x = rng.state;
  for (let i = 0; i < folio.nrPages; i++) {
    const w = pageWords(ram, folio.pfn + i);
    for (let j = 0; j < w.length; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      w[j] = x;
    }
  }
  rng.state = x;
}

export const CHECKSUM_SEED = 0x811c9dc5;

/**
 * x × 16777619 mod 2^32 (the FNV prime is 2^24 + 403). Written with shifts and an exact multiply rather than
 * Math.imul, which runs about 100 times slower inside jest's sandboxed context on this Node version.
 */
function fnvStep(x: number): number {
  return ((x << 24) + x * 403) >>> 0;
}

/** Continues checksum `h` over the bytes of the block of `2^order` pages at `pfn`. */
export function checksumBlock(ram: PhysicalMemory, pfn: number, order: number, h: number): number {
  const n = 2 ** order;
  for (let i = 0; i < n; i++) {
    const page = ram.pageIfPresent(pfn + i);
    if (!page) {
      for (let j = 0; j < PAGE_SIZE / 4; j++) h = fnvStep(h); // a zero word
      continue;
    }
    const w = new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE / 4);
    for (let j = 0; j < w.length; j++) h = fnvStep((h ^ w[j]) >>> 0);
  }
  return h;
}
