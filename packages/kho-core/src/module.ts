import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { Kho } from './kho';
import { KhoPlugin } from './plugin';
import { KhoState } from './state';

/**
 * The kernel-image module of KHO: its per-boot state, the preservation API ({@link Kho}) and the lifecycle plugin
 * 'kho'. The image must also provide a {@link Tracker} (e.g. radix-tracker) and an {@link EarlyAllocator} (memblock).
 */
export function khoModule(): KernelModule {
  return {
    name: 'kho',
    register(c: DependencyContainer) {
      registerPerBoot(c, KhoState);
      registerPerBoot(c, Kho);
      registerPerBoot(c, KhoPlugin, { plugin: true });
    },
  };
}
