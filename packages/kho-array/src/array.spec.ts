import fc from 'fast-check';
import { Errno, KernelError } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { KA_V0_MAX_STARTPOS, encodeKhoArrayDescriptor } from './abi';
import { createKhoArray, openKhoArray, type KhoArray } from './array';
import { HOSTILE_CASES, HOSTILE_POSITIONS, arrayTestMachine, pageHex, writeHostileBase, type ArrayTestMachine } from './testing';
import { canon, type U64 } from './u64';

const TWO_64 = 2n ** 64n;

function pageBytes(m: ArrayTestMachine, phys: U64): string {
  return Buffer.from(m.ram.read(Number(phys), PAGE_SIZE)).toString('hex');
}

function thrown(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return e;
    throw e;
  }
  throw new Error('expected a KernelError');
}

describe('golden pages (hand-computed bytes)', () => {
  it('version 0: next, startpos, then entries[510] at startpos + i', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 0);
    a.seek(0);
    a.setValue(5); // (5 << 1) | 1 = 0x0b
    a.seek(3);
    a.set(0x1000); // an 8-byte-aligned pointer
    a.seek(509);
    a.setValue(0x123456789); // 0x2468acf13
    expect(a.nrPages).toBe(1);
    expect(pageBytes(m, a.firstPhys)).toBe(
      pageHex([
        [0, '0000000000000000'], // next: none
        [8, '0000000000000000'], // startpos 0
        [16, '0b00000000000000'], // entries[0]
        [40, '0010000000000000'], // entries[3]
        [4088, '13cf8a4602000000'], // entries[509]
      ]),
    );
  });

  it('version 0: a position past 510 starts a page at the multiple of 510 below it, linked from the last page', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 0);
    a.seek(1);
    a.setValue(0);
    a.seek(1027); // startpos 1020 = 0x3fc, slot 7
    a.set(0x8);
    const [p0, p1] = a.pagePhys();
    expect(pageBytes(m, p1)).toBe(pageHex([[8, 'fc03000000000000'], [16 + 7 * 8, '0800000000000000']]));
    expect(m.ram.readU64(p0)).toBe(p1);
    expect(a.firstPhys).toBe(p0);
  });

  it('version 1: blocks of consecutive entries; a gap starts a block; a distance of 2^50 takes the absolute form', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 1);
    a.writeAll([
      [5, 3], // value 1
      [6, 5], // value 2
      [7, 0x2000],
      [100, 2n ** 64n - 1n], // value 2^63 - 1
      [2n ** 50n + 100n, 0xf], // value 7
      [2n ** 50n + 101n, 0x8],
    ]);
    expect(a.nrPages).toBe(1);
    expect(pageBytes(m, a.firstPhys)).toBe(
      pageHex([
        [0, '0000000000000000'], // next: none
        [8, '0500000000000000'], // first_pos 5
        [16, '0300 e80f 00000000'], // nr_blocks 3, used 4072 (the last block reserves the page), reserved
        [24, '0600000000000000'], // block 0: flags 0, num_entries 3, pos_increment 0
        [32, '0300000000000000 0500000000000000 0020000000000000'],
        [56, '0240170000000000'], // block 1: num_entries 1, pos_increment 93 (100 - 7): 2 | 93 << 14
        [64, 'ffffffffffffffff'],
        [72, 'eb03000000000000'], // block 2: flags 1, num_entries 501 (to the page's end): 1 | 501 << 1
        [80, '6400000000000400'], // its absolute position 2^50 + 100
        [88, '0f00000000000000 0800000000000000'], // then 499 empty slots
      ]),
    );
  });

  it('version 1: a distance of 2^50 - 1 still fits the header', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 1);
    a.writeAll([
      [1, 1],
      [2 ** 50, 3],
    ]);
    expect(pageBytes(m, a.firstPhys)).toBe(
      pageHex([
        [8, '0100000000000000'], // first_pos 1
        [16, '0200e80f00000000'], // nr_blocks 2, used 4072
        [24, '0200000000000000 0100000000000000'], // block 0: one entry
        [40, 'f4c3ffffffffffff'], // block 1: num_entries 506 | pos_increment 2^50 - 1 << 14
        [48, '0300000000000000'],
      ]),
    );
  });

  it('version 1: dense entries fill a page with one block of 508, then start the next page', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 1);
    for (let i = 0; i < 509; i++) {
      a.seek(i);
      a.set(2 * i + 1);
    }
    const [p0, p1] = a.pagePhys();
    expect(m.ram.readU64(p0)).toBe(p1); // next
    // first_pos 0; nr_blocks 1, used 4072; block 0: num_entries 508 (0x3f8 = 508 << 1); entries[0] = 1
    expect(pageBytes(m, p0).slice(16, 80)).toBe('0000000000000000 0100e80f00000000 f803000000000000 0100000000000000'.replace(/ /g, ''));
    expect(m.ram.readU64(p1 + 8)).toBe(508); // the next page's first_pos
    expect(a.nrPages).toBe(2);
  });

  it('the descriptor: magic KARR, version, reserved 0, first', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 1);
    expect(Buffer.from(a.descriptor()).toString('hex')).toBe('5252414b 0100 0000 0000000000000000'.replace(/ /g, ''));
    a.set(0);
    a.setValue(0);
    const first = Number(a.firstPhys);
    expect(Buffer.from(a.descriptor()).toString('hex')).toBe(`5252414b01000000${Buffer.from(new BigUint64Array([BigInt(first)]).buffer).toString('hex')}`);
    expect(Buffer.from(createKhoArray(m.ctx, 0).descriptor()).toString('hex')).toBe('5252414b000000000000000000000000');
  });
});

