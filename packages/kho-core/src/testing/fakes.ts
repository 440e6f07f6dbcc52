import { Lifecycle, injectable, type DependencyContainer } from 'tsyringe';
import type { KernelModule } from '@kho/kernel';
import { BuddyAllocator, ORDER_0, PAGE_SIZE, type Order, type Pfn, type PhysAddr } from '@kho/physmem';
import { EarlyAllocator, Tracker, type BlockVisitor, type TrackerStats } from '../ports';

/**
 * A tracker that keeps blocks in a host map and spends one buddy page of metadata per block (so fault injection
 * can hit it), for tests of KHO's users that never kexec. It cannot be read by a next kernel.
 */
@injectable()
export class FakeTracker implements Tracker {
  readonly kind = 'radix';
  /** 51 like the radix tree; a test may lower it to play a tracker that records less (the kho-v1 bitmaps: 10). */
  maxOrder = 51;
  readonly defaultGeneration = 'v3';
  readonly blocks = new Map<string, Pfn>();

  constructor(private readonly buddy: BuddyAllocator) {}

  init(): PhysAddr {
    return 0 as PhysAddr;
  }
  add(pfn: Pfn, order: Order): void {
    const key = `${pfn}/${order}`;
    if (!this.blocks.has(key)) this.blocks.set(key, this.buddy.allocPages(0));
  }
  del(pfn: Pfn, order: Order): boolean {
    const meta = this.blocks.get(`${pfn}/${order}`);
    if (meta === undefined) return false;
    this.blocks.delete(`${pfn}/${order}`);
    this.buddy.freePages(meta, ORDER_0);
    return true;
  }
  has(pfn: Pfn, order: Order): boolean {
    return this.blocks.has(`${pfn}/${order}`);
  }
  walk(visit: BlockVisitor): void {
    for (const key of this.blocks.keys()) {
      const [pfn, order] = key.split('/').map(Number);
      // Keys are written by add from a Pfn and an Order.
      if (visit(pfn as Pfn, order as Order)) return;
    }
  }
  serialize(): PhysAddr {
    return 0 as PhysAddr;
  }
  cancelSerialize(): void {
    // nothing is serialised
  }
  stats(): TrackerStats {
    return { blocks: this.blocks.size, metadataPages: this.blocks.size };
  }
  metadataPfns(): Pfn[] {
    return [...this.blocks.values()];
  }
  walkIncoming(): void {
    throw new Error('FakeTracker cannot read a previous kernel\'s map: boot with a real tracker to kexec');
  }
  incomingMetadataPfns(): Pfn[] {
    throw new Error('FakeTracker cannot read a previous kernel\'s map: boot with a real tracker to kexec');
  }
}

/**
 * An early allocator over the buddy allocator, for kernels that hand all RAM to the buddy allocator at boot:mm
 * (physmemModule() with its default) and never kexec: allocations are buddy pages and stay allocated, so scratch
 * areas are never handed out.
 */
@injectable()
export class FakeEarlyAllocator implements EarlyAllocator {
  constructor(private readonly buddy: BuddyAllocator) {}
  reserve(): void {
    // no kexec in these kernels: nothing to reserve
  }
  free(): void {
    // scratch stays allocated, so the buddy allocator never hands it out
  }
  alloc(size: number): number {
    let order = 0;
    while (PAGE_SIZE * 2 ** order < size) order++;
    return this.buddy.allocPages(order) * PAGE_SIZE;
  }
  markScratch(): void {
    // scratch is never free here: no pool to mark
  }
  markNoInit(): void {
    // only a KHO boot marks no-init memory
  }
  setScratchOnly(): void {
    // only a KHO boot is scratch-only
  }
  reservedBytes(): number {
    return 0;
  }
}

/**
 * The kernel-image module of the fakes: {@link FakeTracker} as the Tracker and {@link FakeEarlyAllocator} as the
 * EarlyAllocator. With physmemModule() and khoModule() it boots a KHO kernel without memblock or a real tracker.
 */
export function khoFakesModule(): KernelModule {
  return {
    name: 'kho-fakes',
    register(c: DependencyContainer): void {
      c.register(FakeTracker, { useClass: FakeTracker }, { lifecycle: Lifecycle.ContainerScoped });
      c.register(Tracker, { useToken: FakeTracker });
      c.register(EarlyAllocator, { useClass: FakeEarlyAllocator }, { lifecycle: Lifecycle.ContainerScoped });
    },
  };
}
