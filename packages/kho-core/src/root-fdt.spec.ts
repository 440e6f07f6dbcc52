import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Errno, KernelError } from '@kho/kernel';
import { decodeFdt, encodeFdt } from '@kho/fdt';
import { KHO_GENERATIONS, generationById, khoV1, khoV2, khoV3, selectGeneration, type KhoGeneration } from './generations';
import { addSubtreeNode, buildRootFdt, findSubtreeByBlob, readSubtreeNode, readableGenerations, rootGeneration } from './root-fdt';

/**
 * Golden root FDTs: each generation's root for a map at 0x12340000 with one subtree `memblock` (blob 0x12345000,
 * 472 bytes), packed. The bytes are the DTB that generation's Linux writes for the same content: big-endian header
 * and tokens, little-endian u64 property values, `fdt` (kho-v1) or `preserved-data`, and `blob-size` from kho-v3.
 */
const GOLDEN: ReadonlyArray<[string, string]> = [
  ['v1', [
      'd00dfeed000000bc00000038000000980000002800000011000000100000000000000024000000600000000000000000',
      '000000000000000000000001000000000000000300000007000000006b686f2d7631000000000003000000080000000b',
      '0000341200000000000000016d656d626c6f636b00000000000000030000000800000020005034120000000000000002',
      '0000000200000009636f6d70617469626c65007072657365727665642d6d656d6f72792d6d61700066647400',
    ].join('')],
  ['v1-karr', [
      'd00dfeed000000c0000000380000009c0000002800000011000000100000000000000024000000640000000000000000',
      '00000000000000000000000100000000000000030000000c000000006b686f2d76312d6b617272000000000300000008',
      '0000000b0000341200000000000000016d656d626c6f636b000000000000000300000008000000200050341200000000',
      '000000020000000200000009636f6d70617469626c65007072657365727665642d6d656d6f72792d6d61700066647400',
    ].join('')],
  ['v2', [
      'd00dfeed000000c70000003800000098000000280000001100000010000000000000002f000000600000000000000000',
      '000000000000000000000001000000000000000300000007000000006b686f2d7632000000000003000000080000000b',
      '0000341200000000000000016d656d626c6f636b00000000000000030000000800000020005034120000000000000002',
      '0000000200000009636f6d70617469626c65007072657365727665642d6d656d6f72792d6d6170007072657365727665',
      '642d6461746100',
    ].join('')],
  ['v3', [
      'd00dfeed000000e500000038000000ac0000002800000011000000100000000000000039000000740000000000000000',
      '000000000000000000000001000000000000000300000007000000006b686f2d7633000000000003000000080000000b',
      '0000341200000000000000016d656d626c6f636b00000000000000030000000800000020005034120000000000000003',
      '000000080000002fd801000000000000000000020000000200000009636f6d70617469626c6500707265736572766564',
      '2d6d656d6f72792d6d6170007072657365727665642d6461746100626c6f622d73697a6500',
    ].join('')],
  ['v4', [
      'd00dfeed000000e500000038000000ac0000002800000011000000100000000000000039000000740000000000000000',
      '000000000000000000000001000000000000000300000007000000006b686f2d7634000000000003000000080000000b',
      '0000341200000000000000016d656d626c6f636b00000000000000030000000800000020005034120000000000000003',
      '000000080000002fd801000000000000000000020000000200000009636f6d70617469626c6500707265736572766564',
      '2d6d656d6f72792d6d6170007072657365727665642d6461746100626c6f622d73697a6500',
    ].join('')],
  ['v4-composite', [
      'd00dfeed000000f900000038000000c00000002800000011000000100000000000000039000000880000000000000000',
      '00000000000000000000000100000000000000030000001b000000006b686f2d76343b72616469782d76313b766d616c',
      '6c6f632d7631000000000003000000080000000b0000341200000000000000016d656d626c6f636b0000000000000003',
      '0000000800000020005034120000000000000003000000080000002fd801000000000000000000020000000200000009',
      '636f6d70617469626c65007072657365727665642d6d656d6f72792d6d6170007072657365727665642d646174610062',
      '6c6f622d73697a6500',
    ].join('')],
];

function goldenRoot(g: KhoGeneration): Uint8Array {
  const root = buildRootFdt(g, 0x12340000);
  addSubtreeNode(g, root, 'memblock', 0x12345000, 0x1d8);
  return encodeFdt(root);
}

