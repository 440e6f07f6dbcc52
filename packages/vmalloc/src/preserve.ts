import { injectable } from 'tsyringe';
import { Errno, KernelError, hex, withUnwind } from '@kho/kernel';
import { BuddyAllocator, MAX_PAGE_ORDER, Memmap, ORDER_0, PAGE_SIZE, PhysicalMemory, pfnToPhys, toOrder, type Order, type Pfn } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { offsetTable } from '@kho/struct';
import {
  KHO_VMALLOC_ALLOC,
  KHO_VMALLOC_CHUNK_ENTRIES,
  KHO_VMALLOC_FLAGS_MASK,
  KHO_VMALLOC_HUGE_VMAP,
  KhoVmallocChunkStruct,
  decodeKhoVmalloc,
  encodeKhoVmalloc,
  type KhoVmallocDesc,
} from './abi';
import { VM_ALLOC, VM_HUGE_VMAP, Vmalloc, describe, notAreaStart } from './vmalloc';

/** Field offsets of a kho_vmalloc_chunk, read and written in place per entry. */
const CHUNK = offsetTable(KhoVmallocChunkStruct);

/** What a bounded walk of a descriptor's chunks found: chunk pfns and block head pfns, in order. */
interface Chain {
  readonly chunks: Pfn[];
  readonly blocks: Pfn[];
}

/**
 * Preservation of vmalloc areas across kexec (spec section 6, upstream kho_preserve_vmalloc /
 * kho_unpreserve_vmalloc / kho_restore_vmalloc). One instance per boot.
 *
 * preserve: a chain of preserved chunk pages lists the phys of every block of the area; every block is
 * preserved as pages. The 16-byte `struct kho_vmalloc` returned is the caller's to hand over (inside its own
 * preserved blob). restore (next kernel): the whole chain is checked first, as hostile input, without touching
 * anything; then the blocks' pages are restored, the chunk pages restored and freed, and the pages mapped into
 * a new area. `vfree` of that area frees every page.
 */
@injectable()
export class KhoVmalloc {
  /** Descriptors returned by preserveVmalloc in this boot, by the phys of their first chunk. */
  private readonly outgoing = new Map<number, Uint8Array>();

  constructor(
    private readonly kho: Kho,
    private readonly vmalloc: Vmalloc,
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    private readonly memmap: Memmap,
  ) {}

  /**
   * Preserves the vmalloc area starting at `addr`: allocates preserved chunk pages listing each block's phys
   * (a new chunk every 511 entries) and preserves every block as pages. The area stays allocated and mapped.
   * Returns the 16-byte `struct kho_vmalloc`. Throws EINVAL when `addr` is not the start of an area,
   * EOPNOTSUPP for an area with flags other than VM_ALLOC and VM_HUGE_VMAP, E2BIG when its page count does not
   * fit in u32, and whatever KHO throws (ENOMEM, EOPNOTSUPP when KHO is off); on any failure everything this
   * call preserved or allocated is undone.
   */
  preserveVmalloc(addr: number): Uint8Array {
    const area = this.vmalloc.findVmArea(addr);
    if (!area || area.addr !== addr) throw new KernelError(Errno.EINVAL, `preserveVmalloc: ${notAreaStart(addr, area)}`);
    const other = area.flags & ~(VM_ALLOC | VM_HUGE_VMAP);
    if (other !== 0) {
      throw new KernelError(
        Errno.EOPNOTSUPP,
        `preserveVmalloc(${hex(addr)}): area flags ${hex(area.flags)} include ${hex(other)} (only VM_ALLOC and VM_HUGE_VMAP areas can be preserved)`,
      );
    }
    if (area.nrPages > 0xffffffff) {
      throw new KernelError(Errno.E2BIG, `preserveVmalloc(${hex(addr)}): ${area.nrPages} pages (total_pages is a u32)`);
    }
    const per = 2 ** area.order;
    const desc = withUnwind((u) => {
      const first = this.kho.allocPreserve(PAGE_SIZE);
      u.push(() => this.kho.unpreserveFree(first));
      let chunk = first;
      let n = 0;
      for (const pfn of area.blocks) {
        if (n === KHO_VMALLOC_CHUNK_ENTRIES) {
          const next = this.kho.allocPreserve(PAGE_SIZE);
          u.push(() => this.kho.unpreserveFree(next));
          this.ram.writeU64(chunk + CHUNK.next, next);
          chunk = next;
          n = 0;
        }
        this.kho.preservePages(pfn, per);
        u.push(() => this.kho.unpreservePages(pfn, per));
        this.ram.writeU64(chunk + CHUNK.phys + 8 * n, pfn * PAGE_SIZE);
        n++;
      }
      return encodeKhoVmalloc({ first, totalPages: area.nrPages, flags: toKhoFlags(area.flags), order: area.order });
    });
    this.outgoing.set(decodeKhoVmalloc(desc).first, desc.slice());
    return desc;
  }

