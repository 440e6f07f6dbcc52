import type { ReadIncomingOptions } from '@kho/kho-core';
import { injectable } from 'tsyringe';
import { KernelBug, KernelError, KernelLog, hex, withUnwind } from '@kho/kernel';
import { BuddyAllocator, MAX_PAGE_ORDER, Memmap, PAGE_SIZE, PhysicalMemory, ORDER_0, toOrder, type Pfn } from '@kho/physmem';
import { offsetTable } from '@kho/struct';
import {
  KHOSER_BITMAP_PTRS_PER_PAGE,
  KHOSER_MEM_BITMAP_PTR_SIZE,
  KHO_V1_KARR_ARRAY_VERSION,
  KHO_V1_KARR_COMPATIBLE,
  KhoserMemBitmapPtrStruct,
} from './abi';
import { createKhoArray, openKhoArray, type KhoArrayContext } from './array';
import { BitmapMapChecker, BitmapTracker, readIncomingBitmaps, type BitmapRef, type IncomingBitmapBlocks, type ParsedBitmapMap, type SerialisedForm } from './bitmap-tracker';
import type { U64 } from './u64';

/** Field offsets of a bitmap record, read and written in place. */
const REC = offsetTable(KhoserMemBitmapPtrStruct);

const LABEL = 'bitmap array';

/**
 * The bitmap tracker serialised as the KHO array RFC proposed (root compatible `kho-v1-karr`): at `serialize`,
 * one 24-byte `khoser_mem_bitmap_ptr` record per bitmap, packed 170 to a page, and a KHO array (version 1)
 * whose entry i points at record i; `preserved-memory-map` is the array's 16-byte descriptor, at the start of a
 * page of its own. The array is never preserved, so it is built with a context that has no KHO. See
 * {@link BitmapTracker}.
 */
@injectable()
export class BitmapArrayTracker extends BitmapTracker {
  readonly compatible = KHO_V1_KARR_COMPATIBLE;
  readonly kind = 'bitmap-array';
  readonly defaultGeneration = 'v1-karr';
  protected readonly label = LABEL;

  constructor(ram: PhysicalMemory, memmap: Memmap, buddy: BuddyAllocator, log: KernelLog) {
    super(ram, memmap, buddy, log);
  }

  protected writeForm(bitmaps: readonly BitmapRef[]): SerialisedForm {
    return writeBitmapArray({ ram: this.ram, memmap: this.memmap, buddy: this.buddy }, bitmaps);
  }

  protected parseForm(mapPhys: number): ParsedBitmapMap {
    return parseBitmapArray(this.ram, mapPhys);
  }
}

/**
 * Writes the kho-v1-karr map of `bitmaps` (in walk order) into zeroed order-0 pages of `ctx.buddy`: a page for
 * the descriptor, pages of records, and the array's own pages. Returns the descriptor's phys and how to free
 * every page. Throws ENOMEM having freed everything it allocated.
 */
export function writeBitmapArray(ctx: KhoArrayContext, bitmaps: readonly BitmapRef[]): SerialisedForm {
  const { ram, buddy } = ctx;
  const allocPage = (u: { push(undo: () => void): void }): number => {
    const pfn = buddy.allocPages(0);
    u.push(() => buddy.freePages(pfn, ORDER_0));
    ram.fill(pfn * PAGE_SIZE, PAGE_SIZE, 0);
    return pfn * PAGE_SIZE;
  };
  return withUnwind((u) => {
    const desc = allocPage(u);
    const array = createKhoArray(ctx, KHO_V1_KARR_ARRAY_VERSION);
    u.push(() => array.destroy());
    const records: number[] = [];
    let page = 0;
    bitmaps.forEach((b, i) => {
      const slot = i % KHOSER_BITMAP_PTRS_PER_PAGE;
      if (slot === 0) {
        page = allocPage(u);
        records.push(page);
      }
      const rec = page + slot * KHOSER_MEM_BITMAP_PTR_SIZE;
      // A record per bitmap, written in place at its declared offsets (the page is zeroed: reserved stays 0).
      ram.writeU64(rec + REC.phys_start, b.physStart);
      ram.writeU32(rec + REC.order, b.order);
      ram.writeU64(rec + REC.bitmap, b.bitmap);
      array.seek(i);
      array.set(rec); // ENOMEM: the array is unchanged, and destroyed by the unwind
    });
    array.writeDescriptor(desc);
    return {
      map: desc,
      nrPages: 1 + records.length + array.nrPages,
      free: () => {
        array.destroy();
        for (let i = records.length - 1; i >= 0; i--) buddy.freePages((records[i] / PAGE_SIZE) as Pfn, ORDER_0);
        buddy.freePages((desc / PAGE_SIZE) as Pfn, ORDER_0);
      },
    };
  });
}

