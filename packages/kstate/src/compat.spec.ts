import { Errno, KernelError } from '@kho/kernel';
import { compat } from './compat';
import { array, custom, describeState, folio, str, struct, u16, u32, u64, type Description } from './model';
import { schemaOf, type SchemaSnapshot } from './schema';

const Stats = describeState({ name: 'foo-stats', version: 1, fields: [u32('hits')] });
const V1 = describeState({ name: 'foo', version: 1, fields: [u32('count'), str('label', 16)] });
const V2 = describeState({
  name: 'foo',
  version: 2,
  minVersion: 1,
  oldestReader: 1,
  fields: [u32('count'), str('label', 16), u64('addr', { since: 2 })],
  subsections: [{ desc: Stats }],
});
const V2Strict = describeState({ name: 'foo', version: 2, minVersion: 1, fields: [u32('count'), str('label', 16), u64('addr', { since: 2 })] });
const V3 = describeState({
  name: 'foo',
  version: 3,
  minVersion: 1,
  fields: [u32('count'), str('label', 16, { until: 3 }), u64('addr', { since: 2 }), str('name', 16, { since: 3 })],
  upgrade: { 2: (v) => v },
});
const V4 = describeState({ name: 'foo', version: 4, minVersion: 3, fields: [u32('count'), u64('addr'), str('name', 16)] });

