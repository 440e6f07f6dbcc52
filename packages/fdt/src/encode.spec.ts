import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { FDT_HEADER, FDT_HEADER_SIZE, FDT_PROP_HEADER, FDT_PROP_HEADER_SIZE, FDT_RESERVE_ENTRY, FDT_RESERVE_ENTRY_SIZE } from './abi';
import { decodeFdt } from './decode';
import { encodeFdt, fdtSize } from './encode';
import { FdtNode } from './node';

const DTC = '/usr/bin/dtc';
const haveDtc = existsSync(DTC);
if (!haveDtc) console.log(`${DTC} is absent: the dtc interoperability tests are skipped`);
const itDtc = haveDtc ? it : it.skip;

/** The tree of the golden vector: a KHO root FDT with one client. */
function khoRoot(mapPhys: number | bigint = 0x1000, dataPhys: number | bigint = 0x2000): FdtNode {
  const root = new FdtNode().setString('compatible', 'kho-v2').setU64LE('preserved-memory-map', mapPhys);
  root.addChild('kho_test').setU64LE('preserved-data', dataPhys);
  return root;
}

const be32 = (...words: number[]): number[] => words.flatMap((w) => [w >>> 24, (w >>> 16) & 255, (w >>> 8) & 255, w & 255]);
const ascii = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));

/**
 * khoRoot() encoded, computed by hand. Struct block = 96 bytes: BEGIN "" (8), compatible "kho-v2\0"+1 pad (20),
 * preserved-memory-map u64 (20), BEGIN "kho_test\0"+3 pad (16), preserved-data u64 (20), END_NODE, END_NODE, END.
 * Strings: "compatible\0" at 0, "preserved-memory-map\0" at 11, "preserved-data\0" at 32: 47 bytes.
 * Offsets: rsvmap 0x28, struct 0x38, strings 0x38 + 96 = 0x98, totalsize 0x98 + 47 = 0xc7.
 */
const GOLDEN = Uint8Array.from([
  ...be32(0xd00dfeed, 0xc7, 0x38, 0x98, 0x28, 17, 16, 0, 47, 96), // header
  ...new Array(16).fill(0), // one empty reservation entry
  ...be32(1, 0), // BEGIN_NODE ""
  ...be32(3, 7, 0), ...ascii('kho-v2'), 0, 0, // PROP compatible
  ...be32(3, 8, 11), 0, 0x10, 0, 0, 0, 0, 0, 0, // PROP preserved-memory-map = le64 0x1000
  ...be32(1), ...ascii('kho_test'), 0, 0, 0, 0, // BEGIN_NODE kho_test
  ...be32(3, 8, 32), 0, 0x20, 0, 0, 0, 0, 0, 0, // PROP preserved-data = le64 0x2000
  ...be32(2, 2, 9), // END_NODE END_NODE END
  ...ascii('compatible'), 0, ...ascii('preserved-memory-map'), 0, ...ascii('preserved-data'), 0,
]);

/** A plain, order-preserving picture of a tree, for deep equality. */
interface Plain {
  props: Array<[string, Uint8Array]>;
  children: Array<[string, Plain]>;
}
const toPlain = (n: FdtNode): Plain => ({ props: [...n.props], children: n.children.map((c) => [c.name, toPlain(c)]) });
function fromPlain(p: Plain, node = new FdtNode()): FdtNode {
  for (const [k, v] of p.props) node.setProp(k, v);
  for (const [name, child] of p.children) fromPlain(child, node.addChild(name));
  return node;
}

describe('FDT layout', () => {
  it.each([
    ['fdt_header', FDT_HEADER, FDT_HEADER_SIZE],
    ['fdt_reserve_entry', FDT_RESERVE_ENTRY, FDT_RESERVE_ENTRY_SIZE],
    ['fdt_property', FDT_PROP_HEADER, FDT_PROP_HEADER_SIZE],
  ])('%s fields are contiguous and sum to its size', (_name, struct, size) => {
    let next = 0;
    for (const f of Object.values(struct) as Array<{ offset: number; size: number }>) {
      expect(f.offset).toBe(next);
      next += f.size;
    }
    expect(next).toBe(size);
  });
});

