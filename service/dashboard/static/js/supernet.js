// The dense supernet drawn as an arc diagram of routing blocks: β path probabilities as edge
// widths and opacities, the Viterbi (max-product) path highlighted, α as per-block heat-maps.
//
// Orderings follow densenas_core/_graph.py: β has one row per block 0..N-1 over its out-paths
// sorted by destination; α is the alignment rows (paths not entering the tail, in path order)
// followed by the layer rows (every basic layer of every routing block, block by block).
import { h, s, clear, fmtNum } from "./dom.js";
import { heatmap, heatLegend } from "./charts.js";

/** Graph structure from a block table ({block, kind, channels, size, stage, basic_layers, inputs}). */
export function graphFromBlockTable(table) {
  const blocks = [...table].sort((a, b) => a.block - b.block).map((b) => ({
    index: b.block, kind: b.kind, channels: b.channels, size: b.size, stage: b.stage,
    layers: b.basic_layers ?? b.num_layers ?? 0,
    inputs: (b.inputs || []).map((e) => (Array.isArray(e) ? { src: e[0], stride: e[1] } : { src: e.from ?? e.src, stride: e.stride })),
  }));
  const tail = blocks.length - 1;
  const out = blocks.map(() => []);
  for (const b of blocks) for (const e of b.inputs) out[e.src].push({ src: e.src, dst: b.index, stride: e.stride });
  for (const o of out) o.sort((a, b) => a.dst - b.dst);
  const paths = out.flat();
  paths.forEach((p, k) => { p.k = k; p.col = out[p.src].indexOf(p); });
  const alignPaths = paths.filter((p) => p.dst !== tail);
  const layerRows = [];
  for (const b of blocks) if (b.index > 0 && b.index < tail) for (let i = 0; i < b.layers; i++) layerRows.push({ block: b.index, layer: i });
  return { blocks, tail, out, paths, alignPaths, layerRows };
}

const rowProbs = (r) => (Array.isArray(r) ? r : r && (r.probs || r.p || r.values)) || [];

/**
 * β as probs[src][col] over the out-paths of src (sorted by destination), from the shapes an
 * `arch` event may carry: export_probs rows {block, dst: [...], probs: [...]}, {src, dst, p}
 * rows, or a nested list (padded or not).
 */
export function betaMatrix(graph, beta) {
  if (!Array.isArray(beta) || !beta.length) return null;
  const m = graph.out.map((o) => o.map(() => null));
  const put = (src, dst, p) => {
    const col = graph.out[src]?.findIndex((q) => q.dst === dst);
    if (col >= 0) m[src][col] = Number(p);
  };
  beta.forEach((r, i) => {
    if (Array.isArray(r)) r.slice(0, graph.out[i]?.length ?? 0).forEach((p, col) => { m[i][col] = Number(p); });
    else if (r && Array.isArray(r.dst)) r.dst.forEach((d, k) => put(r.block ?? r.src ?? i, d, rowProbs(r)[k]));
    else if (r && "dst" in r) put(r.src ?? r.block, r.dst, r.p ?? r.prob ?? r.value);
  });
  return m;
}

/**
 * A graph from an `arch` event alone (a custom space has no preset block table): blocks and
 * paths from β, basic layers per block from α's layer rows; widths are unknown (drawn equal).
 */
export function graphFromProbs(probs) {
  const rows = (probs.beta || []).filter((r) => r && Array.isArray(r.dst));
  const tail = Math.max(...rows.flatMap((r) => r.dst));
  const layers = new Map();
  for (const r of probs.alpha?.layers || []) layers.set(r.block, Math.max(layers.get(r.block) ?? 0, r.layer + 1));
  const table = [];
  for (let j = 0; j <= tail; j++) {
    table.push({ block: j, kind: j === 0 ? "stem" : j === tail ? "tail" : "routing", channels: null, size: null,
      stage: j === 0 ? "stem" : j === tail ? "tail" : "routing blocks", basic_layers: layers.get(j) ?? 0,
      inputs: rows.filter((r) => r.dst.includes(j)).map((r) => [r.block, 1]) });
  }
  return graphFromBlockTable(table);
}

