// The REST client of the dashboard: bearer token from sessionStorage, problem+json errors,
// and job events over SSE read with fetch() (EventSource cannot send Authorization).

const TOKEN_KEY = "densenas.token";

// The job statuses as the server defines them (service/jobs/states.py), from the page's
// <body data-job-statuses>: every status in order, the terminal ones, the ones a person may
// retry, and the live ones (not terminal).
const JOB_STATUSES = JSON.parse(document.body.dataset.jobStatuses || "{}");
export const STATUSES = JOB_STATUSES.statuses || [];
export const TERMINAL = new Set(JOB_STATUSES.terminal || []);
export const RETRYABLE = new Set(JOB_STATUSES.retryable || []);
export const LIVE = STATUSES.filter((s) => !TERMINAL.has(s));

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    const p = problem || {};
    let detail = p.detail;
    if (Array.isArray(detail)) {
      detail = detail.map((e) => `${(e.loc || []).filter((x) => x !== "body").join(".")}: ${e.msg}`).join("; ");
    }
    super(`${status} ${p.title || "Error"}${detail && detail !== p.title ? `: ${detail}` : ""}`);
    this.status = status;
    this.problem = p;
  }
}

/** Only same-origin paths may be a post-login destination. */
export function safeNext(next) {
  return typeof next === "string" && next.startsWith("/") && !next.startsWith("//") &&
    !next.startsWith("/\\") ? next : "/";
}

export function toLogin() {
  const next = location.pathname + location.search;
  location.replace(`/login?next=${encodeURIComponent(next)}`);
}

/** True when a token is present; otherwise sends the browser to the login page. */
export function requireToken() {
  if (token.get()) return true;
  toLogin();
  return false;
}

