import { inject, injectable } from 'tsyringe';
import { BootParams, NextBootParams } from './boot-params';
import { MachineBus, type KernelDownEvent, type PhaseEndEvent, type PluginDisabledEvent } from './bus';
import { CommandLine } from './cmdline';
import { Errno, KernelError } from './errno';
import { Kernel, KernelInfo, constructionError, orderPlugins } from './kernel';
import { KernelLog } from './log';
import { Machine } from './machine';
import { Phase } from './phases';
import { KernelPlugin, type KernelModule } from './plugin';

/** A device that survives kexec, like RAM: a plain byte store. */
class FakeRam {
  readonly bytes = new Uint8Array(64);
}

type Journal = string[];
const JOURNAL = Symbol('Journal');

/** Builds a module whose plugin records every handler call and can be told to fail in one phase. */
function recorder(name: string, opts: { after?: string[]; failIn?: Phase; cancelThrows?: boolean } = {}): KernelModule {
  @injectable()
  class Recorder implements KernelPlugin {
    readonly name = name;
    readonly after = opts.after;
    constructor(@inject(JOURNAL) private readonly journal: Journal) {}
    private step(phase: Phase): void {
      this.journal.push(`${name}:${phase}`);
      if (opts.failIn === phase) throw new KernelError(Errno.ENOMEM, `${name} could not allocate in ${phase}`);
    }
    bootEarly(): void {
      this.step(Phase.BootEarly);
    }
    bootLate(): void {
      this.step(Phase.BootLate);
    }
    prepare(): void {
      this.step(Phase.Prepare);
    }
    serialize(): void {
      this.step(Phase.Serialize);
    }
    kexec(): void {
      this.step(Phase.Kexec);
    }
    restore(): { restored: string } {
      this.step(Phase.Restore);
      return { restored: name };
    }
    cancel(): void {
      this.journal.push(`${name}:cancel`);
      if (opts.cancelThrows) throw new Error('cancel broke');
    }
  }
  return {
    name,
    register(c) {
      c.registerSingleton(Recorder);
      c.register(KernelPlugin, { useToken: Recorder });
    },
  };
}

function journalModule(journal: Journal): KernelModule {
  return { name: 'journal', register: (c) => c.register(JOURNAL, { useValue: journal }) };
}

function bootWith(modules: KernelModule[], journal: Journal = []): { machine: Machine; kernel: Kernel; journal: Journal } {
  const machine = new Machine().attach(FakeRam, new FakeRam());
  const kernel = machine.boot({ image: [journalModule(journal), ...modules] });
  return { machine, kernel, journal };
}

describe('Kernel boot and phase order', () => {
  it('runs boot phases over plugins in dependency order, ties in registration order', () => {
    const { kernel, journal } = bootWith([recorder('c', { after: ['a'] }), recorder('a'), recorder('b')]);
    expect(kernel.plugins.map((p) => p.name)).toEqual(['a', 'c', 'b']);
    expect(journal).toEqual(['a:boot:early', 'c:boot:early', 'b:boot:early', 'a:boot:late', 'c:boot:late', 'b:boot:late']);
  });

  it.each([
    [[recorder('a', { after: ['ghost'] })], Errno.ENOENT, "ENOENT: plugin 'a' must run after 'ghost', which is not in this kernel"],
    [[recorder('a', { after: ['b'] }), recorder('b', { after: ['a'] })], Errno.EINVAL, 'EINVAL: plugin dependency cycle: a -> b -> a'],
    [[recorder('a'), recorder('a')], Errno.EEXIST, "EEXIST: kernel image lists module 'a' twice"],
  ])('refuses an inconsistent image (%#)', (modules, errno, message) => {
    let err: unknown;
    try {
      bootWith(modules);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).errno).toBe(errno);
    expect((err as KernelError).message).toBe(message);
  });

  it('orderPlugins honours afterIfPresent only when the plugin exists', () => {
    const p = (name: string, extra: Partial<KernelPlugin> = {}): KernelPlugin => ({ name, ...extra });
    expect(orderPlugins([p('x', { afterIfPresent: ['y'] }), p('y')]).map((q) => q.name)).toEqual(['y', 'x']);
    expect(orderPlugins([p('x', { afterIfPresent: ['nope'] })]).map((q) => q.name)).toEqual(['x']);
  });

  it('disables a plugin whose boot handler fails, and those that need it, and keeps booting', () => {
    const { kernel, journal } = bootWith([recorder('a', { failIn: Phase.BootEarly }), recorder('b', { after: ['a'] }), recorder('c')]);
    expect([...kernel.disabled.keys()]).toEqual(['a', 'b']);
    expect(kernel.disabled.get('a')).toBe('boot:early failed: ENOMEM: a could not allocate in boot:early');
    expect(journal).toEqual(['a:boot:early', 'c:boot:early', 'c:boot:late']);
    expect(kernel.log.filter('error').map((l) => l.message)).toContain("plugin 'b' disabled: it needs 'a', which is disabled");
  });
});

