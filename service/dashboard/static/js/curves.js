// Training curves of a job, fed event by event: loss, accuracy and expected cost, per step or
// per epoch. Rendering is batched into one animation frame however many events arrive.
import { LineChart } from "./charts.js";

export const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

/** [[epoch + 1, value], ...] of one numeric field of sorted [epoch, data] rows. */
export const epochColumn = (rows, key) => rows.filter(([, d]) => num(d[key]) !== null).map(([e, d]) => [e + 1, d[key]]);

/** The legend name of val_loss/val_acc after the loop's `val_eval` (how they were measured). */
function valName(valEval) {
  if (!valEval) return "val";
  return `val: argmax net (BN ${/recalibrat/.test(valEval) ? "recalibrated" : "batch statistics"})`;
}

const SUPERNET_NOTE = "supernet: sub-networks sampled from the supernet, BN on batch statistics";

export class Curves {
  constructor(container, emptyNote) {
    this.container = container;
    this.emptyNote = emptyNote;
    this.steps = []; // {x, phase, epoch, loss, acc, cost}
    this.epochs = new Map(); // epoch → data (a re-sent epoch replaces the earlier one)
    this.mode = null; // "step" | "epoch" | null = automatic
    this.charts = {
      loss: new LineChart(container, { title: "Loss", yLabel: "loss", testid: "chart-loss" }),
      acc: new LineChart(container, { title: "Accuracy", yLabel: "accuracy", testid: "chart-acc" }),
      cost: new LineChart(container, { title: "Expected cost", yLabel: "cost", testid: "chart-cost" }),
    };
    this.pending = false;
  }

  add(ev) {
    const d = ev.data || {};
    if (ev.type === "step") {
      const x = num(d.global_step) ?? num(d.step) ?? this.steps.length;
      this.steps.push({ x, phase: d.phase || "weights", epoch: d.epoch, loss: num(d.loss),
        acc: num(d.acc), cost: num(d.expected_cost) });
    } else if (ev.type === "epoch" && num(d.epoch) !== null) {
      this.epochs.set(d.epoch, d);
      if (d.cost_unit) this.charts.cost.opts.yLabel = `cost (${d.cost_unit})`;
    } else {
      return false;
    }
    this.schedule();
    return true;
  }

  setMode(mode) { this.mode = mode; this.render(); }

  effectiveMode() {
    if (this.mode) return this.mode;
    return this.epochs.size >= 2 || !this.steps.length ? "epoch" : "step";
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  series(mode) {
    if (mode === "step") {
      const pick = (phase, key) => this.steps.filter((p) => p.phase === phase && p[key] !== null).map((p) => [p.x, p[key]]);
      const phases = [...new Set(this.steps.map((p) => p.phase))];
      const label = (ph) => (ph === "arch" ? "arch step (val batch)" : ph === "weights" ? "weight step (train batch)" : `${ph} step`);
      return {
        loss: phases.map((ph, i) => ({ name: label(ph), points: pick(ph, "loss"), color: i + 1 })),
        acc: phases.map((ph, i) => ({ name: label(ph), points: pick(ph, "acc"), color: i + 1 })),
        cost: [{ name: "expected cost", points: this.steps.filter((p) => p.cost !== null).map((p) => [p.x, p.cost]), color: 3 }],
      };
    }
    const rows = this.epochRows();
    const col = (key) => epochColumn(rows, key);
    const val = valName(this.valEval());
    const split = (key) => [{ name: "train", points: col(`train_${key}`), color: 1, markers: true },
      { name: val, points: col(`val_${key}`), color: 2, markers: true },
      { name: "val: derived single-path", points: col(`derived_val_${key}`), color: 5, markers: true, dashed: true },
      { name: "val: supernet (sampled)", points: col(`supernet_val_${key}`), color: 3, markers: true, dashed: true },
      { name: "arch (val batches)", points: col(`arch_${key}`), color: 4, markers: true, dashed: true }];
    return {
      loss: split("loss"),
      acc: split("acc"),
      cost: [{ name: "expected cost", points: col("expected_cost"), color: 3, markers: true },
        { name: "derived architecture", points: col("derived_cost"), color: 5, markers: true, dashed: true }],
    };
  }

  /** [[epoch, data], ...] in epoch order. */
  epochRows() { return [...this.epochs.entries()].sort((a, b) => a[0] - b[0]); }

  /** The latest epoch's `val_eval`: how its val loss/accuracy were measured. */
  valEval() {
    const last = this.epochRows().filter(([, d]) => d.val_eval).at(-1);
    return last ? String(last[1].val_eval) : null;
  }

  render() {
    const mode = this.effectiveMode();
    const ser = this.series(mode);
    const xLabel = mode === "step" ? "step" : "epoch";
    let any = false;
    for (const [k, chart] of Object.entries(this.charts)) {
      chart.opts.xLabel = xLabel;
      chart.update(ser[k]);
      any ||= chart.series.length > 0;
    }
    const valEval = mode === "epoch" && this.valEval();
    this.charts.acc.setNote(valEval ? `val: ${valEval}; ${SUPERNET_NOTE}` : "");
    this.container.dataset.mode = mode;
    this.emptyNote.hidden = any;
    this.onMode?.(mode);
    this.onEpochs?.(this.epochRows());
    return mode;
  }
}
