import { container } from 'tsyringe';
import { bareAllocator } from '@kho/physmem/testing';
import { KernelLog, LifecycleBus } from '@kho/kernel';
import { BuddyAllocator, PhysicalMemory, pfn, toOrder } from '@kho/physmem';
import { Tracker } from '@kho/kho-core';
import { KHO_RADIX_COMPATIBLE, KHO_RADIX_MAX_ORDER } from './abi';
import { radixTracker, radixTrackerModule } from './module';
import { RADIX_DEFAULT_GENERATION, RadixTracker, readIncomingTree } from './radix-tree';

const MiB = 2 ** 20;

function kernelContainer() {
  const { ram, buddy } = bareAllocator(64 * MiB);
  const c = container.createChildContainer();
  c.registerInstance(PhysicalMemory, ram);
  c.registerInstance(BuddyAllocator, buddy);
  c.registerInstance(KernelLog, new KernelLog(new LifecycleBus(), 1));
  return { c, ram };
}

describe('radixTrackerModule: the radix tree as a boot\'s tracker', () => {
  it('registers one RadixTracker per boot and makes it the Tracker', () => {
    const { c } = kernelContainer();
    const m = radixTrackerModule();
    expect(m.name).toBe('radix-tracker');
    m.register(c);
    const t = c.resolve<Tracker>(Tracker);
    expect(t).toBeInstanceOf(RadixTracker);
    expect(c.resolve(RadixTracker)).toBe(t);
    // one per boot: a child container (the next boot) gets its own
    const next = c.createChildContainer();
    expect(next.resolve(RadixTracker)).not.toBe(t);
  });
});

describe('radixTracker: the registry descriptor', () => {
  it('names the radix map of kho-v2 and later, edited in place (no serialize step), up to order 51', () => {
    expect(radixTracker).toMatchObject({
      kind: 'radix',
      title: 'the radix tree of kho-v2 and later, edited in place',
      defaultGeneration: 'v4',
      maxOrder: 51,
      serializes: false,
    });
    expect(RADIX_DEFAULT_GENERATION).toBe('v4');
    expect(KHO_RADIX_MAX_ORDER).toBe(51);
    expect(KHO_RADIX_COMPATIBLE).toBe('kho-v2');
    expect(radixTracker.module().name).toBe('radix-tracker');
  });

  it('readIncoming reads a map as the next kernel would: the blocks in walk order and the pages the map occupies', () => {
    const { c, ram } = kernelContainer();
    radixTrackerModule().register(c);
    const t = c.resolve<Tracker>(Tracker);
    expect(t.kind).toBe('radix');
    const root = t.init();
    t.add(pfn(0x100), toOrder(0));
    t.add(pfn(0x200), toOrder(9));
    const direct = readIncomingTree(ram, root);
    const map = radixTracker.readIncoming(ram, root);
    expect(map).toEqual({ count: 2, pfns: direct.pfns, orders: direct.orders, metadataPages: direct.nodes });
    expect(map.pfns).toEqual([0x200, 0x100]);
    expect(map.metadataPages).toBe(t.metadataPfns().length);
    expect(() => radixTracker.readIncoming(ram, root, { maxBlocks: 1 })).toThrow(/^E2BIG: radix tree holds 2 blocks/);
  });
});