describe('live update', () => {
  it('a failing prepare cancels the plugins that prepared, in reverse order, and names the plugin', () => {
    const { kernel, journal } = bootWith([recorder('a'), recorder('b'), recorder('c', { failIn: Phase.Prepare }), recorder('d')]);
    journal.length = 0;
    expect(() => kernel.prepare()).toThrow("ENOMEM: live update prepare failed in plugin 'c': ENOMEM: c could not allocate in prepare");
    expect(journal).toEqual(['a:prepare', 'b:prepare', 'c:prepare', 'b:cancel', 'a:cancel']);
    expect(kernel.state).toBe('running');
  });

  it('a failing serialize cancels every plugin that prepared, in reverse order; no kexec happens', () => {
    const { machine, kernel, journal } = bootWith([recorder('a'), recorder('b', { failIn: Phase.Serialize }), recorder('c')]);
    journal.length = 0;
    expect(() => kernel.liveUpdate()).toThrow(/live update serialize failed in plugin 'b'/);
    expect(journal).toEqual(['a:prepare', 'b:prepare', 'c:prepare', 'a:serialize', 'b:serialize', 'c:cancel', 'b:cancel', 'a:cancel']);
    expect(machine.kernel).toBe(kernel);
    expect(kernel.state).toBe('running');
    kernel.prepare(); // a new attempt may start
    expect(kernel.state).toBe('prepared');
  });

  it('a cancel handler that throws is reported as a bug and the others still run', () => {
    const { kernel, journal } = bootWith([recorder('a'), recorder('b', { cancelThrows: true }), recorder('c', { failIn: Phase.Prepare })]);
    journal.length = 0;
    expect(() => kernel.prepare()).toThrow(KernelError);
    expect(journal.slice(-2)).toEqual(['b:cancel', 'a:cancel']);
    expect(kernel.log.filter('error').some((l) => l.message.startsWith("BUG: cancel failed in plugin 'b'"))).toBe(true);
  });

  it.each([
    ['serialize before prepare', (k: Kernel) => k.serialize(), "EBUSY: serialize: the live update is 'running' (wanted 'prepared')"],
    ['prepare twice', (k: Kernel) => (k.prepare(), k.prepare()), "EBUSY: prepare: the live update is 'prepared' (wanted 'running')"],
    ['kexec while prepared', (k: Kernel) => (k.prepare(), k.kexec()), "EBUSY: kexec: the live update is 'prepared' (wanted 'serialized', or no update at all)"],
    ['cancel with nothing to cancel', (k: Kernel) => k.cancel(), "EINVAL: cancel: no live update in progress (state is 'running')"],
  ])('refuses %s', (_what, act, message) => {
    const { kernel } = bootWith([recorder('a')]);
    expect(() => act(kernel)).toThrow(message);
  });

  it('a kexec at any moment jumps while prepared: only the kexec handlers run, nothing is cancelled', () => {
    const { machine, kernel, journal } = bootWith([recorder('a'), recorder('b')]);
    kernel.prepare();
    journal.length = 0;
    const next = machine.kexec(kernel, { anyMoment: true });
    expect(journal).toEqual(['a:kexec', 'b:kexec', 'a:boot:early', 'b:boot:early', 'a:boot:late', 'b:boot:late']);
    expect(kernel.isDead).toBe(true);
    expect(next.generation).toBe(2);
    // a dead kernel cannot jump, at any moment or not
    expect(() => kernel.leave(undefined, true)).toThrow("EBUSY: kexec: the live update is 'dead' (wanted 'serialized', or no update at all)");
  });

  it('restore reports per plugin and never throws', () => {
    const { kernel } = bootWith([recorder('a'), recorder('b', { failIn: Phase.Restore })]);
    const report = kernel.restore();
    expect(report.ok).toBe(false);
    expect(report.plugins).toEqual({
      a: { ok: true, report: { restored: 'a' } },
      b: { ok: false, error: 'ENOMEM: b could not allocate in restore' },
    });
  });
});

