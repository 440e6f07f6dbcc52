import fc from 'fast-check';
import { crc32c } from './crc32c';

/** The definition, one bit at a time: the reference the table-driven code is checked against. */
function bitwise(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

describe('crc32c', () => {
  // RFC 3720 (iSCSI) appendix B.4 vectors and the usual check value.
  it.each([
    ['"123456789"', new TextEncoder().encode('123456789'), 0xe3069283],
    ['empty', new Uint8Array(0), 0],
    ['32 zero bytes', new Uint8Array(32), 0x8a9136aa],
    ['32 bytes of 0xff', new Uint8Array(32).fill(0xff), 0x62a8ab43],
    ['bytes 0..31', Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
    ['bytes 31..0', Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
  ])('%s', (_name, bytes, want) => {
    expect(crc32c(bytes)).toBe(want);
  });

  it('equals the bitwise definition, over any range, and continues across calls', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const start = bytes.length ? a % bytes.length : 0;
        const end = start + (bytes.length - start ? b % (bytes.length - start + 1) : 0);
        const whole = crc32c(bytes, start, end);
        expect(whole).toBe(bitwise(bytes.subarray(start, end)));
        const mid = Math.floor((start + end) / 2);
        expect(crc32c(bytes, mid, end, crc32c(bytes, start, mid))).toBe(whole);
      }),
    );
  });
});
