import fc from 'fast-check';
import { Errno, KernelError } from '@kho/kernel';
import { PAGE_SIZE, pfn } from '@kho/physmem';
import { checkGolden, toHex } from '@kho/struct/testing';
import { KHO_BLOCK_ENTRY_BYTES, KHO_BLOCK_HEADER_SIZE, KHO_BLOCK_SIZE, KHO_MAX_BLOCKS, KhoBlockHeaderStruct, entriesPerBlock } from './abi';
import { KhoBlockSet } from './block-set';
import { FakeBlockMemory } from './testing';

function errorOf(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return e;
    throw e;
  }
  throw new Error('expected a KernelError');
}

/** Writes a hand-made chain: one incoming page per block, each with `count` and linked in order (or as `links` says). */
function chain(mem: FakeBlockMemory, counts: readonly number[], links?: (pages: number[]) => number[]): number[] {
  const pages = counts.map(() => mem.page());
  const next = links ? links(pages) : pages.map((_, i) => pages[i + 1] ?? 0);
  pages.forEach((p, i) => {
    KhoBlockHeaderStruct.write(mem.ram, p, { next: next[i], count: counts[i] });
    mem.markIncoming(p);
  });
  return pages;
}

describe('kho_block ABI', () => {
  it('pins the header, the block and the limits', () => {
    expect([KHO_BLOCK_SIZE, KHO_BLOCK_HEADER_SIZE, KHO_BLOCK_ENTRY_BYTES, KHO_MAX_BLOCKS]).toEqual([4096, 16, 4080, 10000]);
    expect(KhoBlockHeaderStruct.table.map((f) => [f.name, f.offset, f.size])).toEqual([
      ['next', 0, 8],
      ['count', 8, 8],
    ]);
    checkGolden(KhoBlockHeaderStruct, { next: 0x12347000, count: 51 }, '00 70 34 12 00 00 00 00 | 33 00 00 00 00 00 00 00');
  });

  it.each([
    [80, 51],
    [64, 63],
    [32, 127],
    [4080, 1],
    [4081, 0],
    [0, 0],
  ])('an entry of %i bytes: %i per block', (size, per) => {
    expect(entriesPerBlock(size)).toBe(per);
  });

  it('refuses a set whose entries do not fit a block', () => {
    expect(errorOf(() => new KhoBlockSet(new FakeBlockMemory(), 4081, 'sessions'))).toEqual(
      new KernelError(Errno.EINVAL, 'sessions: entry size 4081 does not fit a block (wanted 1..4080 bytes)'),
    );
  });
});

