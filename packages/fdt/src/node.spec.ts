import { Errno, KernelError } from '@kho/kernel';
import { FdtNode } from './node';

const invalidNodeNames = ['', 'a'.repeat(32), 'a b', 'a/b', 'a@', '@1', 'a@1@2', 'é', 'a\0'];
const invalidPropNames = ['', 'p'.repeat(32), 'a b', 'a@b', 'a/b', 'a=b', 'ü'];

describe('FdtNode names', () => {
  it.each(['a', 'kho_test', 'memory@1000', 'cpu,foo.bar_baz+1-2', 'n'.repeat(31), 'n'.repeat(31) + '@' + 'u'.repeat(31)])(
    'accepts node name %j',
    (name) => {
      expect(new FdtNode().addChild(name).name).toBe(name);
    },
  );

  it.each(invalidNodeNames)('refuses node name %j with EINVAL', (name) => {
    expect(() => new FdtNode().addChild(name)).toThrow(
      `EINVAL: FDT: node name ${JSON.stringify(name)} is not valid (wanted 1..31 characters of A-Z a-z 0-9 , . _ + - and an optional @unit)`,
    );
  });

  it.each(['compatible', 'preserved-memory-map', '#address-cells', 'linux,phandle', 'a?', 'p'.repeat(31)])(
    'accepts property name %j',
    (name) => {
      expect(new FdtNode().setProp(name, new Uint8Array([1])).getProp(name)).toEqual(new Uint8Array([1]));
    },
  );

  it.each(invalidPropNames)('refuses property name %j with EINVAL', (name) => {
    expect(() => new FdtNode().setProp(name, new Uint8Array())).toThrow(
      `EINVAL: FDT: property name ${JSON.stringify(name)} is not valid (wanted 1..31 characters of A-Z a-z 0-9 , . _ + ? # -)`,
    );
  });
});

describe('FdtNode properties', () => {
  it('keeps insertion order and copies values', () => {
    const bytes = new Uint8Array([1, 2, 3]);
    const n = new FdtNode().setProp('b', bytes).setString('a', 'x').setU64LE('c', 1);
    bytes[0] = 9;
    n.setProp('b', new Uint8Array([4])); // replacing keeps the position
    expect([...n.props.keys()]).toEqual(['b', 'a', 'c']);
    expect(n.getProp('b')).toEqual(new Uint8Array([4]));
  });

  it.each([
    ['kho-v2', [0x6b, 0x68, 0x6f, 0x2d, 0x76, 0x32, 0]],
    ['', [0]],
    ['é', [0xc3, 0xa9, 0]],
  ])('setString(%j) stores UTF-8 and a NUL, getString reads it back', (s, bytes) => {
    const n = new FdtNode().setString('compatible', s);
    expect(Array.from(n.getProp('compatible')!)).toEqual(bytes);
    expect(n.getString('compatible')).toBe(s);
  });

  it('refuses a string holding a NUL', () => {
    expect(() => new FdtNode().setString('s', 'a\0b')).toThrow(
      "EINVAL: FDT: string for property 's' contains a NUL (wanted none; the NUL terminator is added)",
    );
  });

  it.each([
    [[0x61], "EINVAL: FDT: property 's' has no NUL terminator (wanted one NUL-terminated string)"],
    [[], "EINVAL: FDT: property 's' has no NUL terminator (wanted one NUL-terminated string)"],
    [[0x61, 0, 0x62, 0], "EINVAL: FDT: property 's' has a NUL at byte 1 of 4 (wanted one NUL-terminated string)"],
    [[0xff, 0], "EINVAL: FDT: property 's' is not valid UTF-8 (wanted one NUL-terminated string)"],
  ])('getString refuses %j', (bytes, message) => {
    const n = new FdtNode().setProp('s', Uint8Array.from(bytes));
    expect(() => n.getString('s')).toThrow(message);
  });

  it('getString and getU64LE return undefined for an absent property', () => {
    expect(new FdtNode().getString('x')).toBeUndefined();
    expect(new FdtNode().getU64LE('x')).toBeUndefined();
  });

  it.each([
    [0x1000, [0, 0x10, 0, 0, 0, 0, 0, 0], 0x1000n],
    [0, [0, 0, 0, 0, 0, 0, 0, 0], 0n],
    [(1n << 64n) - 1n, [255, 255, 255, 255, 255, 255, 255, 255], (1n << 64n) - 1n],
    [Number.MAX_SAFE_INTEGER, [255, 255, 255, 255, 255, 255, 0x1f, 0], BigInt(Number.MAX_SAFE_INTEGER)],
  ])('setU64LE(%s) writes little-endian bytes', (v, bytes, back) => {
    const n = new FdtNode().setU64LE('v', v);
    expect(Array.from(n.getProp('v')!)).toEqual(bytes);
    expect(n.getU64LE('v')).toBe(back);
  });

  it.each([-1, 1.5, Number.MAX_SAFE_INTEGER + 1, NaN, -1n, 1n << 64n])('setU64LE refuses %s', (v) => {
    expect(() => new FdtNode().setU64LE('v', v)).toThrow(
      `EINVAL: FDT: value ${String(v)} for property 'v' is not a u64 (wanted an integer in 0..2^64-1)`,
    );
  });

  it.each([0, 4, 7, 9, 16])('getU64LE refuses a %d-byte property', (len) => {
    const n = new FdtNode().setProp('v', new Uint8Array(len));
    expect(() => n.getU64LE('v')).toThrow(`EINVAL: FDT: property 'v' is ${len} bytes long (wanted 8 for a u64)`);
  });

  it('getU64LE reads a value inside a larger buffer', () => {
    const n = new FdtNode();
    n.props.set('v', new Uint8Array([9, 1, 0, 0, 0, 0, 0, 0, 0]).subarray(1));
    expect(n.getU64LE('v')).toBe(1n);
  });
});

describe('FdtNode children', () => {
  it('adds, finds and removes children', () => {
    const root = new FdtNode();
    const a = root.addChild('a');
    root.addChild('b');
    expect(root.child('a')).toBe(a);
    expect(root.removeChild('a')).toBe(a);
    expect(root.removeChild('a')).toBeUndefined();
    expect(root.children.map((c) => c.name)).toEqual(['b']);
  });

  it('refuses a second child of the same name with EEXIST', () => {
    const root = new FdtNode();
    root.addChild('kho_test');
    let err: unknown;
    try {
      root.addChild('kho_test');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).errno).toBe(Errno.EEXIST);
    expect((err as KernelError).message).toBe("EEXIST: FDT: node '/' already has a child 'kho_test' (wanted a new name)");
  });

  it('refuses an invalid name in the constructor, but allows the root name', () => {
    expect(new FdtNode().name).toBe('');
    expect(() => new FdtNode('a b')).toThrow('EINVAL: FDT: node name "a b" is not valid');
  });
});
