import { formatBytes } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { decodeLuo, type DecodedLuo, type LuoDecodeMemory } from '@kho/liveupdate';
import { MEMFD_LUO_COMPATIBLE, decodeMemfdLuoRecord, type DecodedMemfdLuo } from '@kho/memfd';

/** LUO's subtree decoded (sessions, files, each memfd's folios), with the decoders of the handlers this tool knows. */
export function inspectLuo(ram: LuoDecodeMemory, phys: number, size?: number): DecodedLuo {
  return decodeLuo(ram, phys, { size, fileDecoders: { [MEMFD_LUO_COMPATIBLE]: decodeMemfdLuoRecord } });
}

/** The decoded tree as text for people: one line per session and file, a memfd's folios summarised. */
export function formatLuo(d: DecodedLuo, indent = '    '): string[] {
  const out = [`${indent}${d.format}${d.compatible ? ` (compatible '${d.compatible}')` : ''}, live update number ${d.liveupdateNum ?? '?'}, ${d.sessions.length} sessions in ${d.sessionBlocks.length} ${d.format === 'luo-v1' ? 'area' : 'blocks'}`];
  for (const s of d.sessions) {
    out.push(`${indent}  session '${s.name}' (record ${s.record}): ${s.fileCount} files${s.fileBlocks.length ? ` in ${s.fileBlocks.join(', ')}` : ''}`);
    for (const f of s.files) {
      out.push(`${indent}    token ${f.token}: ${f.compatible}, data ${f.data}`);
      const m = f.decoded as DecodedMemfdLuo | undefined;
      if (m && f.compatible === MEMFD_LUO_COMPATIBLE) {
        out.push(`${indent}      memfd: size ${formatBytes(m.size)}, pos ${m.pos}, seals 0x${m.seals.toString(16)}, ${m.nrFolios} folios (array ${m.array.first}, ${m.array.totalPages} pages)`);
        const shown = m.folios.slice(0, 8).map((x) => `${x.pfn}@${x.index}`);
        out.push(`${indent}      folios (pfn@page index): ${shown.join(' ')}${m.folios.length > 8 ? ` … (${m.folios.length - 8} more)` : ''}`);
        if (m.error) out.push(`${indent}      (could not decode: ${m.error})`);
      }
      if (f.error) out.push(`${indent}      (could not decode: ${f.error})`);
    }
    if (s.error) out.push(`${indent}    (${s.error})`);
  }
  if (d.flbs) out.push(`${indent}  FLB page ${d.flbs.page}: ${d.flbs.entries.length} entries${d.flbs.entries.map((e) => ` ${e.name} (count ${e.count}, data ${e.data})`).join(',')}`);
  for (const e of d.errors) out.push(`${indent}  error: ${e}`);
  return out;
}

/** Bytes the folios of a decoded memfd cover, given the order of each block (from the tracker). */
export function memfdBytes(m: DecodedMemfdLuo, orderOf: (pfn: number) => number | undefined): number {
  return m.folios.reduce((n, f) => n + PAGE_SIZE * 2 ** (orderOf(Number(f.pfn)) ?? 0), 0);
}
