import { injectable } from 'tsyringe';
import { Errno, KernelError, KernelLog, formatBytes, hex, isKernelError, withUnwind, type KernelPlugin, type PluginReport, type Unwind, describeError } from '@kho/kernel';
import { Folio, MAX_PAGE_ORDER, PAGE_SIZE, PhysicalMemory, Slab, kmallocCacheName, pfn, toOrder, type Order, type Pfn, type PhysAddr } from '@kho/physmem';
import { offsetTable } from '@kho/struct';
import {
  KHO_SLAB_COMPATIBLE,
  KHO_SLAB_ENTRIES_PER_PAGE,
  KHO_SLAB_ENTRY_SIZE,
  KHO_SLAB_HEADER_SIZE,
  KHO_SLAB_MAX_SLABS,
  KHO_SLAB_MAX_TABLE_PAGES,
  KHO_SLAB_SUBTREE,
  KhoSlabEntryStruct,
  PROP_SLAB_TABLE,
  decodeSlabTablePage,
  encodeSlabTableEntry,
  encodeSlabTableHeader,
  slabObjectCount,
  type KhoSlabEntry,
} from './abi';
import { FdtNode, decodeFdt, encodeFdt } from '@kho/fdt';
import { Kho } from '@kho/kho-core';

/** Field offsets of a slab entry, updated in place per object. */
const ENTRY = offsetTable(KhoSlabEntryStruct);

/** What {@link KhoSlab.stats} reports. */
export interface KhoSlabStats {
  /** Outgoing: preserved slabs and large kmallocs (table entries), objects, and the table in RAM. */
  readonly preservedSlabs: number;
  readonly preservedLarge: number;
  readonly preservedObjects: number;
  /** Phys of the subtree's FDT page, 0 when nothing is preserved. */
  readonly blobPhys: number;
  /** Phys of each table page, in chain order. */
  readonly tablePages: readonly number[];
  /** Incoming: slabs and objects the previous kernel preserved, and how many objects were restored. */
  readonly incomingSlabs: number;
  readonly incomingObjects: number;
  readonly restoredObjects: number;
  /** Why the incoming table was refused, if it was. */
  readonly refusal?: string;
}

/** An outgoing table entry, mirrored in host memory; the bytes in RAM are kept equal to it at every step. */
interface OutSlab {
  readonly pfn: number;
  readonly order: Order;
  readonly kind: 'slab' | 'large';
  readonly objectSize: number;
  readonly preserved: Set<number>;
  page: TablePage;
  slot: number;
}

interface TablePage {
  readonly phys: PhysAddr;
  readonly slabs: OutSlab[];
}

/** An incoming table entry, validated. `objects[i]`: 0 not preserved, 1 preserved, 2 restored. */
interface InSlab {
  readonly entry: KhoSlabEntry;
  /** entry.phys, checked: a block of RAM the previous kernel preserved with the entry's order. */
  readonly phys: PhysAddr;
  readonly pfn: number;
  /** Index into KMALLOC_SIZES (-1 for a large kmalloc). */
  readonly cache: number;
  readonly nrObjects: number;
  readonly objects: Uint8Array;
  adopted: boolean;
  restored: number;
}

const PRESERVED = 1;
const RESTORED = 2;

/**
 * Preservation of kmalloc objects (spec: preserve/restore mirror alloc/free). `preserveSlab(ptr)` preserves the
 * slab block holding the object (a folio for a large kmalloc) and records the object in a table that lives in
 * preserved pages and is rewritten in place at every call, so a kexec at any moment hands over a complete table
 * (layout: `abi/slab.ts`, subtree `kho-slab`). In the next kernel, `restoreSlab(ptr)` takes the slab back into its
 * kmalloc cache with that object allocated (so `kfree` works on it), the objects nobody preserved free, and the
 * other preserved objects awaiting their own restore; `finishSlabs` (run at `finish`) frees the preserved objects
 * nobody restored, reporting them. A kmalloc pointer is a physical address, so an object keeps its address.
 *
 * The incoming table is read at boot:late, all of it validated as hostile input before anything is adopted; its
 * metadata pages are then freed. A refused table is logged, and its slabs stay reserved (KHO reports them).
 */
@injectable()
export class KhoSlab implements KernelPlugin {
  readonly name = 'kho-slab';
  readonly after = ['kho'];

