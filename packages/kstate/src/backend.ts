import { BuddyAllocator, ORDER_0, type Folio, type Pfn, type PhysAddr } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import type { KhoVmalloc, Vmalloc } from '@kho/vmalloc';

/** The vmalloc operations kstate uses (KhoVmalloc and Vmalloc of @kho/vmalloc). */
export interface KStateVmalloc {
  preserveVmalloc(addr: number): Uint8Array;
  unpreserveVmalloc(desc: Uint8Array): void;
  restoreVmalloc(desc: Uint8Array): number;
  vfree(addr: number): void;
}

/**
 * Everything kstate does to memory, as one port: KHO's preservation API, the matching frees, the `kstate`
 * subtree, and vmalloc preservation when the kernel has it. {@link KhoBackend} implements it over a kernel's
 * services; `BareKho` (./testing) implements it over bare RAM, so the stream and the service can be tested and
 * benchmarked without a kernel.
 */
export const KStateBackend = Symbol('KStateBackend');
export interface KStateBackend {
  /** Allocates zeroed, preserved memory (KHO allocPreserve). */
  allocPreserve(size: number): PhysAddr;
  unpreserveFree(phys: PhysAddr): void;
  preserveFolio(folio: Folio): void;
  unpreserveFolio(folio: Folio): void;
  preservePages(pfn: Pfn, nrPages: number): void;
  unpreservePages(pfn: Pfn, nrPages: number): void;
  /** Next kernel: takes back a preserved folio (refcount 1); freeFolio frees it. */
  restoreFolio(phys: PhysAddr): Folio;
  freeFolio(folio: Folio): void;
  /** Next kernel: takes back preserved pages (each refcount 1); freePages frees them. Returns the first pfn. */
  restorePages(phys: PhysAddr, nrPages: number): Pfn;
  freePages(pfn: Pfn, nrPages: number): void;
  /** Adds subtree `name` for the blob at `phys` of `size` bytes (kho-v3 and later record the size). */
  addSubtree(name: string, phys: PhysAddr, size: number): void;
  removeSubtree(phys: PhysAddr): void;
  /** Next kernel: the phys of the previous kernel's subtree (inside memory it preserved). ENOENT when there is none. */
  retrieveSubtree(name: string): PhysAddr;
  isKhoBoot(): boolean;
  /** Present when the kernel has vmalloc. */
  readonly vmalloc?: KStateVmalloc;
}

/** The backend of a real kernel: Kho, the buddy allocator, and vmalloc when the image has it. */
export class KhoBackend implements KStateBackend {
  readonly vmalloc?: KStateVmalloc;

  constructor(
    private readonly kho: Kho,
    private readonly buddy: BuddyAllocator,
    vm?: { readonly vmalloc: Vmalloc; readonly khoVmalloc: KhoVmalloc },
  ) {
    if (vm) {
      const { vmalloc, khoVmalloc } = vm;
      this.vmalloc = {
        preserveVmalloc: (addr) => khoVmalloc.preserveVmalloc(addr),
        unpreserveVmalloc: (desc) => khoVmalloc.unpreserveVmalloc(desc),
        restoreVmalloc: (desc) => khoVmalloc.restoreVmalloc(desc),
        vfree: (addr) => vmalloc.vfree(addr),
      };
    }
  }

  allocPreserve(size: number): PhysAddr {
    return this.kho.allocPreserve(size);
  }
  unpreserveFree(phys: PhysAddr): void {
    this.kho.unpreserveFree(phys);
  }
  preserveFolio(folio: Folio): void {
    this.kho.preserveFolio(folio);
  }
  unpreserveFolio(folio: Folio): void {
    this.kho.unpreserveFolio(folio);
  }
  preservePages(pfn: Pfn, nrPages: number): void {
    this.kho.preservePages(pfn, nrPages);
  }
  unpreservePages(pfn: Pfn, nrPages: number): void {
    this.kho.unpreservePages(pfn, nrPages);
  }
  restoreFolio(phys: PhysAddr): Folio {
    return this.kho.restoreFolio(phys);
  }
  freeFolio(folio: Folio): void {
    this.buddy.folioPut(folio);
  }
  restorePages(phys: PhysAddr, nrPages: number): Pfn {
    return this.kho.restorePages(phys, nrPages);
  }
  freePages(pfn: Pfn, nrPages: number): void {
    for (let p = pfn, end = pfn + nrPages; p < end; p++) this.buddy.freePages(p, ORDER_0);
  }
  addSubtree(name: string, phys: PhysAddr, size: number): void {
    this.kho.addSubtree(name, phys, size);
  }
  removeSubtree(phys: PhysAddr): void {
    this.kho.removeSubtree(phys);
  }
  retrieveSubtree(name: string): PhysAddr {
    return this.kho.retrieveSubtree(name).phys;
  }
  isKhoBoot(): boolean {
    return this.kho.isKhoBoot();
  }
}
