/**
 * The explorer page's script, inlined into every page (no network, no files beside the page). It reads the data
 * from <script id="kho-data" type="application/json"> and draws on demand: the summary and the timeline at
 * once, then one kexec at a time (its maps, FDT tree, subtrees, radix walks) when it is selected. Plain ES2020
 * without template literals, so that it can live in this string.
 */
export const CLIENT_JS = String.raw`
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('kho-data').textContent);
  var PAGE = D.pageSize;
  var ROW_W = 860, GUTTER = 112, ROW_H = 16, ROW_GAP = 4, FOLD_W = 120, MIN_W = 3, TARGET_ROWS = 14;
  // long runs of these fold: free memory, and what is reserved for the kernel itself (image, memmap)
  var FOLDS = { 'free': 1, 'free-scratch': 1, 'empty': 1, 'reserved': 1 };
  var state = { kexec: 0, map: 0, zoom: null, unfolded: {}, sel: null };

  function $(id) { return document.getElementById(id); }
  function h(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === 'text') e.textContent = attrs[k];
      else if (k === 'onclick') e.addEventListener('click', attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
    return e;
  }
  function esc(s) { return String(s).replace(/[<>&"']/g, function (c) { return { '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' }[c]; }); }
  function hex(n) { return '0x' + n.toString(16); }
  function bytes(b) {
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'], i = 0, v = b;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return i === 0 ? v + ' B' : v.toFixed(2) + ' ' + u[i];
  }
  /** Bytes in a few characters, for fold labels: "16 MiB", "1.5 GiB". */
  function shortBytes(b) {
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'], i = 0, v = b;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (v >= 10 || v === Math.floor(v) ? v.toFixed(0) : v.toFixed(1)) + ' ' + u[i];
  }
  function ownerColour(o, incoming) { return 'hsl(' + D.ownerHues[o] + (incoming ? ' 60% 72%)' : ' 72% 44%)'); }
  function colourOf(kind, owner) {
    var k = D.kinds[kind];
    if ((k === 'preserved' || k === 'incoming') && owner >= 0) return ownerColour(owner, k === 'incoming');
    return D.kindColours[kind];
  }
  function table(rows, cls) {
    var t = h('table', cls ? { 'class': cls } : null);
    rows.forEach(function (r) { t.appendChild(h('tr', null, [h('th', { text: r[0] }), h('td', { text: r[1] })])); });
    return t;
  }

  // ---------------------------------------------------------------- summary, legend, problems
  function renderSummary() {
    $('summary').appendChild(table(D.summary));
    var legend = $('legend');
    var used = {};
    D.kexecs.forEach(function (k) { k.maps.forEach(function (m) { for (var i = 0; i < m.seg.length; i += 4) used[m.seg[i + 2]] = 1; }); });
    D.kinds.forEach(function (k, i) {
      if (!used[i] || k === 'preserved' || k === 'incoming') return;
      legend.appendChild(h('li', { 'data-legend': k }, [h('span', { 'class': 'swatch', style: 'background:' + D.kindColours[i] }), D.kindLabels[i]]));
    });
    D.owners.forEach(function (o, i) {
      legend.appendChild(h('li', { 'data-legend': 'owner:' + o }, [
        h('span', { 'class': 'swatch', style: 'background:' + ownerColour(i, false) }),
        h('span', { 'class': 'swatch', style: 'background:' + ownerColour(i, true) }),
        'preserved by ' + o + ' (lighter: handed over, not restored yet)'
      ]));
    });
    legend.appendChild(h('li', { 'data-legend': 'scratch' }, [h('span', { 'class': 'swatch scratch' }), 'scratch area (outlined)']));
    legend.appendChild(h('li', { 'data-legend': 'fold' }, [h('span', { 'class': 'swatch fold' }), 'a long free or reserved run, folded (click to unfold)']));
    if (D.problems.length) {
      var p = $('problems');
      p.appendChild(h('h2', { text: 'Problems found: ' + D.problems.length }));
      var ul = h('ul', { 'class': 'problems' });
      D.problems.forEach(function (x) { ul.appendChild(h('li', null, [h('b', { text: x.where + ': ' }), x.what + ' ', h('span', { 'class': 'wanted', text: '(wanted ' + x.wanted + ')' })])); });
      p.appendChild(ul);
    }
  }

  // ---------------------------------------------------------------- timeline
  var PHASES = ['boot:early', 'boot:mm', 'boot:late', 'prepare', 'serialize', 'kexec', 'restore', 'finish', 'cancel'];
  var PHASE_HUES = [210, 190, 170, 30, 45, 0, 130, 100, 300];
  function kexecOfGeneration(g) {
    for (var i = 0; i < D.kexecs.length; i++) if (D.kexecs[i].from === g || D.kexecs[i].to === g) return i;
    return -1;
  }
  function chart(title, unit, values, fmt) {
    var W = 300, H = 86, L = 6, T = 18, B = 14;
    var gs = D.generations.map(function (g) { return g.g; });
    var vs = values.filter(function (v) { return v !== undefined && v !== null; });
    var max = Math.max.apply(null, vs.concat([1])), min = Math.min.apply(null, vs.concat([0]));
    if (max === min) max = min + 1;
    var x = function (i) { return L + (gs.length > 1 ? (i * (W - 2 * L)) / (gs.length - 1) : (W - 2 * L) / 2); };
    var y = function (v) { return T + (H - T - B) * (1 - (v - min) / (max - min)); };
    var pts = [], dots = '', hits = '';
    var band = gs.length > 1 ? (W - 2 * L) / (gs.length - 1) : W - 2 * L;
    values.forEach(function (v, i) {
      if (v === undefined || v === null) return;
      pts.push(x(i).toFixed(1) + ',' + y(v).toFixed(1));
      var k = kexecOfGeneration(gs[i]);
      dots += '<circle class="pt' + (k === state.kexec ? ' sel' : '') + '" cx="' + x(i).toFixed(1) + '" cy="' + y(v).toFixed(1) + '" r="3" data-gen="' + gs[i] + '"/>';
      // a band as wide as the generation's share of the chart takes the clicks (the dots may touch)
      hits += '<rect class="hit" x="' + (x(i) - band / 2).toFixed(2) + '" y="0" width="' + band.toFixed(2) + '" height="' + H + '" data-gen="' + gs[i] + '"><title>generation ' + gs[i] + ': ' + esc(fmt(v)) + '</title></rect>';
    });
    var last = vs.length ? fmt(vs[vs.length - 1]) : 'none';
    return '<figure class="chart"><figcaption>' + esc(title) + ' <span class="unit">(' + esc(unit) + '; last ' + esc(last) + ', max ' + esc(fmt(max)) + ')</span></figcaption>' +
      '<svg width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H + '"><polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="' + pts.join(' ') + '"/>' + dots + hits +
      '<text x="' + L + '" y="' + (H - 2) + '">generation ' + gs[0] + '</text><text x="' + (W - L) + '" y="' + (H - 2) + '" text-anchor="end">' + gs[gs.length - 1] + '</text></svg></figure>';
  }
  function phaseChart() {
    var W = 300, H = 86, T = 18, B = 14;
    var totals = D.generations.map(function (g) { var t = 0; for (var p in g.phases) t += g.phases[p]; return t; });
    var max = Math.max.apply(null, totals.concat([0.001]));
    var bw = (W - 12) / Math.max(1, D.generations.length);
    var out = '';
    D.generations.forEach(function (g, i) {
      var y0 = H - B;
      var k = kexecOfGeneration(g.g);
      PHASES.forEach(function (p, j) {
        var ms = g.phases[p];
        if (!ms) return;
        var hgt = ((H - T - B) * ms) / max;
        y0 -= hgt;
        out += '<rect class="bar" pointer-events="none" data-gen="' + g.g + '" x="' + (6 + i * bw).toFixed(2) + '" y="' + y0.toFixed(2) + '" width="' + Math.max(1, bw - 1).toFixed(2) + '" height="' + hgt.toFixed(2) + '" fill="hsl(' + PHASE_HUES[j] + ' 55% 55%)"><title>generation ' + g.g + ' ' + p + ': ' + ms.toFixed(2) + ' ms</title></rect>';
      });
      var total = totals[i];
      out += '<rect class="hit" x="' + (6 + i * bw).toFixed(2) + '" y="0" width="' + bw.toFixed(2) + '" height="' + H + '" data-gen="' + g.g + '"><title>generation ' + g.g + ': ' + total.toFixed(2) + ' ms in its phases</title></rect>';
      if (k === state.kexec) out += '<rect class="cur" x="' + (6 + i * bw).toFixed(2) + '" y="' + T + '" width="' + Math.max(1, bw - 1).toFixed(2) + '" height="' + (H - T - B) + '" fill="none" stroke="#000" stroke-width="1" pointer-events="none"/>';
    });
    var keys = PHASES.map(function (p, j) { return '<span class="key"><i style="background:hsl(' + PHASE_HUES[j] + ' 55% 55%)"></i>' + p + '</span>'; }).join(' ');
    return '<figure class="chart wide"><figcaption>time per phase (ms, stacked per generation; max ' + max.toFixed(1) + ' ms)</figcaption><svg width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H + '">' + out + '</svg><div class="keys">' + keys + '</div></figure>';
  }
  function renderTimeline() {
    var box = $('timeline');
    if (D.generations.length < 2) { box.hidden = true; return; }
    var G = D.generations;
    var pick = function (f) { return G.map(f); };
    box.innerHTML = '<h2>Timeline: ' + G.length + ' generations, ' + D.kexecs.length + ' kexecs</h2>' +
      '<div class="charts">' +
      chart('preserved at the jump', 'bytes', pick(function (g) { return g.preservedBytes; }), bytes) +
      chart('tracker metadata at the jump', 'pages', pick(function (g) { return g.trackerPages; }), String) +
      chart('free pages after restore and finish', 'pages', pick(function (g) { return g.freePages; }), String) +
      phaseChart() + '</div>' +
      '<div class="stepper"><button id="prev" type="button">◀ previous kexec</button> <input id="slider" type="range" min="0" max="' + (D.kexecs.length - 1) + '" value="' + state.kexec + '"> <button id="next" type="button">next kexec ▶</button> <span id="stepper-label"></span></div>';
    box.addEventListener('click', function (ev) {
      var g = ev.target.getAttribute && ev.target.getAttribute('data-gen');
      if (g) { var k = kexecOfGeneration(Number(g)); if (k >= 0) selectKexec(k); }
    });
    $('prev').addEventListener('click', function () { selectKexec(Math.max(0, state.kexec - 1)); });
    $('next').addEventListener('click', function () { selectKexec(Math.min(D.kexecs.length - 1, state.kexec + 1)); });
    $('slider').addEventListener('input', function (ev) { selectKexec(Number(ev.target.value)); });
  }
  function markTimeline() {
    var box = $('timeline');
    if (box.hidden) return;
    var k = D.kexecs[state.kexec];
    box.querySelectorAll('circle.pt').forEach(function (c) {
      var g = Number(c.getAttribute('data-gen'));
      c.classList.toggle('sel', g === k.from || g === k.to);
    });
    $('slider').value = String(state.kexec);
    $('stepper-label').textContent = k.title + (k.verified === null ? '' : k.verified ? ': verified' : ': FAILED');
  }

  // ---------------------------------------------------------------- memory map
  function currentMap() { return D.kexecs[state.kexec].maps[state.map]; }

  /** The pieces of the visible window: [first pfn, pages, segment index, fold?] per range. */
  function pieces(m) {
    var out = [];
    var z = state.zoom;
    m.ranges.forEach(function (r, ri) {
      var r0 = r[0] / PAGE, r1 = (r[0] + r[1]) / PAGE;
      var w0 = z ? Math.max(r0, z[0]) : r0, w1 = z ? Math.min(r1, z[1]) : r1;
      if (w0 >= w1) return;
      var list = [];
      for (var i = 0; i < m.seg.length; i += 4) {
        var a = Math.max(m.seg[i], w0), b = Math.min(m.seg[i] + m.seg[i + 1], w1);
        if (a < b) list.push([a, b - a, i / 4, false]);
      }
      var win = w1 - w0;
      var foldMin = Math.max(64, win / 200);
      list.forEach(function (p) {
        var kind = D.kinds[m.seg[p[2] * 4 + 2]];
        if (FOLDS[kind] && p[1] >= foldMin && !state.unfolded[state.kexec + ':' + state.map + ':' + p[0]]) p[3] = true;
      });
      out.push({ range: ri, start: w0, end: w1, node: r[2], list: list });
    });
    return out;
  }
  /** Pixels per page so that the window fills about TARGET_ROWS rows, every small run at least MIN_W wide. */
  function scaleFor(groups) {
    var target = TARGET_ROWS * ROW_W;
    var width = function (s) {
      var t = 0;
      groups.forEach(function (g) { g.list.forEach(function (p) { t += p[3] ? FOLD_W : Math.max(MIN_W, p[1] * s); }); });
      return t;
    };
    var lo = 0, hi = 1e6;
    for (var i = 0; i < 60; i++) { var mid = (lo + hi) / 2; if (width(mid) > target) hi = mid; else lo = mid; }
    return lo;
  }
  function renderMap() {
    var m = currentMap();
    if (!m) { $('map').innerHTML = '<p class="hint">No memory picture was taken for this kexec.</p>'; $('map').rects = []; return; }
    var groups = pieces(m);
    var s = scaleFor(groups);
    var parts = [];
    var y = 0;
    var rects = [];
    groups.forEach(function (g) {
      parts.push('<text x="0" y="' + (y + 12) + '" class="range">node ' + g.node + ': ' + hex(g.start * PAGE) + ' – ' + hex(g.end * PAGE) + ' (' + esc(bytes((g.end - g.start) * PAGE)) + (state.zoom ? ', zoomed' : '') + ')</text>');
      y += 18;
      var x = 0;
      var rowStart = true;
      g.list.forEach(function (p) {
        var i = p[2] * 4;
        var kind = m.seg[i + 2], owner = m.seg[i + 3];
        var w = p[3] ? FOLD_W : Math.max(MIN_W, p[1] * s);
        var pfn = p[0], left = p[1];
        while (w > 0.01) {
          if (x >= ROW_W - 0.01) { x = 0; y += ROW_H + ROW_GAP; rowStart = true; }
          if (rowStart) { parts.push('<text x="0" y="' + (y + 12) + '" class="addr">' + hex(pfn * PAGE) + '</text>'); rowStart = false; }
          var take = Math.min(w, ROW_W - x);
          var pages = p[3] ? left : Math.min(left, Math.max(1, Math.round((left * take) / w)));
          if (take >= w - 0.01) pages = left;
          rects.push({ x: GUTTER + x, y: y, w: take, pfn: pfn, pages: pages, seg: p[2], fold: p[3], kind: kind, owner: owner });
          pfn += pages; left -= pages; x += take; w -= take;
          if (p[3]) break;
        }
      });
      y += ROW_H + ROW_GAP + 6;
    });
    var html = [];
    rects.forEach(function (r, j) {
      var k = D.kinds[r.kind];
      var who = r.owner >= 0 ? ' (' + D.owners[r.owner] + ')' : '';
      var tip = (r.fold ? 'folded: ' : '') + k + who + ': ' + hex(r.pfn * PAGE) + '–' + hex((r.pfn + r.pages) * PAGE) + ' (' + bytes(r.pages * PAGE) + ')';
      var attrs = ' data-r="' + j + '" data-kind="' + k + '"' + (r.owner >= 0 ? ' data-owner="' + esc(D.owners[r.owner]) + '"' : '');
      if (r.fold) {
        html.push('<g class="fold"' + attrs + '><rect x="' + r.x.toFixed(2) + '" y="' + r.y + '" width="' + r.w.toFixed(2) + '" height="' + ROW_H + '" fill="' + colourOf(r.kind, r.owner) + '" fill-opacity="0.35" data-r="' + j + '"/>' +
          '<text x="' + (r.x + 4).toFixed(1) + '" y="' + (r.y + 12) + '" data-r="' + j + '">⋯ ' + esc(shortBytes(r.pages * PAGE)) + ' ' + (k === 'free-scratch' ? 'free scratch' : k) + '</text><title>' + esc(tip) + ' — click to unfold</title></g>');
      } else {
        html.push('<rect class="seg' + (state.sel && state.sel.pfn >= r.pfn && state.sel.pfn < r.pfn + r.pages ? ' sel' : '') + '" x="' + r.x.toFixed(2) + '" y="' + r.y + '" width="' + r.w.toFixed(2) + '" height="' + ROW_H + '" fill="' + colourOf(r.kind, r.owner) + '"' + attrs + '><title>' + esc(tip) + '</title></rect>');
      }
    });
    // scratch areas, outlined where they fall
    var sc = '';
    m.scratch.forEach(function (a) {
      var a0 = a[0] / PAGE, a1 = (a[0] + a[1]) / PAGE;
      rects.forEach(function (r) {
        var b0 = Math.max(a0, r.pfn), b1 = Math.min(a1, r.pfn + r.pages);
        if (b0 >= b1) return;
        var x0 = r.x + (r.w * (b0 - r.pfn)) / r.pages, x1 = r.x + (r.w * (b1 - r.pfn)) / r.pages;
        sc += '<rect class="scratch" data-kind="scratch" x="' + x0.toFixed(2) + '" y="' + (r.y - 1) + '" width="' + Math.max(1, x1 - x0).toFixed(2) + '" height="' + (ROW_H + 2) + '"><title>scratch area ' + hex(a[0]) + '–' + hex(a[0] + a[1]) + ' (' + esc(bytes(a[1])) + ')</title></rect>';
      });
    });
    var box = $('map');
    box.innerHTML = '<svg class="memmap" data-map="' + m.id + '" width="' + (GUTTER + ROW_W) + '" height="' + y + '" viewBox="0 0 ' + (GUTTER + ROW_W) + ' ' + y + '">' + parts.join('') + html.join('') + sc + '</svg>';
    box.rects = rects;
    $('zoom-label').textContent = state.zoom ? 'showing ' + hex(state.zoom[0] * PAGE) + '–' + hex(state.zoom[1] * PAGE) + ' (' + bytes((state.zoom[1] - state.zoom[0]) * PAGE) + ')' : 'showing all RAM (long free runs folded)';
    var tot = $('totals');
    tot.innerHTML = '';
    tot.appendChild(table(m.totals.map(function (t) { return [t[0], bytes(t[1])]; }), 'totals'));
  }
  function mapClick(ev) {
    var t = ev.target, box = $('map');
    var j = t.getAttribute && t.getAttribute('data-r');
    if (j === null || j === undefined || !box.rects) return;
    var r = box.rects[Number(j)];
    if (r.fold) {
      state.unfolded[state.kexec + ':' + state.map + ':' + r.pfn] = 1;
      renderMap();
      return;
    }
    var svg = box.querySelector('svg');
    var pt = svg.getBoundingClientRect();
    var scale = svg.viewBox.baseVal.width / pt.width;
    var x = (ev.clientX - pt.left) * scale;
    var pfn = r.pfn + Math.min(r.pages - 1, Math.max(0, Math.floor(((x - r.x) / r.w) * r.pages)));
    state.sel = { pfn: pfn, rect: r };
    renderMap();
    renderDetail();
  }

  // ---------------------------------------------------------------- block details and radix walk
  function blockAt(hd, pfn) {
    if (!hd) return null;
    var b = hd.blocks, lo = 0, hi = b.length / 2;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (b[mid * 2] <= pfn) lo = mid + 1; else hi = mid; }
    for (var i = lo - 1; i >= 0 && i >= lo - 16; i--) if (b[i * 2] <= pfn && pfn < b[i * 2] + Math.pow(2, b[i * 2 + 1])) return { pfn: b[i * 2], order: b[i * 2 + 1] };
    return null;
  }
  function claimAt(hd, pfn) {
    if (!hd) return null;
    var c = hd.claims, best = null;
    for (var i = 0; i < c.length; i += 3) { if (c[i] > pfn) break; if (pfn < c[i + 1]) best = hd.claimNames[c[i + 2]]; }
    return best;
  }
  function renderDetail() {
    var box = $('detail');
    box.innerHTML = '';
    if (!state.sel) { box.appendChild(h('p', { 'class': 'hint', text: 'Click a region of the map for its addresses, block, owner and subtree.' })); return; }
    var r = state.sel.rect, m = currentMap(), hd = D.kexecs[state.kexec].handover;
    var kind = D.kinds[r.kind];
    var run = [m.seg[r.seg * 4], m.seg[r.seg * 4 + 1]];
    var rows = [
      ['address', hex(state.sel.pfn * PAGE) + ' (page frame ' + state.sel.pfn + ')'],
      ['region', kind + (r.owner >= 0 ? ', owner ' + D.owners[r.owner] : '')],
      ['run', hex(run[0] * PAGE) + '–' + hex((run[0] + run[1]) * PAGE) + ' (' + bytes(run[1] * PAGE) + ')']
    ];
    var blk = (kind === 'preserved' || kind === 'incoming') ? blockAt(hd, state.sel.pfn) : null;
    if (blk) {
      rows.push(['block', hex(blk.pfn * PAGE) + ', order ' + blk.order + ' (' + bytes(Math.pow(2, blk.order) * PAGE) + ')']);
      var cl = claimAt(hd, blk.pfn);
      rows.push(['subtree', cl || 'not named by any subtree (e.g. data listed inside another structure)']);
    } else if (kind === 'preserved' || kind === 'incoming') {
      rows.push(['block', m.id === 'after' && kind === 'preserved' ? 'preserved by this kernel for the next one (its tree is not part of this handover)' : 'not in the handover this page decodes']);
    }
    box.appendChild(h('h4', { text: 'Selected' }));
    box.appendChild(table(rows, 'detail'));
    if (blk && hd && hd.radix) {
      box.appendChild(h('button', { type: 'button', id: 'walk', text: 'walk the radix tree from the root to this block', onclick: function () { renderWalk(blk); } }));
    }
    $('walk-out').innerHTML = '';
  }
  function renderWalk(blk) {
    var hd = D.kexecs[state.kexec].handover, R = D.radix;
    var nodes = {};
    hd.radix.nodes.forEach(function (n) { nodes[n[0]] = n; });
    var key = Math.pow(2, R.order0Log2 - blk.order) + blk.pfn / Math.pow(2, blk.order);
    var rows = [];
    var at = hd.radix.root, ok = true;
    for (var level = R.rootLevel; level >= 1; level--) {
      var n = nodes[at];
      var idx = Math.floor(key / Math.pow(2, R.shifts[level - 1])) % R.tableEntries;
      var child = null;
      if (n) for (var i = 2; i < n.length; i += 2) if (n[i] === idx) child = n[i + 1];
      rows.push('<tr><td>level ' + level + (level === R.rootLevel ? ' (root)' : '') + '</td><td>' + hex(at * PAGE) + '</td><td>entry ' + idx + '</td><td>' + (child === null ? '<b class="bad">empty</b>' : '→ ' + hex(child * PAGE)) + '</td></tr>');
      if (child === null) { ok = false; break; }
      at = child;
    }
    if (ok) {
      var leaf = nodes[at];
      var bit = key % R.bitmapBits;
      rows.push('<tr><td>leaf (level 0)</td><td>' + hex(at * PAGE) + '</td><td>bit ' + bit + ' of ' + R.bitmapBits + '</td><td>set: the block ' + hex(blk.pfn * PAGE) + ' order ' + blk.order + (leaf ? ' (' + leaf[2] + ' bits set in this leaf)' : '') + '</td></tr>');
    }
    $('walk-out').innerHTML = '<h4>Radix walk: key ' + hex(key) + ' = 2^(' + R.order0Log2 + ' − order ' + blk.order + ') + pfn ' + hex(blk.pfn) + ' / 2^' + blk.order + '</h4>' +
      '<table class="walk"><tr><th>level</th><th>node</th><th>index</th><th>points to</th></tr>' + rows.join('') + '</table>';
  }

  // ---------------------------------------------------------------- FDT tree and subtrees
  function viewNode(n, depth) {
    var label = n.label + (n.value !== undefined ? ' = ' + n.value : '');
    if (!n.children || n.children.length === 0) return h('div', { 'class': 'leaf', text: label });
    var d = h('details', depth < 1 ? { open: '' } : null, [h('summary', { text: label + '  (' + n.children.length + ')' })]);
    var filled = false;
    var fill = function () {
      if (filled) return;
      filled = true;
      n.children.forEach(function (c) { d.appendChild(viewNode(c, depth + 1)); });
    };
    if (depth < 1) fill(); else d.addEventListener('toggle', fill);
    return d;
  }
  function renderTree() {
    var k = D.kexecs[state.kexec], hd = k.handover, box = $('fdt');
    box.innerHTML = '';
    if (!hd) { box.appendChild(h('p', { text: 'No handover was decoded for this kexec.' })); return; }
    if (hd.fdt) {
      box.appendChild(h('h4', { text: 'Root FDT' + (hd.compatible ? ' (compatible "' + hd.compatible + '")' : '') }));
      box.appendChild(viewNode(hd.fdt, 0));
    }
    box.appendChild(h('h4', { text: 'Subtrees, each decoded by its renderer: ' + hd.subtrees.length }));
    hd.subtrees.forEach(function (s) {
      var d = h('details', { 'class': 'subtree', 'data-subtree': s.name }, [h('summary', { text: s.name + ' → ' + s.phys + (s.kind ? ' (' + s.kind + ')' : '') + (s.error ? ': could not decode: ' + s.error : '') })]);
      var filled = false;
      d.addEventListener('toggle', function () { if (!filled && s.view) { filled = true; d.appendChild(viewNode(s.view, 0)); } });
      box.appendChild(d);
    });
    if (hd.tracker) { box.appendChild(h('h4', { text: 'Tracker' })); box.appendChild(table(hd.tracker)); }
    if (hd.problems && hd.problems.length && D.result !== 'image') {
      var ul = h('ul', { 'class': 'problems' });
      hd.problems.forEach(function (x) { ul.appendChild(h('li', { text: x.where + ': ' + x.what + ' (wanted ' + x.wanted + ')' })); });
      box.appendChild(h('h4', { text: 'Problems in this handover' }));
      box.appendChild(ul);
    }
  }

  // ---------------------------------------------------------------- a kexec
  function renderKexec() {
    var k = D.kexecs[state.kexec];
    $('kexec-title').textContent = k.title;
    var badge = $('kexec-result');
    badge.textContent = k.verified === null ? '' : k.verified ? 'verified' : 'FAILED';
    badge.className = k.verified === false ? 'bad' : 'ok';
    var tabs = $('map-tabs');
    tabs.innerHTML = '';
    k.maps.forEach(function (m, i) {
      var name = m.id === 'before' ? 'before the jump' : m.id === 'after' ? 'after the next boot' : 'the image';
      tabs.appendChild(h('button', { type: 'button', 'class': i === state.map ? 'tab on' : 'tab', 'data-tab': m.id, text: name + ': ' + m.label, onclick: function () { state.map = i; state.sel = null; state.zoom = null; renderKexec(); } }));
    });
    var st = $('stats');
    st.innerHTML = '';
    if (k.stats.length) st.appendChild(table(k.stats));
    var ch = $('checks');
    ch.innerHTML = '';
    k.checks.forEach(function (c) { ch.appendChild(h('li', { text: c })); });
    $('verification').hidden = k.checks.length === 0;
    renderMap();
    renderDetail();
    renderTree();
    markTimeline();
  }
  function selectKexec(i) {
    if (i === state.kexec && $('map').rects) return;
    state.kexec = i; state.map = 0; state.zoom = null; state.sel = null;
    renderKexec();
  }
  function zoom(factor) {
    var m = currentMap();
    var lo = m.ranges[0][0] / PAGE, hi = 0;
    m.ranges.forEach(function (r) { lo = Math.min(lo, r[0] / PAGE); hi = Math.max(hi, (r[0] + r[1]) / PAGE); });
    var z = state.zoom || [lo, hi];
    var centre = state.sel ? state.sel.pfn : (z[0] + z[1]) / 2;
    var half = Math.max(8, ((z[1] - z[0]) * factor) / 2);
    var a = Math.max(lo, Math.floor(centre - half)), b = Math.min(hi, Math.ceil(centre + half));
    state.zoom = a <= lo && b >= hi ? null : [a, b];
    renderMap();
  }

  renderSummary();
  renderTimeline();
  if (D.kexecs.length) {
    $('map').addEventListener('click', mapClick);
    $('zoom-in').addEventListener('click', function () { zoom(1 / 8); });
    $('zoom-out').addEventListener('click', function () { zoom(8); });
    $('zoom-all').addEventListener('click', function () { state.zoom = null; state.unfolded = {}; renderMap(); });
    renderKexec();
  } else {
    $('kexec').hidden = true;
  }
  document.body.setAttribute('data-ready', '1');
})();
`;