  private readonly out = new Map<number, OutSlab>();
  private readonly pages: TablePage[] = [];
  private blobPhys = 0 as PhysAddr;
  private incoming: Map<number, InSlab> | undefined;
  private refusal: string | undefined;
  private finished = false;

  constructor(
    private readonly kho: Kho,
    private readonly slab: Slab,
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
  ) {}

  // ---------------------------------------------------------------- lifecycle

  /** Reads and validates the previous kernel's table, then frees its pages (the table now lives in host memory). */
  bootLate(): void {
    if (!this.kho.isKhoBoot()) return;
    let blob: PhysAddr;
    try {
      blob = this.kho.retrieveSubtree(KHO_SLAB_SUBTREE).phys;
    } catch (e) {
      if (!isKernelError(e, Errno.ENOENT)) this.refuse(e);
      return;
    }
    let table: { pages: PhysAddr[]; slabs: InSlab[] };
    try {
      table = this.readIncoming(blob);
    } catch (e) {
      this.refuse(e);
      return;
    }
    for (const p of [blob, ...table.pages]) this.kho.restoreFree(p);
    this.incoming = new Map(table.slabs.map((s) => [s.entry.phys, s]));
    const objects = table.slabs.reduce((n, s) => n + s.entry.preserved.length, 0);
    this.log.info('kho-slab', `incoming slab table: ${table.slabs.length} preserved slabs, ${objects} objects to restore`);
  }

  /**
   * The table is live, so nothing is written here; this only refuses the jump (EINVAL) when a preserved object is
   * no longer allocated: kfree does not know about preservation, and the next kernel would revive a freed object.
   */
  serialize(): void {
    for (const s of this.out.values()) {
      for (const i of s.preserved) {
        const ptr = s.pfn * PAGE_SIZE + i * s.objectSize;
        let state: string;
        try {
          const o = this.slab.objectAt(ptr);
          const same = o.headPfn === s.pfn && o.kind === s.kind && (o.kind === 'large' || o.objectSize === s.objectSize);
          state = same ? o.state : 'freed, its memory reused';
        } catch {
          state = 'freed';
        }
        if (state !== 'allocated') {
          throw new KernelError(Errno.EINVAL, `kho-slab: preserved object ${hex(ptr)} is ${state} (unpreserve an object before freeing it)`);
        }
      }
    }
  }

  /** Runs {@link KhoSlab.finishSlabs} in a kernel that had an incoming table. */
  finish(): PluginReport | void {
    if (this.incoming) return this.finishSlabs();
  }

  // ---------------------------------------------------------------- outgoing

  /**
   * Preserves the kmalloc object at `ptr` (allocated in this boot or restored): its slab block is preserved and the
   * table records the object; the caller keeps it allocated and must unpreserve it before kfree. Objects of the
   * same slab that are not preserved come back free in the next kernel. Throws EOPNOTSUPP when KHO is not enabled,
   * EINVAL when `ptr` is not an allocated kmalloc object (or its block is still preserved for freed objects of
   * another cache), EEXIST when it is preserved already, ENOSPC when the table is full, ENOMEM (having undone
   * everything this call did).
   */
  preserveSlab(ptr: number): void {
    if (!this.kho.isEnabled()) throw new KernelError(Errno.EOPNOTSUPP, `preserveSlab(${describe(ptr)}): KHO is not enabled`);
    const o = this.slab.objectAt(ptr);
    if (o.state !== 'allocated') {
      throw new KernelError(Errno.EINVAL, `preserveSlab(${hex(ptr)}): the object is ${o.state} (wanted allocated)`);
    }
    const index = o.kind === 'slab' ? o.index : 0;
    const known = this.out.get(o.headPfn);
    if (known) {
      if (known.order !== o.order || known.kind !== o.kind || known.objectSize !== (o.kind === 'slab' ? o.objectSize : 0)) {
        // The block was preserved for objects that were freed (a caller bug) and now holds other ones.
        throw new KernelError(Errno.EINVAL, `preserveSlab(${hex(ptr)}): its block is still preserved for freed objects of another kind (unpreserve them first)`);
      }
      if (known.preserved.has(index)) throw new KernelError(Errno.EEXIST, `preserveSlab(${hex(ptr)}): the object is preserved already`);
      known.preserved.add(index);
      this.writeBit(known, index);
      return;
    }
    withUnwind((u) => {
      const page = this.pageWithRoom(u);
      const folio = new Folio(o.headPfn, o.order);
      this.kho.preserveFolio(folio);
      u.push(() => this.kho.unpreserveFolio(folio));
      const s: OutSlab = {
        pfn: o.headPfn,
        order: o.order,
        kind: o.kind,
        objectSize: o.kind === 'slab' ? o.objectSize : 0,
        preserved: new Set([index]),
        page,
        slot: page.slabs.length,
      };
      page.slabs.push(s);
      this.out.set(s.pfn, s);
      this.writeEntry(s);
      this.writeHeader(this.pages.indexOf(page));
    });
  }

