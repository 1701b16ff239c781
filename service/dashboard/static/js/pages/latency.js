// Latency tables: the list (device, entries) and one table's per-op latency heat-map.
import { api } from "../api.js";
import { h, byTestId, clear, fmtNum, fmtTime } from "../dom.js";
import { initPage, showError, flash } from "../layout.js";
import { heatmap } from "../charts.js";

const selected = Number(document.querySelector("main").dataset.tableId) || null;

function shapeLabel(e) {
  return `${e.c_in}→${e.c_out} s${e.stride} ${e.h}${e.w !== e.h ? `×${e.w}` : ""}`;
}

async function list() {
  const res = await api("/v1/latency-tables");
  const tables = Array.isArray(res) ? res : res.data || [];
  const tbody = byTestId("latency-tables").querySelector("tbody");
  clear(tbody);
  for (const t of tables) {
    tbody.append(h("tr", { "data-testid": "latency-row", "data-table-id": t.id, "aria-current": t.id === selected ? "true" : null },
      h("td", {}, h("a", { href: `/latency-tables/${t.id}`, text: `#${t.id}` })),
      h("td", { text: `${t.device_name ?? ""} (${t.device_kind ?? "?"})` }),
      h("td", { text: t.space ?? "—" }),
      h("td", { class: "num", text: t.entry_count ?? t.entries_count ?? (Array.isArray(t.entries) ? t.entries.length : "—") }),
      h("td", { text: `${t.batch ?? 1} × ${t.input_size ?? "?"}px${t.dtype ? ` · ${t.dtype}` : ""}` }),
      h("td", { text: fmtTime(t.created_at) })));
  }
  byTestId("latency-empty").hidden = tables.length > 0;
}

async function detail(id) {
  const t = await api(`/v1/latency-tables/${id}`);
  const doc = t.doc || t.table || t;
  const entries = doc.entries || [];
  byTestId("latency-title").textContent =
    `Table #${id}: ${doc.device_name ?? t.device_name ?? ""} · ${entries.length} entries`;
  const ops = [...new Set(entries.map((e) => e.op))].sort();
  const shapeKey = (e) => [e.h, e.c_in, e.c_out, e.stride].join("/");
  const shapes = [...new Map(entries.map((e) => [shapeKey(e), e])).values()]
    .sort((a, b) => b.h - a.h || a.c_in - b.c_in || a.c_out - b.c_out || a.stride - b.stride);
  const cell = new Map(entries.map((e) => [`${e.op}|${shapeKey(e)}`, e.median_ms ?? e.ms]));
  const values = ops.map((op) => shapes.map((sh) => cell.get(`${op}|${shapeKey(sh)}`) ?? null));
  const box = byTestId("latency-heatmap");
  clear(box);
  if (!entries.length) { box.append(h("p", { class: "muted", text: "This table has no entries." })); }
  else {
    // log colour scale: op latencies span orders of magnitude
    const logv = values.map((r) => r.map((v) => (v === null ? null : Math.log10(Math.max(v, 1e-4)))));
    const svg = heatmap({ rows: ops, cols: shapes.map(shapeLabel), values: logv, cell: 20, testid: "latency-heatmap-svg",
      title: `Per-op latency of table ${id}`, fmt: (v) => `${fmtNum(10 ** v)} ms`, legend: "median (log scale)" });
    box.append(svg);
  }
  byTestId("latency-detail").hidden = false;
}

if (await initPage()) {
  try {
    await list();
    if (selected) await detail(selected);
  } catch (e) {
    if (e.status === 404) flash(`Latency table ${selected} does not exist or belongs to another project.`);
    else if (e.status !== 401) showError(e);
  }
}
