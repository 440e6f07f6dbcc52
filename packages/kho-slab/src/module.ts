import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { KhoSlab } from './kho-slab';

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
