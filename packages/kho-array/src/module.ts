import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { KhoArrays } from './arrays';

/** The kernel-image module of the KHO array: registers {@link KhoArrays} per boot. The image must also have KHO. */
export function khoArrayModule(): KernelModule {
  return {
    name: 'kho-array',
    register: (c: DependencyContainer) => registerPerBoot(c, KhoArrays),
  };
}