describe('an outgoing set', () => {
  it('grows one preserved block per perBlock entries and links them', () => {
    const mem = new FakeBlockMemory();
    const set = new KhoBlockSet(mem, 80);
    set.grow(0);
    expect([set.nblocks, set.headPa]).toEqual([0, 0]);
    set.grow(51);
    expect(set.nblocks).toBe(1);
    set.grow(52);
    set.grow(102);
    expect(set.nblocks).toBe(2);
    set.grow(103);
    const [a, b, c] = set.blockPhys();
    expect(set.headPa).toBe(a);
    expect(KhoBlockHeaderStruct.read(mem.ram, a)).toEqual({ next: b, count: 0 });
    expect(KhoBlockHeaderStruct.read(mem.ram, b)).toEqual({ next: c, count: 0 });
    expect(KhoBlockHeaderStruct.read(mem.ram, c)).toEqual({ next: 0, count: 0 });
    expect([...mem.preserved].sort()).toEqual([a, b, c].sort());
    expect(set.capacity).toBe(153);
  });

  it('shrinks to what count needs, ends the chain and frees what it drops', () => {
    const mem = new FakeBlockMemory();
    const free0 = mem.buddy.nrFreePages;
    const set = new KhoBlockSet(mem, 64);
    set.grow(63 * 3);
    const [a, b] = set.blockPhys();
    set.shrink(64); // 2 blocks needed
    expect(set.nblocks).toBe(2);
    expect(KhoBlockHeaderStruct.read(mem.ram, b).next).toBe(0);
    set.shrink(63);
    expect(set.blockPhys()).toEqual([a]);
    set.shrink(1);
    expect(set.nblocks).toBe(1);
    set.shrink(0);
    expect([set.nblocks, set.headPa, mem.preserved.size, mem.buddy.nrFreePages]).toEqual([0, 0, 0, free0]);
  });

  it('undoes a grow that fails at its n-th allocation, for every n', () => {
    for (let n = 0; n < 4; n++) {
      const mem = new FakeBlockMemory();
      const set = new KhoBlockSet(mem, 1024); // 3 per block
      set.grow(3);
      const before = { blocks: [...set.blockPhys()], free: mem.buddy.nrFreePages };
      mem.failAfter = n;
      expect(errorOf(() => set.grow(15)).errno).toBe(Errno.ENOMEM);
      expect({ blocks: [...set.blockPhys()], free: mem.buddy.nrFreePages }).toEqual(before);
      expect(KhoBlockHeaderStruct.read(mem.ram, before.blocks[0]).next).toBe(0);
    }
  });

  it('refuses more than KHO_MAX_BLOCKS blocks with ENOSPC and keeps what it had', () => {
    const mem = new FakeBlockMemory(48 * 2 ** 20);
    const set = new KhoBlockSet(mem, 4080, 'big');
    set.grow(2);
    const free = mem.buddy.nrFreePages;
    expect(errorOf(() => set.grow(KHO_MAX_BLOCKS + 1))).toEqual(new KernelError(Errno.ENOSPC, 'big: 10001 entries need more than 10000 blocks of 1'));
    expect([set.nblocks, mem.buddy.nrFreePages]).toEqual([2, free]);
    set.grow(KHO_MAX_BLOCKS);
    expect(set.nblocks).toBe(KHO_MAX_BLOCKS);
    set.destroy();
  });

  it('writes entries in order, counting them in each block header (golden bytes)', () => {
    const mem = new FakeBlockMemory();
    const set = new KhoBlockSet(mem, 80);
    set.grow(53);
    const it = set.iterator();
    const slots: number[] = [];
    for (let i = 0; i < 53; i++) {
      const e = it.reserveEntry()!;
      mem.ram.write(e, new Uint8Array(80).fill(i + 1));
      slots.push(e);
    }
    expect(it.reserveEntry()).toBeDefined(); // the 54th still fits (capacity 102)
    const [a, b] = set.blockPhys();
    expect(slots[0]).toBe(a + 16);
    expect(slots[50]).toBe(a + 16 + 50 * 80);
    expect(slots[51]).toBe(b + 16);
    expect(KhoBlockHeaderStruct.read(mem.ram, a)).toEqual({ next: b, count: 51 });
    expect(KhoBlockHeaderStruct.read(mem.ram, b)).toEqual({ next: 0, count: 3 });
    // 51 × 80 = 4080: the first block is full to its last byte.
    expect(mem.ram.readU8(a + 4095)).toBe(51);
    expect(toHex(mem.ram.read(b, 32))).toBe(
      `${toHex(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]))}\n${toHex(new Uint8Array(16).fill(52))}`,
    );
  });

  it('reserveEntry gives out exactly the capacity; prev walks back across blocks', () => {
    const set = new KhoBlockSet(new FakeBlockMemory(), 2040); // 2 per block
    set.grow(5); // 3 blocks
    const it = set.iterator();
    const slots = Array.from({ length: 6 }, () => it.reserveEntry());
    expect(slots.every((s) => s !== undefined)).toBe(true);
    expect(it.reserveEntry()).toBeUndefined();
    const back = Array.from({ length: 7 }, () => it.prev());
    expect(back).toEqual([...slots].reverse().concat([undefined]));
    expect(new KhoBlockSet(new FakeBlockMemory(), 8).iterator().reserveEntry()).toBeUndefined();
  });

  it('clear zeroes every count and entry and keeps the blocks', () => {
    const mem = new FakeBlockMemory();
    const set = new KhoBlockSet(mem, 32);
    set.grow(200);
    const it = set.iterator();
    for (let i = 0; i < 200; i++) mem.ram.write(it.reserveEntry()!, new Uint8Array(32).fill(0xaa));
    set.clear();
    expect(set.nblocks).toBe(2);
    for (const p of set.blockPhys()) {
      expect(KhoBlockHeaderStruct.read(mem.ram, p).count).toBe(0);
      expect(mem.ram.read(p + 16, KHO_BLOCK_ENTRY_BYTES).every((x) => x === 0)).toBe(true);
    }
  });

  it('refuses to grow a set restored from the previous kernel', () => {
    const mem = new FakeBlockMemory();
    const set = new KhoBlockSet(mem, 64, 'files');
    set.restore(0);
    expect(errorOf(() => set.grow(1))).toEqual(new KernelError(Errno.EINVAL, 'files: cannot grow a set restored from the previous kernel'));
  });
});

