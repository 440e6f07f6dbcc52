import { Errno, KernelError } from '@kho/kernel';
import { array, describeState, str, struct, u32, u64, type Description } from './model';
import { BareMachine, type BareKernel } from './testing';

/**
 * Versioning is shown, not claimed: each test saves with one version of a description in one bare kernel and
 * restores with another in the next.
 */

interface FooObj {
  count: number;
  label: string;
  addr: bigint;
  name: string;
  hits: number;
}

const FooStats = describeState<FooObj>({ name: 'foo-stats', version: 1, fields: [u32('hits')] });

const FooV1 = describeState<FooObj>({ name: 'foo', version: 1, fields: [u32('count'), str('label', 16)] });

/** v2 adds a field and a subsection that v1 code may skip, so it declares v1 readers can read it. */
const FooV2 = describeState<FooObj>({
  name: 'foo',
  version: 2,
  minVersion: 1,
  oldestReader: 1,
  fields: [u32('count'), str('label', 16), u64('addr', { since: 2 })],
  subsections: [{ desc: FooStats, needed: (o) => o.hits > 0 }],
});

/** v2 as a strict writer: older code must refuse its data. */
const FooV2Strict = describeState<FooObj>({ name: 'foo', version: 2, minVersion: 1, fields: [u32('count'), str('label', 16), u64('addr', { since: 2 })] });

/** v3 deprecates `label` (read from old data and dropped) in favour of `name`, with explicit upgrade steps. */
const FooV3 = describeState<FooObj>({
  name: 'foo',
  version: 3,
  minVersion: 1,
  fields: [u32('count'), str('label', 16, { until: 3 }), u64('addr', { since: 2 }), str('name', 16, { since: 3 })],
  subsections: [{ desc: FooStats, needed: (o) => o.hits > 0 }],
  upgrade: {
    1: (v) => ({ ...v, addr: BigInt(v.count as number) * 4096n }),
    2: (v) => ({ ...v, name: (v.label as string).toUpperCase() }),
  },
});

/** v4 no longer reads data older than version 3. */
const FooV4 = describeState<FooObj>({
  name: 'foo',
  version: 4,
  minVersion: 3,
  fields: [u32('count'), str('label', 16, { until: 3 }), u64('addr', { since: 2 }), str('name', 16, { since: 3 })],
});

function fresh(): FooObj {
  return { count: 0, label: '', addr: 42n, name: 'default', hits: 0 };
}

/** Saves `obj` with `writer` in one bare kernel, kexecs, and returns the next kernel. */
function handover(writer: Description<FooObj>, obj: Partial<FooObj>): BareKernel {
  const k1 = new BareMachine({ mem: 16 * 2 ** 20 }).boot();
  k1.kstate.register(writer, 'only', { ...fresh(), ...obj });
  k1.kstate.save();
  return k1.kexec();
}