/**
 * α rows as {align: Map "src-dst" → {ops, probs, entropy}, layer: Map "block-layer" → {ops,
 * probs, entropy}}, from export_probs ({align: [{src, dst, ops, probs}], layers: [{block, layer,
 * ops, probs}]}) or a nested list in _graph.py order (alignment rows, then layer rows).
 * `entropy`: an `arch` event's alpha_entropy_rows, in that same order (null where absent).
 */
export function alphaRows(graph, alpha, { alignOps = [], layerOps = [], entropy = [] } = {}) {
  const align = new Map(), layer = new Map();
  if (!alpha) return { align, layer };
  const ent = (k) => (Number.isFinite(entropy?.[k]) ? entropy[k] : null);
  const entry = (r, ops, k) => ({ ops: (r && !Array.isArray(r) && r.ops) || ops, probs: rowProbs(r).map(Number), entropy: ent(k) });
  if (!Array.isArray(alpha)) {
    const alignList = alpha.align || alpha.alpha_align || [];
    alignList.forEach((r, i) => {
      const p = graph.alignPaths[i];
      const key = r && !Array.isArray(r) && "src" in r ? `${r.src}-${r.dst}` : p && `${p.src}-${p.dst}`;
      if (key) align.set(key, entry(r, alignOps, i));
    });
    (alpha.layers || alpha.layer || alpha.alpha_layer || []).forEach((r, i) => {
      const l = graph.layerRows[i];
      const key = r && !Array.isArray(r) && "block" in r ? `${r.block}-${r.layer}` : l && `${l.block}-${l.layer}`;
      if (key) layer.set(key, entry(r, layerOps, alignList.length + i));
    });
    return { align, layer };
  }
  alpha.forEach((r, i) => {
    if (i < graph.alignPaths.length) { const p = graph.alignPaths[i]; align.set(`${p.src}-${p.dst}`, entry(r, alignOps, i)); }
    else { const l = graph.layerRows[i - graph.alignPaths.length]; if (l) layer.set(`${l.block}-${l.layer}`, entry(r, layerOps, i)); }
  });
  return { align, layer };
}

/** An `arch` event's beta_entropy_rows (one per block with ≥ 2 out-paths, in block order) as block → entropy. */
export function betaEntropyByBlock(graph, rows) {
  const out = new Map();
  if (!Array.isArray(rows)) return out;
  graph.out.map((o, b) => (o.length > 1 ? b : null)).filter((b) => b !== null)
    .forEach((b, i) => { if (Number.isFinite(rows[i])) out.set(b, rows[i]); });
  return out;
}

/** Max-product path from the stem (0) to the tail: the rule the core's viterbi() uses. */
export function viterbi(graph, beta) {
  const n = graph.blocks.length;
  const best = new Array(n).fill(-Infinity), back = new Array(n).fill(-1);
  best[0] = 0; // log space
  for (let j = 1; j < n; j++) {
    for (const e of graph.blocks[j].inputs) {
      const col = graph.out[e.src].findIndex((p) => p.dst === j);
      const p = beta?.[e.src]?.[col];
      const v = best[e.src] + Math.log(p > 0 ? p : 1e-12);
      if (v > best[j]) { best[j] = v; back[j] = e.src; }
    }
  }
  const path = [graph.tail];
  while (path[0] > 0 && back[path[0]] >= 0) path.unshift(back[path[0]]);
  return path[0] === 0 ? path : [];
}

/**
 * The block path an architecture document was derived on (its blocks' from_block/to_block),
 * ending in the tail (the fixed last hop is not a block of the document); null without one.
 */
