import { KernelError, type Kernel } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, PAGE_SIZE, PhysicalMemory, Slab } from '@kho/physmem';
import { Kho, Tracker } from '@kho/kho-core';
import { Vmalloc } from '@kho/vmalloc';
import { Memfd } from '@kho/memfd';
import { KState } from '@kho/kstate';

/** Everything a cancelled update must leave exactly as it found it, as comparable text. */
export function stateOf(k: Kernel): Record<string, string> {
  const kho = k.get(Kho);
  const tracker = k.get<Tracker>(Tracker);
  const blocks: string[] = [];
  tracker.walk((pfn, order) => void blocks.push(`${pfn}:${order}`));
  const ram = k.get(PhysicalMemory);
  const fdt = kho.rootFdtPhys ? Buffer.from(ram.read(kho.rootFdtPhys, PAGE_SIZE)).toString('base64') : '';
  const buddy = k.get(BuddyAllocator);
  return {
    'tracker blocks': blocks.join(' '),
    'tracker pages': String(tracker.stats().metadataPages),
    'root FDT': fdt,
    subtrees: kho.subtrees().join(' '),
    'free pages': String(buddy.nrFreePages),
    buddyinfo: JSON.stringify(buddy.buddyinfo()),
    slab: JSON.stringify(k.get(Slab).slabInfo()),
    vmalloc: JSON.stringify(k.get(Vmalloc).areas().map((a) => [a.addr, a.size])),
    memfd: JSON.stringify(k.get(Memfd).list()),
    'kstate registrations': JSON.stringify(k.get(KState).registrations().length),
  };
}

/** What a sweep found. */
export interface FaultSweep {
  /** Allocations the path makes (each was made to fail once). */
  readonly failurePoints: number;
  /** For a failure point, what differed from the state before the attempt. */
  readonly problems: string[];
  /** True when the retry without faults went through. */
  readonly retried: boolean;
}

/**
 * Fails allocation k of `attempt` (on kernel `k`) for k = 1, 2, … until an attempt makes no allocation that was
 * made to fail. After each failure `attempt` must throw a KernelError and leave `stateOf(k)` exactly as before;
 * the last attempt (no fault hit) must succeed. `undo` returns a successful attempt to the starting state.
 */
export function sweepAllocationFailures(k: Kernel, attempt: () => void, undo: () => void, maxPoints = 10_000): FaultSweep {
  const faults = k.get(FaultInjector);
  const problems: string[] = [];
  for (let nth = 1; nth <= maxPoints; nth++) {
    const before = stateOf(k);
    faults.configure({ failNth: nth });
    const injected = faults.injected;
    let threw: unknown;
    let hit = false;
    try {
      attempt();
    } catch (e) {
      threw = e;
    } finally {
      hit = faults.injected !== injected;
      faults.reset();
    }
    if (!hit) {
      // the path made fewer than nth allocations: this was the clean retry
      if (threw) problems.push(`the retry without faults failed: ${String(threw)}`);
      else undo();
      return { failurePoints: nth - 1, problems, retried: !threw };
    }
    if (!(threw instanceof KernelError)) {
      problems.push(`failure point ${nth}: ${threw ? `not a KernelError: ${String(threw)}` : 'the injected failure was swallowed'}`);
      if (!threw) undo();
      continue;
    }
    const after = stateOf(k);
    for (const key of Object.keys(before)) {
      if (before[key] !== after[key]) problems.push(`failure point ${nth}: ${key} changed`);
    }
  }
  return { failurePoints: maxPoints, problems: [...problems, `more than ${maxPoints} failure points`], retried: false };
}