describe('kexec', () => {
  const SETUP_TEST = 99;

  @injectable()
  class Stash implements KernelPlugin {
    readonly name = 'stash';
    received: Uint8Array | undefined;
    seenAs: string | undefined;
    constructor(
      private readonly ram: FakeRam,
      private readonly next: NextBootParams,
      params: BootParams,
      readonly info: KernelInfo,
      readonly bus: MachineBus,
    ) {
      this.received = params.setupData(SETUP_TEST);
    }
    prepare(): void {
      this.seenAs = this.info.currentPlugin;
      this.ram.bytes[7] = 0xab;
      this.next.setSetupData(SETUP_TEST, Uint8Array.of(this.info.generation));
    }
  }
  const stashModule: KernelModule = {
    name: 'stash',
    register(c) {
      c.registerSingleton(Stash);
      c.register(KernelPlugin, { useToken: Stash });
    },
  };

  it('keeps RAM and boot parameters, and drops everything else of the old kernel', () => {
    const machine = new Machine().attach(FakeRam, new FakeRam());
    const k1 = machine.boot({ image: [stashModule], cmdline: 'quiet kho=on' });
    const oldStash = k1.get(Stash);
    expect(oldStash.received).toBeUndefined();

    k1.prepare();
    k1.serialize();
    const k2 = k1.kexec();

    expect(machine.kernel).toBe(k2);
    expect(k2.generation).toBe(2);
    expect(k2.cmdline.text).toBe('quiet kho=on');
    // RAM survived
    expect(machine.device(FakeRam).bytes[7]).toBe(0xab);
    // only the setup_data bytes crossed
    const newStash = k2.get(Stash);
    expect(newStash).not.toBe(oldStash);
    expect(newStash.received).toEqual(Uint8Array.of(1));
    expect(newStash.info.generation).toBe(2);
    // the bus is the machine's: the same for both kernels
    expect(newStash.bus).toBe(oldStash.bus);
    expect(newStash.bus).toBe(machine.bus);
    // the old kernel is gone: no container, no instances
    expect(k1.isDead).toBe(true);
    expect(() => k1.get(Stash)).toThrow('EINVAL: kernel generation 1 is gone (replaced by kexec or shut down)');
    expect(() => k1.prepare()).toThrow(KernelError);
    expect(() => k1.kexec()).toThrow('EINVAL: kexec: generation 1 is not the kernel running on this machine');
  });

  it('a kexec without an update carries no setup_data and may change the command line', () => {
    const machine = new Machine().attach(FakeRam, new FakeRam());
    const k2 = machine.boot({ image: [stashModule] }).kexec({ cmdline: 'kho=off' });
    expect(k2.get(Stash).received).toBeUndefined();
    expect(k2.cmdline.getBool('kho', true)).toBe(false);
  });

  it('names the plugin whose handler is running, and nobody outside handlers', () => {
    const machine = new Machine().attach(FakeRam, new FakeRam());
    const k = machine.boot({ image: [stashModule] });
    k.prepare();
    expect(k.get(Stash).seenAs).toBe('stash');
    expect(k.get(KernelInfo).currentPlugin).toBeUndefined();
  });

  it('a kernel handed over from an image keeps the generation the kexec named', () => {
    const m1 = new Machine().attach(FakeRam, new FakeRam());
    const params = m1.boot({ image: [stashModule] }).jump();
    const m2 = new Machine().attach(FakeRam, new FakeRam());
    expect(m2.bootFrom(params, { image: [stashModule], generation: 2 }).generation).toBe(2);
    expect(() => new Machine().bootFrom(params, { image: [], generation: 0 })).toThrow('EINVAL: boot: generation 0 (wanted a positive integer)');
  });
});

/** A module whose plugin is a plain object (handlers only where given). */
function bare(plugin: KernelPlugin): KernelModule {
  return { name: plugin.name, register: (c) => c.register(KernelPlugin, { useValue: plugin }) };
}

