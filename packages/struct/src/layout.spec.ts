import fc from 'fast-check';
import { Errno, KernelBug, KernelError } from '@kho/kernel';
import { array, be32, be64, bits64, bytes, char, pad, reserved, u16, u32, u64, u64big, u8 } from './field';
import { nested, struct } from './layout';
import { layoutTable, offsetTable } from './table';
import { checkGolden, hexBytes, toHex } from './testing';

const Desc = struct('kho_vmalloc', { first: u64(), total_pages: u32(), flags: u16(), order: u16() }, 16);
const Named = struct('named', { name: char(8), rsv: reserved(4), pad: pad(4), token: u64big() }, 24);

describe('struct', () => {
  it('places fields one after another and knows its size and offsets', () => {
    expect(Desc.size).toBe(16);
    expect(['first', 'total_pages', 'flags', 'order'].map((f) => Desc.offsetOf(f as never))).toEqual([0, 8, 12, 14]);
    expect(Desc.table.map((f) => [f.name, f.offset, f.size, f.type])).toEqual([
      ['first', 0, 8, 'u64'],
      ['total_pages', 8, 4, 'u32'],
      ['flags', 12, 2, 'u16'],
      ['order', 14, 2, 'u16'],
    ]);
  });

  it('refuses a declaration whose fields disagree with its declared size (at load time)', () => {
    expect(() => struct('bad', { a: u32() }, 8)).toThrow(new KernelBug('layout bad: its fields take 4 bytes, but it is declared as 8'));
  });

  it('gives every offset, reserved and padding fields included, as a plain object', () => {
    expect(offsetTable(Desc)).toEqual({ first: 0, total_pages: 8, flags: 12, order: 14 });
    expect(offsetTable(Named)).toEqual({ name: 0, rsv: 8, pad: 12, token: 16 });
  });

  it('refuses an offset lookup of a field it does not have', () => {
    expect(() => Desc.offsetOf('nope' as never)).toThrow(KernelBug);
  });

  it('encodes little-endian and decodes back (golden bytes)', () => {
    checkGolden(Desc, { first: 0x12349000, total_pages: 1, flags: 1, order: 0 }, '00 90 34 12 00 00 00 00 | 01 00 00 00 | 01 00 | 00 00');
  });

  it('writes reserved and padding bytes as zero and leaves them out of the value', () => {
    const b = Named.encode({ name: 's1', token: 0x1an });
    expect(toHex(b)).toBe('73 31 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n1a 00 00 00 00 00 00 00');
    expect(Named.decode(b)).toEqual({ name: 's1', token: 0x1an });
  });

  it.each<[string, (b: Uint8Array) => void, string]>([
    ['a non-zero reserved byte', (b) => (b[9] = 7), 'EINVAL: named.rsv byte 1 is 0x7 (wanted 0: reserved)'],
    ['a string without its NUL', (b) => b.fill(0x41, 0, 8), 'EINVAL: named.name has no NUL terminator in its 8 bytes'],
    ['invalid UTF-8', (b) => b.set([0xff, 0xfe], 0), 'EINVAL: named.name is not valid UTF-8'],
  ])('decode refuses %s, naming the struct and field', (_what, damage, message) => {
    const b = Named.encode({ name: 'x', token: 1n });
    damage(b);
    expect(() => Named.decode(b)).toThrow(new KernelError(Errno.EINVAL, message.replace(/^EINVAL: /, '')));
  });

  it('ignores non-zero padding (fields readers do not check)', () => {
    const b = Named.encode({ name: 'x', token: 1n });
    b[13] = 0xff;
    expect(Named.decode(b)).toEqual({ name: 'x', token: 1n });
  });

  it.each<[string, () => unknown, string]>([
    ['a u32 above 2^32-1', () => Desc.encode({ first: 0, total_pages: 2 ** 32, flags: 0, order: 0 }), 'kho_vmalloc.total_pages = 4294967296 does not fit (wanted an integer in 0..4294967295)'],
    ['a negative u16', () => Desc.encode({ first: 0, total_pages: 0, flags: -1, order: 0 }), 'kho_vmalloc.flags = -1 does not fit (wanted an integer in 0..65535)'],
    ['a u64 beyond 2^53', () => Desc.encode({ first: 2 ** 53, total_pages: 0, flags: 0, order: 0 }), 'kho_vmalloc.first = 9007199254740992 does not fit (wanted an integer in 0..2^53-1)'],
    ['a fraction', () => Desc.encode({ first: 0.5, total_pages: 0, flags: 0, order: 0 }), 'kho_vmalloc.first = 0.5 does not fit (wanted an integer in 0..2^53-1)'],
    ['a string that leaves no room for its NUL', () => Named.encode({ name: '12345678', token: 0n }), 'named.name = "12345678" does not fit (wanted at most 7 bytes without NUL)'],
    ['a token beyond 64 bits', () => Named.encode({ name: '', token: 1n << 64n }), 'named.token = 18446744073709551616 does not fit (wanted a bigint in 0..2^64-1)'],
  ])('encode refuses %s', (_what, call, reason) => {
    expect(call).toThrow(new KernelError(Errno.EINVAL, reason));
  });

  it('refuses to read or write past the buffer', () => {
    expect(() => Desc.decode(new Uint8Array(15))).toThrow(new KernelError(Errno.EINVAL, 'kho_vmalloc: decode needs 16 bytes at offset 0 (the buffer holds 15)'));
    expect(() => Desc.decode(new Uint8Array(20), 5)).toThrow(new KernelError(Errno.EINVAL, 'kho_vmalloc: decode needs 16 bytes at offset 5 (the buffer holds 20)'));
    expect(() => Desc.encodeInto(new Uint8Array(16), 1, { first: 0, total_pages: 0, flags: 0, order: 0 })).toThrow(KernelError);
  });

  it('reads a u64 at or above 2^53 as Infinity, so a range check refuses it', () => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, 1n << 53n, true);
    expect(Desc.decode(b).first).toBe(Infinity);
    new DataView(b.buffer).setBigUint64(0, (1n << 53n) - 1n, true);
    expect(Desc.decode(b).first).toBe(2 ** 53 - 1);
  });

  it('decodes at an offset, reads and writes RAM-like sources', () => {
    const ram = new Uint8Array(64);
    const src = { read: (a: number, n: number) => ram.slice(a, a + n), write: (a: number, b: Uint8Array) => ram.set(b, a) };
    Desc.write(src, 32, { first: 4096, total_pages: 3, flags: 2, order: 1 });
    expect(Desc.read(src, 32)).toEqual({ first: 4096, total_pages: 3, flags: 2, order: 1 });
    expect(Desc.decode(ram, 32)).toEqual({ first: 4096, total_pages: 3, flags: 2, order: 1 });
  });

  it('round-trips every value its fields can hold', () => {
    fc.assert(
      fc.property(
        fc.record({
          first: fc.maxSafeNat(),
          total_pages: fc.nat({ max: 2 ** 32 - 1 }),
          flags: fc.nat({ max: 0xffff }),
          order: fc.nat({ max: 0xffff }),
        }),
        (v) => {
          expect(Desc.decode(Desc.encode(v))).toEqual(v);
        },
      ),
    );
  });
});