describe('compat', () => {
  it.each<[string, Description, Description, boolean, boolean, string[], string[]]>([
    [
      'v1 and v2 (v2 declares v1 readers can read it)',
      V1,
      V2,
      true,
      true,
      [],
      [
        "new reads old: field 'addr' is defaulted (since version 2)",
        "old reads new: field 'addr' (u64) is skipped",
        "old reads new: subsection 'foo-stats' is skipped when written",
      ],
    ],
    [
      'v1 and a strict v2',
      V1,
      V2Strict,
      true,
      false,
      ["old reads new: 'foo' data is version 2, which needs readers of version 2 or later; the code is version 1"],
      ["new reads old: field 'addr' is defaulted (since version 2)"],
    ],
    [
      'v2 and v3 (a deprecated field, an upgrade step)',
      V2,
      V3,
      true,
      false,
      ["old reads new: 'foo' data is version 3, which needs readers of version 3 or later; the code is version 2"],
      [
        "new reads old: 'foo' upgrade steps 2->3 run (fields are compared as written)",
        "new reads old: field 'label' is dropped (deprecated from version 3)",
        "new reads old: field 'name' is defaulted (since version 3)",
        "new reads old: subsection 'foo-stats' is skipped when written",
      ],
    ],
    [
      'v2 and v4 (minVersion 3)',
      V2,
      V4,
      false,
      false,
      ["new reads old: 'foo' data is version 2, the code reads versions 3..4", "old reads new: 'foo' data is version 4, which needs readers of version 4 or later; the code is version 2"],
      [],
    ],
  ])('%s', (_what, older, newer, newReadsOld, oldReadsNew, reasons, notes) => {
    expect(compat(older, newer)).toEqual({ newReadsOld, oldReadsNew, reasons, notes });
  });

  it.each<[string, Description, Description, string[]]>([
    [
      'a field widened from u32 to u64 cannot be read back by the old code',
      describeState({ name: 'w', version: 1, fields: [u32('n')] }),
      describeState({ name: 'w', version: 2, minVersion: 1, oldestReader: 1, fields: [u64('n')] }),
      ["old reads new: field 'n' is u64 in the data and u32 in the code, which does not hold every value"],
    ],
    [
      'a string shortened',
      describeState({ name: 'w', version: 1, fields: [str('s', 16)] }),
      describeState({ name: 'w', version: 2, minVersion: 1, oldestReader: 1, fields: [str('s', 8)] }),
      ["new reads old: field 's' is str[16] in the data and str[8] in the code, which does not hold every value"],
    ],
    [
      'a field that changed kind',
      describeState({ name: 'w', version: 1, fields: [u32('x')] }),
      describeState({ name: 'w', version: 2, minVersion: 1, oldestReader: 1, fields: [folio('x')] }),
      ["new reads old: field 'x' is u32 in the data and folio in the code", "old reads new: field 'x' is folio in the data and u32 in the code"],
    ],
    [
      'a nested description that changed, seen through an array',
      describeState({ name: 'w', version: 1, fields: [array('xs', describeState({ name: 'item', version: 1, fields: [u16('v')] }))] }),
      describeState({ name: 'w', version: 1, fields: [array('xs', describeState({ name: 'item', version: 2, fields: [u16('v'), u16('k', { since: 2 })] }))] }),
      ["new reads old: 'item' (xs[]) data is version 1, the code reads versions 2..2", "old reads new: 'item' (xs[]) data is version 2, which needs readers of version 2 or later; the code is version 1"],
    ],
    [
      'a struct that points at another description',
      describeState({ name: 'w', version: 1, fields: [struct('s', describeState({ name: 'a', version: 1, fields: [] }))] }),
      describeState({ name: 'w', version: 1, fields: [struct('s', describeState({ name: 'b', version: 1, fields: [] }))] }),
      ["new reads old: field 's' is struct 'a' in the data and struct 'b' in the code", "old reads new: field 's' is struct 'b' in the data and struct 'a' in the code"],
    ],
  ])('%s', (_what, older, newer, reasons) => {
    expect(compat(older, newer).reasons).toEqual(reasons);
  });

  it('works the same on JSON snapshots as on live descriptions, and is deterministic', () => {
    const old = JSON.parse(JSON.stringify(schemaOf(V2))) as SchemaSnapshot;
    const now = JSON.parse(JSON.stringify(schemaOf(V3))) as SchemaSnapshot;
    expect(compat(old, now)).toEqual(compat(V2, V3));
    expect(compat(old, V3)).toEqual(compat(old, now));
    expect(compat(V2, V3)).toEqual(compat(V2, V3));
  });

  it('notes custom fields: their compatibility is up to their callbacks', () => {
    const c = custom('c', { save: () => undefined, restore: () => undefined });
    const r = compat(describeState({ name: 'c', version: 1, fields: [c] }), describeState({ name: 'c', version: 1, fields: [c] }));
    expect(r).toMatchObject({ newReadsOld: true, oldReadsNew: true });
    expect(r.notes).toEqual(["new reads old: field 'c' is custom: its compatibility is up to its callbacks", "old reads new: field 'c' is custom: its compatibility is up to its callbacks"]);
  });

  it('says when two descriptions are not versions of one another', () => {
    const r = compat(V1, describeState({ name: 'bar', version: 1, fields: [] }));
    expect(r.reasons).toEqual(["new reads old: the descriptions have different ids ('foo' and 'bar')", "old reads new: the descriptions have different ids ('bar' and 'foo')"]);
  });

  it.each<[string, unknown, string]>([
    ['not a snapshot', { format: 2, descriptions: [] }, 'kstate: compat: the older schema is not a schema snapshot of format 1'],
    ['a snapshot missing its root', { format: 1, root: 'x', descriptions: [] }, "kstate: compat: the older schema does not describe its root 'x'"],
    [
      'a snapshot with an unknown kind',
      { format: 1, root: 'x', descriptions: [{ id: 'x', name: 'x', version: 1, minVersion: 1, oldestReader: 1, fields: [{ name: 'a', kind: 'u128', size: 16 }], subsections: [] }] },
      'kstate: compat: the older schema: schema \'x\': field \'a\': kind "u128" is unknown',
    ],
  ])('refuses %s', (_what, snap, message) => {
    expect(() => compat(snap as SchemaSnapshot, V1)).toThrow(KernelError);
    try {
      compat(snap as SchemaSnapshot, V1);
    } catch (e) {
      expect((e as KernelError).errno).toBe(Errno.EINVAL);
      expect((e as KernelError).message).toBe(`EINVAL: ${message}`);
    }
  });
});