  /**
   * Undoes {@link KhoSlab.preserveSlab} exactly: the object leaves the table; with the slab's last object, its
   * block is unpreserved, and an emptied table page (and with the last one, the subtree) is freed. Throws ENOENT
   * when the object at `ptr` is not preserved.
   */
  unpreserveSlab(ptr: number): void {
    const found = this.findOutgoing(ptr);
    if (!found) throw new KernelError(Errno.ENOENT, `unpreserveSlab(${describe(ptr)}): no preserved kmalloc object starts there`);
    const { s, index } = found;
    s.preserved.delete(index);
    if (s.preserved.size > 0) {
      this.writeBit(s, index);
      return;
    }
    this.removeEntry(s);
    this.kho.unpreserveFolio(new Folio(s.pfn as Pfn, s.order));
  }

  /** True when the object at `ptr` is preserved in this boot. */
  isPreserved(ptr: number): boolean {
    return this.findOutgoing(ptr) !== undefined;
  }

  // ---------------------------------------------------------------- incoming

  /**
   * Takes back an object the previous kernel preserved. Returns its address (the same as before the kexec), live
   * in this boot's allocator: `kfree` frees it. The first restore from a slab adopts the slab into its kmalloc
   * cache, the objects nobody preserved free and the other preserved ones awaiting their restore. Throws EINVAL,
   * with a warning in the log, when this boot has no valid incoming table, `ptr` is not the start of an object that
   * was preserved, the object was restored already, or finishSlabs has run.
   */
  restoreSlab(ptr: number): number {
    const what = `restoreSlab(${describe(ptr)})`;
    if (!this.incoming) {
      throw this.restoreRefused(what, this.refusal ? `the incoming slab table was refused (${this.refusal})` : 'this boot has no incoming slab table');
    }
    if (this.finished) throw this.restoreRefused(what, 'slab restore is over (finishSlabs has run)');
    const s = this.findIncoming(ptr);
    if (!s) throw this.restoreRefused(what, 'not inside any preserved slab');
    const e = s.entry;
    let index = 0;
    if (e.kind === 'large') {
      if (ptr !== e.phys) throw this.restoreRefused(what, `inside the preserved large kmalloc at ${hex(e.phys)} (not its start)`);
      if (s.objects[0] === RESTORED) throw this.restoreRefused(what, `the preserved large kmalloc at ${hex(e.phys)} was restored already`);
    } else {
      const off = ptr - e.phys;
      index = Math.floor(off / e.objectSize);
      const slabName = `the preserved ${kmallocCacheName(e.objectSize)} slab at ${hex(e.phys)}`;
      if (index >= s.nrObjects) throw this.restoreRefused(what, `in the unused tail of ${slabName}`);
      if (off % e.objectSize !== 0) throw this.restoreRefused(what, `${off % e.objectSize} bytes into object ${index} of ${slabName}`);
      if (s.objects[index] !== PRESERVED) {
        throw this.restoreRefused(what, `object ${index} of ${slabName} ${s.objects[index] === RESTORED ? 'was restored already' : 'was not preserved'}`);
      }
    }
    if (!s.adopted) {
      const folio = this.kho.restoreFolio(s.phys);
      if (e.kind === 'large') this.slab.adoptLargeKmalloc(folio.pfn, folio.order);
      else this.slab.adoptSlab(folio.pfn, folio.order, s.cache, (i) => s.objects[i] === PRESERVED);
      s.adopted = true;
    }
    if (e.kind === 'slab') this.slab.adoptObject(ptr);
    s.objects[index] = RESTORED;
    s.restored++;
    return ptr;
  }

