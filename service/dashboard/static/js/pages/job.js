// Job page: facts, actions, state history, live curves, and for searches the search progress
// (α/β entropy per epoch) and the supernet view.
import { api, fetchEventHistory, followEvents, RETRYABLE, TERMINAL } from "../api.js";
import { h, byTestId, clear, replace, facts, fmtAge, fmtCount, fmtNum, fmtTime, statusBadge } from "../dom.js";
import { initPage, showError, flash } from "../layout.js";
import { Curves } from "../curves.js";
import { applyEvent, progressText } from "../progress.js";
import { SearchView } from "../searchview.js";
import { SearchProgress } from "../searchprogress.js";
import { WorkersPanel } from "../jobresources.js";

const jobId = Number(document.querySelector("main").dataset.jobId);
const TRANSITIONS = new Set(["status", "cancel_requested"]);
const LOG_LIMIT = 500;

let job = null;
const curves = new Curves(byTestId("charts"), byTestId("charts-empty"));
curves.onMode = (mode) => {
  const radio = document.querySelector(`input[name="xaxis"][value="${mode}"]`);
  if (radio) radio.checked = true;
};
const searchProgress = new SearchProgress(byTestId("search-progress"));
curves.onEpochs = (rows) => searchProgress.render(rows);
let search = null; // SearchView for search jobs
const history = [];
const seen = new Set(); // event ids already applied (history and stream may overlap)
let refetchTimer = null;

function isTransition(ev) {
  return TRANSITIONS.has(ev.type);
}

function renderJob() {
  byTestId("job-status").replaceChildren(statusBadge(job.status));
  byTestId("job-status").dataset.status = job.status;
  document.title = `Job ${job.id} (${job.status}) · DenseNAS`;
  const spec = job.spec || {};
  const space = typeof spec.space === "string" ? spec.space : spec.space ? spec.space.name || "custom" : null;
  facts(byTestId("job-facts"), [
    ["Kind", job.kind],
    ["Sweep", job.parent_id ? h("a", { href: `/jobs/${job.parent_id}`, "data-testid": "job-sweep-link",
      text: `trial ${job.trial} of sweep #${job.parent_id}` }) : null],
    ["Project", job.project], ["Priority", String(job.priority ?? 0)],
    ["Attempt", `${job.attempt ?? 1} of ${job.max_attempts ?? "?"}`],
    ["Space", space], ["Dataset", spec.dataset?.name],
    ["Epochs", spec.epochs !== undefined ? String(spec.epochs) : null],
    ["Architecture", job.architecture_id ? h("a", { href: `/architectures/${job.architecture_id}`, text: `#${job.architecture_id}` }) : null],
    ["Progress", progressText(job) || null],
    ["Created", `${fmtTime(job.created_at)} (${fmtAge(job.created_at)} ago)`],
    ["Started", job.started_at ? fmtTime(job.started_at) : null],
    ["Finished", job.finished_at ? fmtTime(job.finished_at) : null],
    ["Heartbeat", job.heartbeat_at && !TERMINAL.has(job.status) ? `${fmtAge(job.heartbeat_at)} ago` : null],
    ["Cancel", job.cancel_requested && !TERMINAL.has(job.status) ? "requested" : null],
  ]);
  const err = byTestId("job-error");
  err.textContent = job.error || "";
  err.hidden = !job.error;
  const produced = byTestId("job-produced");
  clear(produced);
  const prod = job.produced || {};
  for (const id of prod.architectures || []) {
    produced.append(h("li", {}, h("a", { href: `/architectures/${id}`, "data-testid": "produced-architecture", text: `Architecture #${id}` })));
  }
  for (const id of prod.latency_tables || []) {
    produced.append(h("li", {}, h("a", { href: `/latency-tables/${id}`, "data-testid": "produced-table", text: `Latency table #${id}` })));
  }
  if (job.kind === "retrain" && job.result?.metrics) {
    const m = job.result.metrics;
    produced.append(h("li", { text: `top-1 ${m.top1 ?? "—"}, top-5 ${m.top5 ?? "—"}, loss ${m.loss ?? "—"}` }));
  }
  renderAttemptErrors(job.attempt_errors || []);
  const cancel = byTestId("job-cancel");
  cancel.hidden = TERMINAL.has(job.status) || job.cancel_requested;
  const retry = byTestId("job-retry");
  retry.hidden = !RETRYABLE.has(job.status);
  if (job.kind === "search" && !search) {
    search = new SearchView(job, byTestId("search-view"));
    search.init().catch(showError);
  }
  search?.setJob(job);
}

function renderAttemptErrors(errors) {
  byTestId("attempt-errors").hidden = !errors.length;
  replace(byTestId("attempt-errors-list"), errors.map((e) =>
    h("li", { "data-testid": "attempt-error", dataset: { attempt: String(e.attempt) } },
      h("strong", { text: `Attempt ${e.attempt}` }),
      e.at ? h("span", { class: "muted", text: ` ${fmtTime(e.at)}` }) : null,
      h("p", { class: "error", "data-testid": "attempt-error-message", text: e.error }),
      e.traceback_tail ? h("details", { "data-testid": "attempt-error-traceback" },
        h("summary", { text: "Traceback (last lines)" }),
        h("pre", { class: "traceback", text: e.traceback_tail })) : null)));
}

function historyNote(d) {
  const why = [d.reason, d.error].filter(Boolean).join(": ") || d.message;
  return why ? h("span", { class: "muted", text: ` — ${why}` }) : null;
}

