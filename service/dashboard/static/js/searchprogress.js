// Search progress of a search job, per epoch: how far α and β have moved from uniform
// (normalised entropies, α top gap), how many α rows changed their argmax op, and the derived
// network's val accuracy next to the supernet's. Fed the epoch rows Curves keeps (its `onEpochs`).
import { LineChart } from "./charts.js";
import { epochColumn, num } from "./curves.js";
import { h, byTestId, clear, fmtPct } from "./dom.js";

const fixed3 = (v) => (num(v) === null ? "—" : v.toFixed(3));
const count = (v) => (num(v) === null ? "—" : String(v));

/** The table's columns: [heading, epoch field, format]. */
const COLUMNS = [
  ["val acc (argmax net)", "val_acc", fmtPct],
  ["val acc (derived single-path)", "derived_val_acc", fmtPct],
  ["val acc (supernet, sampled)", "supernet_val_acc", fmtPct],
  ["α entropy", "alpha_entropy", fixed3],
  ["β entropy", "beta_entropy", fixed3],
  ["α top gap", "alpha_top_gap", fixed3],
  ["argmax changes", "argmax_changes", count],
];
const PROGRESS_KEYS = ["alpha_entropy", "beta_entropy", "alpha_top_gap", "argmax_changes"];

export class SearchProgress {
  constructor(section) {
    this.section = section;
    const charts = byTestId("progress-charts", section);
    this.entropy = new LineChart(charts, { title: "α / β entropy and α top gap", xLabel: "epoch",
      yLabel: "0 … 1", testid: "chart-progress" });
    this.changes = new LineChart(charts, { title: "α rows whose argmax op changed", xLabel: "epoch",
      yLabel: "rows", testid: "chart-argmax" });
    tableHead(byTestId("progress-head", section));
    this.body = byTestId("progress-body", section);
  }

  /** rows: [[epoch, data], ...] in epoch order; epochs without α/β figures are left out. */
  render(rows) {
    const shown = rows.filter(([, d]) => PROGRESS_KEYS.some((k) => num(d[k]) !== null));
    this.section.hidden = !shown.length;
    if (!shown.length) return;
    const col = (key) => epochColumn(shown, key);
    this.entropy.update([
      { name: "α entropy (mean)", points: col("alpha_entropy"), color: 1, markers: true },
      { name: "β entropy (mean)", points: col("beta_entropy"), color: 2, markers: true },
      { name: "α top gap (max)", points: col("alpha_top_gap"), color: 3, markers: true, dashed: true },
    ]);
    this.changes.update([{ name: "argmax changes", points: col("argmax_changes"), color: 4, bars: true }]);
    this.renderTable(shown);
  }

  renderTable(rows) {
    clear(this.body);
    for (const [e, d] of [...rows].reverse()) { // newest first
      this.body.append(h("tr", { "data-testid": "progress-row", "data-epoch": e },
        h("td", { class: "num", text: e + 1 }),
        COLUMNS.map(([label, key, fmt]) => h("td", { class: "num", "data-key": key, title: label, text: fmt(d[key]) }))));
    }
  }
}

/** The table head for COLUMNS (the template holds an empty <thead>). */
function tableHead(thead) {
  clear(thead).append(h("tr", {}, h("th", { class: "num", text: "epoch" }),
    COLUMNS.map(([label]) => h("th", { class: "num", text: label }))));
}
