import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { Kho } from './kho';

/**
 * The kernel-image module of KHO. The image must also provide a {@link Tracker} (e.g. radix-tracker) and an
 * {@link EarlyAllocator} (memblock).
 */
export function khoModule(): KernelModule {
  return {
    name: 'kho',
    register: (c: DependencyContainer) => registerPerBoot(c, Kho, { plugin: true }),
  };
}
