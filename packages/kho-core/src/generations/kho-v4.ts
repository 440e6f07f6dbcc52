import type { KhoGeneration } from './generation';
import { khoV3 } from './kho-v3';

/**
 * kho-v4 (Linux 7.2): the root FDT is kho-v3's; the string changed because the kho_block format that LUO's
 * records use is versioned by it.
 */
export const khoV4: KhoGeneration = {
  ...khoV3,
  id: 'v4',
  compatible: 'kho-v4',
  title: 'kho-v4: kho-v3 plus the kho_block format (LUO luo-v5)',
  release: '7.2.0-kho-lab',
};

/**
 * The linux-mm RFC's composite string: kho-v4 with its sub-components' own versions appended in alphabetical order.
 * Checked whole, like any root compatible; the layout is kho-v4's.
 */
export const khoV4Composite: KhoGeneration = {
  ...khoV4,
  id: 'v4-composite',
  compatible: 'kho-v4;radix-v1;vmalloc-v1',
  title: 'kho-v4;radix-v1;vmalloc-v1: the linux-mm RFC of composite compatible strings',
  mainline: false,
  release: '7.2.0-rfc-kho-lab',
};
