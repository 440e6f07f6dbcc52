import { KernelBug } from '../errno';
import { betterOf, defineBench, nativeReference, registeredBenches, runNative, seededRandom, timeNs, type BenchDefinition } from './index';

const run = (): { value: number; unit: string } => ({ value: 1, unit: 'ns' });

describe('defineBench', () => {
  it('registers definitions in order and returns each', () => {
    const a = defineBench({ name: 'spec-a/first', run });
    const b = defineBench({ name: 'spec-a/sub/second.v2', target: '<= 5 ns', targets: [{ max: 5 }], run });
    expect(registeredBenches().slice(-2)).toEqual([a, b]);
    expect(a.name).toBe('spec-a/first');
  });

  it.each<[string, Partial<BenchDefinition>, string]>([
    ['no package', { name: 'plain' }, "benchmark name 'plain' is not '<package>/<name>'"],
    ['upper case', { name: 'Spec/x' }, "benchmark name 'Spec/x' is not '<package>/<name>'"],
    ['an empty name part', { name: 'spec-b/' }, "benchmark name 'spec-b/' is not '<package>/<name>'"],
    ['a trailing space', { name: 'spec-b/x ' }, "benchmark name 'spec-b/x ' is not '<package>/<name>'"],
    ['a leading slash', { name: '/spec-b/x' }, "benchmark name '/spec-b/x' is not '<package>/<name>'"],
    ['a target without checks', { name: 'spec-b/t', target: 'fast' }, "benchmark 'spec-b/t' has a target but no targets to check it by"],
    ['a target with no checks in its list', { name: 'spec-b/t', target: 'fast', targets: [] }, "benchmark 'spec-b/t' has a target but no targets to check it by"],
    ['a check without max or min', { name: 'spec-b/t', target: 'fast', targets: [{ max: 1 }, { field: 'ratio' }] }, "benchmark 'spec-b/t': a target needs max or min"],
  ])('refuses %s as a bug in the bench file', (_what, def, message) => {
    const before = registeredBenches().length;
    expect(() => defineBench({ run, ...def } as BenchDefinition)).toThrow(KernelBug);
    expect(() => defineBench({ run, ...def } as BenchDefinition)).toThrow(message);
    expect(registeredBenches()).toHaveLength(before);
  });

  it('refuses a name defined twice', () => {
    defineBench({ name: 'spec-c/once', run });
    expect(() => defineBench({ name: 'spec-c/once', run })).toThrow("benchmark 'spec-c/once' is defined twice");
  });

  it('accepts checks on min only, or on another field', () => {
    expect(() => defineBench({ name: 'spec-d/min', target: 'x', targets: [{ min: 2 }, { field: 'ratio', max: 3 }], run })).not.toThrow();
  });
});

describe('betterOf', () => {
  it.each<[string, Partial<BenchDefinition>, 'lower' | 'higher' | undefined]>([
    ['its own better', { better: 'higher', targets: [{ max: 1 }] }, 'higher'],
    ['a max on value', { targets: [{ max: 1 }] }, 'lower'],
    ['a min on value', { targets: [{ min: 1 }] }, 'higher'],
    ['the first check on value', { targets: [{ field: 'ratio', max: 2 }, { field: 'value', min: 1 }] }, 'higher'],
    ['checks on other fields only', { targets: [{ field: 'ratio', max: 2 }] }, undefined],
    ['no targets', {}, undefined],
  ])('from %s', (_what, def, want) => {
    expect(betterOf({ name: 'x/y', run, ...def })).toBe(want);
  });
});

describe('timeNs', () => {
  it('runs at least once and divides the time by the units of work done', () => {
    let calls = 0;
    const r = timeNs(() => (calls++, 8), 0);
    expect(calls).toBe(1);
    expect(r.ops).toBe(8);
    expect(r.ms).toBeGreaterThanOrEqual(0);
    expect(r.nsPerOp).toBe((r.ms * 1e6) / 8);
  });

  it('repeats until the minimum time has passed', () => {
    let calls = 0;
    const t0 = performance.now();
    const r = timeNs(() => (calls++, 1), 2);
    expect(r.ms).toBeGreaterThanOrEqual(2);
    expect(r.ms).toBeLessThanOrEqual(performance.now() - t0);
    expect(r.ops).toBe(calls);
  });
});

describe('seededRandom', () => {
  it('gives the same floats in [0, 1) for the same seed, and other ones for another seed', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const c = seededRandom(43);
    let same = 0;
    let sum = 0;
    for (let i = 0; i < 1000; i++) {
      const x = a();
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
      expect(b()).toBe(x);
      if (c() === x) same++;
      sum += x;
    }
    expect(same).toBe(0);
    expect(sum / 1000).toBeGreaterThan(0.4);
    expect(sum / 1000).toBeLessThan(0.6);
  });

  // Pinned from the published mulberry32 (written out independently): benchmark inputs depend on this sequence.
  it.each([
    [0, [0x4434b462, 0x00159c37, 0x39285b08]],
    [42, [0x99e1ef7c, 0x72c32b8a, 0xda3b32c0]],
  ])('is mulberry32: the pinned first draws for seed %d', (seed, words) => {
    const r = seededRandom(seed);
    expect([r(), r(), r()].map((x) => x * 2 ** 32)).toEqual(words);
  });

  it('takes the seed as an unsigned 32-bit integer', () => {
    expect(seededRandom(-1)()).toBe(seededRandom(0xffffffff)());
  });
});

describe('native references', () => {
  it('says why a reference that is not in the checkout cannot run, without calling gcc, and remembers it', () => {
    const e = nativeReference('no_such_ref');
    expect(e).toBeInstanceOf(Error);
    expect((e as Error).message).toBe('no tools/native/no_such_ref.c in this checkout');
    expect(nativeReference('no_such_ref')).toBe(e);
    expect(runNative('no_such_ref', [])).toEqual({ ok: false, reason: 'no tools/native/no_such_ref.c in this checkout' });
  });
});