describe('Kernel details', () => {
  it('boots an image without plugins, logs what it boots and the command line only when there is one', () => {
    const m = new Machine();
    const k0 = m.boot({ image: [] });
    expect(k0.plugins).toEqual([]);
    expect(k0.log.filter('debug').map((l) => [l.subsystem, l.message])).toEqual([['kernel', 'booting generation 1: no plugins']]);
    const k1 = m.boot({ image: [bare({ name: 'a' }), bare({ name: 'b' })], cmdline: 'x=1' });
    expect(k1.log.filter('debug').map((l) => [l.subsystem, l.message])).toEqual([
      ['kernel', 'booting generation 2: a, b'],
      ['kernel', 'command line: x=1'],
    ]);
  });

  it('gives its plugins the boot\'s own command line, log and boot parameters; it is alive until disposed', () => {
    const k = new Machine().boot({ image: [], cmdline: 'kho=on' });
    expect(k.get(CommandLine)).toBe(k.cmdline);
    expect(k.get(CommandLine).text).toBe('kho=on');
    expect(k.get(KernelLog)).toBe(k.log);
    expect(k.get(BootParams)).toBe(k.bootParams);
    expect(k.isDead).toBe(false);
    expect(k.state).toBe('running');
  });

  it('times boot and phases from their own start (never negative, never longer than the call)', () => {
    const m = new Machine();
    const ms: number[] = [];
    m.bus.on('kernel:up', (e) => ms.push(e.ms));
    m.bus.on('phase:end', (e: PhaseEndEvent) => ms.push(e.ms));
    const t0 = performance.now();
    m.boot({ image: [bare({ name: 'a' })] }).prepare();
    const elapsed = performance.now() - t0;
    expect(ms.length).toBe(5); // three boot phases, kernel:up, prepare
    for (const v of ms) {
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(elapsed);
    }
  });

  it('runs every phase over plugins that have no handler for it', () => {
    const { kernel } = bootWith([bare({ name: 'quiet' })]);
    kernel.prepare();
    kernel.cancel();
    kernel.prepare();
    kernel.serialize();
    expect(kernel.restore()).toEqual({ phase: Phase.Restore, ok: true, plugins: { quiet: { ok: true } } });
    expect(kernel.finish()).toEqual({ phase: Phase.Finish, ok: true, plugins: { quiet: { ok: true } } });
  });

  it('finish reports per plugin, with what each returned', () => {
    const { kernel } = bootWith([
      bare({ name: 'a', finish: () => ({ freed: 3 }) }),
      bare({
        name: 'b',
        finish: () => {
          throw new RangeError('index 9');
        },
      }),
      bare({ name: 'c', finish: () => undefined }),
    ]);
    expect(kernel.finish()).toEqual({
      phase: Phase.Finish,
      ok: false,
      plugins: { a: { ok: true, report: { freed: 3 } }, b: { ok: false, error: 'RangeError: index 9' }, c: { ok: true } },
    });
    expect(kernel.log.filter('error', 'kernel').map((l) => l.message)).toEqual(["finish failed in plugin 'b': RangeError: index 9"]);
  });

  it.each(['prepared', 'serialized'])('cancels a %s update: cancel runs over every plugin, last first', (state) => {
    const { kernel, journal } = bootWith([recorder('a'), recorder('b')]);
    kernel.prepare();
    if (state === 'serialized') kernel.serialize();
    expect(kernel.state).toBe(state);
    journal.length = 0;
    kernel.cancel();
    expect(journal).toEqual(['b:cancel', 'a:cancel']);
    expect(kernel.state).toBe('running');
    expect(() => kernel.cancel()).toThrow("EINVAL: cancel: no live update in progress (state is 'running')");
  });

  it('a failed update step keeps the plugin error as the cause and logs it under the kernel', () => {
    const { kernel } = bootWith([recorder('a'), recorder('c', { failIn: Phase.Prepare })]);
    let err: unknown;
    try {
      kernel.prepare();
    } catch (e) {
      err = e;
    }
    expect((err as KernelError).errno).toBe(Errno.ENOMEM);
    expect((err as KernelError).cause).toEqual(new KernelError(Errno.ENOMEM, 'c could not allocate in prepare'));
    expect(kernel.log.filter('error', 'kernel').map((l) => l.message)).toEqual([
      "prepare failed in plugin 'c': ENOMEM: c could not allocate in prepare; cancelling the update",
    ]);
  });

  it.each<[string, unknown, string]>([
    ['an Error', new TypeError('x is undefined'), "EIO: live update prepare failed in plugin 'p': TypeError: x is undefined"],
    ['a string', 'nope', "EIO: live update prepare failed in plugin 'p': nope"],
  ])('a prepare that throws %s fails with EIO and says what was thrown', (_what, thrown, message) => {
    const { kernel } = bootWith([
      bare({
        name: 'p',
        prepare: () => {
          throw thrown;
        },
      }),
    ]);
    expect(() => kernel.prepare()).toThrow(message);
    expect(kernel.state).toBe('running');
  });

  it('reports a failing cancel as a kernel bug', () => {
    const { kernel } = bootWith([recorder('a', { cancelThrows: true }), recorder('b', { failIn: Phase.Prepare })]);
    expect(() => kernel.prepare()).toThrow(KernelError);
    expect(kernel.log.filter('error', 'kernel').map((l) => l.message)).toContain("BUG: cancel failed in plugin 'a': Error: cancel broke");
  });

  it('disables each dependant once, with the first reason found', () => {
    const m = new Machine();
    const disabled: PluginDisabledEvent[] = [];
    m.bus.on('plugin:disabled', (e) => disabled.push(e));
    m.attach(FakeRam, new FakeRam());
    const k = m.boot({
      image: [
        journalModule([]),
        recorder('a', { failIn: Phase.BootEarly }),
        recorder('b', { after: ['a'] }),
        recorder('c', { after: ['a'] }),
        recorder('d', { after: ['b', 'c'] }),
      ],
    });
    expect(disabled.map((e) => [e.plugin, e.reason])).toEqual([
      ['a', 'boot:early failed: ENOMEM: a could not allocate in boot:early'],
      ['b', "it needs 'a', which is disabled"],
      ['c', "it needs 'a', which is disabled"],
      ['d', "it needs 'b', which is disabled"],
    ]);
    expect(k.log.filter('error', 'kernel')).toHaveLength(4);
  });

  it('names what a boot handler threw that is not a KernelError', () => {
    const { kernel } = bootWith([
      bare({
        name: 'p',
        bootMm: () => {
          throw new RangeError('bad');
        },
      }),
      bare({
        name: 'q',
        bootLate: () => {
          throw 42;
        },
      }),
    ]);
    expect([...kernel.disabled]).toEqual([
      ['p', 'boot:mm failed: RangeError: bad'],
      ['q', 'boot:late failed: 42'],
    ]);
  });

  it('leaves only when running or serialized unless told any moment; disposing twice is harmless', () => {
    const m = new Machine();
    const downs: KernelDownEvent[] = [];
    m.bus.on('kernel:down', (e) => downs.push(e));
    const k = m.boot({ image: [] });
    k.prepare();
    expect(() => k.leave()).toThrow("EBUSY: kexec: the live update is 'prepared' (wanted 'serialized', or no update at all)");
    k.dispose();
    k.dispose('kexec');
    expect(downs).toEqual([{ generation: 1, why: 'shutdown' }]);
    expect(k.state).toBe('dead');
  });
});

