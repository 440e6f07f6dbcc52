import { Lifecycle, type DependencyContainer } from 'tsyringe';
import type { KernelModule } from '@kho/kernel';
import { Tracker } from '@kho/kho-core';
import { RadixTracker } from './radix-tree';

/** The kernel-image module that makes the kho-v2 radix tree this boot's preserved-memory tracker. */
export function radixTrackerModule(): KernelModule {
  return {
    name: 'radix-tracker',
    register(c: DependencyContainer) {
      c.register(RadixTracker, { useClass: RadixTracker }, { lifecycle: Lifecycle.ContainerScoped });
      c.register(Tracker, { useToken: RadixTracker });
    },
  };
}
