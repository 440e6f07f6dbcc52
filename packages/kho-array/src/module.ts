import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { Tracker } from '@kho/kho-core';
import { KhoArrays } from './arrays';
import { BitmapArrayTracker } from './bitmap-array';
import { BitmapChunksTracker } from './bitmap-chunks';

/** The kernel-image module of the KHO array: registers {@link KhoArrays} per boot. The image must also have KHO. */
export function khoArrayModule(): KernelModule {
  return {
    name: 'kho-array',
    register: (c: DependencyContainer) => registerPerBoot(c, KhoArrays),
  };
}

/**
 * The kernel-image module that makes the bitmap tracker, serialised as upstream kho-v1's chunk list (root
 * compatible `kho-v1`), this boot's preserved-memory tracker. Use it instead of radixTrackerModule().
 */
export function bitmapChunksTrackerModule(): KernelModule {
  return {
    name: 'bitmap-chunks-tracker',
    register(c: DependencyContainer) {
      registerPerBoot(c, BitmapChunksTracker);
      c.register(Tracker, { useToken: BitmapChunksTracker });
    },
  };
}

/**
 * The kernel-image module that makes the bitmap tracker, serialised through a KHO array of bitmap records (root
 * compatible `kho-v1-karr`), this boot's preserved-memory tracker. Use it instead of radixTrackerModule().
 */
export function bitmapArrayTrackerModule(): KernelModule {
  return {
    name: 'bitmap-array-tracker',
    register(c: DependencyContainer) {
      registerPerBoot(c, BitmapArrayTracker);
      c.register(Tracker, { useToken: BitmapArrayTracker });
    },
  };
}