/** A context for reading an array: read mode touches RAM only, never the memmap or the allocator. */
function readContext(ram: PhysicalMemory): KhoArrayContext {
  const unused = (what: string): never => {
    throw new KernelBug(`${LABEL}: reading the map used the ${what}`);
  };
  return {
    ram,
    get memmap(): Memmap {
      return unused('memmap');
    },
    get buddy(): BuddyAllocator {
      return unused('buddy allocator');
    },
  };
}

/**
 * Reads the kho-v1-karr map at `mapPhys` as the next kernel does, treating it as hostile: the descriptor starts
 * a page of RAM; the KHO array is read whole by its own checking reader (magic, version, reserved, every page
 * and block, see openKhoArray) before any entry is used; every entry is a pointer (not a tagged value) to a
 * 24-byte record inside one page of RAM, reached once, in no page the map uses whole; a record's order is 0..10,
 * its reserved field 0, its `phys_start` a multiple of what its bitmap covers (no order twice at one
 * `phys_start`), its bitmap a page of RAM, page-aligned, reached once. The bits are not checked here (see
 * checkBitmapBlocks). Returns the bitmaps in array order and the pages in checksum order (the descriptor page,
 * the array's pages in chain order, then each record's page when first met and each bitmap); throws
 * KernelError `bitmap array: …` (EINVAL; EOPNOTSUPP for a bad array magic or version).
 */
export function parseBitmapArray(ram: PhysicalMemory, mapPhys: number): ParsedBitmapMap {
  const c = new BitmapMapChecker(ram, LABEL);
  if (mapPhys === 0) throw c.fail('the descriptor pointer is 0');
  if (!Number.isSafeInteger(mapPhys) || mapPhys < 0) throw c.fail(`the descriptor pointer ${Number.isFinite(mapPhys) ? String(mapPhys) : '(>= 2^53)'} is outside RAM`);
  const desc = c.page(BigInt(mapPhys), 'descriptor page', 'preserved-memory-map');
  const entries: Array<[U64, U64]> = [];
  let arrayPages: number[];
  try {
    const r = openKhoArray(readContext(ram), desc, 'read');
    while (r.next()) entries.push([r.pos, r.get()]);
    arrayPages = r.visitedPages();
  } catch (e) {
    if (e instanceof KernelError) throw new KernelError(e.errno, `${LABEL}: ${e.reason}`, { cause: e });
    throw e;
  }
  for (const p of arrayPages) c.page(BigInt(p), 'array page');
  const records = new Set<number>();
  for (const [pos, entry] of entries) {
    const e = BigInt(entry);
    if ((e & 1n) === 1n) throw c.fail(`the entry at position ${String(pos)} is the tagged value ${hex(e >> 1n)} (wanted a pointer to a khoser_mem_bitmap_ptr)`);
    const rec = c.record(e, KHOSER_MEM_BITMAP_PTR_SIZE, 'record', `position ${String(pos)}`);
    const where = `record ${hex(rec)} (position ${String(pos)})`;
    if (records.has(rec)) throw c.fail(`${where} is reached twice`);
    records.add(rec);
    const order = ram.readU32(rec + REC.order);
    const reserved = ram.readU32(rec + REC.reserved);
    if (order > MAX_PAGE_ORDER) throw c.fail(`${where} has order ${order} (wanted 0..${MAX_PAGE_ORDER})`);
    if (reserved !== 0) throw c.fail(`${where} has reserved ${hex(reserved)} (wanted 0)`);
    c.bitmap(toOrder(order), ram.readU64n(rec + REC.phys_start), ram.readU64n(rec + REC.bitmap), where); // a u32 at most MAX_PAGE_ORDER
  }
  return c.result();
}

/**
 * Reads every block of the kho-v1-karr map at `mapPhys` (as `kho inspect` does): the structure as in
 * {@link parseBitmapArray}, then every set bit a block inside RAM, all before returning anything. Throws like it.
 */
export function readIncomingBitmapArray(ram: PhysicalMemory, mapPhys: number, opts: ReadIncomingOptions = {}): IncomingBitmapBlocks {
  return readIncomingBitmaps(ram, parseBitmapArray(ram, mapPhys), LABEL, opts);
}
