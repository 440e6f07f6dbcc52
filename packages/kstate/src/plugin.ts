import { injectable, instanceCachingFactory, type DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule, type KernelPlugin, type PluginReport } from '@kho/kernel';
import { BuddyAllocator } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KhoVmalloc, Vmalloc } from '@kho/vmalloc';
import { KStateBackend, KhoBackend } from './backend';
import { KState } from './kstate';

/**
 * The kstate plugin: saves every registered object at `prepare`, undoes the save at `cancel`, claims the
 * incoming stream at `restore` (before the subsystems that run after it restore their sections) and reports at
 * `finish` the sections nobody restored.
 */
@injectable()
export class KStatePlugin implements KernelPlugin {
  readonly name = 'kstate';
  readonly after = ['kho'];
  // reserve_mem registers its regions at its own prepare: kstate must save after that
  readonly afterIfPresent = ['reserve_mem'];

  constructor(private readonly kstate: KState) {}

  prepare(): void {
    this.kstate.save();
  }

  cancel(): void {
    this.kstate.cancel();
  }

  restore(): PluginReport | void {
    return this.kstate.claimIncoming();
  }

  finish(): PluginReport | void {
    return this.kstate.finish() as PluginReport | undefined;
  }
}

/**
 * The kernel-image module of kstate: registers, per boot, the KState service, its plugin, and its backend over
 * KHO and the buddy allocator, with vmalloc buffers supported when the image also has vmallocModule(). Needs
 * khoModule() (with a tracker and an early allocator).
 */
export function kstateModule(): KernelModule {
  return {
    name: 'kstate',
    register(c: DependencyContainer): void {
      c.register(KStateBackend, {
        useFactory: instanceCachingFactory((r) => {
          const vm = r.isRegistered(KhoVmalloc, true) ? { vmalloc: r.resolve(Vmalloc), khoVmalloc: r.resolve(KhoVmalloc) } : undefined;
          return new KhoBackend(r.resolve(Kho), r.resolve(BuddyAllocator), vm);
        }),
      });
      registerPerBoot(c, KState);
      registerPerBoot(c, KStatePlugin, { plugin: true });
    },
  };
}