describe('root FDT of every generation (golden bytes)', () => {
  it('covers every generation of the registry', () => {
    expect(GOLDEN.map(([id]) => id)).toEqual(KHO_GENERATIONS.map((g) => g.id));
  });

  it.each(GOLDEN)('%s', (id, hex) => {
    const g = generationById(id)!;
    expect(Buffer.from(goldenRoot(g)).toString('hex')).toBe(hex);
    const back = decodeFdt(Buffer.from(hex, 'hex'));
    expect(back.getString('compatible')).toBe(g.compatible);
    expect(rootGeneration(back, KHO_GENERATIONS)).toBe(g);
    expect(readSubtreeNode(g, back, 'memblock')).toEqual(g.blobSize ? { phys: 0x12345000, size: 0x1d8 } : { phys: 0x12345000 });
  });

  const dtc = spawnSync('dtc', ['--version']).status === 0;
  (dtc ? it : it.skip)('every golden root decompiles with dtc', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kho-gen-'));
    try {
      for (const [id, hex] of GOLDEN) {
        const file = join(dir, `${id}.dtb`);
        writeFileSync(file, Buffer.from(hex, 'hex'));
        const r = spawnSync('dtc', ['-I', 'dtb', '-O', 'dts', file], { encoding: 'utf8' });
        expect(r.status).toBe(0);
        expect(r.stdout).toContain(`compatible = "${generationById(id)!.compatible}";`);
        expect(r.stdout).toContain(id === 'v1' || id === 'v1-karr' ? 'fdt = ' : 'preserved-data = ');
        expect(r.stdout.includes('blob-size = ')).toBe(generationById(id)!.blobSize);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('subtrees per generation', () => {
  it('addSubtreeNode refuses a taken name (EEXIST) and leaves nothing behind on a bad one', () => {
    const root = buildRootFdt(khoV3, 0x1000);
    addSubtreeNode(khoV3, root, 'a', 0x2000, 8);
    expect(() => addSubtreeNode(khoV3, root, 'a', 0x3000, 8)).toThrow(new KernelError(Errno.EEXIST, "subtree 'a' already exists in the root FDT"));
    expect(() => addSubtreeNode(khoV3, root, 'b', 2 ** 53, 8)).toThrow(KernelError);
    expect(root.children.map((c) => c.name)).toEqual(['a']);
  });

  it.each<[KhoGeneration, (n: ReturnType<typeof buildRootFdt>) => void, string]>([
    [khoV3, (r) => r.child('s')!.props.delete('blob-size'), "retrieveSubtree('s'): 'blob-size' is missing (wanted 8)"],
    [khoV3, (r) => r.child('s')!.setProp('blob-size', new Uint8Array(4)), "retrieveSubtree('s'): 'blob-size' is 4 bytes (wanted 8)"],
    [khoV3, (r) => r.child('s')!.props.delete('preserved-data'), "retrieveSubtree('s'): 'preserved-data' is missing (wanted 8)"],
    [khoV1, (r) => r.child('s')!.props.delete('fdt'), "retrieveSubtree('s'): 'fdt' is missing (wanted 8)"],
  ])('readSubtreeNode(%s) refuses a damaged node with EINVAL, as upstream', (g, damage, reason) => {
    const root = buildRootFdt(g, 0x1000);
    addSubtreeNode(g, root, 's', 0x2000, 16);
    damage(root);
    expect(() => readSubtreeNode(g, root, 's')).toThrow(new KernelError(Errno.EINVAL, reason));
  });

  it('readSubtreeNode: no such node is ENOENT; kho-v2 needs no blob-size', () => {
    const root = buildRootFdt(khoV2, 0x1000);
    expect(() => readSubtreeNode(khoV2, root, 'x')).toThrow(new KernelError(Errno.ENOENT, "retrieveSubtree('x'): no such subtree in the incoming FDT"));
    addSubtreeNode(khoV2, root, 'x', 0x5000, 99);
    expect(root.child('x')!.getProp('blob-size')).toBeUndefined();
    expect(readSubtreeNode(khoV2, root, 'x')).toEqual({ phys: 0x5000 });
  });

  it('findSubtreeByBlob finds the first node whose address property equals the blob (kho_remove_subtree)', () => {
    const root = buildRootFdt(khoV1, 0x1000);
    addSubtreeNode(khoV1, root, 'a', 0x2000, 0);
    addSubtreeNode(khoV1, root, 'b', 0x3000, 0);
    expect(findSubtreeByBlob(khoV1, root, 0x3000)?.name).toBe('b');
    expect(findSubtreeByBlob(khoV2, root, 0x3000)).toBeUndefined(); // kho-v2 looks at preserved-data
  });
});

describe('selecting a generation (kho_abi=)', () => {
  it('defaults to the tracker\'s generation and takes any generation of the same map', () => {
    expect(selectGeneration(undefined, 'radix', 'v3')).toBe(khoV3);
    expect(selectGeneration('v2', 'radix', 'v3')).toBe(khoV2);
    expect(selectGeneration(undefined, 'bitmap-chunks', 'v1')).toBe(khoV1);
  });

  it.each([
    ['v9', 'radix', 'kho_abi=v9 is not a KHO generation (wanted one of v1, v1-karr, v2, v3, v4, v4-composite)'],
    ['v1', 'radix', 'kho_abi=v1 (kho-v1) carries the bitmap-chunks map, but this kernel\'s tracker is radix (wanted one of v2, v3, v4, v4-composite)'],
    ['v3', 'bitmap-chunks', 'kho_abi=v3 (kho-v3) carries the radix map, but this kernel\'s tracker is bitmap-chunks (wanted one of v1)'],
  ])('refuses kho_abi=%s with a %s tracker', (id, tracker, reason) => {
    expect(() => selectGeneration(id, tracker, 'v1')).toThrow(new KernelError(Errno.EINVAL, reason));
  });

  it('a kernel reads every generation of its map kind', () => {
    expect(readableGenerations('radix').map((g) => g.id)).toEqual(['v2', 'v3', 'v4', 'v4-composite']);
    expect(readableGenerations('bitmap-array').map((g) => g.id)).toEqual(['v1-karr']);
  });
});
