import { Errno, KernelError } from '@kho/kernel';
import { array, bool, bytes, custom, describeState, folio, instanceIdOf, physRange, ptr, str, struct, u16, u32, u64, u8, vmallocBuf } from './model';

const Item = describeState({ name: 'item', version: 1, fields: [u32('x')] });
const Other = describeState({ name: 'other', id: 'item', version: 1, fields: [u8('y')] });
const Extra = describeState({ name: 'extra', version: 1, fields: [u16('flags')] });

function thrown(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KernelError);
    return e as KernelError;
  }
  throw new Error('expected a KernelError');
}

describe('describe', () => {
  it('freezes a description: defaults, written fields, reachable descriptions', () => {
    const d = describeState({
      name: 'foo',
      version: 3,
      minVersion: 1,
      fields: [u32('count'), u64('addr', { since: 2 }), u8('old', { until: 3 }), struct('item', Item), array('items', Item)],
      subsections: [{ desc: Extra }],
      upgrade: { 1: (v) => v, 2: (v) => v },
    });
    expect(d.id).toBe('foo');
    expect(d.oldestReader).toBe(3);
    expect(d.written.map((f) => f.name)).toEqual(['count', 'addr', 'item', 'items']);
    expect(d.reachable.map((x) => x.name)).toEqual(['foo', 'item', 'extra']);
    expect([...d.upgrade.keys()]).toEqual([1, 2]);
    expect(Object.isFrozen(d)).toBe(true);
    expect(describeState({ name: 'bar', version: 2, fields: [] }).minVersion).toBe(2);
  });

  it.each<[string, () => unknown, string]>([
    ['an empty name', () => describeState({ name: '', version: 1, fields: [] }), 'kstate: description name "" (wanted 1..255 bytes of UTF-8)'],
    ['version 0', () => describeState({ name: 'a', version: 0, fields: [] }), "kstate: describe('a'): version 0 (wanted an integer in 1..65535)"],
    ['version 65536', () => describeState({ name: 'a', version: 65536, fields: [] }), "kstate: describe('a'): version 65536 (wanted an integer in 1..65535)"],
    ['minVersion above version', () => describeState({ name: 'a', version: 2, minVersion: 3, fields: [] }), "kstate: describe('a'): minVersion 3 is above version 2"],
    ['oldestReader above version', () => describeState({ name: 'a', version: 2, oldestReader: 3, fields: [] }), "kstate: describe('a'): oldestReader 3 is above version 2"],
    ['a negative id', () => describeState({ name: 'a', id: -1, version: 1, fields: [] }), "kstate: describe('a'): id -1 (wanted a non-negative safe integer or a string)"],
    ['a field twice', () => describeState<{ x: number }>({ name: 'a', version: 1, fields: [u32('x'), u8('x')] }), "kstate: describe('a'): field 'x' is listed twice"],
    ['since above version', () => describeState<{ x: number }>({ name: 'a', version: 1, fields: [u32('x', { since: 2 })] }), "kstate: describe('a'): field 'x': since 2 is above version 1"],
    [
      'until above version',
      () => describeState<{ x: number }>({ name: 'a', version: 2, fields: [u32('x', { until: 3 })] }),
      "kstate: describe('a'): field 'x': until 3 is above version 2 (a field is deprecated from a version that exists)",
    ],
    ['since equal to until', () => u32('x', { since: 2, until: 2 }), "kstate: field 'x': since 2 is not below until 2 (it would exist in no version)"],
    ['since above until', () => u32('x', { since: 3, until: 2 }), "kstate: field 'x': since 3 is not below until 2 (it would exist in no version)"],
    ['str of 0 bytes', () => str('s', 0), "kstate: field 's': size 0 (wanted 1..65535)"],
    ['bytes of 70000', () => bytes('b', 70000), "kstate: field 'b': size 70000 (wanted 1..65535)"],
    ['a struct without a description', () => struct('s', {} as never), "kstate: field 's' needs a description made by describe()"],
    ['an array of an unknown kind', () => array('a', 'u128' as never), "kstate: array 'a': element kind 'u128' is not a scalar kind or a description"],
    ['a custom field without restore', () => custom('c', { save: () => undefined } as never), "kstate: custom field 'c' needs save and restore functions"],
    [
      'an upgrade step outside the window',
      () => describeState({ name: 'a', version: 3, minVersion: 2, fields: [], upgrade: { 1: (v) => v } }),
      "kstate: describe('a'): upgrade step 1 is outside 2..2 (step v turns version v into v + 1)",
    ],
    [
      'a subsection with the parent id',
      () => describeState({ name: 'extra', version: 1, fields: [], subsections: [{ desc: Extra }] }),
      "kstate: describe('extra'): subsection id 'extra' is used twice or equals the description's id",
    ],
    [
      'a subsection field named like a parent field',
      () => describeState<{ flags: number }>({ name: 'a', version: 1, fields: [u16('flags')], subsections: [{ desc: Extra }] }),
      "kstate: describe('a'): subsection 'extra' field 'flags' has the name of another field of the same object",
    ],
    [
      'two descriptions with one id below it',
      () => describeState<{ a: unknown; b: unknown }>({ name: 'p', version: 1, fields: [struct('a', Item), ptr('b', Other)] }),
      "kstate: describe('p'): descriptions 'item' and 'other' share id 'item'",
    ],
  ])('refuses %s', (_what, fn, message) => {
    const e = thrown(fn);
    expect(e.errno).toBe(Errno.EINVAL);
    expect(e.message).toBe(`EINVAL: ${message}`);
  });

  it('refuses descriptions nested deeper than 33 levels (what a reader decodes)', () => {
    let d = describeState({ name: 'd0', version: 1, fields: [] });
    for (let i = 1; i < 33; i++) d = describeState({ name: `d${i}`, version: 1, fields: [ptr('p', d)] });
    expect(() => describeState({ name: 'd33', version: 1, fields: [ptr('p', d)] })).toThrow("EINVAL: kstate: describe('d33'): descriptions nest 34 levels deep (at most 33)");
  });

  it('builds every field kind with its size', () => {
    const fields = [u8('a'), u64('b'), bool('c'), str('d', 16), bytes('e', 3), folio('f'), vmallocBuf('g'), physRange('h'), array('i', 'u16'), array('j', Item)];
    expect(fields.map((f) => [f.kind, f.size])).toEqual([
      ['u8', 1],
      ['u64', 8],
      ['bool', 1],
      ['str', 16],
      ['bytes', 3],
      ['folio', 16],
      ['vmalloc', 16],
      ['physRange', 16],
      ['array', 2],
      ['array', 0],
    ]);
  });
});

describe('instanceIdOf', () => {
  it('is the CRC32C of the name and keeps the name', () => {
    expect(instanceIdOf('123456789')).toEqual({ hash: 0xe3069283, name: '123456789' });
    // A known collision (used by the registration test): two names, one hash.
    expect(instanceIdOf('region1371838').hash).toBe(instanceIdOf('region2000402').hash);
  });

  it.each(['', 'x'.repeat(256)])('refuses the name %j', (name) => {
    expect(() => instanceIdOf(name)).toThrow(/^EINVAL: kstate: instance name ".*" \(wanted 1\.\.255 bytes of UTF-8\)$/);
  });
});
