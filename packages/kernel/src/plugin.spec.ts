import { container as rootContainer, injectable } from 'tsyringe';
import { KernelPlugin, registerPerBoot } from './plugin';

@injectable()
class Service {
  readonly id = Symbol('instance');
}

@injectable()
class Plugin implements KernelPlugin {
  readonly name = 'p';
}

describe('registerPerBoot', () => {
  it('registers one instance per container; as a plugin, the KernelPlugin token gives that same instance', () => {
    const boot1 = rootContainer.createChildContainer();
    registerPerBoot(boot1, Plugin, { plugin: true });
    const p = boot1.resolve(Plugin);
    expect(p).toBeInstanceOf(Plugin);
    expect(boot1.resolve(Plugin)).toBe(p);
    expect(boot1.resolveAll<KernelPlugin>(KernelPlugin)).toEqual([p]);
    expect(boot1.resolveAll<KernelPlugin>(KernelPlugin)[0]).toBe(p);

    const boot2 = rootContainer.createChildContainer();
    registerPerBoot(boot2, Plugin, { plugin: true });
    expect(boot2.resolve(Plugin)).not.toBe(p);
    expect(rootContainer.isRegistered(Plugin)).toBe(false);
  });

  it('registers a service (not a plugin) only under its class', () => {
    const boot = rootContainer.createChildContainer();
    registerPerBoot(boot, Service);
    expect(boot.isRegistered(Service)).toBe(true);
    expect(boot.resolve(Service)).toBe(boot.resolve(Service));
    expect(boot.isRegistered(KernelPlugin)).toBe(false);
    registerPerBoot(boot, Plugin, { plugin: false });
    expect(boot.isRegistered(KernelPlugin)).toBe(false);
  });
});
