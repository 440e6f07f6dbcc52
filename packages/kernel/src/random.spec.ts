import fc from 'fast-check';
import { SeededByteStream, SeededWords, crc32, crc32Portable, crc32Zeros, seededBytes } from './random';

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('SeededByteStream', () => {
  // Pinned (the values were computed independently, in Python, from the description): a change here changes
  // every byte the demo writes and its checksums.
  it.each([
    [0, 'fb175b324787b6f5da441b01609644b8'],
    [1, '0d6836b8179c16dbdd5475c2afae79eb'],
  ])('gives the pinned first bytes for seed %d', (seed, want) => {
    expect(hexOf(seededBytes(seed, 16))).toBe(want);
  });

  it('gives the same bytes however the stream is cut into calls (property)', () => {
    const whole = seededBytes(7, 4096);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 40 }), (cuts) => {
        const s = new SeededByteStream(7);
        const out = new Uint8Array(4096);
        let at = 0;
        for (const n of cuts) {
          const len = Math.min(n, out.length - at);
          s.fill(out.subarray(at, at + len));
          at += len;
        }
        s.fill(out.subarray(at));
        return s.position === 4096 && hexOf(out) === hexOf(whole);
      }),
    );
  });

  it('fills views at any byte offset, and skip() lands where fill() would', () => {
    const want = seededBytes(3, 1000);
    const buf = new Uint8Array(1003);
    new SeededByteStream(3).fill(buf.subarray(3));
    expect(hexOf(buf.subarray(3))).toBe(hexOf(want));
    const s = new SeededByteStream(3);
    s.skip(333);
    expect(hexOf(s.next(667))).toBe(hexOf(want.subarray(333)));
  });

  it('gives different streams for different seeds, and bytes that look random', () => {
    const a = seededBytes(1, 1 << 16);
    const b = seededBytes(2, 1 << 16);
    let same = 0;
    const counts = new Array<number>(256).fill(0);
    for (let i = 0; i < a.length; i++) {
      if (a[i] === b[i]) same++;
      counts[a[i]]++;
    }
    expect(same).toBeLessThan(a.length / 128);
    // Every byte value within 25% of its expected count (256 per value).
    expect(Math.min(...counts)).toBeGreaterThan(192);
    expect(Math.max(...counts)).toBeLessThan(320);
  });

  it.each([-1, 2 ** 32, 1.5, NaN])('refuses seed %p', (seed) => {
    expect(() => new SeededByteStream(seed)).toThrow(RangeError);
    expect(() => new SeededByteStream(seed)).toThrow(`seed ${seed} is not an integer in 0..2^32-1`);
  });

  it('accepts every seed in 0..2^32-1, the ends included', () => {
    expect(new SeededByteStream(0xffffffff).next(16)).toHaveLength(16);
    expect(hexOf(seededBytes(0xffffffff, 16))).not.toBe(hexOf(seededBytes(0, 16)));
  });

  it('gives the same bytes into views of every alignment, whatever part of a group the last call left', () => {
    const want = seededBytes(5, 64);
    for (const used of [0, 1, 2, 3, 5, 15]) {
      for (const offset of [0, 1, 2, 3]) {
        const s = new SeededByteStream(5);
        const head = s.next(used);
        const buf = new Uint8Array(offset + 64 - used);
        s.fill(buf.subarray(offset));
        expect(hexOf(head) + hexOf(buf.subarray(offset))).toBe(hexOf(want));
      }
    }
  });

  it('skips across its 64 KiB scratch space, and skipping nothing changes nothing', () => {
    const want = seededBytes(11, 70_016);
    const s = new SeededByteStream(11);
    s.skip(0);
    expect(s.position).toBe(0);
    s.skip(70_000);
    expect(s.position).toBe(70_000);
    expect(hexOf(s.next(16))).toBe(hexOf(want.subarray(70_000)));
  });
});

describe('SeededWords', () => {
  // Pinned (computed independently, in Python, from the description): the demo's folio orders come from here.
  it.each([
    [1, [0x51086638, 0xe426533f, 0xe67527ff]],
    [42, [0x51a10331, 0x49246192, 0x67de2039]],
    [0xffffffff, [0x510fa606, 0x1c29a8c1, 0x0f021779]],
  ])('gives the pinned first words for seed %d', (seed, want) => {
    const w = new SeededWords(seed);
    expect([w.next(), w.next(), w.next()]).toEqual(want);
  });

  it('draws floats in [0, 1) from the same words', () => {
    const a = new SeededWords(7);
    const b = new SeededWords(7);
    for (let i = 0; i < 1000; i++) {
      const f = a.float();
      expect(f).toBeGreaterThanOrEqual(0);
      expect(f).toBeLessThan(1);
      expect(f).toBe(b.next() / 2 ** 32);
    }
  });
});

describe('crc32', () => {
  it('is the zlib CRC-32 (check value of "123456789")', () => {
    const text = new TextEncoder().encode('123456789');
    expect(crc32(text)).toBe(0xcbf43926);
    expect(crc32Portable(text)).toBe(0xcbf43926);
  });

  it('chains over pieces, and agrees with the portable version (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.integer({ min: 0, max: 600 }), (bytes, cut) => {
        const k = Math.min(cut, bytes.length);
        const whole = crc32(bytes);
        return crc32(bytes.subarray(k), crc32(bytes.subarray(0, k))) === whole && crc32Portable(bytes) === whole;
      }),
    );
  });

  it('continues over zeros without a buffer of them', () => {
    const head = seededBytes(9, 100);
    const zeros = new Uint8Array(200_000);
    expect(crc32Zeros(200_000, crc32(head))).toBe(crc32(zeros, crc32(head)));
    expect(crc32Zeros(0, 5)).toBe(5);
  });
});