export function pathFromArchitecture(doc, tail = null) {
  const hops = (doc?.blocks || []).filter((b) => b.from_block !== null && b.from_block !== undefined && b.to_block !== null && b.to_block !== undefined);
  if (!hops.length) return null;
  const path = [hops[0].from_block];
  for (const b of hops) if (b.to_block !== path.at(-1)) path.push(b.to_block);
  if (tail !== null && path.at(-1) !== tail) path.push(tail);
  return path;
}

/** Draw the arc diagram into `container`; returns the <svg>. */
export function drawSupernet(container, graph, beta, path, { testid = "supernet-svg" } = {}) {
  clear(container);
  const n = graph.blocks.length;
  const dx = Math.max(40, Math.min(100, 1040 / n));
  const maxSpan = Math.max(1, ...graph.paths.map((p) => p.dst - p.src));
  const archH = Math.min(150, 26 + maxSpan * 26);
  const base = archH + 40; // y of the node tops' centre line
  const W = 40 + (n - 1) * dx + 40, H = base + 88;
  const maxC = Math.max(1, ...graph.blocks.map((b) => b.channels ?? 0));
  const x = (i) => 40 + i * dx;
  const nodeH = (c) => (c ? 12 + 30 * Math.sqrt(c / maxC) : 24); // unknown width: mid height
  const onPath = new Set(), pathEdges = new Set();
  (path || []).forEach((b, i) => { onPath.add(b); if (i) pathEdges.add(`${path[i - 1]}-${b}`); });

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "data-testid": testid,
    "aria-label": `Supernet with ${n - 2} routing blocks and ${graph.paths.length} paths; ` +
      (path?.length ? `Viterbi path through blocks ${path.join(" → ")}` : "no path yet") });
  // stage bands
  const stages = [...new Set(graph.blocks.map((b) => b.stage))];
  stages.forEach((st, si) => {
    const bs = graph.blocks.filter((b) => b.stage === st);
    const x0 = x(bs[0].index) - dx / 2 + 2, x1 = x(bs.at(-1).index) + dx / 2 - 2;
    const label = bs[0].kind === "stem" ? "stem" : bs[0].kind === "tail" ? "tail" : typeof st === "number" ? `stage ${st}` : st;
    const sub = bs[0].kind === "routing" && typeof bs[0].size === "number" ? `${bs[0].size}px` : "";
    svg.append(s("rect", { class: ["stage-band", si % 2 && "odd"], x: x0, y: 6, width: x1 - x0, height: H - 12, rx: 4 }),
      s("text", { x: (x0 + x1) / 2, y: H - 22, "text-anchor": "middle", text: label }),
      s("text", { x: (x0 + x1) / 2, y: H - 9, "text-anchor": "middle", text: sub }));
  });
  // edges: all paths, then the Viterbi path on top
  const edgeEls = [];
  for (const p of graph.paths) {
    const prob = beta?.[p.src]?.[p.col];
    const hasP = typeof prob === "number" && Number.isFinite(prob);
    const x1 = x(p.src), x2 = x(p.dst), span = p.dst - p.src;
    const top = base - 22 - span * ((archH - 30) / maxSpan);
    const key = `${p.src}-${p.dst}`;
    const el = s("path", {
      class: ["edge", pathEdges.has(key) && "on-path"], d: `M${x1},${base - 8} Q${(x1 + x2) / 2},${top} ${x2},${base - 8}`,
      "stroke-width": (pathEdges.has(key) ? 1.5 : 0.6) + (hasP ? prob * 6 : 1),
      "stroke-opacity": hasP ? 0.12 + 0.88 * prob : 0.35,
      "data-testid": "supernet-edge", "data-src": p.src, "data-dst": p.dst, "data-p": hasP ? prob.toFixed(4) : "",
      "data-on-path": pathEdges.has(key) ? "1" : "0",
    }, s("title", { text: `block ${p.src} → ${p.dst}${p.stride === 2 ? " (stride 2)" : ""}: β = ${hasP ? fmtNum(prob) : "—"}` }));
    edgeEls.push([pathEdges.has(key), el]);
  }
  for (const [, el] of edgeEls.filter(([on]) => !on)) svg.append(el);
  for (const [, el] of edgeEls.filter(([on]) => on)) svg.append(el);
  // nodes
  for (const b of graph.blocks) {
    const hN = nodeH(b.channels);
    const cls = ["block", (b.kind === "stem" || b.kind === "tail") && "endpoint", onPath.has(b.index) && "on-path"];
    svg.append(s("g", { "data-testid": "supernet-block", "data-block": b.index, "data-on-path": onPath.has(b.index) ? "1" : "0" },
      s("rect", { class: cls, x: x(b.index) - 9, y: base - 8, width: 18, height: hN, rx: 3 }),
      s("text", { class: onPath.has(b.index) ? "label-strong" : null, x: x(b.index), y: base + hN + 4, "text-anchor": "middle", text: b.channels ?? `#${b.index}` }),
      s("title", { text: `${b.kind} block ${b.index}: ${b.channels ? `${b.channels} channels, ${b.size}px, ` : ""}${b.layers} basic layer(s)` })));
  }
  container.append(svg);
  return svg;
}

