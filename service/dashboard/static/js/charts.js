// Hand-written SVG charts: line chart (training curves), scatter with a Pareto front, heat-map.
import { h, s, clear, fmtNum, fmtCount } from "./dom.js";

/** Value text for legends and read-outs: 5M rather than 5.00e+6. */
export const fmtTick = (v) => (Math.abs(v) >= 1e4 ? fmtCount(v) : fmtNum(v));

/** A formatter for one axis: as many decimals as the tick step needs, k/M/G for big values. */
export function tickFormatter(ticks) {
  if (ticks.length < 2) return fmtTick;
  const step = Math.abs(ticks[1] - ticks[0]) || 1;
  const big = Math.max(...ticks.map(Math.abs));
  const [div, unit] = big >= 1e9 ? [1e9, "G"] : big >= 1e6 ? [1e6, "M"] : big >= 1e4 ? [1e3, "k"] : [1, ""];
  if (!unit && (big < 1e-3 && big > 0)) return (v) => v.toExponential(1);
  const str = String(+(step / div).toPrecision(6));
  const decimals = str.includes("e") ? 8 : Math.min(8, (str.split(".")[1] || "").length);
  return (v) => (v === 0 ? "0" : `${(v / div).toFixed(decimals)}${unit}`);
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
  const start = Math.ceil(lo / step - 1e-9) * step;
  const ticks = [];
  for (let v = start; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function extent(values, pad = 0.05) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.1, hi + (Math.abs(hi) || 1) * 0.1];
  const d = (hi - lo) * pad;
  return [lo - d, hi + d];
}

/**
 * Ticks of a log axis over [lo, hi] (both > 0): the powers of ten inside it (1, 2, 5 × them
 * when fewer than three), else round linear ticks when the range is under a decade.
 */
export function logTicks(lo, hi) {
  const decades = [];
  for (let k = Math.ceil(Math.log10(lo) - 1e-9); k <= Math.floor(Math.log10(hi) + 1e-9); k++) decades.push(k);
  let ticks = decades.map((k) => +(10 ** k).toPrecision(12));
  if (ticks.length < 3) {
    const more = [];
    for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
      for (const m of [1, 2, 5]) more.push(+(m * 10 ** k).toPrecision(12));
    }
    ticks = more.filter((v) => v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9));
  }
  return ticks.length >= 2 ? ticks : niceTicks(lo, hi, 6).filter((v) => v > 0);
}

/** Keep at most `max` points: min and max of each bucket, so spikes stay visible. */
export function downsample(points, max = 600) {
  if (points.length <= max) return points;
  const per = Math.ceil(points.length / (max / 2));
  const out = [];
  for (let i = 0; i < points.length; i += per) {
    const bucket = points.slice(i, i + per);
    let lo = bucket[0], hi = bucket[0];
    for (const p of bucket) { if (p[1] < lo[1]) lo = p; if (p[1] > hi[1]) hi = p; }
    if (lo === hi) out.push(lo); else out.push(...(lo[0] <= hi[0] ? [lo, hi] : [hi, lo]));
  }
  return out;
}

function axes(g, { x0, x1, y0, y1, xTicks, yTicks, sx, sy, xLabel, yLabel, xFmt = tickFormatter(xTicks), yFmt = tickFormatter(yTicks) }) {
  const grid = s("g", { class: "grid" });
  const ax = s("g", { class: "axis" });
  for (const t of yTicks) {
    const y = sy(t);
    grid.append(s("line", { x1: x0, x2: x1, y1: y, y2: y }));
    ax.append(s("text", { class: "tick y-tick", x: x0 - 6, y: y + 3.5, "text-anchor": "end", text: yFmt(t) }));
  }
  for (const t of xTicks) {
    const x = sx(t);
    ax.append(s("line", { x1: x, x2: x, y1: y0, y2: y0 + 4 }));
    ax.append(s("text", { class: "tick x-tick", x, y: y0 + 16, "text-anchor": "middle", text: xFmt(t) }));
  }
  ax.append(s("line", { x1: x0, x2: x1, y1: y0, y2: y0 }), s("line", { x1: x0, x2: x0, y1: y0, y2: y1 }));
  if (xLabel) ax.append(s("text", { class: "axis-title", x: (x0 + x1) / 2, y: y0 + 32, "text-anchor": "middle", text: xLabel }));
  if (yLabel) ax.append(s("text", { class: "axis-title", x: 12, y: (y0 + y1) / 2, transform: `rotate(-90 12 ${(y0 + y1) / 2})`,
    "text-anchor": "middle", text: yLabel }));
  g.append(grid, ax);
}

