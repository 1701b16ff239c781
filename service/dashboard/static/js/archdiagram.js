// Block diagram of an architecture document (densenas_core.arch, version 1): stem, blocks
// (alignment op + basic layers), tail; wrapped into rows, one box per op.
import { s, clear } from "./dom.js";

const OP_W = 58, GAP = 10, ROW_GAP = 46;

function opLabel(code) {
  const m = /^mb_k(\d+)_e(\d+)$/.exec(code);
  return m ? `k${m[1]} e${m[2]}` : code;
}

/** Colour class by what dominates an op's cost: kernel size for MBConv, else its kind. */
function opClass(code) {
  const m = /^mb_k(\d+)_e/.exec(code);
  if (m) return `op-k${m[1]}`;
  return code === "basic" || code === "bottleneck" ? "op-res" : "op-fixed";
}

/** The ops in order: [{op, c_in, c_out, stride, block, role}]. */
export function archOps(doc) {
  const ops = [];
  const stem = doc.stem || {};
  ops.push({ op: "conv3x3", c_in: doc.in_channels ?? 3, c_out: stem.c_out, stride: stem.stride ?? 2, block: "stem", role: "stem" });
  (doc.blocks || []).forEach((b, i) => {
    ops.push({ op: b.align_op, c_in: b.c_in, c_out: b.c_out, stride: b.stride, block: i, role: "align" });
    for (const l of b.layers || []) ops.push({ op: l, c_in: b.c_out, c_out: b.c_out, stride: 1, block: i, role: "layer" });
  });
  const tail = doc.tail || {};
  const last = (doc.blocks || []).at(-1)?.c_out ?? stem.c_out;
  if (doc.family === "mbv2" || tail.c_in !== tail.c_out) ops.push({ op: "conv1x1", c_in: tail.c_in ?? last, c_out: tail.c_out, stride: 1, block: "tail", role: "tail" });
  ops.push({ op: "pool+fc", c_in: tail.c_out, c_out: doc.num_classes, stride: 1, block: "tail", role: "classifier" });
  return ops;
}

export function drawArchitecture(container, doc, { maxWidth = 1120 } = {}) {
  clear(container);
  const ops = archOps(doc);
  const maxC = Math.max(...ops.map((o) => o.c_out || 1));
  const hOf = (c) => 18 + 44 * Math.sqrt((c || 1) / maxC);
  const fit = Math.max(4, Math.floor((maxWidth - 20) / (OP_W + GAP)));
  const rowsN = Math.ceil(ops.length / fit);
  const perRow = Math.ceil(ops.length / rowsN); // balanced rows, no lone op on the last one
  const rowH = 54 + 40 + ROW_GAP;
  const W = Math.min(ops.length, perRow) * (OP_W + GAP) + 20, H = rowsN * rowH + 10;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "data-testid": "arch-diagram-svg",
    "aria-label": `Network of ${ops.length} operations: ${ops.map((o) => o.op).join(", ")}` });
  let reduction = 1;
  ops.forEach((o, i) => {
    const r = Math.floor(i / perRow), c = i % perRow;
    const x = 10 + c * (OP_W + GAP), mid = 10 + r * rowH + 54;
    const hh = hOf(o.c_out);
    reduction *= o.stride || 1;
    const g = s("g", { "data-testid": "arch-op", "data-op": o.op, "data-block": o.block, "data-role": o.role });
    // block bracket above the op: alternate shading per block so block boundaries show
    if (typeof o.block === "number") {
      g.append(s("rect", { class: `stage-band${o.block % 2 ? " odd" : ""}`, x: x - GAP / 2, y: mid - 52, width: OP_W + GAP, height: 8 }));
      if (o.role === "align") g.append(s("text", { x: x - 2, y: mid - 56, text: `B${o.block}` }));
    }
    g.append(s("rect", { class: `op ${opClass(o.op)}`, x, y: mid - hh / 2, width: OP_W, height: hh, rx: 4 }));
    g.append(s("text", { class: "label-strong", x: x + OP_W / 2, y: mid + 4, "text-anchor": "middle", text: opLabel(o.op) }));
    g.append(s("text", { x: x + OP_W / 2, y: mid + hh / 2 + 13, "text-anchor": "middle", text: `${o.c_out ?? ""}` }));
    if (o.stride === 2) g.append(s("text", { x: x + OP_W / 2, y: mid + hh / 2 + 26, "text-anchor": "middle", text: `s2 ↓${reduction}` }));
    g.append(s("title", { text: `${o.role}${typeof o.block === "number" ? ` of block ${o.block}` : ""}: ${o.op}, ${o.c_in}→${o.c_out}, stride ${o.stride}` }));
    if (c > 0) g.append(s("line", { class: "edge", x1: x - GAP, x2: x, y1: mid, y2: mid, "stroke-width": 1.2 }));
    svg.append(g);
  });
  container.append(svg);
  const kinds = [...new Set(ops.map((o) => opClass(o.op)))].sort();
  const names = { "op-k3": "MBConv 3×3", "op-k5": "MBConv 5×5", "op-k7": "MBConv 7×7", "op-res": "residual block", "op-fixed": "fixed (stem, tail, classifier)" };
  const legend = s("svg", { width: 900, height: 20, viewBox: "0 0 900 20", "aria-hidden": "true" });
  let lx = 0;
  for (const k of kinds) {
    const label = names[k] || k;
    legend.append(s("rect", { class: `op ${k}`, x: lx, y: 4, width: 14, height: 12, rx: 2 }),
      s("text", { x: lx + 20, y: 14, text: label }));
    lx += 20 + label.length * 6.5 + 24;
  }
  container.append(legend);
  return svg;
}
