import { KernelInfo, KernelPlugin, type KernelModule } from '@kho/kernel';
import type { DependencyContainer } from 'tsyringe';

/** Every plugin a scenario's kernel may run; a hook orders itself after each one present. */
const SCENARIO_PLUGINS = ['physmem', 'memblock', 'kho', 'kho-slab', 'reserve_mem', 'kstate', 'memfd', 'liveupdate', 'kho-test', 'scenario-workload', 'scenario-guests'];

/**
 * A plugin acting inside each kernel of a scenario, after every other plugin: at `serialize` (the last moment
 * before the jump, everything handed over is written) or at `bootLate` (the next kernel booted, nothing restored
 * yet). `act` resolves what it touches from its boot's container. For `runScenario(s, { modules })`: tests that
 * tamper with a handover, and tools that look inside a kernel mid-chain.
 */
export function inKernel(when: 'serialize' | 'bootLate', act: (c: DependencyContainer, generation: number) => void): (gen: number) => KernelModule[] {
  return () => [
    {
      name: 'in-kernel',
      register(c) {
        c.register(KernelPlugin, {
          useFactory: (dc) => ({ name: 'in-kernel', afterIfPresent: SCENARIO_PLUGINS, [when]: () => act(dc, dc.resolve(KernelInfo).generation) }),
        });
      },
    },
  ];
}
