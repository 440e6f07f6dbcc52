import fc from 'fast-check';
import { Errno, KernelError } from '@kho/kernel';
import { Folio, PAGE_SIZE, pfn } from '@kho/physmem';
import { KSTATE_SUBTREE } from './abi';
import { PhysRangeRef } from './decode';
import { array, bytes, custom, describeState, folio, instanceIdOf, physRange, ptr, str, u32, u64, u8, vmallocBuf } from './model';
import type { FinishReport } from './kstate';
import { BareMachine, type BareKernel } from './testing';

const MiB = 2 ** 20;

/** Runs `fn`, which must throw a KernelError with `errno` and message `<ERRNO>: message`. */
function expectError(fn: () => unknown, errno: Errno, message: string | RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(KernelError);
  expect((err as KernelError).errno).toBe(errno);
  const text = (err as KernelError).message;
  if (typeof message === 'string') expect(text).toBe(`${Errno[errno]}: ${message}`);
  else expect(text).toMatch(message);
}

interface Region {
  start: number;
  size: number;
}

interface Dev {
  id: number;
  name: string;
  buf: Folio | null;
  region: Region | null;
  log: number;
  cfg: { level: number } | null;
}

const Cfg = describeState<{ level: number }>({ name: 'cfg', version: 1, fields: [u8('level')] });
const Dev = describeState<Dev>({
  name: 'dev',
  version: 1,
  fields: [u32('id'), str('name', 8), folio('buf'), physRange('region'), vmallocBuf('log'), ptr('cfg', Cfg)],
});

function boot(mem = 32 * MiB): BareKernel {
  return new BareMachine({ mem }).boot();
}

function fill(k: BareKernel, phys: number, len: number, seed: number): void {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  k.ram.write(phys, b);
}

function sum(k: BareKernel, phys: number, len: number): number {
  let h = 0;
  for (const x of k.ram.read(phys, len)) h = (h * 33 + x) >>> 0;
  return h;
}

/** A device with a folio, a phys range and a vmalloc buffer, each filled with distinct bytes. */
function makeDev(k: BareKernel, id: number): Dev {
  const f = k.buddy.folioAlloc(2);
  fill(k, f.phys, f.size, id);
  const pfn = k.buddy.allocPages(1);
  fill(k, pfn * PAGE_SIZE, 2 * PAGE_SIZE, id + 1);
  const log = k.vmalloc.vmalloc(3 * PAGE_SIZE);
  const bytesIn = new Uint8Array(3 * PAGE_SIZE).map((_, i) => (i + id) & 0xff);
  k.vmalloc.write(log, bytesIn);
  return { id, name: `dev${id}`, buf: f, region: { start: pfn * PAGE_SIZE, size: 2 * PAGE_SIZE }, log, cfg: { level: id } };
}

