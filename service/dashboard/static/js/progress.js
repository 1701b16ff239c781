// How far a job has come. The service mirrors the latest `step` and `epoch` event data into
// job.progress = {step: {...}, epoch: {...}, updated_at}; epochs count from 0 (densenas_core).
import { h, fmtNum } from "./dom.js";

/** Fraction done in [0, 1] or null when unknown. */
export function progressFraction(job) {
  if (job.status === "succeeded") return 1;
  const p = job.progress || {};
  const total = job.spec?.epochs;
  if (!total) return null;
  const ep = p.epoch, st = p.step;
  let done = typeof ep?.epoch === "number" ? ep.epoch + 1 : 0;
  if (typeof st?.epoch === "number" && st.epoch >= done) {
    // inside epoch st.epoch: the previous epoch's step count tells how far along it is
    const within = ep?.steps ? Math.min(1, ((st.step ?? 0) + 1) / ep.steps) : 0;
    done = st.epoch + within;
  }
  if (!ep && !st) return job.status === "running" ? 0 : null;
  return Math.max(0, Math.min(1, done / total));
}

export function progressText(job) {
  const p = job.progress || {};
  const ep = p.epoch, st = p.step;
  const total = job.spec?.epochs;
  const bits = [];
  const epochNow = typeof st?.epoch === "number" && (!ep || st.epoch > ep.epoch) ? st.epoch : ep ? ep.epoch : null;
  if (epochNow !== null && epochNow !== undefined) bits.push(`epoch ${epochNow + 1}${total ? `/${total}` : ""}`);
  if (typeof st?.global_step === "number") bits.push(`step ${st.global_step}`);
  const loss = ep?.val_loss ?? st?.loss;
  if (typeof loss === "number") bits.push(`loss ${fmtNum(loss)}`);
  const acc = ep?.val_acc ?? st?.acc;
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

/** Fold a live event into a job the way the service does (progress mirror, status events). */
export function applyEvent(job, ev) {
  if (ev.type === "step" || ev.type === "epoch") {
    job.progress = { ...(job.progress || {}), [ev.type]: ev.data };
  } else if (ev.type === "status") {
    if (ev.data?.to) job.status = ev.data.to;
  } else if (ev.type === "end") {
    if (ev.data?.status) job.status = ev.data.status;
  }
  return job;
}
