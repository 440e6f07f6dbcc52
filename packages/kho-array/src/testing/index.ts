import { bareAllocator } from '@kho/physmem/testing';
import { BuddyAllocator, FaultInjector, Memmap, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import type { KhoArrayContext } from '../array';

/** A bare memory system for array tests and benchmarks (no kernel, no KHO): RAM at 0, all of it free in the buddy allocator. */
export interface ArrayTestMachine {
  readonly ram: PhysicalMemory;
  readonly memmap: Memmap;
  readonly buddy: BuddyAllocator;
  readonly faults: FaultInjector;
  /** The context to create and open arrays with (no `kho`). */
  readonly ctx: KhoArrayContext;
}

/** Builds an {@link ArrayTestMachine} with `bytes` of RAM (default 64 MiB). */
export function arrayTestMachine(bytes = 64 * 2 ** 20): ArrayTestMachine {
  const { ram, memmap, faults, buddy } = bareAllocator(bytes);
  return { ram, memmap, buddy, faults, ctx: { ram, memmap, buddy } };
}

/**
 * A 4096-byte page as hex, built from `[offset, hex bytes]` chunks over zeros: how the golden tests write the
 * bytes they expect.
 */
export function pageHex(chunks: ReadonlyArray<readonly [number, string]>): string {
  const page = new Uint8Array(PAGE_SIZE);
  for (const [off, hex] of chunks) page.set(Buffer.from(hex.replace(/\s+/g, ''), 'hex'), off);
  return Buffer.from(page).toString('hex');
}

export { HOSTILE_CASES, HOSTILE_POSITIONS, writeHostileBase, type HostileCase } from './hostile';
export { bitmapTestMachine, ramForPfns, type BitmapForm, type BitmapTestMachine } from './bitmap';
