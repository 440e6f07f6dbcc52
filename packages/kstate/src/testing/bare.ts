import { Errno, KernelError, KernelLog, LifecycleBus, hex, withUnwind } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, Folio, MAX_PAGE_ORDER, Memmap, ORDER_0, PAGE_SIZE, PhysicalMemory, pfn, pfnAdd, toOrder, type Order, type Pfn, type PhysAddr } from '@kho/physmem';
import { clearStamp, hasStamp, splitBlocks, stampOrder, writeStamp, type Kho } from '@kho/kho-core';
import { KhoVmalloc, Vmalloc } from '@kho/vmalloc';
import type { KStateBackend, KStateVmalloc } from '../backend';
import { KState } from '../kstate';

/** What a bare kexec hands over: the preserved blocks (pfn, order) and the subtrees (name → phys). */
export interface BareHandover {
  readonly blocks: ReadonlyArray<readonly [number, number]>;
  readonly subtrees: ReadonlyMap<string, PhysAddr>;
}

/**
 * KHO's preservation API over bare RAM, for tests and benchmarks that may not build a kernel (memblock is a
 * higher layer): a set of preserved blocks stands for the tracker, a map for the root FDT's subtrees. The next
 * boot stamps every handed-over block in the memmap exactly as KHO's walk does (`private = order | 'KHOP' << 32`)
 * and keeps it out of the buddy allocator, so restore semantics (stamp required and consumed, refcount 1, the
 * matching free works) are KHO's. It also offers what @kho/vmalloc's KhoVmalloc uses of Kho (allocPreserve,
 * unpreserveFree, preservePages, unpreservePages, restorePages, restoreFree).
 */
export class BareKho implements KStateBackend {
  /** Preserved blocks: key `pfn:order`. */
  readonly preserved = new Map<string, readonly [number, number]>();
  readonly subtrees = new Map<string, PhysAddr>();
  vmalloc?: KStateVmalloc;

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly buddy: BuddyAllocator,
    private readonly incoming?: BareHandover,
  ) {}

  /** What a kexec now would hand over. */
  handover(): BareHandover {
    return { blocks: [...this.preserved.values()], subtrees: new Map(this.subtrees) };
  }

  allocPreserve(size: number): PhysAddr {
    if (!Number.isInteger(size) || size <= 0) throw new KernelError(Errno.EINVAL, `allocPreserve: size ${size} (wanted a positive integer)`);
    const order = Math.max(0, Math.ceil(Math.log2(Math.ceil(size / PAGE_SIZE))));
    if (order > MAX_PAGE_ORDER) throw new KernelError(Errno.E2BIG, `allocPreserve: ${size} bytes needs order ${order} (wanted at most ${MAX_PAGE_ORDER})`);
    const folio = this.buddy.folioAlloc(order);
    this.ram.fill(folio.phys, folio.size, 0);
    this.preserveFolio(folio);
    return folio.phys;
  }

  unpreserveFree(phys: PhysAddr): void {
    const pfn = phys / PAGE_SIZE;
    const folio = new Folio(pfn as Pfn, this.memmap.order(pfn));
    this.unpreserveFolio(folio);
    this.buddy.folioPut(folio);
  }

  restoreFree(phys: PhysAddr): void {
    this.buddy.folioPut(this.restoreFolio(phys));
  }

  preserveFolio(folio: Folio): void {
    this.add(folio.pfn, folio.order);
  }

  unpreserveFolio(folio: Folio): void {
    this.del(folio.pfn, folio.order);
  }

  preservePages(pfn: Pfn, nrPages: number): void {
    withUnwind((u) => {
      for (const [p, o] of splitBlocks(pfn, nrPages)) {
        this.add(p, o);
        u.push(() => this.del(p, o));
      }
    });
  }

  unpreservePages(pfn: Pfn, nrPages: number): void {
    const blocks = splitBlocks(pfn, nrPages);
    for (const [p, o] of blocks) if (!this.preserved.has(`${p}:${o}`)) throw notPreserved(p, o);
    for (const [p, o] of blocks) this.del(p, o);
  }

  /** The stamp on head page `pfn`, as Kho.stampOrder. */
  stampOrder(pfn: Pfn): Order | undefined {
    return this.memmap.hasPage(pfn) ? stampOrder(this.memmap, pfn) : undefined;
  }

  /** As Kho.isPreservedIncoming. */
  isPreservedIncoming(pfn: Pfn, order: Order): boolean {
    return this.memmap.hasPage(pfn) && hasStamp(this.memmap, pfn, order);
  }

  restoreFolio(phys: PhysAddr): Folio {
    const pfn = this.stampedPfn(phys, 'restoreFolio');
    const order = stampOrder(this.memmap, pfn)!;
    clearStamp(this.memmap, pfn);
    return this.buddy.adoptFolio(pfn, order);
  }

  freeFolio(folio: Folio): void {
    this.buddy.folioPut(folio);
  }

  restorePages(phys: PhysAddr, nrPages: number): Pfn {
    const pfn = this.stampedPfn(phys, 'restorePages');
    const blocks = splitBlocks(pfn, nrPages);
    for (const [p, o] of blocks) {
      if (!hasStamp(this.memmap, p, o)) {
        throw new KernelError(Errno.EINVAL, `restorePages(${hex(p * PAGE_SIZE)}): block of order ${o} has no KHO stamp`);
      }
    }
    for (const [p] of blocks) clearStamp(this.memmap, p);
    for (let i = 0; i < nrPages; i++) this.buddy.adoptPages(pfnAdd(pfn, i), ORDER_0);
    return pfn;
  }

  freePages(pfn: Pfn, nrPages: number): void {
    for (let p = pfn, end = pfn + nrPages; p < end; p++) this.buddy.freePages(p, ORDER_0);
  }

  addSubtree(name: string, phys: PhysAddr, _size: number): void {
    if (this.subtrees.has(name)) throw new KernelError(Errno.EEXIST, `subtree '${name}' already exists in the root FDT`);
    this.subtrees.set(name, phys);
  }

  removeSubtree(phys: PhysAddr): void {
    for (const [n, p] of this.subtrees) if (p === phys) this.subtrees.delete(n);
  }

  retrieveSubtree(name: string): PhysAddr {
    if (!this.incoming) throw new KernelError(Errno.ENOENT, `retrieveSubtree('${name}'): this boot has no incoming KHO handover`);
    const p = this.incoming.subtrees.get(name);
    if (p === undefined) throw new KernelError(Errno.ENOENT, `retrieveSubtree('${name}'): no such subtree in the incoming FDT`);
    return p;
  }

  isKhoBoot(): boolean {
    return this.incoming !== undefined;
  }

  /** Incoming blocks whose stamp is still there (nobody restored them). */
  unrestored(): Array<[number, number]> {
    return (this.incoming?.blocks ?? []).filter(([p, o]) => hasStamp(this.memmap, pfn(p), toOrder(o))).map(([p, o]) => [p, o]);
  }

  private add(pfn: number, order: number): void {
    if (!this.ram.isRam(pfn * PAGE_SIZE, PAGE_SIZE * 2 ** order)) throw new KernelError(Errno.EINVAL, `preserve: block ${hex(pfn * PAGE_SIZE)} order ${order} is not RAM`);
    this.preserved.set(`${pfn}:${order}`, [pfn, order]);
  }

  private del(pfn: number, order: number): void {
    if (!this.preserved.delete(`${pfn}:${order}`)) throw notPreserved(pfn, order);
  }

  private stampedPfn(phys: number, what: string): Pfn {
    const pfn = (phys / PAGE_SIZE) as Pfn; // returned only once checked below: a stamped page of RAM
    if (!Number.isInteger(pfn) || !this.ram.isRam(phys, PAGE_SIZE) || (stampOrder(this.memmap, pfn) ?? Infinity) > MAX_PAGE_ORDER) {
      throw new KernelError(Errno.EINVAL, `${what}(${hex(phys)}): no KHO stamp (not preserved, already restored, or a tail page)`);
    }
    return pfn;
  }
}

