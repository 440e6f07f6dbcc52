import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { Kho } from './kho';
import { KhoSlab } from './slab';

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

/**
 * The kernel-image module of slab preservation ({@link KhoSlab}, plugin 'kho-slab', after 'kho'). The image must
 * also hold physmemModule (the Slab allocator) and khoModule.
 */
export function khoSlabModule(): KernelModule {
  return {
    name: 'kho-slab',
    register: (c: DependencyContainer) => registerPerBoot(c, KhoSlab, { plugin: true }),
  };
}