  /**
   * Undoes {@link preserveVmalloc} exactly: unpreserves every block and unpreserves and frees every chunk page.
   * The area itself stays allocated. Throws EINVAL for a descriptor that is not 16 bytes or differs from what
   * preserveVmalloc returned, and ENOENT when no area preserved in this boot has that descriptor.
   */
  unpreserveVmalloc(desc: Uint8Array): void {
    const d = decodeKhoVmalloc(desc);
    const mine = this.outgoing.get(d.first);
    if (!mine) throw new KernelError(Errno.ENOENT, `unpreserveVmalloc: no area preserved in this boot has its first chunk at ${describe(d.first)}`);
    if (!sameBytes(mine, desc)) {
      throw new KernelError(Errno.EINVAL, `unpreserveVmalloc: descriptor ${toHex(desc)} differs from the one preserveVmalloc returned (${toHex(mine)})`);
    }
    const chain = this.walk(d, 'unpreserveVmalloc', false);
    const per = 2 ** d.order;
    for (const pfn of chain.blocks) this.kho.unpreservePages(pfn, per);
    for (const c of chain.chunks) this.kho.unpreserveFree(pfnToPhys(c));
    this.outgoing.delete(d.first);
  }

  /**
   * In the next kernel: rebuilds a vmalloc area with the same pages (so the same contents) from a descriptor
   * the previous kernel handed over. The descriptor and every chunk are checked before anything is touched;
   * then each block's pages are restored, each chunk page is restored and freed, and the pages are mapped into a
   * new area. Returns its address; `vfree` of it frees every page. Throws EOPNOTSUPP for flags other than
   * KHO_VMALLOC_ALLOC and KHO_VMALLOC_HUGE_VMAP; EINVAL for anything else malformed (see the checks) with
   * nothing restored; ENOMEM when the vmalloc range has no room, after freeing every page this call restored.
   */
  restoreVmalloc(desc: Uint8Array): number {
    const what = 'restoreVmalloc';
    const d = decodeKhoVmalloc(desc);
    const unknown = d.flags & ~KHO_VMALLOC_FLAGS_MASK;
    if (unknown !== 0) {
      throw new KernelError(
        Errno.EOPNOTSUPP,
        `${what}: flags ${hex(d.flags)} hold unknown bits ${hex(unknown)} (wanted only KHO_VMALLOC_ALLOC 0x1 and KHO_VMALLOC_HUGE_VMAP 0x2)`,
      );
    }
    if ((d.flags & KHO_VMALLOC_ALLOC) === 0) throw new KernelError(Errno.EINVAL, `${what}: flags ${hex(d.flags)} lack KHO_VMALLOC_ALLOC`);
    if (d.order > MAX_PAGE_ORDER) throw new KernelError(Errno.EINVAL, `${what}: order ${d.order} (wanted 0..${MAX_PAGE_ORDER})`);
    if (d.order > 0 !== ((d.flags & KHO_VMALLOC_HUGE_VMAP) !== 0)) {
      throw new KernelError(Errno.EINVAL, `${what}: order ${d.order} with flags ${hex(d.flags)} (KHO_VMALLOC_HUGE_VMAP goes with an order above 0, and only with one)`);
    }
    const per = 2 ** d.order;
    if (d.totalPages === 0 || d.totalPages % per !== 0) {
      throw new KernelError(Errno.EINVAL, `${what}: total_pages ${d.totalPages} (wanted a positive multiple of ${per}, the pages of a block of order ${d.order})`);
    }
    const chain = this.walk(d, what, true);
    return withUnwind((u) => {
      for (const pfn of chain.blocks) {
        this.kho.restorePages(pfnToPhys(pfn), per);
        u.push(() => {
          for (let p = pfn + per - 1; p >= pfn; p--) this.buddy.freePages(p as Pfn, ORDER_0); // inside the checked block
        });
      }
      // The chunks are metadata: once read they are freed, and a later failure has nothing of them to undo.
      for (const c of chain.chunks) this.kho.restoreFree(pfnToPhys(c));
      return this.vmalloc.adoptPages(chain.blocks, d.order, toVmFlags(d.flags));
    });
  }