describe('encodeFdt', () => {
  it('writes the golden bytes of a small KHO tree', () => {
    expect(Array.from(encodeFdt(khoRoot()))).toEqual(Array.from(GOLDEN));
    expect(fdtSize(khoRoot())).toBe(GOLDEN.length);
  });

  it('decodes the golden bytes back to the same tree', () => {
    expect(toPlain(decodeFdt(GOLDEN))).toEqual(toPlain(khoRoot()));
  });

  it('deduplicates property names in the strings block', () => {
    const root = new FdtNode().setU64LE('preserved-data', 1);
    for (const name of ['a', 'b', 'c']) root.addChild(name).setU64LE('preserved-data', 2);
    const blob = encodeFdt(root);
    const view = new DataView(blob.buffer);
    expect(view.getUint32(FDT_HEADER.size_dt_strings.offset)).toBe('preserved-data'.length + 1);
  });

  it('pads to totalSize and records it in the header', () => {
    const blob = encodeFdt(khoRoot(), { totalSize: 4096, bootCpuid: 3 });
    const view = new DataView(blob.buffer);
    expect(blob.length).toBe(4096);
    expect(view.getUint32(FDT_HEADER.totalsize.offset)).toBe(4096);
    expect(view.getUint32(FDT_HEADER.boot_cpuid_phys.offset)).toBe(3);
    // only totalsize and boot_cpuid_phys differ from the unpadded golden blob
    const golden = GOLDEN.slice();
    golden.set(blob.subarray(FDT_HEADER.totalsize.offset, FDT_HEADER.totalsize.offset + 4), FDT_HEADER.totalsize.offset);
    golden.set(blob.subarray(FDT_HEADER.boot_cpuid_phys.offset, FDT_HEADER.boot_cpuid_phys.offset + 4), FDT_HEADER.boot_cpuid_phys.offset);
    expect(Array.from(blob.subarray(0, GOLDEN.length))).toEqual(Array.from(golden));
    expect(blob.subarray(GOLDEN.length).every((b) => b === 0)).toBe(true);
    expect(toPlain(decodeFdt(blob))).toEqual(toPlain(khoRoot()));
  });

  it('refuses content larger than totalSize with ENOMEM, and fdtSize predicts it', () => {
    const root = khoRoot();
    root.addChild('big').setProp('blob', new Uint8Array(4000));
    const need = fdtSize(root);
    expect(need).toBe(GOLDEN.length + 8 + 4 + 12 + 4000 + 5); // BEGIN "big", END_NODE, PROP, "blob\0"
    expect(() => encodeFdt(root, { totalSize: 4096 })).toThrow(`ENOMEM: FDT needs ${need} bytes, only 4096 available`);
    expect(encodeFdt(root, { totalSize: need }).length).toBe(need);
  });

  it.each<[string, () => FdtNode, string]>([
    ['a named root', () => Object.assign(new FdtNode(), { name: 'x' }), `EINVAL: FDT: root node is named "x" (wanted '')`],
    [
      'a bad property name set through the map',
      () => {
        const r = new FdtNode();
        r.props.set('a b', new Uint8Array());
        return r;
      },
      'EINVAL: FDT: property name "a b" is not valid',
    ],
    [
      'twin children pushed through the array',
      () => {
        const r = new FdtNode();
        r.children.push(new FdtNode('a'), new FdtNode('a'));
        return r;
      },
      "EINVAL: FDT: node / has two children named 'a' (wanted unique names)",
    ],
    [
      'a cycle',
      () => {
        const r = new FdtNode();
        const a = r.addChild('a');
        a.children.push(a);
        return r;
      },
      'EINVAL: FDT: node /a/a appears twice in the tree (wanted a tree, not a graph)',
    ],
    [
      'a chain 33 levels deep',
      () => {
        const r = new FdtNode();
        let n = r;
        for (let i = 0; i < 32; i++) n = n.addChild('n');
        return r;
      },
      `EINVAL: FDT: node ${'/n'.repeat(32)} is at depth 33 (wanted at most 32)`,
    ],
  ])('refuses %s with EINVAL', (_what, build, message) => {
    expect(() => encodeFdt(build())).toThrow(message);
  });

  it.each([
    [{ totalSize: -1 }, 'EINVAL: FDT: totalSize -1 is not a u32 byte count'],
    [{ totalSize: 2 ** 32 }, 'EINVAL: FDT: totalSize 4294967296 is not a u32 byte count'],
    [{ bootCpuid: 1.5 }, 'EINVAL: FDT: bootCpuid 1.5 is not a u32'],
  ])('refuses options %j', (opts, message) => {
    expect(() => encodeFdt(khoRoot(), opts)).toThrow(message);
  });
});