function notPreserved(pfn: number, order: number): KernelError {
  return new KernelError(Errno.ENOENT, `unpreserve: block ${hex(pfn * PAGE_SIZE)} order ${order} was not preserved`);
}

/** One boot of a {@link BareMachine}: fresh memmap, buddy allocator, BareKho, vmalloc and KState. */
export interface BareKernel {
  readonly ram: PhysicalMemory;
  readonly memmap: Memmap;
  readonly faults: FaultInjector;
  readonly buddy: BuddyAllocator;
  readonly log: KernelLog;
  readonly kho: BareKho;
  readonly vmalloc: Vmalloc;
  readonly khoVmalloc: KhoVmalloc;
  readonly kstate: KState;
  /** Hands over what is preserved and boots the next bare kernel on the same RAM. */
  kexec(): BareKernel;
}

/**
 * RAM with no kernel: `boot()` builds a memmap, a buddy allocator holding every page but pfn 0 (as Linux never
 * hands out the first page) and the handed-over blocks, a BareKho, vmalloc with KhoVmalloc, and a KState on
 * them. For kstate's own tests and benchmarks.
 */
export class BareMachine {
  readonly ram: PhysicalMemory;

  constructor(opts: { mem?: number } = {}) {
    this.ram = new PhysicalMemory({ ranges: [{ start: 0, size: opts.mem ?? 256 * 2 ** 20, node: 0 }] });
  }

  boot(handover?: BareHandover): BareKernel {
    const ram = this.ram;
    const memmap = new Memmap(ram);
    const faults = new FaultInjector();
    const buddy = new BuddyAllocator(ram, memmap, faults);
    const end = ram.endAddr / PAGE_SIZE;
    const taken = (handover?.blocks ?? []).map(([p, o]) => [p, p + 2 ** o] as const).sort((a, b) => a[0] - b[0]);
    let cur = 1;
    for (const [s, e] of taken) {
      if (s > cur) buddy.freeRange(cur, s - cur);
      cur = Math.max(cur, e);
    }
    if (end > cur) buddy.freeRange(cur, end - cur);
    for (const [p, o] of handover?.blocks ?? []) writeStamp(memmap, pfn(p), toOrder(o));
    const log = new KernelLog(new LifecycleBus(), 1);
    const kho = new BareKho(ram, memmap, buddy, handover);
    const vmalloc = new Vmalloc(ram, memmap, buddy);
    // KhoVmalloc uses only the part of Kho that BareKho implements (see BareKho).
    const khoVmalloc = new KhoVmalloc(kho as unknown as Kho, vmalloc, ram, buddy, memmap);
    kho.vmalloc = {
      preserveVmalloc: (a) => khoVmalloc.preserveVmalloc(a),
      unpreserveVmalloc: (d) => khoVmalloc.unpreserveVmalloc(d),
      restoreVmalloc: (d) => khoVmalloc.restoreVmalloc(d),
      vfree: (a) => vmalloc.vfree(a),
    };
    const kstate = new KState(ram, log, kho);
    return { ram, memmap, faults, buddy, log, kho, vmalloc, khoVmalloc, kstate, kexec: () => this.boot(kho.handover()) };
  }
}