describe('the iterator', () => {
  it.each([0, 1])('v%d: next visits non-empty entries in order; seek, get and pos agree', (version) => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, version);
    a.writeAll([
      [3, 0x11],
      [10, 0x20],
      [600, 0x31],
    ]);
    const r = openKhoArray(m.ctx, a.descriptor(), 'read');
    expect(r.pos).toBe(0);
    expect(r.get()).toBe(0);
    expect(r.next()).toBe(true);
    expect([r.pos, r.get(), r.getValue()]).toEqual([3, 0x11, 8]);
    expect(r.next()).toBe(true);
    expect([r.pos, r.get()]).toEqual([10, 0x20]);
    r.seek(10); // staying put is allowed, and next may stop here again
    expect(r.next()).toBe(true);
    expect(r.pos).toBe(10);
    r.seek(11);
    expect(r.get()).toBe(0);
    expect(r.next()).toBe(true);
    expect([r.pos, r.get()]).toEqual([600, 0x31]);
    expect(r.next()).toBe(false);
    expect(r.pos).toBeGreaterThanOrEqual(600); // the last slot of the array
    expect(r.next()).toBe(false);
  });

  it.each([0, 1])('v%d: an empty array has nothing to visit; seek past the end is allowed', (version) => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, version);
    expect(a.next()).toBe(false);
    expect(a.get()).toBe(0);
    a.seek(2n ** 63n);
    expect(a.next()).toBe(false);
    expect(a.pos).toBe(2n ** 63n);
    expect(a.readAll()).toEqual([]);
    expect(a.nrPages).toBe(0);
  });

  it.each([0, 1])('v%d: set overwrites, set(0) clears, and clearing a missing slot allocates nothing', (version) => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, version);
    a.seek(7);
    a.set(0); // nothing there: no page
    expect(a.nrPages).toBe(0);
    a.setValue(1);
    a.set(0x48); // overwrite
    expect(a.get()).toBe(0x48);
    a.seek(8);
    a.setValue(9);
    a.set(0); // clear
    expect(a.readAll()).toEqual([[7, 0x48]]);
    expect(a.nrPages).toBe(1);
  });

  it.each([0, 1])('v%d: positions and entries are numbers below 2^53 and bigints from there', (version) => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, version);
    const big = 2n ** 53n;
    a.seek(2n ** 53n - 1n); // a small bigint is accepted and comes back a number
    expect(a.pos).toBe(2 ** 53 - 1);
    a.setValue(2n ** 52n); // entry 2^53 + 1
    expect(a.get()).toBe(big + 1n);
    expect(a.getValue()).toBe(2 ** 52);
    a.seek(big);
    a.setValue(2n ** 63n - 1n);
    expect(a.pos).toBe(big);
    expect(a.get()).toBe(TWO_64 - 1n);
    expect(a.getValue()).toBe(2n ** 63n - 1n);
    expect(a.readAll()).toEqual([
      [2 ** 53 - 1, big + 1n],
      [big, TWO_64 - 1n],
    ]);
  });

  it('v0: a page is inserted before the first and between pages by a writer that reopens the array', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 0);
    a.writeAll([
      [1100, 1],
      [3000, 3],
    ]);
    const w = openKhoArray(m.ctx, a.descriptor(), 'write');
    w.writeAll([
      [5, 5],
      [2000, 7],
      [3001, 9],
    ]);
    expect(openKhoArray(m.ctx, w.descriptor()).readAll()).toEqual([
      [5, 5],
      [1100, 1],
      [2000, 7],
      [3000, 3],
      [3001, 9],
    ]);
    expect(w.nrPages).toBe(4);
    w.destroy();
  });

  it('v1: a writer that reopens the array may overwrite its slots and append after its end', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 1);
    a.writeAll([
      [10, 1],
      [11, 3],
      [20, 5],
    ]);
    const w = openKhoArray(m.ctx, a.descriptor(), 'write');
    w.writeAll([
      [11, 0x40],
      [20, 0],
      [21, 7],
      [5000, 9],
    ]);
    expect(w.readAll()).toEqual([
      [10, 1],
      [11, 0x40],
      [21, 7],
      [5000, 9],
    ]);
  });

  it('v1: a reopened array whose last block holds only empty slots still appends a valid block', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 1);
    a.writeAll([
      [1, 1],
      [40, 3],
    ]);
    a.seek(40);
    a.set(0);
    const w = openKhoArray(m.ctx, a.descriptor(), 'write');
    w.seek(3000);
    w.setValue(5);
    expect(openKhoArray(m.ctx, w.descriptor()).readAll()).toEqual([
      [1, 1],
      [3000, 11],
    ]);
  });

  it('v1: a writer leaves at most one empty slot in a block: a larger gap starts a block', () => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, 1);
    a.writeAll([
      [0, 1],
      [2, 3], // one empty slot: the same block
      [5, 5], // two: a new block
    ]);
    const p = Number(a.firstPhys);
    expect(m.ram.readU16(p + 16)).toBe(2); // nr_blocks
    expect(Number(m.ram.readU64n(p + 24) >> 1n) & 0x1fff).toBe(3); // block 0: slots 0, 1 (empty), 2
  });

  it.each([0, 1])('v%d: readAll and a reader do not move the iterator', (version) => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, version);
    a.writeAll([[4, 1]]);
    a.readAll();
    expect(a.reader().mode).toBe('read');
    expect(a.pos).toBe(4);
    a.seek(5);
    a.setValue(3);
    expect(a.readAll()).toEqual([
      [4, 1],
      [5, 7],
    ]);
  });
});

