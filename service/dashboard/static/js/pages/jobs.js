// Jobs list: server-side filter/sort/keyset pagination; live progress for the running jobs on
// screen over one multi-job SSE stream (from each job's last_event_id, so nothing is replayed);
// a slow refresh of the queued/running counts. Rows show what each job searches (space, cost
// budget, epochs) and its tags (?tag= filters); 2–8 checked rows open the compare view.
import { api, followJobs, LIVE } from "../api.js";
import { h, byTestId, clear, fmtAge, fmtTime, statusBadge } from "../dom.js";
import { initPage, showError, flash } from "../layout.js";
import { applyEvent, progressCell } from "../progress.js";
import { specBudget, specEpochs, specSpace, tagList } from "../jobspec.js";

const COUNTS_EVERY_MS = 30_000;

const form = byTestId("job-filters");
const body = byTestId("jobs-body");
const prevBtn = byTestId("page-prev");
const nextBtn = byTestId("page-next");
const pageLabel = byTestId("page-label");

const rows = new Map(); // job id → {job, tr}
let stream = null; // {ids: "1,2,…", ctl: AbortController} of the live stream
const cursors = new Map(); // job id → last event id applied to its row
let visible = new Set();
let nextCursor = null;

function readQuery() {
  const q = new URLSearchParams(location.search);
  return {
    status: q.get("status") || "", kind: q.get("kind") || "", sort: q.get("sort") || "-created_at",
    limit: q.get("limit") || "50", cursor: q.get("cursor") || "", tag: q.getAll("tag"),
  };
}

function writeForm(q) {
  for (const k of ["status", "kind", "sort", "limit"]) form.elements[k].value = q[k];
  form.elements.tag.value = q.tag.join(" ");
}

/** The tag filter's text → tags: separated by spaces or commas, each once. */
const parseTags = (text) => [...new Set(text.split(/[\s,]+/).filter(Boolean))];

/** `tag=a&tag=b` for the jobs with all of `tags`. */
function tagParams(tags) {
  const params = new URLSearchParams();
  for (const t of tags) params.append("tag", t);
  return params;
}

function navigate(q, stack, replaceState = false) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (k === "tag") for (const t of v) params.append("tag", t);
    else if (v && !(k === "sort" && v === "-created_at") && !(k === "limit" && v === "50")) params.set(k, v);
  }
  const url = `${location.pathname}${params.toString() ? `?${params}` : ""}`;
  if (url === location.pathname + location.search && !replaceState) return; // nothing changed
  history[replaceState ? "replaceState" : "pushState"]({ stack }, "", url);
  load();
}

function row(job) {
  const tr = h("tr", { "data-testid": "job-row", "data-job-id": job.id, "data-status": job.status },
    h("td", { class: "job-cell" },
      h("input", { type: "checkbox", "data-testid": "job-select", "aria-label": `Select job ${job.id} to compare`,
        checked: selected.has(job.id), onchange: (e) => select(job.id, e.target.checked) }),
      h("a", { href: `/jobs/${job.id}`, text: `#${job.id}` })),
    h("td", { "data-col": "status" }, statusBadge(job.status)),
    h("td", { text: job.kind }),
    h("td", { text: job.project ?? "" }),
    h("td", { class: "num", text: job.priority ?? 0 }),
    h("td", { "data-col": "space", text: specSpace(job) }),
    h("td", { "data-col": "budget", text: specBudget(job) }),
    h("td", { class: "num", "data-col": "epochs", text: specEpochs(job) }),
    h("td", { class: "tags-cell", "data-col": "tags" }, tagList(job.tags, filterByTag)),
    h("td", { "data-col": "progress" }, progressCell(job)),
    h("td", { "data-col": "age", "data-created": job.created_at, title: fmtTime(job.created_at), text: fmtAge(job.created_at) }),
  );
  return tr;
}