describe('field kinds', () => {
  it('big-endian fields (a DTB header)', () => {
    const H = struct('fdt_header', { magic: be32(), size: be64() }, 12);
    checkGolden(H, { magic: 0xd00dfeed, size: 0x1000 }, 'd0 0d fe ed 00 00 00 00 00 00 10 00');
  });

  it('arrays, bytes and nested structs', () => {
    const Chunk = struct('chunk', { next: u64(), phys: array(u64(), 3) }, 32);
    const Outer = struct('outer', { tag: bytes(2), kind: u8(), pad: pad(5), chunk: nested(Chunk) }, 40);
    const v = { tag: Uint8Array.of(1, 2), kind: 9, chunk: { next: 0, phys: [0x1000, 0x2000, 0] } };
    const b = Outer.encode(v);
    expect(Outer.decode(b)).toEqual(v);
    expect(Outer.offsetOf('chunk')).toBe(8);
    expect(b[8 + 8 + 1]).toBe(0x10);
    expect(() => Chunk.encode({ next: 0, phys: [1, 2] })).toThrow(new KernelError(Errno.EINVAL, 'chunk.phys = 2 elements does not fit (wanted 3 elements)'));
  });

  it('bit fields pack lowest first (memfd folio entry: pfn 52 bits, flags 12)', () => {
    const Folio = struct('memfd_luo_folio_ser', { word: bits64({ pfn: 52, flags: 12 }), index: u64() }, 16);
    checkGolden(Folio, { word: { pfn: 0x1234b, flags: 3 }, index: 0 }, '4b 23 01 00 00 00 30 00 00 00 00 00 00 00 00 00');
    expect(() => Folio.encode({ word: { pfn: 2 ** 52, flags: 0 }, index: 0 })).toThrow(KernelError);
    expect(() => bits64({ a: 40, b: 40 })).toThrow(new KernelError(Errno.EINVAL, 'bits64: parts take 80 bits (wanted at most 64)'));
  });

  it('a bounded char array may be full when unterminated strings are allowed', () => {
    const R = struct('release', { s: char(4, { terminated: false }) }, 4);
    expect(R.decode(hexBytes('41 42 43 44'))).toEqual({ s: 'ABCD' });
    expect(R.decode(hexBytes('41 42 00 44'))).toEqual({ s: 'AB' });
  });
});

describe('layoutTable and checkGolden', () => {
  it('prints the layout as the Markdown table the ABI documents use', () => {
    expect(layoutTable(Named)).toBe(
      ['| off | size | field | type |', '|---|---|---|---|', '| 0 | 8 | name | char[8] |', '| 8 | 4 | (rsv) | reserved[4] |', '| 12 | 4 | (pad) | pad[4] |', '| 16 | 8 | token | u64 |'].join('\n'),
    );
  });

  it('checkGolden fails naming the field whose byte moved', () => {
    expect(() => checkGolden(Desc, { first: 1, total_pages: 0, flags: 0, order: 0 }, '00'.repeat(16))).toThrow(/encode differs at byte 0 \(field first at offset 0\)/);
    expect(() => checkGolden(Desc, { first: 1, total_pages: 0, flags: 0, order: 0 }, '00')).toThrow('kho_vmalloc: the golden bytes are 1 bytes, the layout 16');
  });

  it('hexBytes refuses text that is not hex pairs', () => {
    expect(() => hexBytes('0')).toThrow();
    expect(() => hexBytes('zz')).toThrow();
    expect(hexBytes('0a|0b_0c\n0d')).toEqual(Uint8Array.of(10, 11, 12, 13));
  });
});
