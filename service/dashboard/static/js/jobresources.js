// The job page's "Workers" panel: where the job runs and what it uses
// (GET /v1/jobs/{id}/resources, every 5 s while it runs; the ranks of its stored result once it
// ended) and the checkpoints it wrote (GET /v1/jobs/{id}/checkpoints).
import { api, TERMINAL } from "./api.js";
import { h, byTestId, replace, fmtNum, fmtTime } from "./dom.js";

const REFRESH_MS = 5_000;

/** 1.5 GiB, 730 MiB, 12 KiB: memory and file sizes. */
export function fmtBytes(v) {
  if (v === null || v === undefined || Number.isNaN(+v)) return "—";
  let n = +v;
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (Math.abs(n) < 1024 || unit === "GiB") return unit === "B" ? `${n} B` : `${fmtNum(n, 3)} ${unit}`;
    n /= 1024;
  }
  return `${fmtNum(n, 3)} TiB`;
}

const dash = (v) => (v === null || v === undefined || v === "" ? "—" : String(v));
const shortId = (id) => (!id ? null : String(id).length > 12 ? `${String(id).slice(0, 8)}…` : String(id));

function nodeCell(p) {
  const host = p.hostname || p.node_ip;
  const ip = p.hostname && p.node_ip ? ` (${p.node_ip})` : "";
  return h("td", { title: p.node_id ? `Ray node ${p.node_id}` : null },
    dash(host ? `${host}${ip}` : shortId(p.node_id)),
    host && p.node_id && p.node_id !== host ? h("div", { class: "muted small", text: shortId(p.node_id) }) : null);
}

function processRow(p) {
  return h("tr", { "data-testid": "worker-row", "data-role": p.role, "data-pid": p.pid ?? "" },
    h("td", { text: p.role }),
    nodeCell(p),
    h("td", { class: "num", text: dash(p.pid) }),
    h("td", { text: dash(p.state) }),
    h("td", { text: dash(p.device) }),
    h("td", { class: "num", "data-testid": "worker-cpu", title: p.usage_source,
      text: p.cpu_percent === null || p.cpu_percent === undefined ? "—" : `${fmtNum(p.cpu_percent, 3)} %` }),
    h("td", { class: "num", "data-testid": "worker-rss", title: p.usage_source, text: fmtBytes(p.rss_bytes) }),
    h("td", { class: "num", title: p.gpu_memory_bytes === null ? "no NVIDIA GPU on the node" : null,
      text: fmtBytes(p.gpu_memory_bytes) }));
}

/** A finished job's ranks as its result stored them ({rank, world_size, node_id, hostname, pid, device}). */
function storedRows(workers) {
  return workers.map((w) => processRow({
    role: `rank ${w.rank}${w.world_size ? ` of ${w.world_size}` : ""}`,
    node_id: w.node_id, hostname: w.hostname, pid: w.pid, state: "ended",
    device: w.device_name ? `${w.device} (${w.device_name})` : w.device,
  }));
}

function checkpointRow(c) {
  return h("tr", { "data-testid": "checkpoint-row" },
    h("td", { title: c.uri }, h("code", { text: c.name })),
    h("td", { class: "num", text: dash(c.global_step) }),
    h("td", { class: "num", text: dash(c.epoch) }),
    h("td", { class: "num", text: dash(c.attempt) }),
    h("td", { class: "num", text: fmtBytes(c.size_bytes) }),
    h("td", { text: c.created_at ? fmtTime(c.created_at) : "—" }));
}

/** Only http(s) links: the URL is configuration, still never a javascript: one. */
function safeUrl(url) {
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch { return null; }
}

export class WorkersPanel {
  /** getJob() → the page's current job document (refetched by the page as it changes). */
  constructor(jobId, getJob, { onError = () => {} } = {}) {
    this.jobId = jobId;
    this.getJob = getJob;
    this.onError = onError;
    this.timer = null;
    this.lastTick = 0;
    this.wasLive = false;
    this.finalDone = false;
  }

  start() {
    this.tick();
  }

  async tick() {
    const job = this.getJob();
    const ended = !job || TERMINAL.has(job.status);
    if (!document.hidden || !this.lastTick) {
      try {
        await Promise.all([this.refreshResources(job), this.refreshCheckpoints()]);
        this.lastTick = Date.now();
      } catch (e) {
        if (e.status !== 401) this.onError(e);
      }
    }
    if (ended) {
      // A job that ended while shown gets one more read (its last checkpoint); one that had
      // ended when the page opened needs none.
      if (this.finalDone || !this.wasLive) return;
      this.finalDone = true;
    } else {
      this.wasLive = true;
    }
    this.timer = setTimeout(() => this.tick(), REFRESH_MS);
  }

  async refreshResources(job) {
    const res = await api(`/v1/jobs/${this.jobId}/resources`);
    const link = byTestId("ray-dashboard-link");
    const url = res.ray_dashboard_url ? safeUrl(res.ray_dashboard_url) : null;
    link.hidden = !url;
    if (url) link.href = url;
    const body = byTestId("workers-body");
    const live = res.processes || [];
    const stored = res.workers || job?.result?.workers || [];
    if (live.length) replace(body, live.map(processRow));
    else replace(body, storedRows(stored));
    const source = byTestId("workers-source");
    source.textContent = live.length
      ? `live · ${res.executor}${res.source ? ` (${res.source})` : ""}${res.attempt ? ` · attempt ${res.attempt}` : ""} · ${new Date().toLocaleTimeString()}`
      : stored.length ? "as the job's result recorded them" : "";
    source.dataset.mode = live.length ? "live" : stored.length ? "stored" : "none";
    const msg = byTestId("workers-message");
    const text = !live.length && !stored.length
      ? res.message || "No process reported."
      : live.length ? res.message : null;
    msg.textContent = text || "";
    msg.hidden = !text;
  }

  async refreshCheckpoints() {
    const res = await api(`/v1/jobs/${this.jobId}/checkpoints`);
    const rows = res.checkpoints || [];
    replace(byTestId("checkpoints-body"), [...rows].reverse().map(checkpointRow)); // newest first
    byTestId("checkpoints-location").textContent = res.message
      ? `Storage ${res.storage_path}: ${res.message}` : `Under ${res.storage_path} (the latest two are kept).`;
    byTestId("checkpoints-empty").hidden = rows.length > 0;
  }
}
