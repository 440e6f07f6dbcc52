import type { KhoGeneration } from './generation';

/**
 * kho-v3 (Linux 7.1): every subtree carries `blob-size`; KHO writes the kexec-metadata subtree; preserve_pages
 * keeps blocks inside one NUMA node; restore takes blocks of any order.
 */
export const khoV3: KhoGeneration = {
  id: 'v3',
  compatible: 'kho-v3',
  title: 'kho-v3: subtrees with blob-size, kexec-metadata, NUMA-clamped split',
  mainline: true,
  release: '7.1.0-kho-lab',
  tracker: 'radix',
  subtreeAddress: 'preserved-data',
  blobSize: true,
  kexecMetadata: true,
  numaClamp: true,
  restoreMaxOrder: Infinity,
};
