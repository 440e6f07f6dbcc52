import type { KernelBootEvent, KernelDownEvent } from './bus';
import { Errno, KernelError } from './errno';
import { Machine } from './machine';

const RAM = Symbol('RAM');

function errorOf(act: () => unknown): KernelError {
  try {
    act();
  } catch (e) {
    if (e instanceof KernelError) return e;
    throw e;
  }
  throw new Error('expected a KernelError, nothing was thrown');
}

describe('Machine', () => {
  it('attaches each device once and hands it out; a missing or second one is refused', () => {
    const ram = new Uint8Array(8);
    const m = new Machine().attach(RAM, ram);
    expect(m.device(RAM)).toBe(ram);
    const twice = errorOf(() => m.attach(RAM, new Uint8Array(8)));
    expect([twice.errno, twice.message]).toEqual([Errno.EEXIST, 'EEXIST: a device is already attached as Symbol(RAM)']);
    expect(m.device(RAM)).toBe(ram);
    const missing = errorOf(() => m.device(Symbol('disk')));
    expect([missing.errno, missing.message]).toEqual([Errno.ENOENT, 'ENOENT: no device attached as Symbol(disk)']);
  });

  it('counts generations from 0; a cold boot without a command line has an empty one, and shuts the last kernel down', () => {
    const m = new Machine();
    const downs: KernelDownEvent[] = [];
    m.bus.on('kernel:down', (e) => downs.push(e));
    expect(m.generation).toBe(0);
    expect(m.kernel).toBeUndefined();
    const k1 = m.boot({ image: [] });
    expect(k1.bootParams.cmdline).toBe('');
    expect(k1.cmdline.text).toBe('');
    expect(m.generation).toBe(1);
    const k2 = m.boot({ image: [] });
    expect(k1.isDead).toBe(true);
    expect(m.kernel).toBe(k2);
    expect(m.generation).toBe(2);
    expect(downs).toEqual([{ generation: 1, why: 'shutdown' }]);
  });

  it('lands a handover on a halted machine: next generation by default, or the one given (1 included)', () => {
    const m = new Machine();
    const boots: KernelBootEvent[] = [];
    m.bus.on('kernel:boot', (e) => boots.push(e));
    const params = m.boot({ image: [], cmdline: 'a=1' }).jump();
    expect(m.kernel).toBeUndefined();
    const k2 = m.bootFrom(params, { image: [] });
    expect(k2.generation).toBe(2);
    expect(boots.map((b) => [b.generation, b.kind, b.cmdline])).toEqual([
      [1, 'cold', 'a=1'],
      [2, 'handover', 'a=1'],
    ]);
    const other = new Machine();
    expect(other.bootFrom(params, { image: [], generation: 1 }).generation).toBe(1);
  });

  it('refuses to land on a machine with a kernel running, and leaves its generation alone', () => {
    const m = new Machine();
    const k = m.boot({ image: [] });
    const params = k.jump();
    m.bootFrom(params, { image: [] });
    const busy = errorOf(() => m.bootFrom(params, { image: [], generation: 7 }));
    expect([busy.errno, busy.message]).toEqual([Errno.EBUSY, 'EBUSY: a kernel is still running on this machine']);
    expect(m.generation).toBe(2);
    expect(m.kernel?.generation).toBe(2);
  });

  it.each([0, -1, 1.5, Number.NaN])('refuses to land generation %p', (generation) => {
    const params = new Machine().boot({ image: [] }).jump();
    expect(() => new Machine().bootFrom(params, { image: [], generation })).toThrow(`EINVAL: boot: generation ${generation} (wanted a positive integer)`);
  });
});
