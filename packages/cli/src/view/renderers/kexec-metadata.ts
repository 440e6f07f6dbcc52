import { KHO_KEXEC_METADATA_SUBTREE, readKexecMetadata } from '@kho/kho-core';
import type { SubtreeRenderer } from '../types';

/** Subtree `kexec-metadata` (kho-v3 and later): the previous release and the kexec count since the cold boot. */
export const kexecMetadataRenderer: SubtreeRenderer = {
  kind: 'kexec-metadata',
  jsonKey: 'kexecMetadata',
  matches: (node) => node.name === KHO_KEXEC_METADATA_SUBTREE,
  render({ ram, phys, size }) {
    // without a blob-size (an older generation) the struct is read at its own size
    const m = readKexecMetadata(ram, phys, size ?? 73);
    return {
      data: m,
      claims: [{ start: phys, end: phys + (size ?? 73), what: 'kexec-metadata' }],
      view: {
        label: 'kexec-metadata',
        value: `exec from ${m.previousRelease} (count ${m.kexecCount})`,
        phys,
        children: [
          { label: 'previous_release', value: m.previousRelease },
          { label: 'kexec_count', value: String(m.kexecCount) },
        ],
      },
    };
  },
};
