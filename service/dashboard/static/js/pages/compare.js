// Compare view: the per-epoch curves of 2–8 jobs overlaid, one colour per job, from each job's
// `epoch` events; a metric selector, EMA smoothing, a log y axis, and the plotted points as CSV.
// The choices live in the address (?ids=…&metric=…&smooth=…&log=1), so a view can be shared.
import { api, fetchEventHistory } from "../api.js";
import { h, byTestId, clear, fmtNum, statusBadge } from "../dom.js";
import { initPage, showError } from "../layout.js";
import { LineChart } from "../charts.js";
import { num } from "../curves.js";
import { specBudget, specEpochs, specSpace, tagList } from "../jobspec.js";

const ids = document.querySelector("main").dataset.jobIds.split(",").map(Number);
const form = byTestId("compare-controls");
const status = byTestId("compare-status");
const download = byTestId("compare-download");

// The metrics a search reports per epoch, in the order the selector lists them; any other
// numeric field of the epoch events follows, alphabetically.
const PREFERRED = ["val_acc", "derived_val_acc", "train_loss", "val_loss", "train_acc",
  "derived_val_loss", "supernet_val_acc", "supernet_val_loss", "expected_cost", "derived_cost",
  "alpha_entropy", "beta_entropy", "alpha_top_gap", "argmax_changes", "lr"];
const NOT_METRICS = new Set(["epoch", "steps", "global_step"]);

const jobs = new Map(); // id → {job, epochs: Map(epoch → data), color}
const chart = new LineChart(byTestId("compare-chart"), {
  title: "Per-epoch curves", xLabel: "epoch", yLabel: "", testid: "compare-svg", height: 360,
});
let plotted = []; // [{job_id, epoch, metric, value, smoothed}] — exactly what is drawn

function readQuery() {
  const q = new URLSearchParams(location.search);
  const smooth = Math.min(0.95, Math.max(0, Number(q.get("smooth")) || 0));
  return { metric: q.get("metric") || "", smooth, log: q.get("log") === "1" };
}

