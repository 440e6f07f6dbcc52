import type { Inspection } from '../inspect';
import { CLIENT_JS } from './client';
import { imagePageData, runPageData, type PageData, type RunPage } from './model';

const CSS = `
body{font:14px/1.45 system-ui,sans-serif;margin:20px 24px;color:#222;max-width:1180px}
h1{font-size:21px;margin:0 0 6px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ccc} h3{font-size:15px;margin:14px 0 6px} h4{font-size:14px;margin:12px 0 4px}
.ok{color:#2e7d32;font-weight:600} .bad{color:#c62828;font-weight:600}
table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top} th{font-weight:600;background:#fafafa}
code{background:#f4f4f4;padding:1px 4px;word-break:break-all}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 18px;margin:4px 0} .legend li{display:flex;align-items:center;gap:5px}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #999} .swatch.scratch{border:2px dashed #0277bd;background:none} .swatch.fold{border:1px dashed #9ccc65;background:#f1f8e9}
.charts{display:flex;flex-wrap:wrap;gap:8px 18px} .chart{margin:0} .chart figcaption{font-size:12px;color:#444} .chart .unit{color:#777}
.chart svg{background:#fcfcfc;border:1px solid #e3e3e3} .chart text{font:9px sans-serif;fill:#777} .chart circle.pt{fill:#1565c0;pointer-events:none} .chart circle.pt.sel{fill:#d84315;r:5} .chart rect.bar{cursor:pointer} .chart rect.hit{fill:transparent;cursor:pointer} .chart rect.hit:hover{fill:rgba(21,101,192,.12)}
.keys{font-size:11px;color:#555;max-width:320px} .keys .key{white-space:nowrap} .keys i{display:inline-block;width:9px;height:9px;margin:0 3px 0 0}
.stepper{margin:8px 0} .stepper input{width:320px;vertical-align:middle}
.tabs{margin:6px 0} .tab{border:1px solid #bbb;background:#f5f5f5;padding:3px 10px;margin-right:4px;cursor:pointer;border-radius:3px} .tab.on{background:#1565c0;color:#fff;border-color:#1565c0}
.zoom button{margin-right:4px} #zoom-label{color:#555;margin-left:8px}
#map{overflow-x:auto} svg.memmap{display:block} svg.memmap text{font:10px ui-monospace,monospace;fill:#555} svg.memmap text.range{font-weight:bold;fill:#222}
svg.memmap rect.seg{cursor:pointer} svg.memmap rect.seg:hover{stroke:#000;stroke-width:1} svg.memmap rect.seg.sel{stroke:#d50000;stroke-width:2}
svg.memmap g.fold{cursor:zoom-in} svg.memmap g.fold rect{stroke:#9ccc65;stroke-dasharray:3 2} svg.memmap g.fold text{fill:#33691e;font-size:9px}
svg.memmap rect.scratch{fill:none;stroke:#0277bd;stroke-width:1.5;stroke-dasharray:4 2;pointer-events:none}
.cols{display:flex;gap:24px;flex-wrap:wrap} .cols>div{flex:1 1 420px;min-width:0}
details{margin:1px 0 1px 14px} summary{cursor:pointer} .leaf{margin-left:28px;font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
details>summary{font-family:ui-monospace,monospace;font-size:12px}
ul.problems li{margin:2px 0} .wanted{color:#555} .hint{color:#666}
table.walk td{font-family:ui-monospace,monospace;font-size:12px}
`;

function escapeHtml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON that may sit inside a <script> element: no "</", no U+2028/2029 surprises. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/**
 * The handover explorer: one self-contained HTML page (inline CSS, script and data; no network, no files beside
 * it). The page shows the summary and the timeline at once and draws a kexec's maps, trees and walks when it
 * is selected, so a chain of a hundred updates opens as fast as one.
 */
export function renderExplorer(d: PageData): string {
  const resultClass = d.result === 'failed' || (d.result === 'image' && d.problems.length > 0) ? 'bad' : 'ok';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(d.title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(d.title)} <span class="${resultClass}" id="result">${escapeHtml(d.resultText)}</span></h1>
<p>Command: <code id="command">${escapeHtml(d.command)}</code></p>
<section id="summary"><h2>Summary</h2></section>
<section id="problems"></section>
<section id="timeline"></section>
<section id="kexec">
<h2><span id="kexec-title"></span> <span id="kexec-result"></span></h2>
<h3>Memory map</h3>
<ul class="legend" id="legend"></ul>
<div class="tabs" id="map-tabs"></div>
<div class="zoom"><button type="button" id="zoom-in">zoom in ×8 (around the selection)</button><button type="button" id="zoom-out">zoom out ×8</button><button type="button" id="zoom-all">all RAM</button><span id="zoom-label"></span></div>
<div id="map"></div>
<div class="cols">
<div><div id="detail"></div><div id="walk-out"></div></div>
<div><h4>Bytes by kind and owner</h4><div id="totals"></div></div>
</div>
<div class="cols">
<div><h3>Handover: the root FDT and its subtrees</h3><div id="fdt"></div></div>
<div><h3>Figures</h3><div id="stats"></div><section id="verification"><h3>Verification</h3><ul id="checks"></ul></section></div>
</div>
</section>
<script id="kho-data" type="application/json">${scriptJson(d)}</script>
<script>${CLIENT_JS}</script>
</body></html>
`;
}

/** The explorer of a run (`kho demo --report`, `kho run --report`). */
export function renderRunExplorer(r: RunPage): string {
  return renderExplorer(runPageData(r));
}

/** The explorer of an image (`kho explore IMAGE`). */
export function renderImageExplorer(r: Inspection): string {
  return renderExplorer(imagePageData(r, r.populated));
}
