import { defineBench, timeNs } from '../src/bench/index';
import { Machine, KernelPlugin, type KernelModule } from '../src/index';
import { injectable } from 'tsyringe';

@injectable()
class Noop implements KernelPlugin {
  readonly name = 'noop';
  prepare(): void {
    // nothing to preserve: the benchmark measures the phase runner and the container
  }
}
const noop: KernelModule = {
  name: 'noop',
  register(c) {
    c.registerSingleton(Noop);
    c.register(KernelPlugin, { useToken: Noop });
  },
};

defineBench({
  name: 'kernel/boot-kexec',
  run({ quick }) {
    const machine = new Machine();
    let k = machine.boot({ image: [noop] });
    const { nsPerOp, ops } = timeNs(() => {
      k = k.liveUpdate();
      return 1;
    }, quick ? 50 : 500);
    return { value: Math.round(1e9 / nsPerOp), unit: 'kexec/s', usPerKexec: nsPerOp / 1000, kexecs: ops };
  },
});
