import { LUO_KHO_ENTRY_NAME } from '@kho/liveupdate';
import { PAGE_SIZE } from '@kho/physmem';
import { inspectLuo } from '../../vmm/luo-inspect';
import type { Claim, SubtreeRenderer, ViewNode } from '../types';

/** Subtree `LUO`: the Live Update Orchestrator's sessions, their files and (for memfds) the folios. */
export const luoRenderer: SubtreeRenderer = {
  kind: 'Live Update Orchestrator',
  jsonKey: 'luo',
  matches: (node) => node.name === LUO_KHO_ENTRY_NAME,
  render({ ram, phys, size }) {
    const d = inspectLuo(ram, phys, size);
    const claims: Claim[] = [{ start: phys, end: phys + PAGE_SIZE, what: 'LUO state' }];
    const sessions: ViewNode[] = d.sessions.map((s) => ({
      label: `session '${s.name}'`,
      value: `${s.fileCount} files`,
      children: s.files.map((f) => ({ label: `token ${f.token}`, value: `${f.compatible}, data ${f.data}` })),
    }));
    return {
      data: d,
      claims,
      view: { label: 'LUO', value: `${d.format}, ${d.sessions.length} sessions`, phys, children: sessions },
      problems: d.errors,
    };
  },
};
