import { formatBytes, hex } from '@kho/kernel';
import { NR_PAGE_ORDERS, PAGE_SIZE } from './abi';
import type { BuddyAllocator } from './buddy';
import type { Memmap } from './memmap';
import type { PhysicalMemory } from './memory';

/**
 * A printable picture of the machine's memory: the RAM ranges with node and size, the host memory spent, and,
 * when given, the memmap's cost and the buddy allocator's free pages per node and free blocks per order (as
 * /proc/buddyinfo prints them). Returns lines joined by newlines.
 */
export function describeMemory(ram: PhysicalMemory, buddy?: BuddyAllocator, memmap?: Memmap): string {
  const nodes = ram.nodes.length;
  const lines = [
    `RAM: ${formatBytes(ram.totalBytes)} in ${ram.ranges.length} range${ram.ranges.length === 1 ? '' : 's'} on ${nodes} node${nodes === 1 ? '' : 's'}`,
  ];
  for (const r of ram.ranges) {
    lines.push(`  [mem ${pad(r.start)}-${pad(r.start + r.size - 1)}] node ${r.node}  ${formatBytes(r.size)}`);
  }
  lines.push(`  backed: ${ram.populatedBytes / PAGE_SIZE} pages written (${formatBytes(ram.populatedBytes)}), in ${formatBytes(ram.hostBytes)} of host chunks`);
  if (memmap) {
    lines.push(
      `memmap: ${memmap.nrPages} page frames, ${memmap.presentSections} sections present, ${memmap.splitPageblocks} pageblocks with per-page descriptors: ${formatBytes(memmap.totalBytes)}`,
    );
  }
  if (buddy) {
    const free = buddy.nrFreePages;
    lines.push(`buddy: ${free} pages free (${formatBytes(free * PAGE_SIZE)}), ${buddy.freeScratchPages} of them scratch`);
    for (const node of ram.nodes) lines.push(`  node ${node}: ${buddy.freePagesOf(node)} pages free`);
    const row = (label: string, cells: readonly number[]): string => `  ${label.padEnd(16)}${cells.map((n) => String(n).padStart(7)).join('')}`;
    lines.push(row('order', Array.from({ length: NR_PAGE_ORDERS }, (_, k) => k)));
    for (const info of buddy.buddyinfo()) {
      if (info.pool === 'scratch' && info.freePages === 0) continue;
      lines.push(row(`Node ${info.node}, ${info.pool}`, info.blocks));
    }
  }
  return lines.join('\n');
}

function pad(n: number): string {
  return `0x${hex(n).slice(2).padStart(16, '0')}`;
}