describe('registration', () => {
  const Foo = describeState<{ n: number }>({ name: 'foo', version: 1, fields: [u32('n')] });
  const FooClash = describeState<{ n: number }>({ name: 'foo2', id: 'foo', version: 1, fields: [u32('n')] });

  it.each<[string, (k: BareKernel) => void, Errno, string]>([
    ['a duplicate key', (k) => k.kstate.register(Foo, 1, { n: 1 }), Errno.EEXIST, "kstate: register('foo' instance 1): already registered"],
    [
      'a named instance whose hash collides with another name',
      (k) => {
        k.kstate.register(Foo, instanceIdOf('region1371838'), { n: 1 });
        k.kstate.register(Foo, instanceIdOf('region2000402'), { n: 2 });
      },
      Errno.EEXIST,
      "kstate: register('foo' instance 'region2000402' (0x583107f9)): its instance id 0x583107f9 collides with 'region1371838' (same hash)",
    ],
    ['another description with the same id', (k) => k.kstate.register(FooClash, 2, { n: 1 }), Errno.EEXIST, "kstate: register('foo2' instance 2): id of 'foo2' is already used by description 'foo'"],
    ['a description not made by describe', (k) => k.kstate.register({ ...Foo }, 2, { n: 1 }), Errno.EINVAL, 'kstate: register: the description was not made by describe()'],
    ['a negative instance', (k) => k.kstate.register(Foo, -1, { n: 1 }), Errno.EINVAL, 'kstate: instance -1 (wanted a non-negative safe integer, a string or instanceIdOf(name))'],
    ['a forged named instance', (k) => k.kstate.register(Foo, { hash: 1, name: 'x' }, { n: 1 }), Errno.EINVAL, 'kstate: instance {"hash":1,"name":"x"} (a named instance must come from instanceIdOf(name))'],
    ['null', (k) => k.kstate.register(Foo, 3, null as never), Errno.EINVAL, "kstate: register('foo' instance 3): the object is null"],
    [
      'anything while a save is live',
      (k) => {
        k.kstate.save();
        k.kstate.register(Foo, 3, { n: 1 });
      },
      Errno.EBUSY,
      "kstate: register('foo' instance 3): the state is saved for a live update (cancel it first)",
    ],
    ['unregistering what is not registered', (k) => k.kstate.unregister(Foo, 9), Errno.ENOENT, "kstate: unregister('foo' instance 9): not registered"],
  ])('refuses %s', (_what, act, errno, message) => {
    const k = boot(8 * MiB);
    k.kstate.register(Foo, 1, { n: 1 });
    expectError(() => act(k), errno, message);
  });

  it('unregister frees the key and the id', () => {
    const k = boot(8 * MiB);
    k.kstate.register(Foo, 1, { n: 1 });
    k.kstate.unregister(Foo, 1);
    k.kstate.register(FooClash, 1, { n: 1 });
    expect(k.kstate.registrations().map((r) => r.desc.name)).toEqual(['foo2']);
  });

  it('instance ids are the caller’s, not the registration order', () => {
    const a = boot(8 * MiB);
    a.kstate.register(Foo, 'b', { n: 2 });
    a.kstate.register(Foo, 'a', { n: 1 });
    a.kstate.save();
    const k2 = a.kexec();
    expect(k2.kstate.restore(Foo, 'a').object).toEqual({ n: 1 });
    expect(k2.kstate.restore(Foo, 'b').object).toEqual({ n: 2 });
  });
});

