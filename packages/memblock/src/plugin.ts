import { injectable, type DependencyContainer } from 'tsyringe';
import { KernelLog, registerPerBoot, type KernelModule, type KernelPlugin } from '@kho/kernel';
import { BuddyAllocator, Memmap, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { EarlyAllocator } from '@kho/kho-core';
import { Memblock } from './memblock';
import { ReserveMem } from './reserve-mem';

/** Where a cold-booted kernel image sits (x86's default physical load address) and how big it is. */
export const KERNEL_LOAD_ADDR = 16 * 1024 * 1024;
export const KERNEL_IMAGE_SIZE = 16 * 1024 * 1024;
/** Bytes of memmap a real kernel spends per page frame (struct page); memblock reserves that much per node. */
export const STRUCT_PAGE_SIZE = 64;
const LOWMEM_LIMIT = 4 * 1024 * 1024 * 1024;

/**
 * memblock's part of the boot: at boot:early, after KHO has (on a KHO boot) switched to scratch-only mode, the
 * kernel's own early allocations (its image and the memmap of every node); at boot:mm, after KHO reserved the
 * preserved blocks, the `reserve_mem=` regions (revived or allocated) and then the hand-off of all other memory to
 * the buddy allocator.
 */
@injectable()
export class MemblockPlugin implements KernelPlugin {
  readonly name = 'memblock';
  readonly after = ['physmem'];
  readonly afterIfPresent = ['kho'];

  constructor(
    private readonly memblock: Memblock,
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    private readonly memmap: Memmap,
    private readonly log: KernelLog,
    private readonly reserveMem: ReserveMem,
  ) {}

  bootEarly(): void {
    const mb = this.memblock;
    if (!mb.isScratchOnly && this.ram.isRam(KERNEL_LOAD_ADDR, KERNEL_IMAGE_SIZE)) {
      mb.reserve(KERNEL_LOAD_ADDR, KERNEL_IMAGE_SIZE, 'kernel');
    } else {
      // A kexec'd kernel is loaded wherever its segments fit: inside scratch on a KHO boot.
      mb.alloc(KERNEL_IMAGE_SIZE, 2 * 1024 * 1024, { max: LOWMEM_LIMIT, owner: 'kernel' });
    }
    for (const node of this.ram.nodes) {
      const pages = this.ram.ranges.filter((r) => r.node === node).reduce((n, r) => n + r.size / PAGE_SIZE, 0);
      mb.alloc(Math.ceil((pages * STRUCT_PAGE_SIZE) / PAGE_SIZE) * PAGE_SIZE, PAGE_SIZE, { node, owner: `memmap-node${node}` });
    }
    this.log.info('memblock', `early allocations done: ${mb.records.map((r) => `${r.owner}@0x${r.base.toString(16)}`).join(', ')}`);
  }

  bootMm(): void {
    this.reserveMem.setup();
    this.memblock.handOff(this.buddy, this.memmap);
  }
}

/** The kernel-image module of memblock: the early allocator (also KHO's {@link EarlyAllocator}) and its plugin. */
export function memblockModule(): KernelModule {
  return {
    name: 'memblock',
    register(c: DependencyContainer) {
      registerPerBoot(c, Memblock);
      c.register(EarlyAllocator, { useToken: Memblock });
      registerPerBoot(c, MemblockPlugin, { plugin: true });
      registerPerBoot(c, ReserveMem, { plugin: true });

    },
  };
}