describe('across the kexec', () => {
  it('restores what was written and reads every entry back, then gives the pages back', () => {
    const mem = new FakeBlockMemory();
    const free0 = mem.buddy.nrFreePages;
    const out = new KhoBlockSet(mem, 64);
    out.grow(130);
    const it = out.iterator();
    for (let i = 0; i < 130; i++) mem.ram.writeU64(it.reserveEntry()!, i * 7);
    const head = out.headPa;
    mem.handOver();
    const inc = new KhoBlockSet(mem, 64);
    inc.restore(head);
    expect(inc.nblocks).toBe(3);
    expect([...inc.entries()].map((e) => mem.ram.readU64(e))).toEqual(Array.from({ length: 130 }, (_, i) => i * 7));
    inc.shrink(64); // incoming blocks are restored and freed
    expect(inc.nblocks).toBe(2);
    inc.destroy();
    expect([mem.incoming.size, mem.buddy.nrFreePages]).toEqual([0, free0]);
  });

  it('accepts partly filled blocks anywhere in the chain', () => {
    const mem = new FakeBlockMemory();
    const pages = chain(mem, [3, 63, 1]);
    const set = new KhoBlockSet(mem, 64);
    set.restore(pages[0]);
    expect([...set.entries()].length).toBe(67);
  });

  it('round-trips any sequence of grows, shrinks and writes (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.array(fc.nat({ max: 600 }), { minLength: 1, maxLength: 6 }), fc.nat({ max: 600 }), (size, resizes, final) => {
        const mem = new FakeBlockMemory(16 * 2 ** 20);
        const set = new KhoBlockSet(mem, size);
        for (const n of resizes) {
          if (n > set.capacity) set.grow(n);
          else set.shrink(n);
          expect(set.nblocks).toBe(Math.ceil(n / set.perBlock));
        }
        if (final > set.capacity) set.grow(final);
        else set.shrink(final);
        const it = set.iterator();
        for (let i = 0; i < final; i++) mem.ram.writeU8(it.reserveEntry()!, (i * 13 + 1) & 0xff);
        const head = set.headPa;
        mem.handOver();
        const back = new KhoBlockSet(mem, size);
        back.restore(head);
        expect([...back.entries()].map((e) => mem.ram.readU8(e))).toEqual(Array.from({ length: final }, (_, i) => (i * 13 + 1) & 0xff));
        back.destroy();
        expect(mem.incoming.size).toBe(0);
      }),
      { numRuns: 60 },
    );
  });
});