describe('FDT round trip', () => {
  const nodeName = fc.stringMatching(/^[A-Za-z0-9,._+-]{1,31}(@[A-Za-z0-9,._+-]{1,31})?$/);
  const propName = fc.stringMatching(/^[A-Za-z0-9,._+?#-]{1,31}$/);
  const props = fc.uniqueArray(fc.tuple(propName, fc.uint8Array({ maxLength: 24 })), { selector: (p) => p[0], maxLength: 5 });
  const { node } = fc.letrec<{ node: Plain }>((tie) => ({
    node: fc.record({
      props,
      children: fc.oneof(
        { maxDepth: 4 },
        fc.constant([] as Array<[string, Plain]>),
        fc.uniqueArray(fc.tuple(nodeName, tie('node')), { selector: (c) => c[0], maxLength: 4 }),
      ),
    }),
  }));

  it('decode(encode(tree)) equals the tree, in order', () => {
    fc.assert(
      fc.property(node, (plain) => {
        const tree = fromPlain(plain);
        const blob = encodeFdt(tree);
        expect(blob.length).toBe(fdtSize(tree));
        expect(toPlain(decodeFdt(blob))).toEqual(plain);
      }),
      { numRuns: 200 },
    );
  });
});

describe('dtc interoperability', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kho-fdt-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  itDtc('dtc -I dtb -O dts decompiles a one-page KHO root FDT', () => {
    const file = join(dir, 'root.dtb');
    writeFileSync(file, encodeFdt(khoRoot(0x12345000, 0x6789a000), { totalSize: 4096 }));
    const r = spawnSync(DTC, ['-I', 'dtb', '-O', 'dts', file], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('compatible = "kho-v2";');
    expect(r.stdout).toContain('preserved-memory-map = <0x503412 0x00>;'); // dtc shows LE 0x12345000 as two BE cells
    expect(r.stdout).toContain('kho_test {');
    expect(r.stdout).toContain('preserved-data = <');
  });

  itDtc('decodes what dtc compiles', () => {
    const src = join(dir, 'in.dts');
    const out = join(dir, 'out.dtb');
    writeFileSync(
      src,
      '/dts-v1/;\n/ {\n\tcompatible = "memblock-v1";\n\t#address-cells = <2>;\n' +
        '\tlog { compatible = "reserve-mem-v1"; start = [00 00 10 00 00 00 00 00]; size = /bits/ 64 <0x100000>; };\n' +
        '\tnode@1,2 { list = "a", "bc"; empty; };\n};\n',
    );
    const r = spawnSync(DTC, ['-I', 'dts', '-O', 'dtb', '-o', out, src], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const blob = new Uint8Array(readFileSync(out));
    const root = decodeFdt(blob);
    expect(root.getString('compatible')).toBe('memblock-v1');
    expect(root.getProp('#address-cells')).toEqual(Uint8Array.from([0, 0, 0, 2]));
    const log = root.child('log')!;
    expect(log.getString('compatible')).toBe('reserve-mem-v1');
    expect(log.getU64LE('start')).toBe(0x100000n);
    expect(log.getProp('size')).toEqual(Uint8Array.from([0, 0, 0, 0, 0, 0x10, 0, 0])); // /bits/ 64 is big-endian
    expect(root.child('node@1,2')!.getProp('list')).toEqual(Uint8Array.from([0x61, 0, 0x62, 0x63, 0]));
    expect(root.child('node@1,2')!.getProp('empty')).toEqual(new Uint8Array());
    // and our re-encoding is one dtc reads back to the same text
    writeFileSync(out, encodeFdt(root));
    const again = spawnSync(DTC, ['-I', 'dtb', '-O', 'dts', out], { encoding: 'utf8' });
    expect(again.status).toBe(0);
    expect(again.stdout).toContain('list = "a\\0bc";');
  });
});
