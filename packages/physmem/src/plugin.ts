import { Lifecycle, inject, injectable, type DependencyContainer } from 'tsyringe';
import { CommandLine, Errno, KernelError, KernelLog, KernelPlugin, Machine, formatBytes, hex, parseSize, registerPerBoot, type KernelModule, describeError } from '@kho/kernel';
import { PAGE_SIZE } from './abi';
import { BuddyAllocator } from './buddy';
import { FaultInjector, parseFailPageAlloc } from './faults';
import { Memmap } from './memmap';
import { PhysicalMemory, type RamRange } from './memory';
import { Slab } from './slab';

/** Options of the physmem module, as the plugin sees them. */
export const PhysmemOptions = Symbol('PhysmemOptions');
export interface PhysmemOptions {
  /**
   * Hand every RAM page to the buddy allocator at boot:mm. True until an early allocator (memblock) does the
   * hand-off instead; then it must be false, or memory would be handed over twice.
   */
  readonly handOffAllRam?: boolean;
}

/**
 * The physmem plugin: reads `fail_page_alloc=` at boot:early and, with `handOffAllRam`, gives all RAM to the
 * buddy allocator at boot:mm. It keeps no state across kexec: RAM is the machine's, everything else is per boot.
 */
@injectable()
export class PhysmemPlugin implements KernelPlugin {
  readonly name = 'physmem';

  constructor(
    private readonly ram: PhysicalMemory,
    private readonly memmap: Memmap,
    private readonly buddy: BuddyAllocator,
    private readonly faults: FaultInjector,
    private readonly log: KernelLog,
    private readonly cmdline: CommandLine,
    @inject(PhysmemOptions) private readonly options: PhysmemOptions,
  ) {}

  bootEarly(): void {
    for (const r of this.ram.ranges) {
      this.log.info('physmem', `RAM: [mem ${hex(r.start)}-${hex(r.start + r.size - 1)}] node ${r.node} (${formatBytes(r.size)})`);
    }
    this.log.info('physmem', `memmap: ${this.memmap.nrPages} page descriptors, ${formatBytes(this.memmap.totalBytes)}`);
    const spec = this.cmdline.get('fail_page_alloc');
    if (spec === undefined) return;
    try {
      this.faults.configure(parseFailPageAlloc(spec));
      this.log.warn('physmem', `fail_page_alloc=${spec}: page allocations will fail on purpose`);
    } catch (e) {
      // A bad parameter is ignored, as the kernel does, rather than costing the boot its memory.
      this.log.error('physmem', `ignoring fail_page_alloc: ${describeError(e, { errno: true })}`);
    }
  }

  bootMm(): void {
    if (!(this.options.handOffAllRam ?? true)) return;
    for (const r of this.ram.ranges) this.buddy.freeRange(r.start / PAGE_SIZE, r.size / PAGE_SIZE);
    const free = this.buddy.nrFreePages;
    this.log.info('physmem', `buddy: all RAM handed over, ${free} pages free (${formatBytes(free * PAGE_SIZE)})`);
  }
}

/**
 * The physmem part of a kernel image: registers, per boot, the Memmap, FaultInjector, BuddyAllocator, the kmalloc
 * allocator (Slab) and the PhysmemPlugin (also under the KernelPlugin token). `handOffAllRam` (default true) makes
 * boot:mm give every RAM page to the buddy allocator. The machine must have a PhysicalMemory device (see createMachine).
 */
export function physmemModule(opts: PhysmemOptions = {}): KernelModule {
  const options: PhysmemOptions = { handOffAllRam: opts.handOffAllRam ?? true };
  return {
    name: 'physmem',
    register(container: DependencyContainer): void {
      const scoped = { lifecycle: Lifecycle.ContainerScoped } as const;
      container.register(PhysmemOptions, { useValue: options });
      container.register(Memmap, { useClass: Memmap }, scoped);
      container.register(FaultInjector, { useClass: FaultInjector }, scoped);
      container.register(BuddyAllocator, { useClass: BuddyAllocator }, scoped);
      registerPerBoot(container, Slab);
      container.register(PhysmemPlugin, { useClass: PhysmemPlugin }, scoped);
      container.register(KernelPlugin, { useToken: PhysmemPlugin });
    },
  };
}

/** How to build a machine: total RAM split across nodes, or explicit ranges (which may leave holes). */
export interface MachineOptions {
  /** Total RAM in bytes or as '4G'-style text (default 4 GiB), from address 0. */
  readonly mem?: number | string;
  /** Split `mem` into this many equal node ranges, each a multiple of 4 MiB (default 1). */
  readonly nodes?: number;
  /** Explicit RAM ranges; excludes `mem` and `nodes`. */
  readonly ranges?: readonly RamRange[];
}

const NODE_ALIGN = 4 * 2 ** 20;

/**
 * A Machine with RAM attached as its PhysicalMemory device. Returns the machine; throws EINVAL for a bad size,
 * node count or layout.
 */
export function createMachine(opts: MachineOptions = {}): Machine {
  let ranges: readonly RamRange[];
  if (opts.ranges) {
    if (opts.mem !== undefined || opts.nodes !== undefined) {
      throw new KernelError(Errno.EINVAL, 'createMachine: give either ranges or mem/nodes, not both');
    }
    ranges = opts.ranges;
  } else {
    const mem = typeof opts.mem === 'string' ? parseSize(opts.mem, 'mem') : (opts.mem ?? 4 * 2 ** 30);
    const nodes = opts.nodes ?? 1;
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > 1024) {
      throw new KernelError(Errno.EINVAL, `createMachine: nodes ${nodes} is not an integer in 1..1024`);
    }
    if (opts.nodes !== undefined && mem % (nodes * NODE_ALIGN) !== 0) {
      throw new KernelError(Errno.EINVAL, `createMachine: ${formatBytes(mem)} does not split into ${nodes} nodes of a multiple of 4 MiB each`);
    }
    const per = mem / nodes;
    ranges = Array.from({ length: nodes }, (_, node) => ({ start: node * per, size: per, node }));
  }
  return new Machine().attach(PhysicalMemory, new PhysicalMemory({ ranges }));
}