describe('a hostile chain', () => {
  it.each<[string, (p: number[]) => number[], number]>([
    ['a block that links to itself', (p) => [p[0]], 1],
    ['a loop of two', (p) => [p[1], p[0]], 2],
    ['a loop back to the middle', (p) => [p[1], p[2], p[3], p[4], p[2]], 5],
  ])('refuses %s (EINVAL) and touches nothing', (_what, links, n) => {
    const mem = new FakeBlockMemory();
    const pages = chain(mem, Array(n).fill(1), links);
    const set = new KhoBlockSet(mem, 64, 'sessions');
    const e = errorOf(() => set.restore(pages[0]));
    expect(e.errno).toBe(Errno.EINVAL);
    expect(e.reason).toMatch(/^sessions: the block chain at 0x[0-9a-f]+ is corrupted: it loops \(block 0x[0-9a-f]+ is reached twice\)$/);
    expect([set.nblocks, mem.incoming.size]).toEqual([0, n]);
  });

  it.each<[string, number]>([
    ['not page-aligned', 0x1008],
    ['outside RAM', 2 ** 40],
    ['at or above 2^53', Infinity],
  ])('refuses a link %s before following it', (_what, target) => {
    const mem = new FakeBlockMemory();
    const [a] = chain(mem, [1]);
    if (Number.isFinite(target)) mem.ram.writeU64(a, target);
    else mem.ram.writeU64(a, 2n ** 60n);
    const e = errorOf(() => new KhoBlockSet(mem, 64).restore(a));
    expect(e.errno).toBe(Errno.EINVAL);
    expect(e.reason).toContain('not a page of RAM');
    expect(mem.incoming.size).toBe(1);
  });

  it('names a head at or above 2^53 as such, not as 0xInfinity (kho fuzz found the message)', () => {
    const mem = new FakeBlockMemory();
    const e = errorOf(() => new KhoBlockSet(mem, 64, 'files').restore(Infinity));
    expect(e).toEqual(new KernelError(Errno.EINVAL, 'files: the block chain at >= 2^53 is corrupted: the head is not a page of RAM'));
  });

  it.each<[string, number, string]>([
    ['count 0 (a trailing empty block)', 0, 'holds entry count 0 (wanted 1..63)'],
    ['a count past the block', 64, 'holds entry count 64 (wanted 1..63)'],
    ['a huge count', 2 ** 40, 'holds entry count 0x10000000000 (wanted 1..63)'],
  ])('refuses %s (EINVAL) and gives back every preserved page of the chain', (_what, count, why) => {
    const mem = new FakeBlockMemory();
    const free0 = mem.buddy.nrFreePages;
    const pages = chain(mem, [5, 63, count, 2]);
    const set = new KhoBlockSet(mem, 64, 'files');
    const e = errorOf(() => set.restore(pages[0]));
    expect(e).toEqual(new KernelError(Errno.EINVAL, `files: block 2 at 0x${pages[2].toString(16)} ${why}`));
    expect([set.nblocks, mem.incoming.size, mem.buddy.nrFreePages]).toEqual([0, 0, free0]);
  });

  it('refuses a block the previous kernel did not preserve, restoring nothing that was not preserved', () => {
    const mem = new FakeBlockMemory();
    const pages = chain(mem, [1, 1, 1]);
    mem.incoming.delete(pages[1]);
    const set = new KhoBlockSet(mem, 64, 'files');
    expect(errorOf(() => set.restore(pages[0]))).toEqual(
      new KernelError(Errno.EINVAL, `files: block 1 at 0x${pages[1].toString(16)} is not a page the previous kernel preserved`),
    );
    expect(mem.incoming.size).toBe(0); // blocks 0 and 2 were preserved: given back; block 1 was never taken
    expect(mem.buddy.isFree(pfn(pages[1] / PAGE_SIZE))).toBe(false);
  });

  it('takes exactly KHO_MAX_BLOCKS blocks, refuses 10,001 to 20,000 with ENOSPC and longer chains as corrupt', () => {
    const mem = new FakeBlockMemory(96 * 2 ** 20);
    const ok = chain(mem, Array(KHO_MAX_BLOCKS).fill(1));
    const set = new KhoBlockSet(mem, 4080);
    set.restore(ok[0]);
    expect(set.nblocks).toBe(KHO_MAX_BLOCKS);
    set.destroy();

    const long = chain(mem, Array(KHO_MAX_BLOCKS + 1).fill(1));
    const e = errorOf(() => new KhoBlockSet(mem, 4080, 's').restore(long[0]));
    expect(e).toEqual(new KernelError(Errno.ENOSPC, `s: block 10000 at 0x${long[KHO_MAX_BLOCKS].toString(16)} is one more than 10000 blocks`));
    expect(mem.incoming.size).toBe(0);

    const free = mem.buddy.nrFreePages;
    const longest = chain(mem, Array(2 * KHO_MAX_BLOCKS + 1).fill(1));
    const e2 = errorOf(() => new KhoBlockSet(mem, 4080, 's').restore(longest[0]));
    expect(e2.errno).toBe(Errno.EINVAL);
    expect(e2.reason).toContain('it runs past 20000 blocks');
    expect(mem.incoming.size).toBe(2 * KHO_MAX_BLOCKS + 1);
    expect(mem.buddy.nrFreePages).toBe(free - (2 * KHO_MAX_BLOCKS + 1));
  });

  it('accepts the longest chain the cycle check lets through (20,000 blocks) up to the block limit', () => {
    const mem = new FakeBlockMemory(96 * 2 ** 20);
    const pages = chain(mem, Array(2 * KHO_MAX_BLOCKS).fill(1));
    expect(errorOf(() => new KhoBlockSet(mem, 4080).restore(pages[0])).errno).toBe(Errno.ENOSPC);
  });
});
