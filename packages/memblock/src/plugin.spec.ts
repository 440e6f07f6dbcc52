import { Lifecycle, inject, injectable, type DependencyContainer } from 'tsyringe';
import { KernelPlugin, type KernelModule } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE, createMachine, physmemModule } from '@kho/physmem';
import { EarlyAllocator } from '@kho/kho-core';
import { Memblock } from './memblock';
import { KERNEL_IMAGE_SIZE, KERNEL_LOAD_ADDR, MemblockPlugin, memblockModule } from './plugin';

const MiB = 2 ** 20;

/** What KHO does to memblock on a KHO boot, without a handover: scratch-only at boot:early, off at boot:mm. */
function fakeKhoModule(scratch: { base: number; size: number }): KernelModule {
  @injectable()
  class FakeKho implements KernelPlugin {
    readonly name = 'kho';
    constructor(@inject(EarlyAllocator) private readonly early: EarlyAllocator) {}
    bootEarly(): void {
      this.early.markScratch(scratch.base, scratch.size);
      this.early.setScratchOnly(true);
    }
    bootMm(): void {
      this.early.setScratchOnly(false);
    }
  }
  return {
    name: 'fake-kho',
    register(c: DependencyContainer) {
      c.register(FakeKho, { useClass: FakeKho }, { lifecycle: Lifecycle.ContainerScoped });
      c.register(KernelPlugin, { useToken: FakeKho });
    },
  };
}

describe('memblockModule', () => {
  it('registers Memblock as the EarlyAllocator and does the cold boot allocations and the hand-off', () => {
    const kernel = createMachine({ mem: '256M' }).boot({ image: [physmemModule({ handOffAllRam: false }), memblockModule()] });
    const memblock = kernel.get(Memblock);
    expect(kernel.get<EarlyAllocator>(EarlyAllocator)).toBe(memblock);
    expect(kernel.plugins.map((p) => p.name)).toEqual(['physmem', 'memblock', 'reserve_mem']);
    expect(kernel.plugins[1]).toBe(kernel.get(MemblockPlugin));
    expect(kernel.disabled.size).toBe(0);
    // The kernel at its load address; the memmap (64 bytes per page: 4 MiB) top-down.
    expect(memblock.records.map((r) => [r.owner, r.base, r.size, r.scratchOnly])).toEqual([
      ['kernel', KERNEL_LOAD_ADDR, KERNEL_IMAGE_SIZE, false],
      ['memmap-node0', 252 * MiB, 4 * MiB, false],
    ]);
    const total = (256 * MiB) / PAGE_SIZE;
    const reserved = memblock.reservedBytes() / PAGE_SIZE;
    expect(reserved).toBe(4096 + 1024);
    expect(kernel.get(BuddyAllocator).nrFreePages).toBe(total - reserved);
    expect(kernel.log.filter('info', 'memblock').map((l) => l.message)).toEqual([
      'early allocations done: kernel@0x1000000, memmap-node0@0xfc00000',
      'handed 60416 free pages (236.00 MiB) to the buddy allocator',
    ]);
  });

  it('allocates a memmap on every node, on that node', () => {
    const kernel = createMachine({ mem: '256M', nodes: 2 }).boot({ image: [physmemModule({ handOffAllRam: false }), memblockModule()] });
    expect(kernel.get(Memblock).records.map((r) => [r.owner, r.base / MiB, r.size / MiB])).toEqual([
      ['kernel', 16, 16],
      ['memmap-node0', 126, 2],
      ['memmap-node1', 254, 2],
    ]);
    expect([kernel.get(BuddyAllocator).freePagesOf(0), kernel.get(BuddyAllocator).freePagesOf(1)]).toEqual([32768 - 4096 - 512, 32768 - 512]);
  });

  it('places the kernel and the memmap in scratch while KHO holds memblock scratch-only', () => {
    const kernel = createMachine({ mem: '256M' }).boot({
      image: [physmemModule({ handOffAllRam: false }), memblockModule(), fakeKhoModule({ base: 64 * MiB, size: 32 * MiB })],
    });
    expect(kernel.plugins.map((p) => p.name)).toEqual(['physmem', 'kho', 'memblock', 'reserve_mem']);
    const memblock = kernel.get(Memblock);
    expect(memblock.records.map((r) => [r.owner, r.base / MiB, r.scratchOnly])).toEqual([
      ['kernel', 80, true],
      ['memmap-node0', 76, true],
    ]);
    const buddy = kernel.get(BuddyAllocator);
    expect([buddy.nrFreePages, buddy.freeScratchPages]).toEqual([(256 * MiB - 20 * MiB) / PAGE_SIZE, (12 * MiB) / PAGE_SIZE]);
  });

  it('is disabled, handing nothing over, when the kernel does not fit in scratch', () => {
    const kernel = createMachine({ mem: '256M' }).boot({
      image: [physmemModule({ handOffAllRam: false }), memblockModule(), fakeKhoModule({ base: 64 * MiB, size: 8 * MiB })],
    });
    expect([...kernel.disabled]).toEqual([
      ['memblock', 'boot:early failed: ENOMEM: memblock_alloc: no room for 16.00 MiB for kernel below 0x100000000, in scratch (scratch-only mode)'],
      ['reserve_mem', "it needs 'memblock', which is disabled"],
    ]);
    expect(kernel.get(BuddyAllocator).nrFreePages).toBe(0);
  });
});
