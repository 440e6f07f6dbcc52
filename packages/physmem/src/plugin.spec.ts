import { Errno, KernelError, KernelPlugin } from '@kho/kernel';
import { PAGE_SIZE } from './abi';
import { BuddyAllocator } from './buddy';
import { FaultInjector } from './faults';
import { Memmap } from './memmap';
import { PhysicalMemory } from './memory';
import { PhysmemPlugin, createMachine, physmemModule } from './plugin';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const TiB = 2 ** 40;

describe('createMachine', () => {
  it('defaults to 4 GiB at address 0 on node 0', () => {
    const ram = createMachine().device(PhysicalMemory);
    expect(ram.ranges).toEqual([{ start: 0, size: 4 * GiB, node: 0 }]);
  });

  it('splits mem into equal node ranges', () => {
    const ram = createMachine({ mem: '64M', nodes: 4 }).device(PhysicalMemory);
    expect(ram.ranges.map((r) => [r.start / MiB, r.size / MiB, r.node])).toEqual([
      [0, 16, 0],
      [16, 16, 1],
      [32, 16, 2],
      [48, 16, 3],
    ]);
  });

  it('takes explicit ranges with holes', () => {
    const ram = createMachine({
      ranges: [
        { start: 0, size: 2 * GiB, node: 0 },
        { start: TiB, size: 2 * GiB, node: 1 },
      ],
    }).device(PhysicalMemory);
    expect([ram.totalBytes, ram.endAddr, ram.nodes]).toEqual([4 * GiB, TiB + 2 * GiB, [0, 1]]);
  });

  it.each([
    [{ mem: '10M', nodes: 2 }, 'EINVAL: createMachine: 10.00 MiB does not split into 2 nodes of a multiple of 4 MiB each'],
    [{ mem: 8 * MiB, nodes: 0 }, 'EINVAL: createMachine: nodes 0 is not an integer in 1..1024'],
    [{ mem: '1X' }, "EINVAL: mem: '1X' is not a size (wanted a number with an optional K, M, G, T or P suffix)"],
    [{ mem: 100 }, 'EINVAL: RAM range [0x0-0x63] node 0: size 100 is not a positive multiple of 4096'],
    [{ mem: '8M', ranges: [{ start: 0, size: PAGE_SIZE, node: 0 }] }, 'EINVAL: createMachine: give either ranges or mem/nodes, not both'],
  ])('rejects %j', (opts, message) => {
    expect(() => createMachine(opts)).toThrow(new KernelError(Errno.EINVAL, message.replace('EINVAL: ', '')));
  });
});

describe('physmem plugin', () => {
  it('hands all RAM to the buddy allocator at boot', () => {
    const kernel = createMachine().boot({ image: [physmemModule({ handOffAllRam: true })] });
    const buddy = kernel.get(BuddyAllocator);
    expect(buddy.nrFreePages).toBe((4 * GiB) / PAGE_SIZE);
    expect(buddy.fullyMerged()).toBe(true);
    expect(kernel.plugins.map((p) => p.name)).toEqual(['physmem']);
    expect(kernel.get<KernelPlugin>(KernelPlugin)).toBe(kernel.get(PhysmemPlugin));
    expect(kernel.log.lines.map((l) => l.message)).toContain('buddy: all RAM handed over, 1048576 pages free (4.00 GiB)');
    expect(kernel.disabled.size).toBe(0);
  });

  it('leaves the allocator empty without handOffAllRam', () => {
    const kernel = createMachine({ mem: '64M' }).boot({ image: [physmemModule({ handOffAllRam: false })] });
    expect(kernel.get(BuddyAllocator).nrFreePages).toBe(0);
  });

  it('keeps RAM across kexec and builds a fresh memmap and allocator', () => {
    const machine = createMachine({ mem: '256M', nodes: 2 });
    const old = machine.boot({ image: [physmemModule()] });
    const oldBuddy = old.get(BuddyAllocator);
    const oldMemmap = old.get(Memmap);
    const ram = old.get(PhysicalMemory);
    const p = oldBuddy.allocPages(3, { node: 1 });
    ram.writeU64(p * PAGE_SIZE + 8, 0xfeedfacecafebeefn);
    expect(oldBuddy.isFree(p)).toBe(false);

    const next = old.kexec();
    expect(() => old.get(BuddyAllocator)).toThrow(KernelError);
    const buddy = next.get(BuddyAllocator);
    expect(next.get(PhysicalMemory)).toBe(ram);
    expect(next.get(Memmap)).not.toBe(oldMemmap);
    expect(buddy).not.toBe(oldBuddy);
    expect(next.get(FaultInjector).calls).toBe(0);
    expect(ram.readU64n(p * PAGE_SIZE + 8)).toBe(0xfeedfacecafebeefn);
    expect(buddy.isFree(p)).toBe(true);
    expect(buddy.nrFreePages).toBe((256 * MiB) / PAGE_SIZE);
    expect(buddy.allocCalls).toBe(0);
    expect(next.get(Memmap).refcount(p)).toBe(0);
  });

  it('fails allocations as fail_page_alloc= asks', () => {
    const kernel = createMachine({ mem: '64M' }).boot({ image: [physmemModule()], cmdline: 'fail_page_alloc=1,100,2' });
    const buddy = kernel.get(BuddyAllocator);
    expect(() => buddy.allocPages(0)).toThrow('injected failure');
    expect(() => buddy.allocPages(0)).toThrow('injected failure');
    expect(buddy.allocPages(0)).toBeGreaterThanOrEqual(0);
    expect(kernel.get(FaultInjector).injected).toBe(2);
  });

  it('ignores a malformed fail_page_alloc= with an error in the log', () => {
    const kernel = createMachine({ mem: '64M' }).boot({ image: [physmemModule()], cmdline: 'fail_page_alloc=oops' });
    expect(kernel.disabled.size).toBe(0);
    expect(kernel.log.filter('error', 'physmem').map((l) => l.message)).toEqual([
      "ignoring fail_page_alloc: EINVAL: fail_page_alloc='oops': 1 fields (wanted <everyNth>,<probability%>,<times>[,<seed>])",
    ]);
    expect(kernel.get(FaultInjector).isArmed).toBe(false);
  });
});
