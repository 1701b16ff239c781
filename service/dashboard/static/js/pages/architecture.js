// Architecture page: facts, latency (predicted per table, measured per device), block diagram,
// retrains, and the retrain / derive-with-another-budget actions; JSON and ONNX downloads.
import { api, token, toLogin } from "../api.js";
import { h, byTestId, clear, facts, fmtCount, fmtMs, fmtPct, fmtTime } from "../dom.js";
import { initPage, showError, flash } from "../layout.js";
import { drawArchitecture } from "../archdiagram.js";

const archId = Number(document.querySelector("main").dataset.archId);
let arch = null;

const jobLink = (id) => h("a", { href: `/jobs/${id}`, text: `job #${id}` });

function accuracyOf(a) {
  return a.accuracy ?? a.accuracy_top1 ?? a.top1 ?? null;
}

function render() {
  const doc = arch.doc || arch.architecture || {};
  byTestId("arch-name").textContent = arch.name || doc.name || "";
  document.title = `Architecture ${archId}${arch.name ? ` (${arch.name})` : ""} · DenseNAS`;
  facts(byTestId("arch-facts"), [
    ["Name", arch.name || doc.name],
    ["Space", arch.space || doc.space],
    ["Family", doc.family],
    ["Input", doc.input_size ? `${doc.in_channels ?? 3}×${doc.input_size}×${doc.input_size}` : null],
    ["Classes", doc.num_classes !== undefined ? String(doc.num_classes) : null],
    ["Blocks / depth", doc.blocks ? `${doc.blocks.length} / ${doc.blocks.reduce((n, b) => n + 1 + (b.layers || []).length, 0)}` : null],
    ["Mult-adds", h("span", { "data-testid": "arch-madds", text: fmtCount(arch.mult_adds) })],
    ["Params", h("span", { "data-testid": "arch-params", text: fmtCount(arch.params) })],
    ["Accuracy (top-1)", accuracyOf(arch) !== null ? fmtPct(accuracyOf(arch)) : "not retrained yet"],
    ["Accuracy (top-5)", arch.accuracy_top5 !== null && arch.accuracy_top5 !== undefined ? fmtPct(arch.accuracy_top5) : null],
    ["Search job", arch.job_id ? jobLink(arch.job_id) : null],
    ["Derived from", arch.derived_from ? h("a", { href: `/architectures/${arch.derived_from}`, text: `architecture #${arch.derived_from}` }) : null],
    ["Created", arch.created_at ? fmtTime(arch.created_at) : null],
  ]);
  const tbody = byTestId("arch-latency").querySelector("tbody");
  clear(tbody);
  for (const [tid, ms] of Object.entries(arch.predicted_latency || {})) {
    tbody.append(h("tr", { "data-testid": "latency-predicted" }, h("td", {}, h("a", { href: `/latency-tables/${tid}`, text: `table #${tid}` })),
      h("td", { text: "predicted" }), h("td", { class: "num", text: fmtMs(typeof ms === "object" ? ms?.ms : ms).replace(" ms", "") })));
  }
  for (const [dev, ms] of Object.entries(arch.measured_latency || {})) {
    const v = typeof ms === "object" ? ms?.median_ms ?? ms?.ms : ms;
    tbody.append(h("tr", { "data-testid": "latency-measured" }, h("td", { text: dev }), h("td", { text: "measured" }),
      h("td", { class: "num", text: fmtMs(v).replace(" ms", "") })));
  }
  if (!tbody.children.length) tbody.append(h("tr", {}, h("td", { colspan: 3, class: "muted", text: "no latency yet" })));
  const rl = byTestId("arch-retrains");
  clear(rl);
  for (const r of arch.retrains || []) {
    const id = typeof r === "object" ? r.id ?? r.job_id : r;
    const extra = typeof r === "object" && r.status ? ` · ${r.status}` : "";
    const acc = typeof r === "object" ? r.top1 ?? null : null;
    rl.append(h("li", { "data-testid": "retrain-item" }, jobLink(id), extra, acc !== null ? ` · top-1 ${fmtPct(acc)}` : ""));
  }
  if (!rl.children.length) rl.append(h("li", { class: "muted", text: "none yet" }));
  byTestId("derive-form").hidden = !arch.job_id;
  drawArchitecture(byTestId("arch-diagram"), doc);
  byTestId("download-json").href = `/v1/architectures/${archId}/download?format=json`;
  byTestId("download-onnx").href = `/v1/architectures/${archId}/download?format=onnx`;
}