describe('versions', () => {
  it('v1 data read by v2 code: the new field keeps its default and is reported defaulted', () => {
    const k2 = handover(FooV1, { count: 7, label: 'seven' });
    const target = fresh();
    const r = k2.kstate.restore(FooV2, 'only', target);
    expect(r.object).toBe(target);
    expect(target).toEqual({ count: 7, label: 'seven', addr: 42n, name: 'default', hits: 0 });
    expect(r.version).toEqual({ data: 1, code: 2 });
    expect(r.restored).toEqual(['count', 'label']);
    expect(r.defaulted).toEqual(['addr']);
    expect(r.skippedFields).toEqual([]);
    expect(r.skippedSubsections).toEqual([]);
  });

  it('v2 data read by v1 code: the unknown field and the unknown subsection are skipped and reported', () => {
    const k2 = handover(FooV2, { count: 3, label: 'three', addr: 0x1000n, hits: 9 });
    const r = k2.kstate.restore(FooV1, 'only');
    expect(r.object).toEqual({ count: 3, label: 'three' });
    expect(r.version).toEqual({ data: 2, code: 1 });
    expect(r.restored).toEqual(['count', 'label']);
    expect(r.skippedFields).toEqual(['addr']);
    expect(r.skippedSubsections).toEqual(['foo-stats']);
  });

  it('v2 data read by v2 code restores the subsection into the same object; needed() false writes none', () => {
    const k2 = handover(FooV2, { count: 3, label: 'x', addr: 5n, hits: 9 });
    expect(k2.kstate.restore(FooV2, 'only').object).toEqual({ count: 3, label: 'x', addr: 5n, hits: 9 });
    const k3 = handover(FooV2, { count: 3, label: 'x', addr: 5n, hits: 0 });
    const r = k3.kstate.restore(FooV2, 'only', fresh());
    expect(r.restored).toEqual(['count', 'label', 'addr']);
    expect(r.object.hits).toBe(0);
  });

  it('v2 data from a strict writer is refused by v1 code, naming the description and both versions', () => {
    const k2 = handover(FooV2Strict, { count: 1 });
    expect(() => k2.kstate.restore(FooV1, 'only')).toThrow(
      new KernelError(Errno.EINVAL, "kstate: 'foo' data is version 2, this code reads versions 1..1 (its writer needs readers of version 2 or later)"),
    );
  });

  it('a deprecated field is read from old data and dropped, and never written again', () => {
    const k2 = handover(FooV2, { count: 2, label: 'two', addr: 8n });
    const r = k2.kstate.restore(FooV3, 'only', fresh());
    expect(r.dropped).toEqual(['label']);
    expect(r.object.label).toBe('');
    expect(r.restored).toEqual(['count', 'addr', 'name']);
    // v3 writes count, addr, name; label is in its schema as deprecated, but not in the data.
    k2.kstate.register(FooV3, 'again', { ...fresh(), label: 'ignored', name: 'N' });
    k2.kstate.save();
    const k3 = k2.kexec();
    const section = k3.kstate.incoming()!.sections.find((s) => s.instance === 'again')!;
    expect(Object.keys(k3.kstate.incoming()!.decode(section).values)).toEqual(['count', 'addr', 'name']);
    expect(section.schema.fields.find((f) => f.name === 'label')).toEqual({ name: 'label', kind: 'str', size: 16, until: 3 });
  });

  it('upgrade steps run in order from the data version to the code version', () => {
    const k2 = handover(FooV1, { count: 3, label: 'abc' });
    const r = k2.kstate.restore(FooV3, 'only', fresh());
    expect(r.upgrades).toEqual(["'foo' 1->2", "'foo' 2->3"]);
    expect(r.object).toEqual({ count: 3, label: '', addr: 3n * 4096n, name: 'ABC', hits: 0 });
    expect(r.restored).toEqual(['count', 'addr', 'name']);
    expect(r.dropped).toEqual(['label']);
    expect(r.defaulted).toEqual([]);
  });

  it('only the steps between the data version and the code version run', () => {
    const k2 = handover(FooV2, { count: 3, label: 'abc', addr: 77n });
    const r = k2.kstate.restore(FooV3, 'only', fresh());
    expect(r.upgrades).toEqual(["'foo' 2->3"]);
    expect(r.object.addr).toBe(77n);
  });

  it.each<[string, Description<FooObj>, Description<FooObj>, string]>([
    ['v1 data, code reading 3..4', FooV1, FooV4, "kstate: 'foo' data is version 1, this code reads versions 3..4"],
    ['v2 data, code reading 3..4', FooV2, FooV4, "kstate: 'foo' data is version 2, this code reads versions 3..4"],
    ['v3 data, strict v2 code', FooV3, FooV2Strict, "kstate: 'foo' data is version 3, this code reads versions 1..2 (its writer needs readers of version 3 or later)"],
  ])('data outside the window is refused: %s', (_what, writer, reader, message) => {
    const k2 = handover(writer, { count: 1, label: 'x', name: 'y' });
    let err: unknown;
    try {
      k2.kstate.restore(reader, 'only');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).errno).toBe(Errno.EINVAL);
    expect((err as KernelError).message).toBe(`EINVAL: ${message}`);
    // A refused restore leaves the section for finish to report.
    expect(k2.kstate.finish()).toMatchObject({ restored: 0, unrestored: [{ name: 'foo', instance: "'only'", failed: `EINVAL: ${message}` }] });
  });

  it('an upgrade step that throws or returns no object is reported as an error of that step', () => {
    const Bad = describeState<FooObj>({
      name: 'foo',
      version: 2,
      minVersion: 1,
      fields: [u32('count'), str('label', 16)],
      upgrade: { 1: () => null as never },
    });
    const Throws = describeState<FooObj>({
      name: 'foo',
      version: 2,
      minVersion: 1,
      fields: [u32('count'), str('label', 16)],
      upgrade: {
        1: () => {
          throw new Error('no');
        },
      },
    });
    const k2 = handover(FooV1, { count: 1 });
    expect(() => k2.kstate.restore(Bad, 'only')).toThrow("EINVAL: kstate: 'foo' instance 'only': upgrade step 1->2 of 'foo' returned null (wanted an object of values)");
    expect(() => k2.kstate.restore(Throws, 'only')).toThrow("EINVAL: kstate: 'foo' instance 'only': upgrade step 1->2 of 'foo' failed: no");
  });
});

describe('nested descriptions carry their own versions', () => {
  interface Item {
    x: number;
    y?: number;
  }
  interface Box {
    one: Item;
    many: Item[];
  }
  const ItemV1 = describeState<Item>({ name: 'item', version: 1, fields: [u32('x')] });
  const ItemV2 = describeState<Item>({ name: 'item', version: 2, minVersion: 1, fields: [u32('x'), u32('y', { since: 2 })], create: () => ({ x: 0, y: 5 }) });
  const ItemV3 = describeState<Item>({ name: 'item', version: 3, minVersion: 3, fields: [u32('x'), u32('y')] });
  const BoxWith = (item: Description<Item>): Description<Box> => describeState<Box>({ name: 'box', version: 1, fields: [struct('one', item), array('many', item)] });

  it('old nested data in new code: nested fields are defaulted, with their paths', () => {
    const k1 = new BareMachine({ mem: 16 * 2 ** 20 }).boot();
    k1.kstate.register(BoxWith(ItemV1), 1, { one: { x: 1 }, many: [{ x: 2 }, { x: 3 }] });
    k1.kstate.save();
    const k2 = k1.kexec();
    const r = k2.kstate.restore(BoxWith(ItemV2), 1);
    expect(r.object).toEqual({ one: { x: 1, y: 5 }, many: [{ x: 2, y: 5 }, { x: 3, y: 5 }] });
    expect(r.defaulted).toEqual(['one.y', 'many[].y']);
    expect(r.restored).toEqual(['one', 'many']);
  });

  it('a nested version outside the window fails the whole restore, naming the nested description', () => {
    const k1 = new BareMachine({ mem: 16 * 2 ** 20 }).boot();
    k1.kstate.register(BoxWith(ItemV1), 1, { one: { x: 1 }, many: [] });
    k1.kstate.save();
    const k2 = k1.kexec();
    const target = { one: { x: 9 }, many: [] };
    expect(() => k2.kstate.restore(BoxWith(ItemV3), 1, target)).toThrow("EINVAL: kstate: 'item' data is version 1, this code reads versions 3..3");
    expect(target).toEqual({ one: { x: 9 }, many: [] });
  });
});