function writeQuery(state) {
  const q = new URLSearchParams({ ids: ids.join(",") });
  if (state.metric) q.set("metric", state.metric);
  if (state.smooth) q.set("smooth", String(state.smooth));
  if (state.log) q.set("log", "1");
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

function state() {
  return {
    metric: form.elements.metric.value,
    smooth: Number(form.elements.smoothing.value) || 0,
    log: form.elements.logy.checked,
  };
}

/** Every numeric field any compared job reported in an epoch event, preferred ones first. */
function metrics() {
  const seen = new Set();
  for (const { epochs } of jobs.values()) {
    for (const d of epochs.values()) {
      for (const [k, v] of Object.entries(d)) if (num(v) !== null && !NOT_METRICS.has(k)) seen.add(k);
    }
  }
  const first = PREFERRED.filter((k) => seen.has(k));
  return [...first, ...[...seen].filter((k) => !PREFERRED.includes(k)).sort()];
}

/** Exponential moving average with weight `a` on the past (a = 0: the values themselves). */
export function ema(values, a) {
  const out = [];
  let s = null;
  for (const v of values) {
    s = s === null ? v : a * s + (1 - a) * v;
    out.push(s);
  }
  return out;
}

/** A job's name in the legend: its id and tags. */
const label = (job) => `#${job.id}${job.tags?.length ? ` ${job.tags.join(", ")}` : ""}`;

function render() {
  const { metric, smooth, log } = state();
  byTestId("compare-smoothing-value").textContent = smooth.toFixed(2);
  writeQuery({ metric, smooth, log });
  chart.opts.yLog = log;
  chart.opts.yLabel = metric + (log ? " (log)" : "");
  chart.opts.title = `${metric || "no metric"} per epoch`;
  chart.figure.querySelector("figcaption").textContent = chart.opts.title;
  plotted = [];
  const series = [];
  for (const [id, { job, epochs, color }] of jobs) {
    const rows = [...epochs.entries()].sort((a, b) => a[0] - b[0])
      .filter(([, d]) => num(d[metric]) !== null && (!log || d[metric] > 0));
    const xs = rows.map(([e]) => e + 1);
    const values = rows.map(([, d]) => d[metric]);
    const smoothed = ema(values, smooth);
    xs.forEach((x, i) => plotted.push({ job_id: id, epoch: x, metric, value: values[i], smoothed: smoothed[i] }));
    if (smooth > 0) {
      series.push({ name: `${label(job)} (measured)`, points: xs.map((x, i) => [x, values[i]]), color, faint: true, legend: false });
    }
    series.push({ name: label(job), points: xs.map((x, i) => [x, smoothed[i]]), color, markers: xs.length <= 30 });
    const tr = byTestId("compare-jobs-body").querySelector(`[data-job-id="${id}"]`);
    if (tr) {
      tr.querySelector('[data-col="reported"]').textContent = String(rows.length);
      tr.querySelector('[data-col="last"]').textContent = values.length ? fmtNum(values.at(-1), 4) : "—";
    }
  }
  chart.update(series);
  byTestId("compare-empty").hidden = plotted.length > 0;
  byTestId("compare-svg").dataset.series = String(series.filter((sr) => !sr.faint && sr.points.length).length);
  download.disabled = plotted.length === 0;
}

function csvCell(v) {
  const str = typeof v === "number" ? String(v) : String(v ?? "");
  return /[",\n\r]/.test(str) ? `"${str.replace(/"/g, '""')}"` : str;
}

export function toCsv(rows) {
  const cols = ["job_id", "epoch", "metric", "value", "smoothed"];
  return [cols.join(","), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n") + "\n";
}

function downloadCsv() {
  const { metric } = state();
  const blob = new Blob([toCsv(plotted)], { type: "text/csv" });
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: `compare-${ids.join("-")}-${metric}.csv`, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function jobRow(job, color) {
  return h("tr", { "data-job-id": job.id, "data-testid": "compare-job-row" },
    h("td", {}, h("span", { class: `swatch c${color}`, "aria-label": `colour ${color}` })),
    h("td", {}, h("a", { href: `/jobs/${job.id}`, text: `#${job.id}` })),
    h("td", {}, statusBadge(job.status)),
    h("td", { text: specSpace(job) }),
    h("td", { text: specBudget(job) }),
    h("td", { class: "num", text: specEpochs(job) }),
    h("td", { class: "tags-cell" }, tagList(job.tags)),
    h("td", { class: "num", "data-col": "reported", text: "…" }),
    h("td", { class: "num", "data-col": "last", text: "…" }));
}

async function load() {
  const missing = [];
  const loaded = await Promise.all(ids.map(async (id) => {
    try {
      const job = await api(`/v1/jobs/${id}`);
      const { events } = await fetchEventHistory(id);
      const epochs = new Map();
      for (const ev of events) if (ev.type === "epoch" && num(ev.data?.epoch) !== null) epochs.set(ev.data.epoch, ev.data);
      return { job, epochs };
    } catch (e) {
      if (e.status === 404) { missing.push(id); return null; }
      throw e;
    }
  }));
  const body = clear(byTestId("compare-jobs-body"));
  loaded.forEach((got, i) => {
    if (!got) return;
    const color = i + 1;
    jobs.set(got.job.id, { ...got, color });
    body.append(jobRow(got.job, color));
  });
  const select = form.elements.metric;
  clear(select);
  const names = metrics();
  for (const m of names) select.append(h("option", { value: m, text: m }));
  const q = readQuery();
  select.value = names.includes(q.metric) ? q.metric : names[0] || "";
  form.elements.smoothing.value = String(q.smooth);
  form.elements.logy.checked = q.log;
  const epochsTotal = [...jobs.values()].reduce((n, j) => n + j.epochs.size, 0);
  status.textContent = `${jobs.size} jobs, ${epochsTotal} epoch reports` +
    (missing.length ? ` · not visible to this token: ${missing.map((m) => `#${m}`).join(", ")}` : "");
  if (missing.length) status.classList.add("error");
  render();
}

form.addEventListener("input", render);
form.addEventListener("change", render);
form.addEventListener("submit", (e) => e.preventDefault());
download.addEventListener("click", downloadCsv);

if (await initPage()) {
  try {
    await load();
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
}