async function download(ev, format) {
  ev.preventDefault();
  try {
    const resp = await fetch(`/v1/architectures/${archId}/download?format=${format}`, {
      headers: { Authorization: `Bearer ${token.get()}` }, cache: "no-store",
    });
    if (resp.status === 401) { token.clear(); toLogin(); return; }
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}: download failed`);
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `architecture-${archId}.${format}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (e) { showError(e); }
}

// A form that posts to the API ("<name>-form"): its button ("<name>-submit") disabled meanwhile,
// what `send` writes (or the error) in its result ("<name>-result").
function onSubmit(name, send) {
  byTestId(`${name}-form`).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = byTestId(`${name}-result`);
    const btn = byTestId(`${name}-submit`);
    btn.disabled = true;
    try {
      await send(ev.target, out);
    } catch (e) { out.textContent = e.message; } finally { btn.disabled = false; }
  });
}

byTestId("download-json").addEventListener("click", (e) => download(e, "json"));
byTestId("download-onnx").addEventListener("click", (e) => download(e, "onnx"));
onSubmit("retrain", async (f, out) => {
  const spec = { architecture_id: archId, dataset: { name: f.elements.dataset.value },
    epochs: Number(f.elements.epochs.value), batch_size: Number(f.elements.batch_size.value) };
  const job = await api("/v1/jobs", { method: "POST", body: { kind: "retrain", spec, priority: Number(f.elements.priority.value) } });
  out.replaceChildren("Started ", h("a", { href: `/jobs/${job.id}`, "data-testid": "retrain-job-link", text: `retrain job #${job.id}` }), ".");
});
onSubmit("derive", async (f, out) => {
  const cost = {};
  const val = (k) => f.elements[k].value.trim();
  if (val("max_mult_adds_m")) cost.max_mult_adds = Math.round(Number(val("max_mult_adds_m")) * 1e6);
  if (val("max_latency_ms")) cost.max_latency_ms = Number(val("max_latency_ms"));
  if (val("latency_table_id")) cost.latency_table_id = Number(val("latency_table_id"));
  if (val("top_k")) cost.top_k = Number(val("top_k"));
  if (!("max_mult_adds" in cost) && !("max_latency_ms" in cost)) {
    out.textContent = "Give a mult-adds or a latency budget.";
    return;
  }
  const body = { cost };
  if (val("name")) body.name = val("name");
  const a = await api(`/v1/jobs/${arch.job_id}/derive`, { method: "POST", body });
  out.replaceChildren("Derived ", h("a", { href: `/architectures/${a.id}`, "data-testid": "derived-link", text: `architecture #${a.id}` }),
    a.mult_adds ? ` (${fmtCount(a.mult_adds)} mult-adds)` : "", ".");
});

if (await initPage()) {
  try {
    arch = await api(`/v1/architectures/${archId}`);
    render();
    const tables = await api("/v1/latency-tables").catch(() => ({ data: [] }));
    const sel = byTestId("derive-table");
    for (const t of tables.data || []) sel.append(h("option", { value: t.id, text: `#${t.id} ${t.device_name} (${t.device_kind})` }));
  } catch (e) {
    if (e.status === 404) {
      // No dead buttons: nothing to download, retrain or derive.
      document.querySelector(".page-head .actions")?.remove();
      for (const f of ["retrain-form", "derive-form"]) byTestId(f).hidden = true;
      flash(`Architecture ${archId} does not exist or belongs to another project.`);
    }
    else if (e.status !== 401) showError(e);
  }
}
