// Sweep page: the family of searches one sweep runs — its trials (config columns, status,
// accuracy, cost, architecture; 2–8 selectable for the compare view), the cost-vs-accuracy
// scatter with the Pareto front the service computed, and val_acc against each grid field.
// Refreshed every few seconds until the sweep ends.
import { api, RETRYABLE, TERMINAL } from "../api.js";
import { h, byTestId, clear, facts, fmtCount, fmtNum, fmtTime, statusBadge } from "../dom.js";
import { initPage, showError, flash } from "../layout.js";
import { scatter } from "../charts.js";
import { specSpace, tagList } from "../jobspec.js";

const jobId = Number(document.querySelector("main").dataset.jobId);
const REFRESH_MS = 3000;
const COMPARE_MAX = 8;
const selected = new Set();
let sweep = null;
let trials = { data: [], pareto_front: [], counts: {} };
let timer = null;

const gridKeys = () => Object.keys(sweep?.spec?.grid || {});
const fmtValue = (v) => (typeof v === "number" ? fmtNum(v, 4) : typeof v === "string" ? v : JSON.stringify(v));

function renderSweep() {
  byTestId("sweep-status").replaceChildren(statusBadge(sweep.status));
  byTestId("sweep-status").dataset.status = sweep.status;
  document.title = `Sweep ${sweep.id} (${sweep.status}) · DenseNAS`;
  const spec = sweep.spec || {};
  const counts = Object.entries(trials.counts || {}).map(([k, n]) => `${n} ${k}`).join(", ");
  facts(byTestId("sweep-facts"), [
    ["Base search", `${specSpace({ kind: "search", spec: spec.search || {} }) || "—"}, ${spec.search?.epochs ?? "?"} epochs`],
    ["Grid", gridKeys().map((k) => `${k} ∈ {${spec.grid[k].map(fmtValue).join(", ")}}`).join("; ")],
    ["Trials", `${trials.data.length}${counts ? ` (${counts})` : ""}`],
    ["At once", String(spec.max_concurrent ?? 2)],
    ["Scheduler", spec.scheduler ? `${spec.scheduler} (grace ${spec.grace_epochs ?? 1} epoch)` : "none (every trial runs all its epochs)"],
    ["Attempt", `${sweep.attempt} of ${sweep.max_attempts}`],
    ["Created", fmtTime(sweep.created_at)],
    ["Finished", sweep.finished_at ? fmtTime(sweep.finished_at) : null],
    ["Tags", sweep.tags?.length ? tagList(sweep.tags) : null],
  ]);
  const err = byTestId("sweep-error");
  err.hidden = !sweep.error;
  err.textContent = sweep.error || "";
  byTestId("sweep-cancel").hidden = TERMINAL.has(sweep.status) || sweep.cancel_requested;
  byTestId("sweep-retry").hidden = !RETRYABLE.has(sweep.status);
  const all = trials.data.map((t) => t.job_id).slice(0, COMPARE_MAX);
  const compareAll = byTestId("sweep-compare-all");
  compareAll.hidden = all.length < 2;
  compareAll.href = `/compare?ids=${all.join(",")}`;
}

function renderTrials() {
  const keys = gridKeys();
  const front = new Set(trials.pareto_front || []);
  byTestId("trials-head").replaceChildren(h("tr", {},
    h("th", { scope: "col", text: "Select" }), h("th", { scope: "col", class: "num", text: "Trial" }),
    h("th", { scope: "col", text: "Job" }),
    ...keys.map((k) => h("th", { scope: "col", text: k, "data-testid": "trial-config-col" })),
    h("th", { scope: "col", text: "Status" }), h("th", { scope: "col", class: "num", text: "val_acc" }),
    h("th", { scope: "col", class: "num", text: "derived val_acc" }),
    h("th", { scope: "col", class: "num", text: "Mult-adds" }), h("th", { scope: "col", text: "Architecture" }),
    h("th", { scope: "col", text: "Front" })));
  const body = clear(byTestId("trials-body"));
  for (const t of trials.data) {
    const box = h("input", { type: "checkbox", "aria-label": `select trial ${t.trial} (job ${t.job_id})`,
      "data-testid": "trial-select", value: String(t.job_id) });
    box.checked = selected.has(t.job_id);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(t.job_id); else selected.delete(t.job_id);
      updateCompare();
    });
    body.append(h("tr", { "data-testid": "trial-row", "data-trial": String(t.trial), "data-status": t.status },
      h("td", {}, box), h("td", { class: "num", text: String(t.trial) }),
      h("td", {}, h("a", { href: `/jobs/${t.job_id}`, text: `#${t.job_id}` })),
      ...keys.map((k) => h("td", { text: fmtValue((t.config || {})[k]) })),
      h("td", {}, statusBadge(t.status), t.error ? h("span", { class: "muted small", title: t.error, text: " ⓘ" }) : ""),
      h("td", { class: "num", text: t.val_acc === null || t.val_acc === undefined ? "—" : fmtNum(t.val_acc, 4) }),
      h("td", { class: "num", text: t.derived_val_acc === null || t.derived_val_acc === undefined ? "—" : fmtNum(t.derived_val_acc, 4) }),
      h("td", { class: "num", text: t.mult_adds ? fmtCount(t.mult_adds) : "—" }),
      h("td", {}, t.architecture_id ? h("a", { href: `/architectures/${t.architecture_id}`, text: `#${t.architecture_id}` }) : "—"),
      h("td", { "data-testid": "trial-front", text: front.has(t.job_id) ? "★" : "" })));
  }
  updateCompare();
}