  /**
   * Ends slab restore: on every adopted slab the preserved objects nobody restored become free; a slab nobody
   * restored anything from stays reserved (KHO's finish names its block). Returns a report. Runs once; later calls
   * and calls in a boot without an incoming table report nothing.
   */
  finishSlabs(): PluginReport {
    const inc = this.incoming;
    if (!inc || this.finished) return { slabs: 0, restoredObjects: 0, releasedObjects: 0, released: [], unrestoredSlabs: 0, unrestoredBytes: 0 };
    this.finished = true;
    let restoredObjects = 0;
    let releasedObjects = 0;
    let unrestoredSlabs = 0;
    let unrestoredBytes = 0;
    const released: string[] = [];
    for (const s of inc.values()) {
      restoredObjects += s.restored;
      const waiting = s.entry.preserved.length - s.restored;
      if (!s.adopted) {
        unrestoredSlabs++;
        unrestoredBytes += PAGE_SIZE * 2 ** s.entry.order;
        continue;
      }
      if (waiting === 0) continue;
      for (const i of s.entry.preserved) {
        if (s.objects[i] === PRESERVED && released.length < 16) released.push(hex(s.entry.phys + i * s.entry.objectSize));
      }
      releasedObjects += this.slab.releaseAwaiting(s.pfn);
    }
    if (releasedObjects > 0) this.log.warn('kho-slab', `finish: ${releasedObjects} preserved slab objects were never restored; they are free now`);
    if (unrestoredSlabs > 0) {
      this.log.warn('kho-slab', `finish: nothing was restored from ${unrestoredSlabs} preserved slabs (${formatBytes(unrestoredBytes)}); they stay reserved`);
    }
    return { slabs: inc.size, restoredObjects, releasedObjects, released, unrestoredSlabs, unrestoredBytes };
  }

  stats(): KhoSlabStats {
    let large = 0;
    let objects = 0;
    for (const s of this.out.values()) {
      if (s.kind === 'large') large++;
      objects += s.preserved.size;
    }
    const inc = this.incoming ? [...this.incoming.values()] : [];
    return {
      preservedSlabs: this.out.size - large,
      preservedLarge: large,
      preservedObjects: objects,
      blobPhys: this.blobPhys,
      tablePages: this.pages.map((p) => p.phys),
      incomingSlabs: inc.length,
      incomingObjects: inc.reduce((n, s) => n + s.entry.preserved.length, 0),
      restoredObjects: inc.reduce((n, s) => n + s.restored, 0),
      ...(this.refusal !== undefined ? { refusal: this.refusal } : {}),
    };
  }

  // ---------------------------------------------------------------- the outgoing table

  /** A table page with a free slot; a new page is made (and undone on a later failure) when all are full. */
  private pageWithRoom(u: Unwind): TablePage {
    const roomy = this.pages.find((p) => p.slabs.length < KHO_SLAB_ENTRIES_PER_PAGE);
    if (roomy) return roomy;
    if (this.pages.length >= KHO_SLAB_MAX_TABLE_PAGES) {
      throw new KernelError(Errno.ENOSPC, `preserveSlab: the slab table is full (${KHO_SLAB_MAX_SLABS} preserved slabs)`);
    }
    const page = this.newTablePage();
    u.push(() => this.dropPage(page));
    return page;
  }

  /** Allocates, preserves and links a table page; the first one also creates the subtree. */
  private newTablePage(): TablePage {
    return withUnwind((u) => {
      const phys = this.kho.allocPreserve(PAGE_SIZE);
      u.push(() => this.kho.unpreserveFree(phys));
      this.ram.write(phys, encodeSlabTableHeader(0, 0));
      if (this.pages.length === 0) {
        const blob = this.kho.allocPreserve(PAGE_SIZE);
        u.push(() => this.kho.unpreserveFree(blob));
        this.ram.write(blob, encodeBlob(phys));
        this.kho.addSubtree(KHO_SLAB_SUBTREE, blob, PAGE_SIZE);
        this.blobPhys = blob;
      }
      const page: TablePage = { phys, slabs: [] };
      this.pages.push(page);
      this.writeHeader(this.pages.length - 2);
      return page;
    });
  }

  /** Unlinks, unpreserves and frees an empty table page; with the last one, the subtree goes too. */
  private dropPage(page: TablePage): void {
    const i = this.pages.indexOf(page);
    this.pages.splice(i, 1);
    if (this.pages.length === 0) {
      this.kho.removeSubtree(this.blobPhys);
      this.kho.unpreserveFree(this.blobPhys);
      this.blobPhys = 0 as PhysAddr;
    } else if (i === 0) {
      this.ram.write(this.blobPhys, encodeBlob(this.pages[0].phys));
    } else {
      this.writeHeader(i - 1);
    }
    this.kho.unpreserveFree(page.phys);
  }