describe('orderPlugins', () => {
  const p = (name: string, extra: Partial<KernelPlugin> = {}): KernelPlugin => ({ name, ...extra });

  it('refuses two plugins of one name', () => {
    expect(() => orderPlugins([p('x'), p('y'), p('x')])).toThrow("EEXIST: two plugins are named 'x'");
  });

  it('names only the plugins on a cycle', () => {
    // entered from 'a', which is not on it
    expect(() => orderPlugins([p('a', { after: ['b'] }), p('b', { after: ['c'] }), p('c', { after: ['b'] })])).toThrow('EINVAL: plugin dependency cycle: b -> c -> b');
  });
});

describe('constructionError', () => {
  it('returns a KernelError itself, or the one in a chain of causes', () => {
    const ke = new KernelError(Errno.ENOSPC, 'full');
    expect(constructionError(ke)).toBe(ke);
    expect(constructionError(new Error('wrapper', { cause: ke }))).toBe(ke);
  });

  it('rebuilds a KernelError from the text a container wrapped it in, keeping the wrapper as the cause', () => {
    const wrapper = new Error('Cannot inject the dependency at position #0 of "Kho" constructor. Reason:\n    EINVAL: bad scratch\n    size 0');
    const e = constructionError(wrapper) as KernelError;
    expect(e).toBeInstanceOf(KernelError);
    expect([e.errno, e.reason, e.cause]).toEqual([Errno.EINVAL, 'bad scratch size 0', wrapper]);
    // the last Reason: counts
    const nested = constructionError(new Error('A. Reason: EIO: outer. Reason:\n  ENOENT: inner')) as KernelError;
    expect([nested.errno, nested.reason]).toEqual([Errno.ENOENT, 'inner']);
    const first = constructionError(new Error('Reason: EBUSY: at the start')) as KernelError;
    expect([first.errno, first.reason]).toEqual([Errno.EBUSY, 'at the start']);
  });

  it.each<[string, unknown]>([
    ['a string', 'text'],
    ['null', null],
    ['an Error without Reason:', new Error('Error EINVAL: not from a container')],
    ['a Reason: that is not an errno', new Error('x. Reason: out of luck')],
    ['a Reason: with an errno inside, not at its start', new Error('x. Reason: see EINVAL: no')],
    ['an unknown errno name', new Error('x. Reason: EFOO: what')],
  ])('returns %s as it is', (_what, e) => {
    expect(constructionError(e)).toBe(e);
  });
});
