import { injectable } from 'tsyringe';
import { MachineBus, MemoryPicture, type BusEventName, type BusEvents, type MemoryMap } from './bus';
import { Errno, KernelError } from './errno';
import { KernelInfo } from './kernel';
import { KernelLog } from './log';
import { Machine } from './machine';
import { Phase } from './phases';
import { KernelPlugin, type KernelModule } from './plugin';

/** A plugin that logs, publishes a preservation event in prepare, and can fail in restore. */
function subsystem(name: string, opts: { failIn?: Phase; after?: string[] } = {}): KernelModule {
  @injectable()
  class Subsystem implements KernelPlugin {
    readonly name = name;
    readonly after = opts.after;
    constructor(
      private readonly log: KernelLog,
      private readonly bus: MachineBus,
      private readonly info: KernelInfo,
    ) {}
    bootLate(): void {
      if (opts.failIn === Phase.BootLate) throw new KernelError(Errno.ENOMEM, `${name} has no memory`);
    }
    prepare(): void {
      this.log.info(name, 'preserving');
      this.bus.publish('kho:preserve', () => ({ generation: this.info.generation, owner: this.info.currentPlugin ?? 'other', phys: 0x1000, order: 0 }));
    }
    restore(): void {
      if (opts.failIn === Phase.Restore) throw new KernelError(Errno.EIO, `${name} lost its state`);
    }
  }
  return {
    name,
    register(c) {
      c.registerSingleton(Subsystem);
      c.register(KernelPlugin, { useToken: Subsystem });
    },
  };
}

const PICTURE: MemoryMap = { ranges: [{ start: 0, size: 1 << 20, node: 0 }], scratch: [], runs: [{ start: 0, end: 1 << 20, kind: 'free' }], facts: { pages: 256 } };
const pictures: KernelModule = { name: 'pictures', register: (c) => c.register(MemoryPicture, { useValue: { take: () => PICTURE } }) };

/** Records every event of `bus` as [name, payload], with times and errors made comparable. */
function record(bus: MachineBus): Array<[BusEventName, Record<string, unknown>]> {
  const seen: Array<[BusEventName, Record<string, unknown>]> = [];
  const names: BusEventName[] = [
    'kernel:boot',
    'kernel:up',
    'kernel:down',
    'phase:start',
    'phase:end',
    'plugin:error',
    'plugin:disabled',
    'kexec',
    'log',
    'kho:preserve',
    'kho:unpreserve',
    'kho:restore',
    'memory:map',
    'progress',
  ];
  for (const name of names) {
    (bus.on as (n: BusEventName, f: (e: Record<string, unknown>) => void) => void)(name, (e) => {
      const copy: Record<string, unknown> = { ...e };
      for (const k of ['ms']) if (typeof copy[k] === 'number') copy[k] = (copy[k] as number) >= 0 ? 'ms' : 'negative';
      if ('error' in copy) copy.error = copy.error instanceof KernelError ? copy.error.code : 'not a KernelError';
      seen.push([name, copy]);
    });
  }
  return seen;
}