  /** Removes an entry, moving the page's last entry into its slot so that entries stay packed. */
  private removeEntry(s: OutSlab): void {
    const page = s.page;
    const last = page.slabs.pop()!;
    if (last !== s) {
      last.slot = s.slot;
      page.slabs[s.slot] = last;
      this.writeEntry(last);
    }
    this.ram.fill(page.phys + KHO_SLAB_HEADER_SIZE + page.slabs.length * KHO_SLAB_ENTRY_SIZE, KHO_SLAB_ENTRY_SIZE, 0);
    this.out.delete(s.pfn);
    if (page.slabs.length === 0) this.dropPage(page);
    else this.writeHeader(this.pages.indexOf(page));
  }

  private writeEntry(s: OutSlab): void {
    const entry: KhoSlabEntry = {
      phys: s.pfn * PAGE_SIZE,
      order: s.order,
      kind: s.kind,
      objectSize: s.objectSize,
      preserved: [...s.preserved],
    };
    this.ram.write(s.page.phys + KHO_SLAB_HEADER_SIZE + s.slot * KHO_SLAB_ENTRY_SIZE, encodeSlabTableEntry(entry));
  }

  /** Rewrites one bit of an entry's bitmap (as the host mirror has it) and its count. */
  private writeBit(s: OutSlab, index: number): void {
    const at = s.page.phys + KHO_SLAB_HEADER_SIZE + s.slot * KHO_SLAB_ENTRY_SIZE;
    const byteAt = at + ENTRY.bitmap + (index >> 3);
    const bit = 1 << (index & 7);
    const byte = this.ram.readU8(byteAt);
    this.ram.writeU8(byteAt, s.preserved.has(index) ? byte | bit : byte & ~bit);
    this.ram.writeU16(at + ENTRY.nr_preserved, s.preserved.size);
  }

  /** Rewrites the header of page `i` (count and link to the next page); nothing for i < 0. */
  private writeHeader(i: number): void {
    if (i < 0) return;
    const p = this.pages[i];
    this.ram.write(p.phys, encodeSlabTableHeader(p.slabs.length, this.pages[i + 1]?.phys ?? 0));
  }

  /** The outgoing entry and object index of the preserved object starting at `ptr`, if there is one. */
  private findOutgoing(ptr: number): { s: OutSlab; index: number } | undefined {
    if (!Number.isSafeInteger(ptr) || ptr < 0) return undefined;
    const pfn = Math.floor(ptr / PAGE_SIZE);
    for (let order = 0; order <= MAX_PAGE_ORDER; order++) {
      const s = this.out.get(pfn - (pfn % 2 ** order));
      if (!s || s.order !== order) continue;
      const off = ptr - s.pfn * PAGE_SIZE;
      const index = s.kind === 'large' ? (off === 0 ? 0 : -1) : off % s.objectSize === 0 ? off / s.objectSize : -1;
      return s.preserved.has(index) ? { s, index } : undefined;
    }
    return undefined;
  }

  // ---------------------------------------------------------------- the incoming table

  private findIncoming(ptr: number): InSlab | undefined {
    const inc = this.incoming!;
    if (!Number.isSafeInteger(ptr) || ptr < 0) return undefined;
    for (let order = 0; order <= MAX_PAGE_ORDER; order++) {
      const size = PAGE_SIZE * 2 ** order;
      const s = inc.get(ptr - (ptr % size));
      if (s && s.entry.order === order) return s;
    }
    return undefined;
  }