describe('errors', () => {
  const m = arrayTestMachine();
  const written = createKhoArray(m.ctx, 1);
  written.writeAll([
    [0, 1],
    [10, 3],
  ]);
  const desc = written.descriptor();
  const reader = (): KhoArray => openKhoArray(m.ctx, desc, 'read');
  const writer = (version = 1): KhoArray => createKhoArray(m.ctx, version);
  const at = (pos: U64, version = 1): KhoArray => {
    const a = writer(version);
    a.seek(pos);
    return a;
  };
  const bad = (patch: (d: Uint8Array) => void): Uint8Array => {
    const d = encodeKhoArrayDescriptor(1, 0);
    patch(d);
    return d;
  };

  it.each<[string, () => unknown, Errno, string]>([
    ['set in read mode', () => reader().set(1), Errno.EPERM, 'set at position 0 in read mode (wanted an array opened for write)'],
    ['setValue in read mode', () => reader().setValue(1), Errno.EPERM, 'setValue at position 0 in read mode (wanted an array opened for write)'],
    [
      'seek backwards',
      () => {
        const r = reader();
        r.seek(9);
        r.seek(8);
      },
      Errno.EINVAL,
      'seek to position 8 moves backwards from position 9 (access is linear, lowest index first)',
    ],
    [
      'seek backwards after next',
      () => {
        const r = reader();
        r.next();
        r.next();
        r.seek(3);
      },
      Errno.EINVAL,
      'seek to position 3 moves backwards from position 10 (access is linear, lowest index first)',
    ],
    ['seek to a negative position', () => reader().seek(-1), Errno.EINVAL, 'seek to position -1 (wanted an integer in 0..2^64-1; numbers below 2^53)'],
    ['seek to a fraction', () => reader().seek(1.5), Errno.EINVAL, 'seek to position 1.5 (wanted an integer in 0..2^64-1; numbers below 2^53)'],
    ['seek to an unsafe number', () => reader().seek(2 ** 53), Errno.EINVAL, 'seek to position 9007199254740992 (wanted an integer in 0..2^64-1; numbers below 2^53)'],
    ['seek beyond u64', () => reader().seek(TWO_64), Errno.EINVAL, 'seek to position 18446744073709551616 (wanted an integer in 0..2^64-1; numbers below 2^53)'],
    ['set an unaligned pointer', () => writer().set(0x1002), Errno.EINVAL, 'set: entry 0x1002 is neither a tagged value (bit 0 set) nor an 8-byte-aligned pointer'],
    ['set an unaligned big pointer', () => writer().set(TWO_64 - 4n), Errno.EINVAL, 'set: entry 0xfffffffffffffffc is neither a tagged value (bit 0 set) nor an 8-byte-aligned pointer'],
    ['set a negative entry', () => writer().set(-8), Errno.EINVAL, 'set: entry -8 is not an integer in 0..2^64-1 (numbers below 2^53)'],
    ['set an entry beyond u64', () => writer().set(TWO_64 + 1n), Errno.EINVAL, 'set: entry 18446744073709551617 is not an integer in 0..2^64-1 (numbers below 2^53)'],
    ['setValue 2^63', () => writer().setValue(2n ** 63n), Errno.EINVAL, 'setValue: value 9223372036854775808 is not an integer in 0..2^63-1'],
    ['setValue -1', () => writer().setValue(-1), Errno.EINVAL, 'setValue: value -1 is not an integer in 0..2^63-1'],
    [
      'v0: a position past the last page a u64 indexes',
      () => at(TWO_64 - 1n, 0).setValue(1),
      Errno.EINVAL,
      `set: position 18446744073709551615 is beyond the last version-0 page (startpos at most ${KA_V0_MAX_STARTPOS})`,
    ],
    [
      'v1: a position in a gap of a reopened array',
      () => {
        const w = openKhoArray(m.ctx, desc, 'write');
        w.seek(5);
        w.setValue(1);
      },
      Errno.EINVAL,
      'set: position 5 lies in a gap before position 10 (version 1 appends after its last position or overwrites a slot it holds)',
    ],
    [
      'writeAll with positions out of order',
      () =>
        writer().writeAll([
          [4, 1],
          [4, 3],
        ]),
      Errno.EINVAL,
      'writeAll: position 4 does not follow position 4 (wanted strictly increasing positions)',
    ],
    [
      'getValue of an empty slot',
      () => {
        const r = reader();
        r.seek(5);
        r.getValue();
      },
      Errno.ENOENT,
      'getValue: no entry at position 5',
    ],
    [
      'getValue of a pointer',
      () => {
        const a = at(3);
        a.set(0x1000);
        a.getValue();
      },
      Errno.EINVAL,
      'getValue: the entry at position 3 is the pointer 0x1000 (wanted a tagged value)',
    ],
    ['create version 2', () => createKhoArray(m.ctx, 2), Errno.EOPNOTSUPP, 'create: version 2 (wanted 0 or 1)'],
    ['open with a bad magic', () => openKhoArray(m.ctx, bad((d) => (d[0] = 0x51))), Errno.EOPNOTSUPP, "open: descriptor magic 0x4b415251 (wanted 0x4b415252, 'KARR')"],
    ['open version 2', () => openKhoArray(m.ctx, bad((d) => (d[4] = 2))), Errno.EOPNOTSUPP, 'open: descriptor version 2 (wanted 0 or 1)'],
    ['open with reserved bits set', () => openKhoArray(m.ctx, bad((d) => (d[7] = 1))), Errno.EINVAL, 'open: descriptor reserved field is 0x100 (wanted 0)'],
    ['open 15 bytes', () => openKhoArray(m.ctx, new Uint8Array(15)), Errno.EINVAL, 'open: descriptor is 15 bytes (wanted 16)'],
    ['open a descriptor outside RAM', () => openKhoArray(m.ctx, 2 ** 40), Errno.EINVAL, 'open: descriptor at 0x10000000000 is not 16 bytes of RAM'],
    ['open in a bad mode', () => openKhoArray(m.ctx, desc, 'append' as never), Errno.EINVAL, "open: mode 'append' (wanted 'read', 'write' or 'restore')"],
    ['restore without KHO', () => openKhoArray(m.ctx, desc, 'restore'), Errno.EOPNOTSUPP, 'open: restore needs KHO'],
    ['preserve in read mode', () => reader().preserve(), Errno.EPERM, "preserve in read mode (wanted the pages' owner: an array created here, or opened for write or restore)"],
    ['destroy in read mode', () => reader().destroy(), Errno.EPERM, "destroy in read mode (wanted the pages' owner: an array created here, or opened for write or restore)"],
    ['preserve without KHO', () => writer().preserve(), Errno.EOPNOTSUPP, 'preserve: this array has no KHO to preserve with'],
    ['unpreserve without KHO', () => writer().unpreserve(), Errno.EOPNOTSUPP, 'unpreserve: this array has no KHO to preserve with'],
  ])('%s', (_name, fn, errno, message) => {
    const e = thrown(fn);
    expect(e.errno).toBe(errno);
    expect(e.message).toBe(`${Errno[errno]}: kho array: ${message}`);
  });

  it('a writer that fails to get a page leaves the array as it was (ENOMEM)', () => {
    for (const version of [0, 1]) {
      const mm = arrayTestMachine();
      const a = createKhoArray(mm.ctx, version);
      a.writeAll(Array.from({ length: 508 }, (_, i) => [i, 1] as const)); // a full page in both versions
      const before = a.readAll();
      const free = mm.buddy.nrFreePages;
      mm.faults.configure({ failNth: 1 });
      a.seek(1_000_000);
      expect(() => a.setValue(3)).toThrow(/^ENOMEM: allocPages: injected failure/);
      expect(a.readAll()).toEqual(before);
      expect([a.nrPages, mm.buddy.nrFreePages]).toEqual([1, free]);
      a.setValue(3); // the fault was a one-off: the same write now succeeds
      expect(a.readAll()).toEqual([...before, [1_000_000, 7]]);
      a.destroy();
      expect(mm.buddy.nrFreePages).toBe(free + 1);
    }
  });
});