describe('save and restore across a bare kexec', () => {
  it('restores folios, phys ranges and vmalloc buffers with their bytes; nothing leaks', () => {
    const machine = new BareMachine({ mem: 32 * MiB });
    const k1 = machine.boot();
    const devs = [makeDev(k1, 1), makeDev(k1, 2)];
    const sums = devs.map((d) => [sum(k1, d.buf!.phys, d.buf!.size), sum(k1, d.region!.start, d.region!.size), k1.vmalloc.read(d.log, 3 * PAGE_SIZE)]);
    devs.forEach((d) => k1.kstate.register(Dev, d.id, d));
    const stats = k1.kstate.save();
    expect(stats).toMatchObject({ sections: 2, schemas: 2, segments: 1, folios: 2, vmallocs: 2, physRanges: 2 });
    expect(k1.kho.subtrees.get(KSTATE_SUBTREE)).toBe(stats.rootPhys);
    const k2 = k1.kexec();
    const baseline = machine.boot().buddy.nrFreePages; // what a boot with nothing handed over has free
    for (const [i, d] of devs.entries()) {
      const target: Dev = { id: 0, name: '', buf: null, region: null, log: 0, cfg: { level: 0 } };
      const cfg = target.cfg;
      const r = k2.kstate.restore(Dev, d.id, target);
      expect(r.restored).toEqual(['id', 'name', 'buf', 'region', 'log', 'cfg']);
      expect(r.memory).toEqual([
        `buf: folio 0x${d.buf!.phys.toString(16)} order 2`,
        `region: phys range 0x${d.region!.start.toString(16)}+0x2000`,
        expect.stringMatching(/^log: vmalloc 3 pages \(first chunk 0x[0-9a-f]+, order 0\)$/),
      ]);
      expect(target.cfg).toBe(cfg); // restored into the pointer's existing target
      expect(target).toMatchObject({ id: d.id, name: d.name, cfg: { level: d.id }, region: d.region });
      expect(target.buf).toEqual(d.buf);
      expect(sum(k2, target.buf!.phys, target.buf!.size)).toBe(sums[i][0]);
      expect(sum(k2, target.region!.start, target.region!.size)).toBe(sums[i][1]);
      expect(k2.vmalloc.read(target.log, 3 * PAGE_SIZE)).toEqual(sums[i][2]);
      k2.buddy.folioPut(target.buf!);
      k2.kho.freePages(pfn(target.region!.start / PAGE_SIZE), 2);
      k2.vmalloc.vfree(target.log);
    }
    expect(k2.kstate.finish()).toEqual({ sections: 2, restored: 2, unrestored: [], strandedMemory: [], streamPagesFreed: 1 });
    expect(k2.kho.unrestored()).toEqual([]);
    expect(k2.buddy.nrFreePages).toBe(baseline);
    k2.buddy.checkInvariants();
  });

  it('a stream larger than 4 MiB spans several segments', () => {
    const Blob = describeState<{ b: Uint8Array }>({ name: 'blob', version: 1, fields: [bytes('b', 60000)] });
    const k1 = boot(64 * MiB);
    for (let i = 0; i < 150; i++) k1.kstate.register(Blob, i, { b: new Uint8Array(60000).fill(i) });
    const stats = k1.kstate.save();
    expect(stats.segments).toBe(3);
    expect(stats.pages).toBe(1024 + 1024 + 256);
    const k2 = k1.kexec();
    for (let i = 0; i < 150; i++) {
      const b = k2.kstate.restore(Blob, i).object.b;
      expect(b.length === 60000 && b.every((x) => x === i)).toBe(true);
    }
    expect(k2.kstate.finish()).toMatchObject({ restored: 150, streamPagesFreed: 2304 });
    expect(k2.kho.unrestored()).toEqual([]);
  });

  it('an object referring to memory twice preserves and restores it once', () => {
    const Two = describeState<{ a: Folio; b: Folio }>({ name: 'two', version: 1, fields: [folio('a'), folio('b')] });
    const k1 = boot();
    const f = k1.buddy.folioAlloc(0);
    k1.kstate.register(Two, 1, { a: f, b: f });
    k1.kstate.register(Two, 2, { a: f, b: f });
    expect(k1.kstate.save().folios).toBe(1);
    const k2 = k1.kexec();
    const r1 = k2.kstate.restore(Two, 1).object;
    const r2 = k2.kstate.restore(Two, 2).object;
    expect(r1.a).toBe(r1.b);
    expect(r2.a).toBe(r1.a);
  });

  it('arrays take their length from the object; named instances restore by name', () => {
    const List = describeState<{ n: number; xs: number[] }>({ name: 'list', version: 1, fields: [u8('n'), array('xs', 'u64', { length: (o: { n: number }) => o.n })] });
    const k1 = boot(8 * MiB);
    k1.kstate.register(List, instanceIdOf('ramoops'), { n: 2, xs: [1, 2, 3] });
    k1.kstate.save();
    const k2 = k1.kexec();
    expect(k2.kstate.restore(List, instanceIdOf('ramoops')).object).toEqual({ n: 2, xs: [1n, 2n] });
  });

  it.each<[string, (k: BareKernel) => unknown, Errno, string | RegExp]>([
    ['an unknown key', (k) => k.kstate.restore(Dev, 99), Errno.ENOENT, "kstate: no section for 'dev' instance 99 in the incoming stream"],
    [
      'a second restore',
      (k) => {
        k.kstate.restore(Dev, 1);
        k.kstate.restore(Dev, 1);
      },
      Errno.EINVAL,
      "kstate: 'dev' instance 1 was restored already",
    ],
    [
      'a field whose kind changed',
      (k) => k.kstate.restore(describeState<{ id: string }>({ name: 'dev', version: 1, fields: [str('id', 4)] }), 1),
      Errno.EINVAL,
      "kstate: 'dev' instance 1: field 'id' holds 1 in the data (wanted str[4])",
    ],
    [
      'a value that does not fit the code’s narrower field',
      (k) => k.kstate.restore(describeState<{ id: number }>({ name: 'dev', version: 1, fields: [u8('id')] }), 300),
      Errno.EINVAL,
      "kstate: 'dev' instance 300: field 'id' holds 300, which does not fit u8",
    ],
    [
      'a memory field read as a scalar',
      (k) => k.kstate.restore(describeState<{ buf: number }>({ name: 'dev', version: 1, fields: [u64('buf')] }), 1),
      Errno.EINVAL,
      /^EINVAL: kstate: 'dev' instance 1: field 'buf' holds a folio 0x[0-9a-f]+ order 2 in the data \(wanted u64\)$/,
    ],
  ])('refuses %s', (_what, act, errno, message) => {
    const k1 = boot();
    k1.kstate.register(Dev, 1, makeDev(k1, 1));
    k1.kstate.register(Dev, 300, { ...makeDev(k1, 2), id: 300 });
    k1.kstate.save();
    const k2 = k1.kexec();
    expectError(() => act(k2), errno, message);
  });

  it('a cold boot has no stream: restore is ENOENT and finish reports nothing', () => {
    const k = boot(8 * MiB);
    expect(() => k.kstate.restore(Dev, 1)).toThrow('ENOENT: kstate: this boot has no incoming KHO handover');
    expect(k.kstate.finish()).toBeUndefined();
    const k2 = k.kexec();
    expect(() => k2.kstate.restore(Dev, 1)).toThrow('ENOENT: kstate: the previous kernel handed over no kstate stream');
  });

  it('peek reads without restoring: memory stays preserved and a restore still works', () => {
    const k1 = boot();
    k1.kstate.register(Dev, 1, makeDev(k1, 1));
    k1.kstate.save();
    const k2 = k1.kexec();
    const before = k2.kho.unrestored().length;
    const p = k2.kstate.peek(Dev, 1);
    expect(p.object.region).toBeInstanceOf(PhysRangeRef);
    expect(p.object.region).toMatchObject({ size: 2 * PAGE_SIZE });
    expect(k2.kho.unrestored().length).toBe(before);
    expect(k2.kstate.restore(Dev, 1).object.region).toEqual({ start: p.object.region!.start, size: 2 * PAGE_SIZE });
  });
});