describe('the machine bus: a full live update', () => {
  it('publishes boots, phases, errors, the kexec, log lines, preservation and memory pictures in order', () => {
    const machine = new Machine();
    const events = record(machine.bus);
    const k1 = machine.boot({ image: [pictures, subsystem('a'), subsystem('b', { failIn: Phase.BootLate }), subsystem('c', { after: ['b'] })], cmdline: 'x=1' });
    k1.liveUpdate({ image: [pictures, subsystem('a', { failIn: Phase.Restore })] });
    const k2 = machine.kernel!;
    k2.restore();
    k2.finish();
    machine.shutdown();

    const phase = (generation: number, p: Phase, ok = true): Array<[BusEventName, Record<string, unknown>]> => [
      ['phase:start', { generation, phase: p }],
      ['phase:end', { generation, phase: p, ok, ms: 'ms' }],
    ];
    const log = (generation: number, subsystem: string, message: string, level = 'info'): [BusEventName, Record<string, unknown>] => [
      'log',
      { generation, ms: 'ms', level, subsystem, message },
    ];
    expect(events).toEqual([
      ['kernel:boot', { generation: 1, kind: 'cold', cmdline: 'x=1', plugins: ['a', 'b', 'c'] }],
      log(1, 'kernel', 'booting generation 1: a, b, c'),
      log(1, 'kernel', 'command line: x=1'),
      ...phase(1, Phase.BootEarly),
      ...phase(1, Phase.BootMm),
      ['phase:start', { generation: 1, phase: Phase.BootLate }],
      ['plugin:error', { generation: 1, phase: Phase.BootLate, plugin: 'b', reason: 'ENOMEM: b has no memory', error: 'ENOMEM' }],
      log(1, 'kernel', "plugin 'b' disabled: boot:late failed: ENOMEM: b has no memory", 'error'),
      ['plugin:disabled', { generation: 1, plugin: 'b', reason: 'boot:late failed: ENOMEM: b has no memory' }],
      log(1, 'kernel', "plugin 'c' disabled: it needs 'b', which is disabled", 'error'),
      ['plugin:disabled', { generation: 1, plugin: 'c', reason: "it needs 'b', which is disabled" }],
      // a boot phase goes on past a disabled plugin: it ended well
      ['phase:end', { generation: 1, phase: Phase.BootLate, ok: true, ms: 'ms' }],
      ['kernel:up', { generation: 1, ms: 'ms', disabled: ['b', 'c'] }],
      ['memory:map', { generation: 1, moment: 'boot', map: PICTURE }],
      ['phase:start', { generation: 1, phase: Phase.Prepare }],
      log(1, 'a', 'preserving'),
      ['kho:preserve', { generation: 1, owner: 'a', phys: 0x1000, order: 0 }],
      ['phase:end', { generation: 1, phase: Phase.Prepare, ok: true, ms: 'ms' }],
      ...phase(1, Phase.Serialize),
      ...phase(1, Phase.Kexec),
      ['memory:map', { generation: 1, moment: 'jump', map: PICTURE }],
      log(1, 'kernel', 'kexec: jumping to generation 2'),
      ['kexec', { from: 1, to: 2, cmdline: 'x=1' }],
      ['kernel:down', { generation: 1, why: 'kexec' }],
      ['kernel:boot', { generation: 2, kind: 'handover', cmdline: 'x=1', plugins: ['a'] }],
      log(2, 'kernel', 'booting generation 2: a'),
      log(2, 'kernel', 'command line: x=1'),
      ...phase(2, Phase.BootEarly),
      ...phase(2, Phase.BootMm),
      ...phase(2, Phase.BootLate),
      ['kernel:up', { generation: 2, ms: 'ms', disabled: [] }],
      ['memory:map', { generation: 2, moment: 'boot', map: PICTURE }],
      ['phase:start', { generation: 2, phase: Phase.Restore }],
      ['plugin:error', { generation: 2, phase: Phase.Restore, plugin: 'a', reason: 'EIO: a lost its state', error: 'EIO' }],
      log(2, 'kernel', "restore failed in plugin 'a': EIO: a lost its state", 'error'),
      ['phase:end', { generation: 2, phase: Phase.Restore, ok: true, ms: 'ms' }],
      ...phase(2, Phase.Finish),
      ['kernel:down', { generation: 2, why: 'shutdown' }],
    ]);
  });

  it('a failed prepare ends its phase with ok false and runs cancel as a phase of its own', () => {
    const machine = new Machine();
    const events = record(machine.bus);
    const failing: KernelModule = {
      name: 'f',
      register(c) {
        c.register(KernelPlugin, { useValue: { name: 'f', prepare: () => { throw new KernelError(Errno.EBUSY, 'busy'); } } });
      },
    };
    const k = machine.boot({ image: [subsystem('a'), failing] });
    events.length = 0;
    expect(() => k.prepare()).toThrow("EBUSY: live update prepare failed in plugin 'f': EBUSY: busy");
    expect(events.filter(([n]) => n.startsWith('phase:') || n === 'plugin:error')).toEqual([
      ['phase:start', { generation: 1, phase: Phase.Prepare }],
      ['plugin:error', { generation: 1, phase: Phase.Prepare, plugin: 'f', reason: 'EBUSY: busy', error: 'EBUSY' }],
      ['phase:start', { generation: 1, phase: Phase.Cancel }],
      ['phase:end', { generation: 1, phase: Phase.Cancel, ok: true, ms: 'ms' }],
      ['phase:end', { generation: 1, phase: Phase.Prepare, ok: false, ms: 'ms' }],
    ]);
  });

  it('outlives kernels: a listener added before the first boot hears every generation', () => {
    const machine = new Machine();
    const gens: number[] = [];
    machine.bus.on('kernel:up', (e) => gens.push(e.generation));
    let k = machine.boot({ image: [] });
    for (let i = 0; i < 4; i++) k = k.kexec();
    expect(gens).toEqual([1, 2, 3, 4, 5]);
  });

  it('builds a payload only when someone listens', () => {
    const bus = new MachineBus();
    const build = jest.fn(() => ({ generation: 1, owner: 'x', phys: 0, order: 0 }));
    bus.publish('kho:restore', build);
    expect(build).not.toHaveBeenCalled();
    const heard: BusEvents['kho:restore'] = jest.fn();
    bus.on('kho:restore', heard);
    bus.publish('kho:restore', build);
    expect(build).toHaveBeenCalledTimes(1);
    expect(heard).toHaveBeenCalledWith({ generation: 1, owner: 'x', phys: 0, order: 0 });
  });

  it('takes no memory picture when nobody listens for one', () => {
    const take = jest.fn(() => PICTURE);
    const machine = new Machine();
    machine.boot({ image: [{ name: 'p', register: (c) => c.register(MemoryPicture, { useValue: { take } }) }] }).kexec();
    expect(take).not.toHaveBeenCalled();
  });
});

