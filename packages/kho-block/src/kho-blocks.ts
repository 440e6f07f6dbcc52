import { injectable } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory, pfn, toOrder, type PhysAddr } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KhoBlockSet, type KhoBlockBackend } from './block-set';

/**
 * Block sets over this boot's KHO (one instance per boot): blocks are `kho.allocPreserve(4096)` pages, given
 * back with `unpreserveFree` (outgoing) or `restoreFree` (incoming); an incoming block must be an order-0 block the
 * previous kernel preserved (`kho.isPreservedIncoming`).
 */
@injectable()
export class KhoBlocks implements KhoBlockBackend {
  constructor(
    readonly ram: PhysicalMemory,
    private readonly kho: Kho,
  ) {}

  /** A new, empty outgoing set of `entrySize`-byte entries. Throws EINVAL when an entry does not fit a block. */
  createSet(entrySize: number, name?: string): KhoBlockSet {
    return new KhoBlockSet(this, entrySize, name);
  }

  allocPreserve(size: number): PhysAddr {
    return this.kho.allocPreserve(size);
  }

  unpreserveFree(phys: PhysAddr): void {
    this.kho.unpreserveFree(phys);
  }

  restoreFree(phys: PhysAddr): void {
    this.kho.restoreFree(phys);
  }

  isIncomingPage(phys: number): phys is PhysAddr {
    return this.isIncomingBlock(phys, 0);
  }

  /**
   * True when `phys` heads a block of `order` that the previous kernel preserved and nobody restored yet (the
   * stamp the incoming walk leaves on every preserved block).
   */
  isIncomingBlock(phys: number, order: number): phys is PhysAddr {
    const p = phys / PAGE_SIZE;
    return Number.isSafeInteger(p) && p >= 0 && Number.isSafeInteger(order) && order >= 0 && this.kho.isPreservedIncoming(pfn(p), toOrder(order));
  }
}

/** The kernel-image module of kho_block: registers {@link KhoBlocks} per boot (no plugin; needs khoModule). */
export function khoBlockModule(): KernelModule {
  return { name: 'kho-block', register: (c) => registerPerBoot(c, KhoBlocks) };
}