  /**
   * Walks the chunks of `d` without changing anything, treating them as hostile: every chunk pointer must be a
   * page-aligned page of RAM reached once, there may be at most floor(blocks / 511) + 1 chunks, every entry a
   * block of RAM aligned to its order and listed once, the entries must add up to exactly total_pages, and no
   * chunk may lie inside a block. With `incoming`, every chunk and block must carry the KHO stamp of its order.
   * Throws EINVAL naming the chunk or entry.
   */
  private walk(d: KhoVmallocDesc, what: string, incoming: boolean): Chain {
    const order = toOrder(d.order); // a u8 field: never negative or fractional
    const per = 2 ** order;
    const blockBytes = PAGE_SIZE * per;
    const nrBlocks = d.totalPages / per;
    const maxChunks = Math.floor(nrBlocks / KHO_VMALLOC_CHUNK_ENTRIES) + 1;
    const chunks: Pfn[] = [];
    const blocks: Pfn[] = [];
    const seenChunks = new Set<number>();
    const seenBlocks = new Set<number>();
    if (d.first === 0) throw new KernelError(Errno.EINVAL, `${what}: first chunk is 0 with total_pages ${d.totalPages} (wanted the phys of a chunk page)`);
    let pages = 0;
    for (let phys = d.first; phys !== 0; ) {
      const where = `chunk ${chunks.length} at ${describe(phys)}`;
      if (!this.ram.isRam(phys, PAGE_SIZE)) throw new KernelError(Errno.EINVAL, `${what}: ${where} is outside RAM`);
      if (phys % PAGE_SIZE !== 0) throw new KernelError(Errno.EINVAL, `${what}: ${where} is not page-aligned`);
      if (seenChunks.has(phys)) throw new KernelError(Errno.EINVAL, `${what}: ${where} is reached twice (a cycle)`);
      if (chunks.length === maxChunks) {
        throw new KernelError(Errno.EINVAL, `${what}: ${where} is one too many (${nrBlocks} blocks need at most ${maxChunks} chunks)`);
      }
      const cpfn = (phys / PAGE_SIZE) as Pfn; // checked above: RAM, page-aligned
      if (incoming && !this.stamped(cpfn, ORDER_0)) throw new KernelError(Errno.EINVAL, `${what}: ${where} is not a preserved page (no KHO stamp of order 0)`);
      seenChunks.add(phys);
      chunks.push(cpfn);
      for (let i = 0; i < KHO_VMALLOC_CHUNK_ENTRIES; i++) {
        const e = this.readPtr(phys + CHUNK.phys + 8 * i);
        if (e === 0) break;
        const entry = `entry ${i} of ${where} (${describe(e)})`;
        if (pages + per > d.totalPages) throw new KernelError(Errno.EINVAL, `${what}: ${entry} is past total_pages ${d.totalPages}`);
        if (!this.ram.isRam(e, blockBytes)) throw new KernelError(Errno.EINVAL, `${what}: ${entry}: its ${per} pages are not RAM`);
        if (e % blockBytes !== 0) throw new KernelError(Errno.EINVAL, `${what}: ${entry} is not aligned to order ${d.order}`);
        const pfn = (e / PAGE_SIZE) as Pfn; // checked above: RAM, aligned to its block
        if (seenBlocks.has(pfn)) throw new KernelError(Errno.EINVAL, `${what}: ${entry} is listed twice`);
        if (incoming && !this.stamped(pfn, order)) {
          throw new KernelError(Errno.EINVAL, `${what}: ${entry} is not a preserved block (no KHO stamp of order ${d.order})`);
        }
        seenBlocks.add(pfn);
        blocks.push(pfn);
        pages += per;
      }
      phys = this.readPtr(phys + CHUNK.next);
    }
    if (pages !== d.totalPages) throw new KernelError(Errno.EINVAL, `${what}: the chunks hold ${pages} pages (wanted total_pages ${d.totalPages})`);
    for (const c of chunks) {
      if (seenBlocks.has(c - (c % per))) throw new KernelError(Errno.EINVAL, `${what}: chunk ${hex(c * PAGE_SIZE)} lies inside one of the area's blocks`);
    }
    return { chunks, blocks };
  }

  /** The u64 at `phys` as a number; Infinity at or above 2^53 (not exact), so every range check refuses it. */
  private readPtr(phys: number): number {
    const v = this.ram.readU64(phys);
    return v >= 2 ** 53 ? Infinity : v;
  }

  /** True when the head page `pfn` carries the incoming walk's stamp for a block of `order` (spec section 4). */
  private stamped(pfn: Pfn, order: Order): boolean {
    return this.kho.isPreservedIncoming(pfn, order);
  }
}

function toKhoFlags(vmFlags: number): number {
  return ((vmFlags & VM_ALLOC) !== 0 ? KHO_VMALLOC_ALLOC : 0) | ((vmFlags & VM_HUGE_VMAP) !== 0 ? KHO_VMALLOC_HUGE_VMAP : 0);
}

function toVmFlags(khoFlags: number): number {
  return ((khoFlags & KHO_VMALLOC_ALLOC) !== 0 ? VM_ALLOC : 0) | ((khoFlags & KHO_VMALLOC_HUGE_VMAP) !== 0 ? VM_HUGE_VMAP : 0);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