// A replayed stream can deliver thousands of events at once: repaint each row once per frame.
const dirty = new Set();
function refreshRowSoon(id) {
  if (!dirty.size) requestAnimationFrame(() => { for (const d of dirty) refreshRow(d); dirty.clear(); });
  dirty.add(id);
}

function refreshRow(id) {
  const r = rows.get(id);
  if (!r) return;
  r.tr.dataset.status = r.job.status;
  r.tr.querySelector('[data-col="status"]').replaceChildren(statusBadge(r.job.status));
  r.tr.querySelector('[data-col="progress"]').replaceChildren(progressCell(r.job));
}

// -- tags and the selection to compare -------------------------------------------------------

/** A tag in a row filters the list by it (added to the tags already filtered by). */
function filterByTag(tag, e) {
  e.preventDefault();
  const q = readQuery();
  navigate({ ...q, cursor: "", tag: [...new Set([...q.tag, tag])] }, []);
}

const COMPARE_MIN = 2, COMPARE_MAX = 8;
const SELECTED_KEY = "densenas.compare";
// Kept across pages and filters (and a visit to the compare view), so jobs found under
// different filters can be compared together.
const selected = new Set(JSON.parse(sessionStorage.getItem(SELECTED_KEY) || "[]"));
const compareBtn = byTestId("compare-button");

function select(id, on) {
  if (on) selected.add(id); else selected.delete(id);
  sessionStorage.setItem(SELECTED_KEY, JSON.stringify([...selected]));
  renderSelection();
}

function renderSelection() {
  const n = selected.size;
  const ok = n >= COMPARE_MIN && n <= COMPARE_MAX;
  compareBtn.disabled = !ok;
  compareBtn.textContent = n ? `Compare ${n} jobs` : "Compare";
  byTestId("selection-count").textContent = n === 0 ? "Select 2 to 8 jobs to compare their curves."
    : `${n} selected (${[...selected].sort((a, b) => a - b).map((i) => `#${i}`).join(", ")})` +
      (ok ? "" : n < COMPARE_MIN ? " — select one more" : ` — at most ${COMPARE_MAX}`);
  byTestId("selection-clear").hidden = n === 0;
  for (const box of body.querySelectorAll('[data-testid="job-select"]')) {
    box.checked = selected.has(Number(box.closest("tr").dataset.jobId));
  }
}

compareBtn.addEventListener("click", () => {
  const ids = [...selected].sort((a, b) => a - b);
  if (ids.length >= COMPARE_MIN && ids.length <= COMPARE_MAX) location.assign(`/compare?ids=${ids.join(",")}`);
});
byTestId("selection-clear").addEventListener("click", () => {
  selected.clear();
  sessionStorage.removeItem(SELECTED_KEY);
  renderSelection();
});

// -- live updates ----------------------------------------------------------------------------

const observer = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const id = Number(e.target.dataset.jobId);
    if (e.isIntersecting) visible.add(id); else visible.delete(id);
  }
  syncStreams();
});

function syncStreams() {
  const wanted = [...rows.values()]
    .filter(({ job }) => job.status === "running" && visible.has(job.id))
    .map(({ job }) => job.id).sort((x, y) => x - y);
  const key = wanted.join(",");
  if (stream?.ids === key) return;
  stream?.ctl.abort();
  stream = null;
  if (!wanted.length) return;
  const ctl = new AbortController();
  const mine = { ids: key, ctl };
  stream = mine;
  const from = new Map(wanted.map((id) => [id, cursors.get(id) ?? rows.get(id).job.last_event_id ?? null]));
  followJobs(from, {
    signal: ctl.signal,
    onEvent: (id, ev) => {
      cursors.set(id, ev.id);
      const cur = rows.get(id);
      if (!cur) return;
      applyEvent(cur.job, ev);
      refreshRowSoon(id);
    },
    onEnd: async (id, status) => {
      const cur = rows.get(id);
      if (!cur) return;
      cur.job.status = status; // now, so that the next syncStreams leaves it out
      refreshRowSoon(id);
      try { cur.job = { ...cur.job, ...(await api(`/v1/jobs/${id}`)) }; } catch { return; }
      refreshRow(id);
    },
  }).then((ended) => {
    if (stream !== mine) return;
    stream = null;
    if (ended) syncStreams(); // rows that started running since may want a stream
  });
}

