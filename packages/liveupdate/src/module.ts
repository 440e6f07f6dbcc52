import type { DependencyContainer } from 'tsyringe';
import { registerPerBoot, type KernelModule } from '@kho/kernel';
import { KhoBlocks } from '@kho/kho-block';
import { Liveupdate } from './liveupdate';
import { Vfs } from './vfs/vfs';

/**
 * The kernel-image module of LUO: registers, per boot, the VFS (plugin 'vfs': device paths and processes), the
 * kho_block service when the image has none, and the Live Update Orchestrator (plugin 'liveupdate'). The image
 * needs KHO (khoModule with a tracker and an early allocator). File handlers come from other modules, registered
 * under the `LiveupdateFileHandler` token. Command line: `liveupdate=on` (default off, as upstream),
 * `luo_abi=luo-v5|luo-v1` (default luo-v5).
 */
export function liveupdateModule(): KernelModule {
  return {
    name: 'liveupdate',
    register(c: DependencyContainer): void {
      registerPerBoot(c, Vfs, { plugin: true });
      if (!c.isRegistered(KhoBlocks)) registerPerBoot(c, KhoBlocks);
      registerPerBoot(c, Liveupdate, { plugin: true });
    },
  };
}
