import type { KhoGeneration } from './generation';

/** kho-v1 (Linux 6.16–6.18): bitmaps serialised as a chunk list at finalize; subtrees point at FDTs with `fdt`. */
export const khoV1: KhoGeneration = {
  id: 'v1',
  compatible: 'kho-v1',
  title: 'kho-v1: bitmap chunk list built at finalize, subtree property fdt',
  mainline: true,
  release: '6.18.0-kho-lab',
  tracker: 'bitmap-chunks',
  subtreeAddress: 'fdt',
  blobSize: false,
  kexecMetadata: false,
  numaClamp: false,
  restoreMaxOrder: 10,
};

/** kho-v1-karr: the project's name for the KHO array RFC's form of the kho-v1 bitmaps (records in a KHO array). */
export const khoV1Karr: KhoGeneration = {
  ...khoV1,
  id: 'v1-karr',
  compatible: 'kho-v1-karr',
  title: 'kho-v1-karr: kho-v1 bitmaps as KHO array records (the KHO array RFC; the name is the project\'s)',
  mainline: false,
  tracker: 'bitmap-array',
};