describe('properties', () => {
  interface Mem {
    f: Folio | null;
    r: Region | null;
  }
  const MemD = describeState<Mem>({ name: 'mem', version: 1, fields: [folio('f'), physRange('r')] });
  const spec = fc.array(fc.record({ order: fc.option(fc.integer({ min: 0, max: 4 }), { nil: null }), pages: fc.integer({ min: 0, max: 9 }), seed: fc.nat(255) }), { minLength: 1, maxLength: 6 });

  function build(k: BareKernel, objs: Array<{ order: number | null; pages: number; seed: number }>): Mem[] {
    return objs.map(({ order, pages, seed }, i) => {
      const f = order === null ? null : k.buddy.folioAlloc(order);
      if (f) fill(k, f.phys, f.size, seed);
      let r: Region | null = null;
      if (pages > 0) {
        const pfn = k.buddy.allocPages(Math.ceil(Math.log2(pages)));
        r = { start: pfn * PAGE_SIZE, size: pages * PAGE_SIZE };
        fill(k, r.start, r.size, seed + 1);
      }
      k.kstate.register(MemD, i, { f, r });
      return { f, r };
    });
  }

  it('save then cancel leaves nothing preserved and nothing allocated', () => {
    fc.assert(
      fc.property(spec, (objs) => {
        const k = boot(16 * MiB);
        build(k, objs);
        const free0 = k.buddy.nrFreePages;
        k.kstate.save();
        k.kstate.cancel();
        expect(k.kho.preserved.size).toBe(0);
        expect(k.buddy.nrFreePages).toBe(free0);
      }),
      { numRuns: 25 },
    );
  });

  it('save, kexec, restore gives back the same bytes; freeing it all leaves the next kernel as a fresh boot', () => {
    fc.assert(
      fc.property(spec, (objs) => {
        const machine = new BareMachine({ mem: 16 * MiB });
        const k1 = machine.boot();
        const mems = build(k1, objs);
        const sums = mems.map((m) => [m.f ? sum(k1, m.f.phys, m.f.size) : 0, m.r ? sum(k1, m.r.start, m.r.size) : 0]);
        k1.kstate.save();
        const k2 = k1.kexec();
        mems.forEach((m, i) => {
          const got = k2.kstate.restore(MemD, i).object;
          expect(got.f?.order ?? null).toBe(m.f?.order ?? null);
          expect(got.r).toEqual(m.r);
          if (got.f) expect(sum(k2, got.f.phys, got.f.size)).toBe(sums[i][0]);
          if (got.r) expect(sum(k2, got.r.start, got.r.size)).toBe(sums[i][1]);
          if (got.f) k2.buddy.folioPut(got.f);
          if (got.r) k2.kho.freePages(pfn(got.r.start / PAGE_SIZE), got.r.size / PAGE_SIZE);
        });
        k2.kstate.finish();
        expect(k2.kho.unrestored()).toEqual([]);
        expect(k2.buddy.nrFreePages).toBe(machine.boot().buddy.nrFreePages);
      }),
      { numRuns: 25 },
    );
  });
});

