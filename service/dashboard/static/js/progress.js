// How far a job has come, from its spec and the latest metrics the service keeps in `progress`.
import { h, fmtNum } from "./dom.js";

/** Fraction done in [0, 1] or null when unknown. */
export function progressFraction(job) {
  const p = job.progress || {};
  if (job.status === "succeeded") return 1;
  if (typeof p.fraction === "number") return p.fraction;
  if (typeof p.percent === "number") return p.percent / 100;
  const epochs = p.epochs ?? job.spec?.epochs;
  if (typeof p.epoch === "number" && epochs) {
    // step events within an epoch: add the part of the epoch done when steps are known
    const within = p.steps_per_epoch && typeof p.step === "number"
      ? ((p.step % p.steps_per_epoch) / p.steps_per_epoch) : 0;
    const e = p.type === "epoch" ? p.epoch + 1 : p.epoch + within;
    return Math.max(0, Math.min(1, e / epochs));
  }
  if (typeof p.done === "number" && typeof p.total === "number" && p.total > 0) return p.done / p.total;
  return null;
}

export function progressText(job) {
  const p = job.progress || {};
  const bits = [];
  const epochs = p.epochs ?? job.spec?.epochs;
  if (typeof p.epoch === "number") bits.push(`epoch ${p.epoch + (p.type === "epoch" ? 1 : 0)}${epochs ? `/${epochs}` : ""}`);
  if (typeof p.step === "number") bits.push(`step ${p.step}`);
  const loss = p.val_loss ?? p.loss ?? p.train_loss;
  if (typeof loss === "number") bits.push(`loss ${fmtNum(loss)}`);
  const acc = p.val_acc ?? p.acc ?? p.train_acc;
  if (typeof acc === "number") bits.push(`acc ${fmtNum(acc)}`);
  return bits.join(" · ");
}

export function progressCell(job) {
  const f = progressFraction(job);
  const text = progressText(job);
  if (f === null && !text) return h("span", { class: "muted", text: "—" });
  const pct = f === null ? null : Math.round(f * 100);
  const bar = h("span", { class: "progress-bar", role: "progressbar", "aria-valuemin": 0,
    "aria-valuemax": 100, "aria-valuenow": pct ?? undefined, "aria-label": `progress of job ${job.id}` }, h("span"));
  // width through the CSSOM (allowed by the page's CSP, unlike a style attribute)
  bar.firstChild.style.width = `${pct ?? 0}%`;
  return h("span", { class: "progress", "data-testid": "job-progress", "data-fraction": f ?? "" },
    f === null ? null : bar, h("span", { class: "small", text: [pct === null ? null : `${pct}%`, text].filter(Boolean).join(" · ") }));
}

/** Fold a live event into a job's progress, the way the service does for `progress`. */
export function applyEvent(job, ev) {
  if (ev.type === "step" || ev.type === "epoch") {
    job.progress = { ...(job.progress || {}), ...ev.data, type: ev.type };
  } else if (ev.type === "status" || ev.type === "transition" || ev.type === "state") {
    const to = ev.data?.to ?? ev.data?.status;
    if (to) job.status = to;
  }
  return job;
}
