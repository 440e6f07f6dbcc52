import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { KhoVmalloc } from './preserve';
import { Vmalloc } from './vmalloc';

/**
 * The kernel-image module of vmalloc: registers, per boot, {@link Vmalloc} and {@link KhoVmalloc}. Neither is a
 * plugin: areas are made and preserved by the subsystems that own them, through plain method calls. KhoVmalloc
 * needs KHO in the image (khoModule, with a tracker and an early allocator); Vmalloc needs only physmem.
 */
export function vmallocModule(): KernelModule {
  return {
    name: 'vmalloc',
    register(c: DependencyContainer): void {
      registerPerBoot(c, Vmalloc);
      registerPerBoot(c, KhoVmalloc);
    },
  };
}