/** One bar per point from 0 to y, `frac` of the smallest x step wide (at most 28 px). */
function bars(sr, sx, sy, frac = 0.6) {
  const xs = [...new Set(sr.points.map((p) => p[0]))].sort((a, b) => a - b);
  let step = 1;
  for (let i = 1; i < xs.length; i++) step = Math.min(step, xs[i] - xs[i - 1]);
  const w = Math.min(28, Math.abs(sx(step) - sx(0)) * frac);
  return sr.points.map(([x, y]) => {
    const top = Math.min(sy(y), sy(0));
    return s("rect", { class: `bar c${sr.color || 1}`, "data-series": sr.name, x: sx(x) - w / 2, y: top, width: w,
      height: Math.max(1, Math.abs(sy(y) - sy(0))), "data-x": x, "data-value": y },
    s("title", { text: `${sr.name} ${fmtTick(y)} @ ${fmtNum(x)}` }));
  });
}

/**
 * A line chart that re-renders in place. series: [{name, points: [[x, y], ...], color: 1..8,
 * dashed, faint, markers, bars, legend}] (bars: drawn as bars from 0 instead of a line;
 * legend: false leaves it out of the legend). `opts.yLog`: a log y axis (points with y ≤ 0 are
 * not drawn). The <svg> carries data-points (the number of plotted data points) so tests and
 * people can see it grow.
 */