describe('unwinding', () => {
  function preservedNothing(k: BareKernel, free0: number): void {
    expect(k.kho.preserved.size).toBe(0);
    expect(k.kho.subtrees.size).toBe(0);
    expect(k.buddy.nrFreePages).toBe(free0);
    expect(k.kstate.savedStats).toBeUndefined();
  }

  it('cancel unpreserves everything the save preserved and frees the stream', () => {
    const k = boot();
    k.kstate.register(Dev, 1, makeDev(k, 1));
    const free0 = k.buddy.nrFreePages;
    k.kstate.save();
    expect(k.kho.preserved.size).toBeGreaterThan(4);
    k.kstate.cancel();
    preservedNothing(k, free0);
    k.kstate.save(); // and a retry works
    expect(k.kho.subtrees.has(KSTATE_SUBTREE)).toBe(true);
  });

  it('a page allocation failing at any point of a save leaves nothing preserved (fault injection)', () => {
    const Blob = describeState<{ b: Uint8Array; d: Dev }>({ name: 'blob', version: 1, fields: [bytes('b', 60000), ptr('d', Dev)] });
    const k = boot(64 * MiB);
    for (let i = 0; i < 80; i++) k.kstate.register(Blob, i, { b: new Uint8Array(60000), d: i % 20 === 0 ? makeDev(k, i) : (null as never) });
    const free0 = k.buddy.nrFreePages;
    let failures = 0;
    for (let nth = 1; nth < 100; nth++) {
      const injected = k.faults.injected;
      k.faults.configure({ failNth: nth });
      try {
        k.kstate.save();
      } catch (e) {
        expect((e as KernelError).errno).toBe(Errno.ENOMEM);
        preservedNothing(k, free0);
        failures++;
        continue;
      }
      if (k.faults.injected === injected) break; // the save made fewer than nth allocations: every point was tried
      k.kstate.cancel();
    }
    expect(failures).toBe(4 + 2); // four vmalloc chunk pages, two stream segments
    k.faults.reset();
  });

  it.each<[string, () => unknown, Errno, string]>([
    [
      'a custom save that throws',
      () => {
        throw new Error('disk on fire');
      },
      Errno.EIO,
      "kstate: 'late' instance 1: custom field 'c' save failed: disk on fire",
    ],
    [
      'a custom save that throws a KernelError',
      () => {
        throw new KernelError(Errno.ENOSPC, 'full');
      },
      Errno.ENOSPC,
      "kstate: 'late' instance 1: custom field 'c' save failed: ENOSPC: full",
    ],
  ])('%s after memory was preserved: the error propagates and everything is unpreserved', (_what, boom, errno, message) => {
    const Late = describeState<{ d: Dev; c: number }>({ name: 'late', version: 1, fields: [ptr('d', Dev), custom('c', { save: boom, restore: () => undefined })] });
    const k = boot();
    k.kstate.register(Dev, 0, makeDev(k, 0));
    k.kstate.register(Late, 1, { d: makeDev(k, 1), c: 0 });
    const free0 = k.buddy.nrFreePages;
    expectError(() => k.kstate.save(), errno, message);
    preservedNothing(k, free0);
  });

  it('a value that does not fit its field fails the save, naming the section and field, with nothing preserved', () => {
    const k = boot();
    k.kstate.register(Dev, 0, makeDev(k, 0));
    k.kstate.register(Dev, 1, { ...makeDev(k, 1), name: 'much too long' });
    const free0 = k.buddy.nrFreePages;
    expectError(() => k.kstate.save(), Errno.EINVAL, "kstate: 'dev' instance 1: field 'name' \"much too long\" needs more than 8 bytes of UTF-8 (str[8])");
    preservedNothing(k, free0);
  });

  it('a custom restore that fails is propagated and reported; memory the restore took is given back', () => {
    const Fussy = describeState<{ buf: Folio; c: number }>({
      name: 'fussy',
      version: 1,
      fields: [folio('buf'), custom('c', { save: (w) => w.u8(1), restore: () => {
        throw new Error('bad custom bytes');
      } })],
    });
    const k1 = boot();
    k1.kstate.register(Fussy, 1, { buf: k1.buddy.folioAlloc(1), c: 0 });
    k1.kstate.save();
    const k2 = k1.kexec();
    const stamped = k2.kho.unrestored().length;
    expectError(() => k2.kstate.restore(Fussy, 1), Errno.EIO, "kstate: 'fussy' instance 1: custom field 'c' restore failed: bad custom bytes");
    expect(k2.kho.unrestored().length).toBe(stamped - 1); // only the stream page was claimed; the folio is untouched
    const fin = k2.kstate.finish() as FinishReport;
    expect(fin.unrestored).toEqual([
      { id: 'fussy', name: 'fussy', instance: '1', memory: [expect.stringMatching(/^buf: folio 0x[0-9a-f]+ order 1$/)], failed: "EIO: kstate: 'fussy' instance 1: custom field 'c' restore failed: bad custom bytes" },
    ]);
  });

  it('memory restore failing part-way frees what it restored (a folio that was not preserved)', () => {
    const Pair = describeState<{ a: Folio; b: Folio }>({ name: 'pair', version: 1, fields: [folio('a'), folio('b')] });
    const k1 = boot();
    const a = k1.buddy.folioAlloc(0);
    const b = k1.buddy.folioAlloc(0);
    k1.kstate.register(Pair, 1, { a, b });
    k1.kstate.save();
    k1.kho.unpreserveFolio(b); // the stream still names b, but the next kernel will find no stamp on it
    const k2 = k1.kexec();
    const free0 = k2.buddy.nrFreePages;
    expectError(() => k2.kstate.restore(Pair, 1), Errno.EINVAL, /^EINVAL: kstate: 'pair' instance 1: field 'b': EINVAL: restoreFolio\(0x[0-9a-f]+\): no KHO stamp/);
    expect(k2.buddy.nrFreePages).toBe(free0 + 1); // a was restored, then freed again
  });
});

