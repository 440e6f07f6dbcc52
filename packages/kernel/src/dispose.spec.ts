import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { inject, injectable } from 'tsyringe';
import { Machine } from './machine';
import { KernelPlugin, registerPerBoot, type KernelModule } from './plugin';

const BYTES = Symbol('Bytes');

/** A plugin holding 1 MiB per kernel, as a memmap does: what a dead kernel keeps alive shows in the heap. */
@injectable()
class Ballast implements KernelPlugin {
  readonly name = 'ballast';
  constructor(@inject(BYTES) readonly bytes: Uint8Array) {}
}
const ballast: KernelModule = {
  name: 'ballast',
  register(c) {
    // a factory that captures per-boot state: clearing the instances of a container does not drop it
    const bytes = new Uint8Array(2 ** 20).fill(1);
    c.register(BYTES, { useFactory: () => bytes });
    registerPerBoot(c, Ballast, { plugin: true });
  },
};

/** The garbage collector, exposed for this test only (jest does not pass --expose-gc). */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

describe('dead kernels are gone', () => {
  it('1,000 generations in one synchronous run leave host memory flat', () => {
    const gc = collector();
    const used = (): number => {
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const machine = new Machine();
    let k = machine.boot({ image: [ballast] });
    for (let i = 0; i < 100; i++) k = k.kexec();
    const at100 = used();
    // no await between kexecs: a dispose that leaves work for the event loop keeps every kernel alive here
    for (let i = 100; i < 1000; i++) k = k.kexec();
    const at1000 = used();
    expect(k.generation).toBe(1001);
    // 900 more dead kernels would hold 900 MiB; allow a few MiB of noise
    expect((at1000 - at100) / 2 ** 20).toBeLessThan(16);
  });
});
