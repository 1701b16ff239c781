// Small DOM helpers. Every value from the API goes in through textContent or setAttribute,
// never innerHTML, so job names, errors and logs cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h("a", {href, class, text}, ...children) → HTMLElement */
export const h = (tag, attrs = {}, ...children) => build(document.createElement(tag), attrs, children);

/** s("circle", {cx, cy, r}) → SVGElement */
export const s = (tag, attrs = {}, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
export const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
export function replace(el, ...children) { clear(el); build(el, {}, children); return el; }

// -- formatting ------------------------------------------------------------------------------

/** "1.50" → "1.5", "120" stays "120", "2.0" → "2". */
const trimZeros = (str) => (str.includes(".") && !str.includes("e") ? str.replace(/\.?0+$/, "") : str);

export function fmtNum(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(+v)) return "—";
  const n = +v;
  if (n !== 0 && (Math.abs(n) >= 1e5 || Math.abs(n) < 1e-3)) return n.toExponential(2);
  return Number.isInteger(n) ? String(n) : trimZeros(n.toPrecision(digits));
}

/** 3.2M, 410k, … for mult-adds and parameter counts. */
export function fmtCount(v) {
  if (v === null || v === undefined || Number.isNaN(+v)) return "—";
  const n = +v;
  for (const [d, u] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(n) >= d) return `${trimZeros((n / d).toPrecision(3))}${u}`;
  }
  return String(Math.round(n));
}

export function fmtPct(v) {
  if (v === null || v === undefined || Number.isNaN(+v)) return "—";
  const n = +v <= 1 ? +v * 100 : +v; // accept fractions and percentages
  return `${n.toFixed(1)}%`;
}

export function fmtMs(v) { return v === null || v === undefined ? "—" : `${fmtNum(v, 3)} ms`; }

export function parseTime(t) {
  if (!t) return null;
  // Timestamps without a zone are UTC (the service stores UTC).
  const str = /[zZ]|[+-]\d\d:?\d\d$/.test(t) ? t : `${t}Z`;
  const d = new Date(str);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtAge(t, now = Date.now()) {
  const d = parseTime(t);
  if (!d) return "—";
  let sec = Math.max(0, Math.round((now - d.getTime()) / 1000));
  if (sec < 60) return `${sec}s`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min}m`;
  const hr = Math.floor(min / 60);
  if (hr < 48) return `${hr}h ${min % 60}m`;
  return `${Math.floor(hr / 24)}d`;
}

export function fmtTime(t) {
  const d = parseTime(t);
  return d ? d.toLocaleString() : "—";
}

/** A definition list from [[term, value-or-node], ...], skipping empty values. */
export function facts(dl, rows) {
  clear(dl);
  for (const [k, v] of rows) {
    if (v === null || v === undefined || v === "") continue;
    dl.append(h("dt", { text: k }), h("dd", {}, v));
  }
  return dl;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, text: status, "data-status": status });
}
