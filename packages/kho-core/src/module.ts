import { Lifecycle, type DependencyContainer } from 'tsyringe';
import { KernelPlugin, type KernelModule } from '@kho/kernel';
import { Kho } from './kho';

/**
 * The kernel-image module of KHO. The image must also provide a {@link Tracker} (e.g. radix-tracker) and an
 * {@link EarlyAllocator} (memblock).
 */
export function khoModule(): KernelModule {
  return {
    name: 'kho',
    register(c: DependencyContainer) {
      c.register(Kho, { useClass: Kho }, { lifecycle: Lifecycle.ContainerScoped });
      c.register(KernelPlugin, { useToken: Kho });
    },
  };
}
