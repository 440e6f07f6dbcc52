import fc from 'fast-check';
import { crc32 } from './crc32';

describe('crc32', () => {
  it.each<[string, Uint8Array, number]>([
    ['nothing', new Uint8Array(0), 0],
    ['the check string 123456789', new TextEncoder().encode('123456789'), 0xcbf43926],
    ['one zero byte', new Uint8Array(1), 0xd202ef8d],
    ['the quick brown fox', new TextEncoder().encode('The quick brown fox jumps over the lazy dog'), 0x414fa339],
  ])('of %s is the zlib value', (_what, bytes, want) => {
    expect(crc32(bytes)).toBe(want);
  });

  it('of a slice equals the crc of a copy of it, and changes when one bit flips', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.nat(), fc.nat({ max: 7 }), (bytes, at, bit) => {
        const framed = new Uint8Array(bytes.length + 5);
        framed.set(bytes, 2);
        expect(crc32(framed, 2, 2 + bytes.length)).toBe(crc32(bytes.slice()));
        const flipped = bytes.slice();
        flipped[at % bytes.length] ^= 1 << bit;
        expect(crc32(flipped)).not.toBe(crc32(bytes));
      }),
    );
  });
});
