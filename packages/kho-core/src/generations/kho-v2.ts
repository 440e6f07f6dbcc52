import type { KhoGeneration } from './generation';

/** kho-v2 (Linux 6.19–7.0, "Make KHO Stateless"): the radix tree edited in place; subtrees with `preserved-data`. */
export const khoV2: KhoGeneration = {
  id: 'v2',
  compatible: 'kho-v2',
  title: 'kho-v2: stateless radix tree, subtree property preserved-data',
  mainline: true,
  release: '7.0.0-kho-lab',
  tracker: 'radix',
  subtreeAddress: 'preserved-data',
  blobSize: false,
  kexecMetadata: false,
  numaClamp: false,
  restoreMaxOrder: 10,
};
