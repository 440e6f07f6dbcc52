import { Errno, KernelError, hex } from '@kho/kernel';
import { ORDER_0, PAGE_SIZE, pfnToPhys, physToPfn, type BuddyAllocator, type PhysAddr, type PhysicalMemory } from '@kho/physmem';
import { bareAllocator } from '@kho/physmem/testing';
import type { KhoBlockBackend } from '../block-set';

/**
 * A block backend without a kernel, for unit tests and benchmarks: pages come from a bare buddy allocator,
 * "preserved" is a set, and {@link handOver} plays the kexec (what was preserved becomes what the previous kernel
 * preserved). Hand-written chains use {@link page} and {@link markIncoming}.
 */
export class FakeBlockMemory implements KhoBlockBackend {
  readonly ram: PhysicalMemory;
  readonly buddy: BuddyAllocator;
  /** Pages preserved by this "kernel". */
  readonly preserved = new Set<number>();
  /** Pages the "previous kernel" preserved, not yet restored. */
  readonly incoming = new Set<number>();
  /** Allocation calls left before the next one fails with ENOMEM (Infinity: never). */
  failAfter = Infinity;

  constructor(bytes = 64 * 2 ** 20) {
    const b = bareAllocator(bytes);
    this.ram = b.ram;
    this.buddy = b.buddy;
  }

  allocPreserve(size: number): PhysAddr {
    if (size !== PAGE_SIZE) throw new KernelError(Errno.EINVAL, `FakeBlockMemory: allocPreserve(${size}) (only one page here)`);
    if (this.failAfter <= 0) throw new KernelError(Errno.ENOMEM, 'FakeBlockMemory: injected allocation failure');
    this.failAfter--;
    const phys = this.page();
    this.preserved.add(phys);
    return phys;
  }

  unpreserveFree(phys: PhysAddr): void {
    if (!this.preserved.delete(phys)) throw new KernelError(Errno.ENOENT, `FakeBlockMemory: unpreserveFree(${hex(phys)}): not preserved`);
    this.buddy.freePages(physToPfn(phys), ORDER_0);
  }

  restoreFree(phys: PhysAddr): void {
    if (!this.incoming.delete(phys)) throw new KernelError(Errno.EINVAL, `FakeBlockMemory: restoreFree(${hex(phys)}): not preserved by the previous kernel`);
    this.buddy.freePages(physToPfn(phys), ORDER_0);
  }

  isIncomingPage(phys: number): phys is PhysAddr {
    return this.incoming.has(phys);
  }

  /** The kexec: every preserved page becomes a page the previous kernel preserved. */
  handOver(): void {
    for (const p of this.preserved) this.incoming.add(p);
    this.preserved.clear();
  }

  /** A zeroed page of the allocator (not preserved). */
  page(): PhysAddr {
    const phys = pfnToPhys(this.buddy.allocPages(0));
    this.ram.fill(phys, PAGE_SIZE, 0);
    return phys;
  }

  /** Marks a page as preserved by the previous kernel (for hand-written chains). */
  markIncoming(phys: number): void {
    this.incoming.add(phys);
  }
}