export class LineChart {
  constructor(container, { title, xLabel = "", yLabel = "", testid, width = 520, height = 240, yLog = false } = {}) {
    this.opts = { title, xLabel, yLabel, width, height, yLog };
    this.svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "data-testid": testid,
      "aria-label": title, "data-points": 0, width, height });
    this.legend = h("ul", { class: "legend" });
    this.readout = h("p", { class: "muted small", "aria-live": "off" });
    this.note = h("p", { class: "muted small", "data-testid": testid && `${testid}-note`, hidden: true });
    this.figure = h("figure", { class: "chart" }, h("figcaption", { text: title }), this.svg, this.legend,
      this.note, this.readout);
    container.append(this.figure);
    this.series = [];
    this.svg.addEventListener("mousemove", (e) => this.#hover(e));
    this.svg.addEventListener("mouseleave", () => { this.readout.textContent = ""; this.cross?.remove(); });
  }

  /** A line of text under the legend (how the plotted values were measured); "" hides it. */
  setNote(text) {
    this.note.textContent = text || "";
    this.note.hidden = !text;
  }

  update(series) {
    const logY = !!this.opts.yLog;
    this.series = series.map((sr) => (logY ? { ...sr, points: sr.points.filter((p) => p[1] > 0) } : sr))
      .filter((sr) => sr.points.length);
    const ty = logY ? Math.log10 : (v) => v; // where a value sits on the y axis
    this.figure.hidden = this.series.length === 0; // shown before it is measured
    const { height: H, xLabel, yLabel, title } = this.opts;
    // Drawn at the size it is shown (1 user unit = 1 px), so the 11 px text is not scaled down.
    const W = Math.max(240, Math.floor(this.figure.clientWidth) || this.opts.width);
    this.W = W;
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.svg.setAttribute("width", W);
    const all = this.series.flatMap((sr) => (sr.bars ? [...sr.points, [sr.points[0][0], 0]] : sr.points));
    const pad = this.series.some((sr) => sr.bars) ? 0.5 : 0; // room for the outer bars' halves
    const [xa, xb] = extent(all.map((p) => p[0]), 0).map((v, i) => v + (i ? pad : -pad));
    const [ya, yb] = extent(all.map((p) => ty(p[1])));
    // integer x (epochs, steps): integer ticks only
    const intX = all.every((p) => Number.isInteger(p[0]));
    const xTicks = niceTicks(xa, xb, Math.min(6, intX ? Math.max(1, xb - xa) : 6)).filter((v) => !intX || Number.isInteger(v));
    const yTicks = logY ? logTicks(10 ** ya, 10 ** yb) : niceTicks(ya, yb, 5);
    const yFmt = logY ? fmtTick : tickFormatter(yTicks);
    // left margin: the widest y tick label (about 7.2 px a character at 12 px) plus room for
    // the rotated axis title, so the two never overlap
    const yChars = Math.max(1, ...yTicks.map((t) => yFmt(t).length));
    const m = { l: Math.max(48, Math.ceil(yChars * 7.2) + (yLabel ? 30 : 12)), r: 12, t: 10, b: xLabel ? 40 : 26 };
    const xlo = Math.min(xa, xTicks[0] ?? xa), xhi = Math.max(xb, xTicks.at(-1) ?? xb);
    const ylo = Math.min(ya, yTicks.length ? ty(yTicks[0]) : ya);
    const yhi = Math.max(yb, yTicks.length ? ty(yTicks.at(-1)) : yb);
    const sx = (v) => m.l + ((v - xlo) / (xhi - xlo || 1)) * (W - m.l - m.r);
    const sy = (v) => H - m.b - ((ty(v) - ylo) / (yhi - ylo || 1)) * (H - m.t - m.b);
    Object.assign(this, { sx, sy, m, xlo, xhi });
    clear(this.svg);
    this.svg.append(s("title", { text: title }));
    const g = s("g");
    axes(g, { x0: m.l, x1: W - m.r, y0: H - m.b, y1: m.t, xTicks, yTicks, sx, sy, xLabel, yLabel, yFmt });
    let n = 0;
    for (const sr of this.series) {
      n += sr.points.length;
      if (sr.bars) { g.append(...bars(sr, sx, sy)); continue; }
      const pts = downsample(sr.points);
      const cls = ["series", `c${sr.color || 1}`, sr.dashed && "dashed", sr.faint && "faint"];
      g.append(s("polyline", { class: cls, "data-series": sr.name, "data-n": sr.points.length,
        points: pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ") }));
      if (sr.markers || pts.length === 1) {
        for (const [x, y] of pts) g.append(s("circle", { class: `pt c${sr.color || 1}`, cx: sx(x), cy: sy(y), r: 2.8 }));
      }
    }
    this.svg.append(g);
    this.svg.setAttribute("data-points", n);
    this.svg.setAttribute("aria-label", `${title}: ${this.series.map((sr) =>
      `${sr.name} latest ${fmtNum(sr.points.at(-1)[1])}`).join(", ") || "no data"}`);
    clear(this.legend);
    for (const sr of this.series.filter((x) => x.legend !== false)) {
      this.legend.append(h("li", {}, h("span", { class: `swatch c${sr.color || 1}` }),
        `${sr.name} (${fmtTick(sr.points.at(-1)[1])})`));
    }
    this.figure.hidden = this.series.length === 0;
  }

  #hover(e) {
    if (!this.series.length) return;
    const r = this.svg.getBoundingClientRect();
    const px = ((e.clientX - r.left) / r.width) * this.W;
    const x = this.xlo + ((px - this.m.l) / (this.W - this.m.l - this.m.r)) * (this.xhi - this.xlo);
    const parts = this.series.map((sr) => {
      let best = sr.points[0];
      for (const p of sr.points) if (Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
      return `${sr.name} ${fmtTick(best[1])} @ ${fmtNum(best[0])}`;
    });
    this.readout.textContent = parts.join(" · ");
    this.cross?.remove();
    this.cross = s("line", { class: "crosshair", x1: px, x2: px, y1: this.m.t, y2: this.opts.height - this.m.b });
    this.svg.append(this.cross);
  }
}

/** Points that no other point beats on both axes (lower x, higher y). */
export function paretoFront(points, x = (p) => p.x, y = (p) => p.y) {
  const sorted = points.filter((p) => Number.isFinite(x(p)) && Number.isFinite(y(p)))
    .sort((a, b) => x(a) - x(b) || y(b) - y(a));
  const front = [];
  let best = -Infinity;
  for (const p of sorted) if (y(p) > best) { front.push(p); best = y(p); }
  return front;
}

/**
 * Scatter of {x, y, href, label, onFront} points with the front drawn as a step line.
 * Each point is a keyboard-focusable link.
 */
export function scatter(container, points, { xLabel, yLabel, xFmt, yFmt, testid, width = 0, height = 380, frontLine = true } = {}) {
  clear(container);
  width = width || Math.max(480, Math.min(1100, container.clientWidth || 760));
  const m = { l: 58, r: 16, t: 12, b: 44 };
  const [xa, xb] = extent(points.map((p) => p.x));
  const [ya, yb] = extent(points.map((p) => p.y));
  const sx = (v) => m.l + ((v - xa) / (xb - xa || 1)) * (width - m.l - m.r);
  const sy = (v) => height - m.b - ((v - ya) / (yb - ya || 1)) * (height - m.t - m.b);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-label": `${yLabel} against ${xLabel}`, "data-testid": testid, "data-points": points.length });
  const g = s("g");
  axes(g, { x0: m.l, x1: width - m.r, y0: height - m.b, y1: m.t, xTicks: niceTicks(xa, xb, 6).filter((t) => t >= xa && t <= xb),
    yTicks: niceTicks(ya, yb, 5).filter((t) => t >= ya && t <= yb), sx, sy, xLabel, yLabel, xFmt, yFmt });
  const front = points.filter((p) => p.onFront).sort((a, b) => a.x - b.x);
  if (frontLine && front.length > 1) {
    let d = `M${sx(front[0].x)},${sy(front[0].y)}`;
    for (const p of front.slice(1)) d += ` H${sx(p.x)} V${sy(p.y)}`;
    g.append(s("path", { class: "front", d, "data-testid": "pareto-line" }));
  }
  for (const p of [...points].sort((a, b) => a.onFront - b.onFront)) {
    const dot = s("circle", { class: ["pt", p.onFront ? "on-front" : "off-front"], cx: sx(p.x), cy: sy(p.y),
      r: p.onFront ? 5 : 4, "data-testid": "scatter-point", "data-front": p.onFront ? "1" : "0" },
      s("title", { text: p.label }));
    g.append(p.href ? s("a", { href: p.href, "aria-label": p.label }, dot) : dot);
  }
  svg.append(g);
  container.append(svg);
  container.append(h("ul", { class: "legend" },
    h("li", {}, h("span", { class: "swatch dot front-dot" }), "on the Pareto front (service)"),
    h("li", {}, h("span", { class: "swatch dot other-dot" }), "dominated")));
  return svg;
}

/** Sequential colour for t in [0, 1]: pale to deep blue. */
export function heatColor(t) {
  const c = Math.max(0, Math.min(1, t));
  const a = [239, 243, 250], b = [17, 54, 110];
  return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * c)).join(",")})`;
}

/**
 * Colour legend of a heat-map: a small gradient bar (heatColor's two ends, in dashboard.css)
 * between the lowest and the highest value of its scale.
 */
export function heatLegend(lo, hi, { fmt = fmtNum, label = "", testid = "heat-legend" } = {}) {
  return h("div", { class: "heat-legend", "data-testid": testid, role: "img",
    "aria-label": `colour scale${label ? ` of ${label}` : ""}: ${fmt(lo)} (pale) to ${fmt(hi)} (deep blue)` },
  label ? h("span", { class: "heat-legend-label", text: label }) : "",
  h("span", { class: "heat-legend-min", "data-testid": `${testid}-min`, text: fmt(lo) }),
  h("span", { class: "heat-legend-bar", "aria-hidden": "true" }),
  h("span", { class: "heat-legend-max", "data-testid": `${testid}-max`, text: fmt(hi) }));
}

/**
 * Heat-map of values[r][c] (null = empty) with row and column labels; the best cell of each
 * column is outlined when `markBest` is "max" or "min". `footer` ({label, values: one per
 * column, fmt, range, testid}) adds a row under the grid on a scale of its own, outside
 * `markBest` (a per-column summary such as an entropy).
 */
export function heatmap({ rows, cols, values, fmt = fmtNum, cell = 22, markBest = null, testid, title, range, colLabelAngle = -50, legend = null, footer = null }) {
  const rowW = Math.max(40, ...[...rows, footer?.label ?? ""].map((r) => r.length * 7)) + 10;
  const labelLen = Math.max(24, ...cols.map((c) => c.length * 6));
  const rad = (Math.abs(colLabelAngle) * Math.PI) / 180;
  const colH = labelLen * Math.sin(rad) + 10;
  const padR = labelLen * Math.cos(rad) + 4; // rotated labels lean right past the last column
  const legendH = legend ? 34 : 0;
  const footH = footer ? cell + 6 : 0;
  const W = Math.max(rowW + cols.length * cell + padR, legend ? rowW + 5 * 110 : 0);
  const H = colH + rows.length * cell + 4 + footH + legendH;
  const flat = values.flat().filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const [lo, hi] = range || [Math.min(...flat), Math.max(...flat)];
  // one cell: value v coloured on [a, b], `tip` its tooltip's label
  const rect = (x, y, v, tip, { cls = null, scale: [a, b] = [lo, hi], show = fmt, attrs = {} } = {}) => {
    const empty = v === null || v === undefined || !Number.isFinite(v);
    return s("rect", { class: ["cell", empty && "empty", cls], x, y, width: cell, height: cell,
      fill: empty ? null : heatColor(b > a ? (v - a) / (b - a) : 1), "data-value": empty ? null : v, ...attrs },
    s("title", { text: `${tip}: ${empty ? "—" : show(v)}` }));
  };
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "data-testid": testid,
    "aria-label": title || "heat-map" });
  if (title) svg.append(s("title", { text: title }));
  cols.forEach((c, j) => {
    const x = rowW + j * cell + cell / 2;
    svg.append(s("text", { x, y: colH - 4, transform: `rotate(${colLabelAngle} ${x} ${colH - 4})`, text: c }));
  });
  rows.forEach((r, i) => svg.append(s("text", { x: rowW - 6, y: colH + i * cell + cell / 2 + 4, "text-anchor": "end", text: r })));
  const best = cols.map((_, j) => {
    if (!markBest) return -1;
    let bi = -1;
    rows.forEach((_, i) => {
      const v = values[i][j];
      if (v === null || v === undefined) return;
      if (bi < 0 || (markBest === "max" ? v > values[bi][j] : v < values[bi][j])) bi = i;
    });
    return bi;
  });
  rows.forEach((r, i) => cols.forEach((c, j) => {
    svg.append(rect(rowW + j * cell, colH + i * cell, values[i][j], `${r} · ${c}`, { cls: best[j] === i && "best" }));
  }));
  if (footer) {
    const y = colH + rows.length * cell + 6;
    svg.append(s("text", { x: rowW - 6, y: y + cell / 2 + 4, "text-anchor": "end", text: footer.label }));
    cols.forEach((c, j) => svg.append(rect(rowW + j * cell, y, footer.values[j], `${footer.label} · ${c}`, {
      cls: "footer", scale: footer.range || [0, 1], show: footer.fmt || fmt,
      attrs: { "data-testid": footer.testid, "data-col": c } })));
  }
  if (legend && flat.length) {
    // colour scale: five swatches from the lowest to the highest value
    const y = colH + rows.length * cell + footH + 12;
    svg.append(s("text", { x: rowW - 6, y: y + 10, "text-anchor": "end", text: legend }));
    let lx = rowW;
    for (let k = 0; k < 5; k++) {
      const label = fmt(lo + ((hi - lo) * k) / 4);
      svg.append(s("rect", { x: lx, y, width: 14, height: 12, fill: heatColor(k / 4) }),
        s("text", { x: lx + 18, y: y + 10, text: label }));
      lx += 18 + label.length * 6.5 + 14;
    }
  }
  return svg;
}
