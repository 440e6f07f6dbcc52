import { PAGE_SIZE } from './abi';
import { BuddyAllocator } from './buddy';
import { FaultInjector } from './faults';
import { describeMemory } from './format';
import { Memmap, PageFlag } from './memmap';
import { PhysicalMemory } from './memory';

const MiB = 2 ** 20;

describe('describeMemory', () => {
  it('prints the RAM map, the memmap cost and the free lists', () => {
    const ram = new PhysicalMemory({
      ranges: [
        { start: 0, size: 8 * MiB, node: 0 },
        { start: 2 ** 40, size: 4 * MiB, node: 1 },
      ],
    });
    const memmap = new Memmap(ram);
    const buddy = new BuddyAllocator(ram, memmap, new FaultInjector());
    for (let p = 0; p < 1024; p++) memmap.setFlags(p, PageFlag.Scratch);
    for (const r of ram.ranges) buddy.freeRange(r.start / PAGE_SIZE, r.size / PAGE_SIZE);
    buddy.allocPages(0, { node: 1 });
    ram.writeU8(5, 1);
    expect(describeMemory(ram, buddy, memmap)).toBe(
      [
        'RAM: 12.00 MiB in 2 ranges on 2 nodes',
        '  [mem 0x0000000000000000-0x00000000007fffff] node 0  8.00 MiB',
        '  [mem 0x0000010000000000-0x00000100003fffff] node 1  4.00 MiB',
        '  backed: 1 pages written (4.00 KiB), in 2.00 MiB of host chunks',
        'memmap: 3072 page frames, 2 sections present, 3 pageblocks with per-page descriptors: 46.50 KiB',
        'buddy: 3071 pages free (12.00 MiB), 1024 of them scratch',
        '  node 0: 2048 pages free',
        '  node 1: 1023 pages free',
        '  order                 0      1      2      3      4      5      6      7      8      9     10',
        '  Node 0, normal        0      0      0      0      0      0      0      0      0      0      1',
        '  Node 0, scratch       0      0      0      0      0      0      0      0      0      0      1',
        '  Node 1, normal        1      1      1      1      1      1      1      1      1      1      0',
      ].join('\n'),
    );
  });

  it('prints the RAM map alone', () => {
    const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 4 * MiB, node: 0 }] });
    expect(describeMemory(ram).split('\n')).toEqual([
      'RAM: 4.00 MiB in 1 range on 1 node',
      '  [mem 0x0000000000000000-0x00000000003fffff] node 0  4.00 MiB',
      '  backed: 0 pages written (0 B), in 0 B of host chunks',
    ]);
  });
});