function renderHistory() {
  const ol = byTestId("job-history");
  clear(ol);
  if (!history.length) {
    ol.append(h("li", { class: "muted", text: `created ${fmtTime(job.created_at)}` }));
    return;
  }
  for (const ev of history) {
    const d = ev.data || {};
    const text = ev.type === "cancel_requested" ? `cancel requested${d.by ? ` by ${d.by}` : ""}`
      : `${d.from ? `${d.from} → ` : ""}${d.to ?? ev.type}`;
    ol.append(h("li", { "data-testid": "history-item" }, h("strong", { text }), " ",
      h("span", { class: "muted", text: fmtTime(ev.created_at) }),
      historyNote(d),
      d.failed_attempt ? h("span", { class: "muted", text: ` (attempt ${d.failed_attempt} failed)` })
        : d.attempt ? h("span", { class: "muted", text: ` (attempt ${d.attempt})` }) : null));
  }
}

function addLog(ev) {
  const ol = byTestId("job-log");
  const msg = ev.data?.message ?? JSON.stringify(ev.data);
  ol.append(h("li", { text: `${ev.created_at ? `${fmtTime(ev.created_at)}  ` : ""}${msg}` }));
  while (ol.children.length > LOG_LIMIT) ol.firstChild.remove();
  byTestId("log-empty").hidden = true;
}

function apply(ev, { live }) {
  if (ev.id !== null && ev.id !== undefined) {
    if (seen.has(ev.id)) return;
    seen.add(ev.id);
  }
  // a worker's events refresh the job's heartbeat on the server; mirror it instead of refetching
  if (live && ev.seq !== null && ev.seq !== undefined && ev.created_at &&
      (!job.heartbeat_at || ev.created_at > job.heartbeat_at)) job.heartbeat_at = ev.created_at;
  if (curves.add(ev)) {
    if (live) applyEvent(job, ev);
  } else if (ev.type === "end") {
    if (live) { applyEvent(job, ev); scheduleRefetch(); }
  } else if (ev.type === "arch") {
    search?.addArch(ev);
  } else if (ev.type === "log") {
    addLog(ev);
  } else if (ev.type === "derived") {
    const d = ev.data || {};
    addLog({ ...ev, data: { message: `derived architecture #${d.architecture_id}` +
      `${d.mult_adds ? ` · ${fmtCount(d.mult_adds)} mult-adds` : ""}${d.latency_ms ? ` · ${fmtNum(d.latency_ms)} ms` : ""}` +
      ` (path rank ${d.rank ?? "?"} within the budget)` } });
    if (live) scheduleRefetch();
  } else if (isTransition(ev)) {
    history.push(ev);
    if (live) {
      renderHistory();
      applyEvent(job, ev);
      scheduleRefetch();
    }
  }
  if (live) renderJobSoon();
}

let renderPending = false;
function renderJobSoon() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => { renderPending = false; renderJob(); }, 250);
}

function scheduleRefetch() {
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(refetch, 300);
}

async function refetch() {
  try {
    job = await api(`/v1/jobs/${jobId}`);
    renderJob();
  } catch (e) { if (e.status !== 401) showError(e); }
}

async function act(action) {
  const btn = byTestId(`job-${action}`);
  btn.disabled = true;
  try {
    job = await api(`/v1/jobs/${jobId}/${action}`, { method: "POST" });
    flash(action === "cancel" ? "Cancellation requested." : "Job queued again.", "info");
    renderJob();
    if (action === "retry") startStream();
  } catch (e) {
    showError(e);
  } finally {
    btn.disabled = false;
  }
}
byTestId("job-cancel").addEventListener("click", () => act("cancel"));
byTestId("job-retry").addEventListener("click", () => act("retry"));
for (const r of document.querySelectorAll('input[name="xaxis"]')) {
  r.addEventListener("change", () => curves.setMode(r.value));
}

// -- streaming -------------------------------------------------------------------------------

let streamCtl = null;
let lastId = null;
function startStream() {
  if (streamCtl) return;
  streamCtl = new AbortController();
  const state = byTestId("stream-state");
  followEvents(jobId, {
    after: lastId, signal: streamCtl.signal,
    onEvent: (ev) => { if (ev.id !== null) lastId = ev.id; apply(ev, { live: true }); },
    onState: (st) => {
      state.textContent = st === "live" ? "● live" : st === "reconnecting" ? "reconnecting…" : "";
      state.dataset.state = st;
    },
    isDone: async () => { await refetch(); return TERMINAL.has(job.status); },
  }).finally(() => { streamCtl = null; });
}

async function main() {
  if (!(await initPage())) return;
  try {
    job = await api(`/v1/jobs/${jobId}`);
  } catch (e) {
    if (e.status === 404) flash(`Job ${jobId} does not exist or belongs to another project.`);
    else if (e.status !== 401) showError(e);
    return;
  }
  renderJob();
  new WorkersPanel(jobId, () => job, { onError: showError }).start();
  try {
    const { events, last } = await fetchEventHistory(jobId);
    for (const ev of events) apply(ev, { live: false });
    lastId = last;
    renderHistory();
    curves.render();
    search?.renderLatest();
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
  if (!TERMINAL.has(job.status)) startStream();
}

// ages ("3s ago") move on without any request
setInterval(() => { if (job && !document.hidden) renderJob(); }, 10_000);

main();