function updateCompare() {
  const button = byTestId("trials-compare");
  const n = selected.size;
  button.disabled = n < 2 || n > COMPARE_MAX;
  button.textContent = n ? `Compare selected (${n})` : "Compare selected";
}

function finished() {
  return trials.data.filter((t) => Number.isFinite(t.mult_adds) && Number.isFinite(t.val_acc));
}

function renderScatter() {
  const done = finished();
  const front = new Set(trials.pareto_front || []);
  const box = byTestId("sweep-scatter");
  byTestId("sweep-scatter-empty").hidden = done.length > 0;
  if (!done.length) { clear(box); return; }
  scatter(box, done.map((t) => ({
    x: t.mult_adds, y: t.val_acc, onFront: front.has(t.job_id), href: `/jobs/${t.job_id}`,
    label: `trial ${t.trial} (job ${t.job_id}): ${fmtCount(t.mult_adds)} mult-adds, val_acc ${fmtNum(t.val_acc, 4)}`,
  })), { xLabel: "mult-adds", yLabel: "val_acc", xFmt: fmtCount, yFmt: (v) => fmtNum(v, 3), testid: "sweep-scatter-svg", height: 320 });
}

function renderFields() {
  const box = clear(byTestId("sweep-fields"));
  const done = trials.data.filter((t) => Number.isFinite(t.val_acc));
  if (!done.length) { box.append(h("p", { class: "muted", text: "No trial has finished yet." })); return; }
  const front = new Set(trials.pareto_front || []);
  for (const key of gridKeys()) {
    const values = sweep.spec.grid[key];
    const numeric = values.every((v) => typeof v === "number");
    // categorical values sit at their position in the grid, labelled by value
    const x = (v) => (numeric ? v : values.findIndex((w) => JSON.stringify(w) === JSON.stringify(v)));
    const figure = h("figure", { class: "field-chart", "data-testid": "sweep-field", "data-field": key },
      h("figcaption", { text: key }));
    box.append(figure);
    const holder = figure.appendChild(h("div", {}));
    scatter(holder, done.map((t) => ({
      x: x((t.config || {})[key]), y: t.val_acc, onFront: front.has(t.job_id), href: `/jobs/${t.job_id}`,
      label: `trial ${t.trial}: ${key} = ${fmtValue((t.config || {})[key])}, val_acc ${fmtNum(t.val_acc, 4)}`,
    })), { xLabel: key, yLabel: "val_acc", width: 420, height: 260, frontLine: false,
      xFmt: numeric ? (v) => fmtNum(v, 3) : (i) => fmtValue(values[Math.round(i)] ?? ""),
      yFmt: (v) => fmtNum(v, 3), testid: "sweep-field-svg" });
  }
}

async function refresh() {
  try {
    [sweep, trials] = await Promise.all([api(`/v1/jobs/${jobId}`), api(`/v1/jobs/${jobId}/trials`)]);
  } catch (e) {
    showError(e);
    return;
  }
  renderSweep();
  renderTrials();
  renderScatter();
  renderFields();
  byTestId("sweep-status").dataset.loaded = "1";
  clearTimeout(timer);
  const live = !TERMINAL.has(sweep.status) || trials.data.some((t) => !TERMINAL.has(t.status));
  if (live) timer = setTimeout(refresh, REFRESH_MS);
}

async function act(action) {
  try {
    await api(`/v1/jobs/${jobId}/${action}`, { method: "POST" });
    flash(action === "cancel" ? "Cancellation requested: every running trial stops." : "Sweep queued again: the trials that did not succeed run again.", "info");
  } catch (e) {
    showError(e);
  }
  refresh();
}

byTestId("sweep-cancel").addEventListener("click", () => act("cancel"));
byTestId("sweep-retry").addEventListener("click", () => act("retry"));
byTestId("trials-compare").addEventListener("click", () => {
  if (selected.size >= 2 && selected.size <= COMPARE_MAX) location.href = `/compare?ids=${[...selected].join(",")}`;
});

initPage().then(refresh).catch(showError);
