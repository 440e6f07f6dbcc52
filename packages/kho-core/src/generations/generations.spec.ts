import { KHO_GENERATIONS, generationByCompatible, generationById, khoV1, khoV1Karr, khoV2, khoV3, khoV4, khoV4Composite } from './index';

/**
 * Each generation as the lab writes and reads it: the compatible and the layout facts are Linux's (spec section 11);
 * the release names the simulated kernel in kexec-metadata, and the title is what `kho compat` prints.
 */
describe('the KHO generations (what each one writes and reads)', () => {
  it.each([
    [khoV1, { id: 'v1', compatible: 'kho-v1', mainline: true, release: '6.18.0-kho-lab', tracker: 'bitmap-chunks', subtreeAddress: 'fdt', blobSize: false, kexecMetadata: false, numaClamp: false, restoreMaxOrder: 10 }],
    [khoV1Karr, { id: 'v1-karr', compatible: 'kho-v1-karr', mainline: false, release: '6.18.0-kho-lab', tracker: 'bitmap-array', subtreeAddress: 'fdt', blobSize: false, kexecMetadata: false, numaClamp: false, restoreMaxOrder: 10 }],
    [khoV2, { id: 'v2', compatible: 'kho-v2', mainline: true, release: '7.0.0-kho-lab', tracker: 'radix', subtreeAddress: 'preserved-data', blobSize: false, kexecMetadata: false, numaClamp: false, restoreMaxOrder: 10 }],
    [khoV3, { id: 'v3', compatible: 'kho-v3', mainline: true, release: '7.1.0-kho-lab', tracker: 'radix', subtreeAddress: 'preserved-data', blobSize: true, kexecMetadata: true, numaClamp: true, restoreMaxOrder: Infinity }],
    [khoV4, { id: 'v4', compatible: 'kho-v4', mainline: true, release: '7.2.0-kho-lab', tracker: 'radix', subtreeAddress: 'preserved-data', blobSize: true, kexecMetadata: true, numaClamp: true, restoreMaxOrder: Infinity }],
    [
      khoV4Composite,
      { id: 'v4-composite', compatible: 'kho-v4;radix-v1;vmalloc-v1', mainline: false, release: '7.2.0-rfc-kho-lab', tracker: 'radix', subtreeAddress: 'preserved-data', blobSize: true, kexecMetadata: true, numaClamp: true, restoreMaxOrder: Infinity },
    ],
  ])('%#: %o', (g, want) => {
    const { title: _title, ...rest } = g;
    expect(rest).toEqual(want);
    expect(generationById(g.id)).toBe(g);
    expect(generationByCompatible(g.compatible)).toBe(g);
    expect(KHO_GENERATIONS).toContain(g);
  });

  it('titles start with the compatible and say what changed', () => {
    expect(KHO_GENERATIONS.map((g) => g.title)).toEqual([
      'kho-v1: bitmap chunk list built at finalize, subtree property fdt',
      "kho-v1-karr: kho-v1 bitmaps as KHO array records (the KHO array RFC; the name is the project's)",
      'kho-v2: stateless radix tree, subtree property preserved-data',
      'kho-v3: subtrees with blob-size, kexec-metadata, NUMA-clamped split',
      'kho-v4: kho-v3 plus the kho_block format (LUO luo-v5)',
      'kho-v4;radix-v1;vmalloc-v1: the linux-mm RFC of composite compatible strings',
    ]);
  });
});