function stopStream() {
  stream?.ctl.abort();
  stream = null;
}

function stopAll() {
  stopStream();
  cursors.clear();
  observer.disconnect();
  visible = new Set();
}

// -- loading ---------------------------------------------------------------------------------

let loadSeq = 0;
async function load() {
  const q = readQuery();
  writeForm(q);
  const mine = ++loadSeq;
  body.setAttribute("aria-busy", "true");
  try {
    const tags = tagParams(q.tag).toString();
    const page = await api(`/v1/jobs${tags ? `?${tags}` : ""}`,
      { params: { status: q.status, kind: q.kind, sort: q.sort, limit: q.limit, cursor: q.cursor } });
    if (mine !== loadSeq) return;
    stopAll();
    rows.clear();
    clear(body);
    for (const job of page.data || []) {
      const tr = row(job);
      rows.set(job.id, { job, tr });
      body.append(tr);
      observer.observe(tr);
    }
    byTestId("jobs-empty").hidden = rows.size > 0;
    renderSelection();
    nextCursor = page.next_cursor || null;
    const stack = history.state?.stack || [];
    nextBtn.disabled = !nextCursor;
    prevBtn.disabled = !q.cursor;
    pageLabel.textContent = `page ${stack.length + 1} · ${rows.size} job${rows.size === 1 ? "" : "s"}`;
    flash("");
  } catch (e) {
    if (e.status !== 401) showError(e);
  } finally {
    body.removeAttribute("aria-busy");
  }
}

async function refreshCounts() {
  const el = byTestId("job-counts");
  try {
    const stats = await api("/v1/jobs/stats").catch(() => null);
    let counts = stats?.counts || stats?.by_status || null;
    if (!counts) {
      // No stats route: count the first page of each live status (shown as "50+" beyond it).
      counts = {};
      for (const st of LIVE) {
        const page = await api("/v1/jobs", { params: { status: st, limit: 100 } });
        counts[st] = `${(page.data || []).length}${page.next_cursor ? "+" : ""}`;
      }
    }
    clear(el);
    for (const st of LIVE) {
      el.append(h("span", { class: `badge status-${st}`, "data-testid": `count-${st}`, text: `${counts[st] ?? 0} ${st}` }), " ");
    }
  } catch (e) {
    if (e.status !== 401) el.textContent = "";
  }
}

// -- wiring ----------------------------------------------------------------------------------

function applyFilters() {
  const q = { ...readQuery(), cursor: "" };
  for (const k of ["status", "kind", "sort", "limit"]) q[k] = form.elements[k].value;
  q.tag = parseTags(form.elements.tag.value);
  navigate(q, []);
}
form.addEventListener("change", applyFilters);
form.addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
nextBtn.addEventListener("click", () => {
  const q = readQuery();
  navigate({ ...q, cursor: nextCursor }, [...(history.state?.stack || []), q.cursor]);
});
prevBtn.addEventListener("click", () => {
  const stack = [...(history.state?.stack || [])];
  const cursor = stack.pop() || "";
  navigate({ ...readQuery(), cursor }, stack);
});
window.addEventListener("popstate", load);
document.addEventListener("visibilitychange", () => {
  if (document.hidden) stopStream(); else syncStreams();
});
setInterval(() => {
  const now = Date.now();
  for (const td of body.querySelectorAll('[data-col="age"]')) td.textContent = fmtAge(td.dataset.created, now);
}, 15_000);

if (await initPage()) {
  if (!history.state) history.replaceState({ stack: [] }, "");
  await load();
  refreshCounts();
  setInterval(() => { if (!document.hidden) refreshCounts(); }, COUNTS_EVERY_MS);
}