const fixed3 = (v) => v.toFixed(3);

/** The entropy row under a block's α heat-map (one value per column), or null without any. */
function entropyFooter(entries) {
  if (!entries.some((en) => en?.entropy !== null && en?.entropy !== undefined)) return null;
  return { label: "entropy", values: entries.map((en) => en?.entropy ?? null), fmt: fixed3, testid: "alpha-entropy-cell" };
}

/**
 * One heat-map per routing block: columns are its incoming alignment branches and its layers;
 * under them each column's α entropy (1 = uniform, 0 = one-hot) where the event reports it, and
 * in the caption the block's β entropy (`betaEntropy`: block → value).
 */
export function drawAlphaHeatmaps(container, graph, alpha, { path = [], betaEntropy = new Map() } = {}) {
  clear(container);
  const all = [...alpha.align.values(), ...alpha.layer.values()];
  const rows = [...new Set(all.flatMap((r) => r.ops))];
  const onPath = new Set(path || []);
  for (const b of graph.blocks.slice(1, -1)) {
    const cols = [], entries = [];
    for (const e of [...b.inputs].sort((p, q) => p.src - q.src)) {
      cols.push(`←${e.src}${e.stride === 2 ? " s2" : ""}`);
      entries.push(alpha.align.get(`${e.src}-${b.index}`));
    }
    for (let i = 0; i < b.layers; i++) {
      cols.push(`L${i + 1}`);
      entries.push(alpha.layer.get(`${b.index}-${i}`));
    }
    if (!cols.length || !entries.some(Boolean)) continue;
    const values = rows.map((op) => entries.map((en) => {
      const k = en ? en.ops.indexOf(op) : -1;
      return k >= 0 && Number.isFinite(en.probs[k]) ? en.probs[k] : null;
    }));
    const betaH = betaEntropy.get(b.index);
    container.append(h("figure", { "data-testid": "alpha-block", "data-block": b.index },
      h("figcaption", { text: `block ${b.index}${b.channels ? ` · ${b.channels} ch` : ""}${onPath.has(b.index) ? " · on path" : ""}` +
        `${betaH !== undefined ? ` · β entropy ${fixed3(betaH)}` : ""}` }),
      heatmap({ rows, cols, values, range: [0, 1], markBest: "max", cell: 18, testid: "alpha-heatmap",
        title: `α of block ${b.index}`, fmt: fixed3, footer: entropyFooter(entries) }),
      heatLegend(0, 1, { fmt: fixed3, label: "α", testid: "alpha-legend" })));
  }
  if (!container.children.length) container.append(h("p", { class: "muted", text: "No α reported for this epoch." }));
}