describe('hostile pages are refused while reading', () => {
  it.each(HOSTILE_CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const m = arrayTestMachine();
    const a = createKhoArray(m.ctx, c.version);
    writeHostileBase(a);
    const desc = m.buddy.folioAlloc(0).phys;
    a.writeDescriptor(desc);
    const pages = a.pagePhys();
    // the base array reads back before the corruption
    expect(openKhoArray(m.ctx, desc).readAll()).toHaveLength(HOSTILE_POSITIONS[c.version].length);
    c.corrupt(m.ram, pages, desc);
    const e = thrown(() => openKhoArray(m.ctx, desc).readAll());
    expect(e.message).toBe(c.message(pages));
    // a writer's open checks the whole array first, and takes nothing
    expect(thrown(() => openKhoArray(m.ctx, desc, 'write')).message).toBe(c.message(pages));
  });
});

/** Sorted distinct positions with their entries, for one version. */
function entriesArb(version: 0 | 1): fc.Arbitrary<Array<[U64, U64]>> {
  const maxPos = version === 0 ? KA_V0_MAX_STARTPOS + 509n : TWO_64 - 1n;
  // Positions: small, clustered, around 2^53, 62-bit, up to the top; and cumulative steps around 2^50.
  const anywhere = fc.oneof(
    fc.bigInt({ min: 0n, max: 2000n }),
    fc.bigInt({ min: 2n ** 53n - 600n, max: 2n ** 53n + 600n }),
    fc.bigInt({ min: 0n, max: 2n ** 62n - 1n }),
    fc.bigInt({ min: maxPos - 1100n, max: maxPos }),
  );
  const step = fc.oneof(
    fc.constantFrom(1n, 2n, 3n, 2n ** 50n - 1n, 2n ** 50n, 2n ** 50n + 1n),
    fc.bigInt({ min: 1n, max: 600n }),
    fc.bigInt({ min: 1n, max: 2n ** 52n }),
  );
  const walk = fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 40n }), fc.array(step, { maxLength: 60 })).map(([start, steps]) => {
    const out = [start];
    for (const s of steps) out.push(out[out.length - 1] + s);
    return out;
  });
  const positions = fc.tuple(fc.array(anywhere, { maxLength: 40 }), walk).map(([a, b]) => [...new Set([...a, ...b])].filter((p) => p <= maxPos).sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
  const entry = fc.oneof(
    fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }).map((v) => (v << 1n) | 1n), // tagged values
    fc.bigInt({ min: 1n, max: 2n ** 61n - 1n }).map((v) => v << 3n), // aligned pointers
    fc.integer({ min: 0, max: 1000 }).map((v) => BigInt(2 * v + 1)),
  );
  return positions.chain((ps) => fc.array(entry, { minLength: ps.length, maxLength: ps.length }).map((es) => ps.map((p, i) => [canon(p), canon(es[i])] as [U64, U64])));
}

