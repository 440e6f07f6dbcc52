import { PAGE_SIZE } from '../abi';
import { BuddyAllocator } from '../buddy';
import { FaultInjector } from '../faults';
import { Memmap } from '../memmap';
import { PhysicalMemory, type RamRange } from '../memory';

/** A boot's memory objects built directly, without a kernel: for unit tests and benchmarks. */
export interface BareAllocator {
  readonly ram: PhysicalMemory;
  readonly memmap: Memmap;
  readonly faults: FaultInjector;
  readonly buddy: BuddyAllocator;
}

/**
 * RAM (`bytes` at address 0 on node 0, or explicit ranges), a fresh memmap, a fault injector and a buddy
 * allocator to which `free` is handed: every RAM page by default, the given [first pfn, page count] spans, or
 * nothing (`[]`, for callers that mark pages first).
 */
export function bareAllocator(layout: number | readonly RamRange[], free?: ReadonlyArray<readonly [number, number]>): BareAllocator {
  const ranges = typeof layout === 'number' ? [{ start: 0, size: layout, node: 0 }] : [...layout];
  const ram = new PhysicalMemory({ ranges });
  const memmap = new Memmap(ram);
  const faults = new FaultInjector();
  const buddy = new BuddyAllocator(ram, memmap, faults);
  for (const [first, n] of free ?? ram.ranges.map((r) => [r.start / PAGE_SIZE, r.size / PAGE_SIZE] as const)) buddy.freeRange(first, n);
  return { ram, memmap, faults, buddy };
}
