// What a job's spec is, in a few words for tables: its space, its cost budget, its epochs; and
// its tags as small labels (the jobs list and the compare view show the same cells).
import { h, fmtCount, fmtMs, fmtNum } from "./dom.js";

/** The space a search or profile runs on (a custom one by its name), or a retrain's input. */
export function specSpace(job) {
  const spec = job.spec || {};
  if (typeof spec.space === "string") return spec.space;
  if (spec.space && typeof spec.space === "object") return spec.space.name || "custom";
  if (spec.architecture_id !== undefined && spec.architecture_id !== null) return `architecture #${spec.architecture_id}`;
  return "—";
}

/** A search's cost term: "target ≤ 300M flops", "log λ 0.15 flops" or "none"; "—" otherwise. */
export function specBudget(job) {
  const cost = (job.spec || {}).cost;
  if (job.kind !== "search" || !cost) return "—";
  const metric = cost.metric || "flops";
  if (cost.mode === "none") return "none";
  if (cost.mode === "target") {
    const target = metric === "latency" ? fmtMs(cost.target) : fmtCount(cost.target);
    return `target ≤ ${target} ${metric === "latency" ? "latency" : metric}`;
  }
  return `${cost.mode || "log"} λ ${fmtNum(cost.lam)} ${metric}`;
}

/** The epochs a search or retrain runs; "—" for a profile. */
export function specEpochs(job) {
  const e = (job.spec || {}).epochs;
  return typeof e === "number" ? String(e) : "—";
}

/**
 * The tags of a job as labels; `onTag(tag, event)` makes each a link to the jobs filtered by
 * it (the href is the plain `/?tag=…` address, so it also works opened in a new tab).
 */
export function tagList(tags, onTag = null) {
  return h("span", { class: "tags", "data-testid": "job-tags" },
    (tags || []).map((t) => (onTag
      ? h("a", { class: "tag", href: `/?tag=${encodeURIComponent(t)}`, "data-tag": t, text: t,
        onclick: (e) => onTag(t, e) })
      : h("span", { class: "tag", "data-tag": t, text: t }))));
}
