import { formatBytes, hex } from '@kho/kernel';
import type { MapSegment, MemoryMapSnapshot, RegionKind } from './snapshot';

/** Fixed colours of the kinds; preserved and incoming blocks get one hue per owner. */
export const KIND_COLOURS: Record<Exclude<RegionKind, 'preserved' | 'incoming'>, string> = {
  free: '#e8f5e9',
  'free-scratch': '#b3e5fc',
  allocated: '#90a4ae',
  reserved: '#5d4037',
  tracker: '#ff9800',
};
const OWNER_HUES = [0, 280, 330, 45, 200, 120, 15, 260];
const WIDTH = 960;
const ROW_HEIGHT = 14;
const ROW_GAP = 3;
const LEFT = 110;

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Assigns each owner a colour, stable across the snapshots of one report. */
export class OwnerPalette {
  private readonly colours = new Map<string, string>();
  colourOf(kind: 'preserved' | 'incoming', owner: string): string {
    let hue = this.colours.get(owner);
    if (hue === undefined) {
      hue = `${OWNER_HUES[this.colours.size % OWNER_HUES.length]}`;
      this.colours.set(owner, hue);
    }
    return kind === 'preserved' ? `hsl(${hue} 75% 45%)` : `hsl(${hue} 60% 70%)`;
  }
  owners(): string[] {
    return [...this.colours.keys()];
  }
}

function colourOf(seg: MapSegment, palette: OwnerPalette): string {
  if (seg.kind === 'preserved' || seg.kind === 'incoming') return palette.colourOf(seg.kind, seg.owner ?? 'other');
  return KIND_COLOURS[seg.kind];
}

function describe(seg: MapSegment): string {
  const what = seg.owner ? `${seg.kind} (${seg.owner})` : seg.kind;
  return `${what}: ${hex(seg.start)}–${hex(seg.end)} (${formatBytes(seg.end - seg.start)})`;
}

/**
 * Draws a snapshot as SVG: one band of rows per RAM range, each row a fixed span of physical addresses, every
 * region a rectangle whose tooltip gives kind, owner and addresses; scratch areas outlined. Regions smaller than
 * a pixel are drawn one pixel wide so that a single tracker page stays visible.
 */
export function renderMemoryMap(s: MemoryMapSnapshot, palette: OwnerPalette): string {
  const parts: string[] = [];
  let y = 0;
  for (const r of s.ranges) {
    const rowBytes = Math.max(2 ** 22, 2 ** Math.ceil(Math.log2(r.size / 48)));
    const rows = Math.ceil(r.size / rowBytes);
    const px = (WIDTH - LEFT) / rowBytes;
    parts.push(`<text x="0" y="${y + 11}" class="range">node ${r.node}: ${hex(r.start)} +${escapeXml(formatBytes(r.size))}</text>`);
    y += 16;
    const top = y;
    for (let row = 0; row < rows; row++) {
      const rowStart = r.start + row * rowBytes;
      parts.push(`<text x="0" y="${y + 11}" class="addr">${hex(rowStart)}</text>`);
      y += ROW_HEIGHT + ROW_GAP;
    }
    const at = (addr: number): { x: number; y: number } => {
      const off = addr - r.start;
      const row = Math.floor(off / rowBytes);
      return { x: LEFT + (off - row * rowBytes) * px, y: top + row * (ROW_HEIGHT + ROW_GAP) };
    };
    for (const seg of s.segments) {
      if (seg.end <= r.start || seg.start >= r.start + r.size) continue;
      let a = Math.max(seg.start, r.start);
      const end = Math.min(seg.end, r.start + r.size);
      const title = escapeXml(describe(seg));
      while (a < end) {
        const rowEnd = r.start + (Math.floor((a - r.start) / rowBytes) + 1) * rowBytes;
        const b = Math.min(end, rowEnd);
        const p = at(a);
        const w = Math.max(1, (b - a) * px);
        parts.push(
          `<rect x="${p.x.toFixed(2)}" y="${p.y}" width="${w.toFixed(2)}" height="${ROW_HEIGHT}" fill="${colourOf(seg, palette)}" data-kind="${seg.kind}"${seg.owner ? ` data-owner="${escapeXml(seg.owner)}"` : ''}><title>${title}</title></rect>`,
        );
        a = b;
      }
    }
    for (const sc of s.scratch) {
      if (sc.addr < r.start || sc.addr >= r.start + r.size) continue;
      let a = sc.addr;
      const end = Math.min(sc.addr + sc.size, r.start + r.size);
      while (a < end) {
        const rowEnd = r.start + (Math.floor((a - r.start) / rowBytes) + 1) * rowBytes;
        const b = Math.min(end, rowEnd);
        const p = at(a);
        parts.push(
          `<rect x="${p.x.toFixed(2)}" y="${p.y - 1}" width="${((b - a) * px).toFixed(2)}" height="${ROW_HEIGHT + 2}" fill="none" stroke="#0277bd" stroke-width="1.5" stroke-dasharray="4 2" data-kind="scratch"><title>scratch area: ${hex(sc.addr)}–${hex(sc.addr + sc.size)} (${escapeXml(formatBytes(sc.size))})</title></rect>`,
        );
        a = b;
      }
    }
    y += 8;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" class="memmap" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" role="img" aria-label="${escapeXml(s.label)}">${parts.join('')}</svg>`;
}

/** The legend: every fixed kind, scratch, and each owner's preserved and incoming colours. */
export function renderLegend(palette: OwnerPalette): string {
  const items: Array<[string, string, string]> = [
    ['free', KIND_COLOURS.free, 'free (buddy allocator)'],
    ['free-scratch', KIND_COLOURS['free-scratch'], 'free scratch (movable allocations only)'],
    ['allocated', KIND_COLOURS.allocated, 'allocated'],
    ['reserved', KIND_COLOURS.reserved, 'reserved (kernel image, memmap, kexec segments)'],
    ['tracker', KIND_COLOURS.tracker, 'tracker metadata'],
  ];
  for (const o of palette.owners()) {
    items.push([`preserved:${o}`, palette.colourOf('preserved', o), `preserved by ${o}`]);
    items.push([`incoming:${o}`, palette.colourOf('incoming', o), `handed over by ${o}, not yet restored`]);
  }
  const li = items.map(
    ([key, colour, text]) => `<li data-legend="${escapeXml(key)}"><span class="swatch" style="background:${colour}"></span>${escapeXml(text)}</li>`,
  );
  li.push('<li data-legend="scratch"><span class="swatch scratch"></span>scratch area (outlined)</li>');
  return `<ul class="legend">${li.join('')}</ul>`;
}