function authHeaders(extra = {}) {
  const t = token.get();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

async function problemOf(resp) {
  try { return await resp.json(); } catch { return { title: resp.statusText || "Error" }; }
}

/** fetch a /v1 route as JSON; throws ApiError (and leaves for the login page on 401). */
export async function api(path, { method = "GET", body, headers = {}, signal, params } = {}) {
  let url = path;
  if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const qs = q.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  const init = { method, headers: authHeaders({ Accept: "application/json", ...headers }), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  if (resp.status === 401) {
    token.clear();
    toLogin();
    throw new ApiError(401, await problemOf(resp));
  }
  if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** Follow every page of a keyset-paginated list route ({data, next_cursor}). */
export async function fetchAll(path, params = {}, { maxPages = 50, signal } = {}) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i++) {
    const page = await api(path, { params: { ...params, cursor }, signal });
    const rows = Array.isArray(page) ? page : page.data || [];
    out.push(...rows);
    cursor = Array.isArray(page) ? null : page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

// -- job events ------------------------------------------------------------------------------

/** Normalise an SSE message or a JSON event row to {id, seq, type, data, created_at}. */
export function normaliseEvent(raw, sseId, sseType) {
  let row = raw;
  if (!(row && typeof row === "object" && ("type" in row || "seq" in row) && "data" in row)) {
    row = { type: sseType, data: raw };
  }
  const id = row.id ?? (sseId !== null && sseId !== undefined && sseId !== "" ? Number(sseId) : null);
  return { ...row, id, type: row.type || sseType || "message", data: row.data ?? {} };
}

/** The stored history of a job's events, oldest first, via the JSON view of the events route. */
export async function fetchEventHistory(jobId, { after = null, pageSize = 1000, signal, onPage } = {}) {
  const events = [];
  let cursor = after;
  for (;;) {
    const page = await api(`/v1/jobs/${jobId}/events`, {
      params: { format: "json", after: cursor, limit: pageSize }, signal,
    });
    const rows = (page.data || []).map((r) => normaliseEvent(r));
    events.push(...rows);
    onPage?.(rows);
    const next = page.next_after ?? (rows.length ? rows[rows.length - 1].id : cursor);
    if (!rows.length || rows.length < pageSize || next === cursor) return { events, last: next ?? cursor };
    cursor = next;
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
});

/**
 * Read a text/event-stream body and call onMessage({id, event, data}) per dispatched event.
 * WHATWG parsing rules: lines end in \r\n, \n or \r; "field: value"; a blank line dispatches.
 */
export async function readSse(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let data = [], event = "", id = null;
  const line = (l) => {
    if (l === "") {
      if (data.length) onMessage({ id, event: event || "message", data: data.join("\n") });
      data = []; event = "";
      return;
    }
    if (l.startsWith(":")) return;
    const i = l.indexOf(":");
    const name = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? "" : l.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") data.push(value);
    else if (name === "event") event = value;
    else if (name === "id" && !value.includes("\0")) id = value;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let m;
    while ((m = /\r\n|\r|\n/.exec(buf)) !== null) {
      // a trailing \r may be the first half of \r\n split across chunks: wait for more
      if (m[0] === "\r" && m.index === buf.length - 1) break;
      line(buf.slice(0, m.index));
      buf = buf.slice(m.index + m[0].length);
    }
  }
}

/**
 * Follow a job's event stream until the job is terminal or `signal` aborts. Reconnects with
 * Last-Event-ID after a drop, so no event is lost or repeated. Calls onEvent(event),
 * onState("live"|"reconnecting"|"closed").
 */
export async function followEvents(jobId, { after = null, signal, onEvent, onState, isDone } = {}) {
  let last = after;
  let failures = 0;
  while (!signal?.aborted) {
    try {
      const headers = authHeaders({ Accept: "text/event-stream", "Cache-Control": "no-cache" });
      if (last !== null && last !== undefined) headers["Last-Event-ID"] = String(last);
      const resp = await fetch(`/v1/jobs/${jobId}/events`, { headers, signal, cache: "no-store" });
      if (resp.status === 401) { token.clear(); toLogin(); return; }
      if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
      onState?.("live");
      await readSse(resp.body, (msg) => {
        failures = 0;
        let parsed;
        try { parsed = JSON.parse(msg.data); } catch { parsed = msg.data; }
        const ev = normaliseEvent(parsed, msg.id, msg.event);
        if (msg.id !== null) last = msg.id;
        else if (ev.id !== null) last = ev.id;
        onEvent?.(ev);
      });
    } catch (e) {
      if (signal?.aborted) break;
      if (e instanceof ApiError && e.status < 500 && e.status !== 429) { onState?.("closed", e); return; }
    }
    if (signal?.aborted) break;
    // The server closed the stream: finished if the job is, otherwise resume after a pause.
    if (isDone && (await isDone().catch(() => false))) { onState?.("closed"); return; }
    failures += 1;
    onState?.("reconnecting");
    await sleep(Math.min(500 * failures, 5000), signal);
  }
  onState?.("closed");
}

/**
 * Follow the events of many jobs over one stream (GET /v1/events?jobs=ID:AFTER,…) until each
 * job has ended or `signal` aborts. `cursors`: Map job id → last event id seen (null: from the
 * start); it is kept up to date, so a dropped stream resumes exactly where it stopped.
 * Calls onEvent(jobId, event) and onEnd(jobId, status). Resolves to true once every job has
 * ended, false when aborted or refused (a 4xx: e.g. a job that no longer exists).
 */
export async function followJobs(cursors, { signal, onEvent, onEnd } = {}) {
  const left = new Map(cursors);
  let failures = 0;
  while (left.size && !signal?.aborted) {
    try {
      const jobs = [...left].map(([id, after]) => (after === null || after === undefined ? `${id}` : `${id}:${after}`)).join(",");
      const resp = await fetch(`/v1/events?jobs=${encodeURIComponent(jobs)}`, {
        headers: authHeaders({ Accept: "text/event-stream", "Cache-Control": "no-cache" }), signal, cache: "no-store",
      });
      if (resp.status === 401) { token.clear(); toLogin(); return false; }
      if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
      await readSse(resp.body, (msg) => {
        failures = 0;
        let parsed;
        try { parsed = JSON.parse(msg.data); } catch { return; }
        if (msg.event === "end") {
          left.delete(parsed.job_id);
          onEnd?.(parsed.job_id, parsed.status);
          return;
        }
        const ev = normaliseEvent(parsed, msg.id, msg.event);
        if (!left.has(parsed.job_id)) return;
        left.set(parsed.job_id, ev.id);
        cursors.set(parsed.job_id, ev.id);
        onEvent?.(parsed.job_id, ev);
      });
    } catch (e) {
      if (signal?.aborted) break;
      if (e instanceof ApiError && e.status < 500 && e.status !== 429) return false;
    }
    if (!left.size || signal?.aborted) break;
    failures += 1;
    await sleep(Math.min(500 * failures, 5000), signal);
  }
  return !left.size && !signal?.aborted;
}
