// Architectures explorer: latency (or mult-adds) against accuracy across all searches, with the
// Pareto front from the service (?pareto=), filtered by space, latency table and budget.
import { api, fetchAll } from "../api.js";
import { h, byTestId, clear, fmtCount, fmtMs, fmtPct } from "../dom.js";
import { initPage, showError } from "../layout.js";
import { scatter, paretoFront } from "../charts.js";

const form = byTestId("arch-filters");
const FIELDS = ["space", "latency_table_id", "x", "max_mult_adds_m", "max_latency_ms"];

const accuracyOf = (a) => a.accuracy ?? a.accuracy_top1 ?? null;
const latencyOf = (a, tid) => {
  const v = tid ? a.predicted_latency?.[tid] ?? a.latency_ms : a.latency_ms;
  return typeof v === "object" && v !== null ? v.ms ?? v.median_ms : v ?? null;
};

function readQuery() {
  const q = new URLSearchParams(location.search);
  return Object.fromEntries(FIELDS.map((k) => [k, q.get(k) || (k === "x" ? "mult_adds" : "")]));
}

async function fillSelects(q) {
  const [spaces, tables] = await Promise.all([
    api("/v1/spaces").catch(() => []), api("/v1/latency-tables").catch(() => ({ data: [] })),
  ]);
  const spaceSel = form.elements.space;
  for (const sp of Array.isArray(spaces) ? spaces : spaces.data || []) {
    const name = typeof sp === "string" ? sp : sp.name;
    spaceSel.append(h("option", { value: name, text: name }));
  }
  const tableSel = form.elements.latency_table_id;
  for (const t of Array.isArray(tables) ? tables : tables.data || []) {
    tableSel.append(h("option", { value: t.id, text: `#${t.id} ${t.device_name || t.device || ""} (${t.device_kind || ""}, batch ${t.batch ?? "?"})` }));
  }
  for (const k of FIELDS) form.elements[k].value = q[k];
}

let loadSeq = 0; // a later load wins even when an earlier answer arrives last

async function load() {
  const mine = ++loadSeq;
  const q = readQuery();
  for (const k of FIELDS) form.elements[k].value = q[k];
  const useLatency = q.x === "latency" && q.latency_table_id;
  form.elements.x.querySelector('[value="latency"]').disabled = !q.latency_table_id;
  const params = {
    space: q.space, latency_table_id: q.latency_table_id,
    max_mult_adds: q.max_mult_adds_m ? Math.round(Number(q.max_mult_adds_m) * 1e6) : "",
    max_latency_ms: q.latency_table_id ? q.max_latency_ms : "",
  };
  const axis = useLatency ? "latency" : "mult_adds";
  try {
    const [all, front] = await Promise.all([
      fetchAll("/v1/architectures", { ...params, limit: 200 }),
      fetchAll("/v1/architectures", { ...params, pareto: `${axis},accuracy`, limit: 200 }).catch(() => null),
    ]);
    if (mine !== loadSeq) return;
    const frontIds = new Set((front || []).map((a) => a.id));
    const xOf = (a) => (useLatency ? latencyOf(a, q.latency_table_id) : a.mult_adds);
    const points = all.filter((a) => accuracyOf(a) !== null && xOf(a) !== null && xOf(a) !== undefined).map((a) => ({
      x: +xOf(a), y: accuracyOf(a) <= 1 ? accuracyOf(a) * 100 : accuracyOf(a), href: `/architectures/${a.id}`, id: a.id,
      label: `#${a.id} ${a.name || ""}: ${useLatency ? fmtMs(xOf(a)) : `${fmtCount(xOf(a))} mult-adds`}, top-1 ${fmtPct(accuracyOf(a))}`,
    }));
    // The service's front when it answered; the same rule computed here otherwise.
    const onFront = front ? frontIds : new Set(paretoFront(points).map((p) => p.id));
    for (const p of points) p.onFront = onFront.has(p.id);
    const box = byTestId("arch-scatter");
    if (points.length) {
      scatter(box, points, { xLabel: useLatency ? "predicted latency (ms)" : "mult-adds", yLabel: "top-1 accuracy (%)",
        testid: "scatter-svg" });
    } else {
      clear(box).append(h("p", { class: "muted", text: "No retrained architectures match these filters yet." }));
    }
    const missing = all.length - points.length;
    byTestId("scatter-note").textContent = `${points.length} plotted, ${[...onFront].length} on the Pareto front` +
      (missing ? `; ${missing} without ${useLatency ? "a latency for this table or " : ""}an accuracy (retrain them to place them)` : "") + ".";
    const tbody = byTestId("arch-body");
    clear(tbody);
    for (const a of all) {
      tbody.append(h("tr", { "data-testid": "arch-row", "data-arch-id": a.id },
        h("td", {}, h("a", { href: `/architectures/${a.id}`, text: `#${a.id} ${a.name || ""}` })),
        h("td", { text: a.space || "" }),
        h("td", { class: "num", text: fmtCount(a.mult_adds) }),
        h("td", { class: "num", text: fmtCount(a.params) }),
        h("td", { class: "num", text: q.latency_table_id ? fmtMs(latencyOf(a, q.latency_table_id)) : "—" }),
        h("td", { class: "num", text: fmtPct(accuracyOf(a)) }),
        h("td", {}, a.job_id ? h("a", { href: `/jobs/${a.job_id}`, text: `#${a.job_id}` }) : "—"),
        h("td", { text: onFront.has(a.id) ? "★ front" : "" })));
    }
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
}

form.addEventListener("change", () => {
  const p = new URLSearchParams();
  for (const k of FIELDS) if (form.elements[k].value && !(k === "x" && form.elements[k].value === "mult_adds")) p.set(k, form.elements[k].value);
  history.pushState(null, "", `${location.pathname}${p.toString() ? `?${p}` : ""}`);
  load();
});
form.addEventListener("submit", (e) => e.preventDefault());
window.addEventListener("popstate", load);

if (await initPage()) {
  await fillSelects(readQuery()).catch(showError);
  await load();
}
