import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { Tracker } from '@kho/kho-core';
import { RadixTracker } from './radix-tree';

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