describe('finish', () => {
  it('names every section nobody restored with its memory, and memory left in skipped fields', () => {
    const DevV2 = describeState<Dev & { extra: Folio }>({
      name: 'dev',
      version: 2,
      minVersion: 1,
      oldestReader: 1,
      fields: [u32('id'), str('name', 8), folio('buf'), physRange('region'), vmallocBuf('log'), ptr('cfg', Cfg), folio('extra', { since: 2 })],
    });
    const k1 = boot();
    const d1 = makeDev(k1, 1);
    const extra = k1.buddy.folioAlloc(0);
    k1.kstate.register(DevV2, 1, { ...d1, extra });
    k1.kstate.register(DevV2, 2, { id: 2, name: 'two', buf: null, region: null, log: 0, cfg: null, extra: null as never });
    k1.kstate.save();
    const k2 = k1.kexec();
    const r = k2.kstate.restore(Dev, 1);
    expect(r.skippedFields).toEqual(['extra']);
    expect(r.strandedMemory).toEqual([`extra: folio 0x${extra.phys.toString(16)} order 0`]);
    const fin = k2.kstate.finish();
    expect(fin).toEqual({
      sections: 2,
      restored: 1,
      unrestored: [{ id: 'dev', name: 'dev', instance: '2', memory: [] }],
      strandedMemory: [`'dev' instance 1: extra: folio 0x${extra.phys.toString(16)} order 0`],
      streamPagesFreed: 1,
    });
    expect(k2.log.filter('warn', 'kstate').map((l) => l.message)).toEqual([
      "finish: 1 of 2 sections were never restored: 'dev' instance 2",
      `finish: memory of dropped or skipped fields stays preserved: 'dev' instance 1: extra: folio 0x${extra.phys.toString(16)} order 0`,
    ]);
    expect(k2.kho.unrestored()).toEqual([[extra.pfn, 0]]);
    expect(k2.kstate.finish()).toBeUndefined();
  });
});
