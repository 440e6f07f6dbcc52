import { writeFileSync } from 'node:fs';
import { formatBytes } from '@kho/kernel';
import type { MemoryMapSnapshot } from './snapshot';
import { OwnerPalette, escapeXml, renderLegend, renderMemoryMap } from './svg';

/** One kexec of a report: the maps before the jump and after the next boot, and what was measured. */
export interface KexecSection {
  readonly title: string;
  readonly before: MemoryMapSnapshot;
  readonly after: MemoryMapSnapshot;
  /** Tracker and array statistics (name → value). */
  readonly stats: Readonly<Record<string, string | number>>;
  /** Milliseconds per phase, per kernel. */
  readonly timings: Readonly<Record<string, Readonly<Record<string, number>>>>;
  readonly verified: boolean;
  readonly checks: readonly string[];
}

export interface ReportData {
  readonly title: string;
  readonly command: string;
  readonly ok: boolean;
  readonly kexecs: readonly KexecSection[];
}

const CSS = `
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc} h3{font-size:15px}
.ok{color:#2e7d32;font-weight:600} .bad{color:#c62828;font-weight:600}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:6px 18px} .legend li{display:flex;align-items:center;gap:6px}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #999} .swatch.scratch{border:2px dashed #0277bd;background:none}
svg.memmap text{font:10px monospace;fill:#555} svg.memmap text.range{font-weight:bold;fill:#222}
svg.memmap rect:hover{stroke:#000;stroke-width:1}
code{background:#f4f4f4;padding:1px 4px}
`;

function table(rows: Array<[string, string | number]>): string {
  return `<table>${rows.map(([k, v]) => `<tr><th>${escapeXml(k)}</th><td class="${typeof v === 'number' ? 'n' : ''}">${escapeXml(String(v))}</td></tr>`).join('')}</table>`;
}

function totalsTable(s: MemoryMapSnapshot): string {
  const rows = Object.entries(s.totals)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => [k, formatBytes(v)] as [string, string]);
  return table(rows);
}

function timingsTable(t: KexecSection['timings']): string {
  const phases = [...new Set(Object.values(t).flatMap((r) => Object.keys(r)))];
  const kernels = Object.keys(t);
  const head = `<tr><th>phase</th>${kernels.map((k) => `<th>${escapeXml(k)}</th>`).join('')}</tr>`;
  const body = phases
    .map((p) => `<tr><th>${escapeXml(p)}</th>${kernels.map((k) => `<td class="n">${t[k][p] === undefined ? '' : `${t[k][p].toFixed(2)} ms`}</td>`).join('')}</tr>`)
    .join('');
  return `<table>${head}${body}</table>`;
}

/** Renders a whole report as one self-contained HTML page (inline CSS and SVG, no scripts, no external files). */
export function renderReport(data: ReportData): string {
  const palette = new OwnerPalette();
  const sections = data.kexecs.map((k, i) => {
    const before = renderMemoryMap(k.before, palette);
    const after = renderMemoryMap(k.after, palette);
    return `<section class="kexec" id="kexec-${i + 1}">
<h2>${escapeXml(k.title)} <span class="${k.verified ? 'ok' : 'bad'}">${k.verified ? 'verified' : 'FAILED'}</span></h2>
<h3>Before the jump: ${escapeXml(k.before.label)}</h3>
<div class="map" data-map="before">${before}</div>
${totalsTable(k.before)}
<h3>After the next boot, before restore: ${escapeXml(k.after.label)}</h3>
<div class="map" data-map="after">${after}</div>
${totalsTable(k.after)}
<h3>Tracker and arrays</h3>
${table(Object.entries(k.stats))}
<h3>Timings</h3>
${timingsTable(k.timings)}
<h3>Verification</h3>
<ul class="checks">${k.checks.map((c) => `<li>${escapeXml(c)}</li>`).join('')}</ul>
</section>`;
  });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeXml(data.title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeXml(data.title)} <span class="${data.ok ? 'ok' : 'bad'}" id="result">${data.ok ? 'every preserved byte verified' : 'FAILED'}</span></h1>
<p>Command: <code>${escapeXml(data.command)}</code>. Hover a region of a map for its addresses.</p>
<h2>Legend</h2>
${renderLegend(palette)}
${sections.join('\n')}
</body></html>
`;
}

/** Writes the report to `file`. */
export function writeReport(file: string, data: ReportData): void {
  writeFileSync(file, renderReport(data));
}
