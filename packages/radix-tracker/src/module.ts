import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { Tracker, type TrackerDescriptor } from '@kho/kho-core';
import { KHO_RADIX_MAX_ORDER } from './abi';
import { RADIX_DEFAULT_GENERATION, RadixTracker, readIncomingTree } from './radix-tree';

/** The kernel-image module that makes the kho-v2 radix tree this boot's preserved-memory tracker. */
export function radixTrackerModule(): KernelModule {
  return {
    name: 'radix-tracker',
    register(c: DependencyContainer) {
      registerPerBoot(c, RadixTracker);
      c.register(Tracker, { useToken: RadixTracker });
    },
  };
}

/** The radix tree in the tracker registry: the map of kho-v2, kho-v3 and kho-v4. */
export const radixTracker: TrackerDescriptor = {
  kind: 'radix',
  title: 'the radix tree of kho-v2 and later, edited in place',
  defaultGeneration: RADIX_DEFAULT_GENERATION,
  maxOrder: KHO_RADIX_MAX_ORDER,
  serializes: false,
  module: radixTrackerModule,
  readIncoming(ram, mapPhys, opts) {
    const t = readIncomingTree(ram, mapPhys, opts);
    return { count: t.count, pfns: t.pfns, orders: t.orders, metadataPages: t.nodes };
  },
};
