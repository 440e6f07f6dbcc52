import { formatDts } from './format';
import { FdtNode } from './node';

describe('formatDts', () => {
  it('prints a KHO root FDT with its u64 values spelled out', () => {
    const root = new FdtNode().setString('compatible', 'kho-v2').setU64LE('preserved-memory-map', 0x1000);
    root.addChild('kho_test').setU64LE('preserved-data', 0x12345000);
    expect(formatDts(root)).toBe(
      [
        '/dts-v1/;',
        '',
        '/ {',
        '\tcompatible = "kho-v2";',
        '\tpreserved-memory-map = [00 10 00 00 00 00 00 00]; /* u64 le 0x1000 */',
        '',
        '\tkho_test {',
        '\t\tpreserved-data = [00 50 34 12 00 00 00 00]; /* u64 le 0x12345000 */',
        '\t};',
        '};',
        '',
      ].join('\n'),
    );
  });

  it.each<[string, number[], string]>([
    ['an empty property', [], 'p;'],
    ['a string', [0x61, 0x62, 0], 'p = "ab";'],
    ['a string list', [0x61, 0, 0x62, 0x63, 0], 'p = "a", "bc";'],
    ['quotes and backslashes', [0x22, 0x5c, 0], 'p = "\\"\\\\";'],
    ['an 8-byte string', [0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0], 'p = "abcdefg";'],
    ['cells', [0, 0, 0, 2, 0xde, 0xad, 0xbe, 0xef], 'p = [00 00 00 02 de ad be ef]; /* u64 le 0xefbeadde02000000 */'],
    ['one cell', [0, 0, 0x10, 0], 'p = <0x00001000>;'],
    ['three cells', [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3], 'p = <0x00000001 0x00000002 0x00000003>;'],
    ['bytes', [1, 2, 0xff], 'p = [01 02 ff];'],
    ['a lone NUL', [0], 'p = [00];'],
    ['an unprintable string', [0x61, 0x0a, 0], 'p = [61 0a 00];'],
    ['an empty string in a list', [0x61, 0, 0, 0x62, 0], 'p = [61 00 00 62 00];'],
  ])('prints %s', (_what, bytes, line) => {
    const text = formatDts(new FdtNode().setProp('p', Uint8Array.from(bytes)));
    expect(text.split('\n')[3]).toBe(`\t${line}`);
  });

  it('prints a string of a megabyte', () => {
    const long = 'x'.repeat(1 << 20);
    expect(formatDts(new FdtNode().setString('p', long))).toContain(`\tp = "${long}";`);
  });

  it('leaves out the u64 comment and uses the given indent on request', () => {
    const root = new FdtNode().setU64LE('v', 1);
    root.addChild('c').setU64LE('v', 2);
    expect(formatDts(root, { u64Comments: false, indent: '  ' })).toBe(
      '/dts-v1/;\n\n/ {\n  v = [01 00 00 00 00 00 00 00];\n\n  c {\n    v = [02 00 00 00 00 00 00 00];\n  };\n};\n',
    );
  });

  it('stops at a node reachable twice instead of looping', () => {
    const root = new FdtNode();
    const a = root.addChild('a');
    a.children.push(root);
    expect(formatDts(root)).toBe('/dts-v1/;\n\n/ {\n\n\ta {\n\n\t};\n};\n');
  });
});