  /**
   * Reads the previous kernel's table from `blob` and checks all of it before anything is touched: the FDT, every
   * table page (a preserved page, at most KHO_SLAB_MAX_TABLE_PAGES, no loop), every entry (abi checks, its block a
   * preserved block of its order, its object size a cache of this kernel), and no two blocks overlapping.
   */
  private readIncoming(blob: PhysAddr): { pages: PhysAddr[]; slabs: InSlab[] } {
    this.checkPreservedBlock(blob, 0, `the ${KHO_SLAB_SUBTREE} FDT`);
    const fdt = decodeFdt(this.ram.read(blob, PAGE_SIZE));
    const compat = fdt.getString('compatible');
    if (compat !== KHO_SLAB_COMPATIBLE) throw invalid(`compatible is ${compat === undefined ? 'missing' : `'${compat}'`} (wanted '${KHO_SLAB_COMPATIBLE}')`);
    const first = fdt.getU64LE(PROP_SLAB_TABLE);
    if (first === undefined || first === 0n) throw invalid(`'${PROP_SLAB_TABLE}' is ${first === undefined ? 'missing' : '0'} (wanted the phys of the first table page)`);
    const pages: PhysAddr[] = [];
    const entries: KhoSlabEntry[] = [];
    const seen = new Set<number>();
    for (let phys = first >= 2n ** 53n ? Infinity : Number(first); phys !== 0; ) {
      if (pages.length >= KHO_SLAB_MAX_TABLE_PAGES) throw invalid(`the table has more than ${KHO_SLAB_MAX_TABLE_PAGES} pages`);
      if (seen.has(phys)) throw invalid(`table page ${hex(phys)} is reached twice (a loop)`);
      this.checkPreservedBlock(phys, 0, `table page ${pages.length}`);
      seen.add(phys);
      const page = decodeSlabTablePage(this.ram.read(phys, PAGE_SIZE));
      if (typeof page === 'string') throw invalid(`table page ${hex(phys)}: ${page}`);
      pages.push(phys);
      entries.push(...page.entries);
      phys = page.next;
    }
    const slabs = entries.map((e): InSlab => {
      const what = `the ${e.kind === 'large' ? 'large kmalloc' : kmallocCacheName(e.objectSize)} entry at ${hex(e.phys)}`;
      this.checkPreservedBlock(e.phys, e.order, what);
      const cache = e.kind === 'large' ? -1 : this.slab.cacheIndexOf(e.objectSize);
      if (e.kind === 'slab' && cache < 0) throw invalid(`${what}: object size ${e.objectSize} is not a kmalloc cache of this kernel`);
      const nrObjects = e.kind === 'large' ? 1 : slabObjectCount(e.order, e.objectSize);
      const objects = new Uint8Array(nrObjects);
      for (const i of e.preserved) objects[i] = PRESERVED;
      return { entry: e, phys: e.phys, pfn: e.phys / PAGE_SIZE, cache, nrObjects, objects, adopted: false, restored: 0 };
    });
    const blocks: Array<[number, number]> = [blob, ...pages].map((p) => [p, PAGE_SIZE]);
    for (const e of entries) blocks.push([e.phys, PAGE_SIZE * 2 ** e.order]);
    blocks.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < blocks.length; i++) {
      if (blocks[i - 1][0] + blocks[i - 1][1] > blocks[i][0]) throw invalid(`blocks at ${hex(blocks[i - 1][0])} and ${hex(blocks[i][0])} overlap`);
    }
    return { pages, slabs };
  }

  /** Throws EINVAL unless [phys, +order) is RAM and a block the previous kernel preserved with exactly that order. */
  private checkPreservedBlock(phys: number, order: number, what: string): asserts phys is PhysAddr {
    const size = PAGE_SIZE * 2 ** order;
    if (!Number.isSafeInteger(phys) || phys % size !== 0 || !this.ram.isRam(phys, size)) {
      throw invalid(`${what}: ${describe(phys)} is not an order-${order} block of RAM`);
    }
    // Checked above (an aligned block of RAM); the order is one decodeSlabTablePage range-checked (0..MAX_PAGE_ORDER).
    if (!this.kho.isPreservedIncoming(pfn(phys / PAGE_SIZE), toOrder(order))) {
      throw invalid(`${what}: ${hex(phys)} is not a preserved block of order ${order}`);
    }
  }

  private refuse(e: unknown): void {
    this.refusal = describeError(e);
    this.log.error('kho-slab', `refusing the incoming slab table: ${this.refusal}; its slabs stay reserved`);
  }

  private restoreRefused(what: string, why: string): KernelError {
    const msg = `${what}: ${why}`;
    this.log.warn('kho-slab', msg);
    return new KernelError(Errno.EINVAL, msg);
  }
}

/** The subtree's one-page FDT. */
function encodeBlob(firstTablePage: number): Uint8Array {
  const root = new FdtNode('');
  root.setString('compatible', KHO_SLAB_COMPATIBLE);
  root.setU64LE(PROP_SLAB_TABLE, firstTablePage);
  return encodeFdt(root, { totalSize: PAGE_SIZE });
}

function invalid(message: string): KernelError {
  return new KernelError(Errno.EINVAL, message);
}

function describe(n: number): string {
  return Number.isSafeInteger(n) && n >= 0 ? hex(n) : String(n);
}