describe('errors while a boot builds its plugins', () => {
  it('a KernelError thrown by a plugin constructor reaches the caller as itself, not as a dependency-injection chain', () => {
    @injectable()
    class Picky implements KernelPlugin {
      readonly name = 'picky';
      constructor(info: KernelInfo) {
        throw new KernelError(Errno.EINVAL, `command line: kho='maybe' is not a boolean (generation ${info.generation})`);
      }
    }
    const machine = new Machine();
    let err: unknown;
    try {
      machine.boot({ image: [{ name: 'picky', register: (c) => c.register(KernelPlugin, { useClass: Picky }) }] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).message).toBe("EINVAL: command line: kho='maybe' is not a boolean (generation 1)");
    expect(machine.kernel).toBeUndefined();
    // the machine is usable again
    expect(machine.boot({ image: [] }).generation).toBe(1);
  });

  it('also when it is thrown by a service a plugin needs (the container wraps it in an Error of its own)', () => {
    @injectable()
    class Parser {
      constructor() {
        throw new KernelError(Errno.ERANGE, 'reserve_mem: size 5Q is too large (wanted at most 2^53 - 1 bytes)');
      }
    }
    @injectable()
    class User implements KernelPlugin {
      readonly name = 'user';
      constructor(readonly parser: Parser) {}
    }
    let err: unknown;
    try {
      new Machine().boot({ image: [{ name: 'user', register: (c) => c.register(KernelPlugin, { useClass: User }) }] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).errno).toBe(Errno.ERANGE);
    expect((err as KernelError).message).toBe('ERANGE: reserve_mem: size 5Q is too large (wanted at most 2^53 - 1 bytes)');
    expect(((err as KernelError).cause as Error).message).toMatch(/^Cannot inject the dependency "parser" at position #0 of "User" constructor\. Reason:/);
  });
});
