import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { MAX_PAGE_ORDER } from '@kho/physmem';
import { Tracker, type TrackerDescriptor } from '@kho/kho-core';
import { KhoArrays } from './arrays';
import { BitmapArrayTracker, readIncomingBitmapArray } from './bitmap-array';
import { BitmapChunksTracker, readIncomingBitmapChunks } from './bitmap-chunks';

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

/** The kho-v1 bitmaps serialised as upstream's chunk list, in the tracker registry. */
export const bitmapChunksTracker: TrackerDescriptor = {
  kind: 'bitmap-chunks',
  title: 'kho-v1 bitmaps, serialised at the jump as a chunk list',
  defaultGeneration: 'v1',
  maxOrder: MAX_PAGE_ORDER,
  serializes: true,
  module: bitmapChunksTrackerModule,
  readIncoming: readIncomingBitmapChunks,
};

/** The kho-v1 bitmaps serialised through a KHO array of bitmap records, in the tracker registry. */
export const bitmapArrayTracker: TrackerDescriptor = {
  kind: 'bitmap-array',
  title: 'kho-v1 bitmaps, serialised at the jump as KHO array records',
  defaultGeneration: 'v1-karr',
  maxOrder: MAX_PAGE_ORDER,
  serializes: true,
  module: bitmapArrayTrackerModule,
  readIncoming: readIncomingBitmapArray,
};