describe('round trips', () => {
  it.each([0, 1] as const)('v%d: write a random sparse set, read it back in order; destroy frees every page', (version) => {
    const m = arrayTestMachine(256 * 2 ** 20);
    const free = m.buddy.nrFreePages;
    fc.assert(
      fc.property(entriesArb(version), (entries) => {
        const a = createKhoArray(m.ctx, version);
        expect(a.writeAll(entries)).toBe(entries.length);
        expect(a.readAll()).toEqual(entries);
        const r = openKhoArray(m.ctx, a.descriptor());
        const seen: Array<[U64, U64]> = [];
        while (r.next()) seen.push([r.pos, r.get()]);
        expect(seen).toEqual(entries);
        if (version === 1) {
          // at most 24 bytes per entry (header, absolute position, entry) within a page's 4072
          expect(a.nrPages).toBeLessThanOrEqual(Math.ceil(entries.length / 169));
        }
        a.destroy();
        expect(m.buddy.nrFreePages).toBe(free);
      }),
      { numRuns: 60 },
    );
  });

  it.each([0, 1] as const)('v%d: seek to any position finds the entry there, or the next one', (version) => {
    const m = arrayTestMachine(256 * 2 ** 20);
    fc.assert(
      fc.property(entriesArb(version), fc.array(fc.bigInt({ min: 0n, max: TWO_64 - 1n }), { maxLength: 8 }), (entries, targets) => {
        const a = createKhoArray(m.ctx, version);
        a.writeAll(entries);
        const r = a.reader();
        for (const t of [...targets, ...entries.map(([p]) => BigInt(p))].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))) {
          if (t < BigInt(r.pos)) continue;
          r.seek(t);
          const here = entries.find(([p]) => BigInt(p) === t);
          expect(r.get()).toBe(here ? here[1] : 0);
          const after = entries.find(([p]) => BigInt(p) >= t);
          expect(r.next()).toBe(after !== undefined);
          if (after) expect([r.pos, r.get()]).toEqual(after);
        }
        a.destroy();
      }),
      { numRuns: 40 },
    );
  });

  it.each([0, 1] as const)('v%d: a writer agrees with a model through seeks, sets, clears and gets', (version) => {
    const m = arrayTestMachine(256 * 2 ** 20);
    const op = fc.tuple(fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 700 }), fc.constant(2 ** 45)), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 99 }));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const a = createKhoArray(m.ctx, version);
        const model = new Map<number, number>();
        let pos = 0;
        for (const [step, kind, v] of ops) {
          pos += step;
          a.seek(pos);
          if (kind === 0) a.set(0);
          else if (kind === 1) a.setValue(v);
          else if (kind === 2) a.set(8 * (v + 1));
          if (kind === 0) model.delete(pos);
          if (kind === 1) model.set(pos, 2 * v + 1);
          if (kind === 2) model.set(pos, 8 * (v + 1));
          expect(a.get()).toBe(model.get(pos) ?? 0);
        }
        expect(a.readAll()).toEqual([...model.entries()].sort((x, y) => x[0] - y[0]));
        a.destroy();
      }),
      { numRuns: 60 },
    );
  });
});
