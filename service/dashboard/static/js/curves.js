// Training curves of a job, fed event by event: loss, accuracy and expected cost, per step or
// per epoch. Rendering is batched into one animation frame however many events arrive.
import { LineChart } from "./charts.js";

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

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
    const rows = [...this.epochs.entries()].sort((a, b) => a[0] - b[0]);
    const col = (key) => rows.filter(([, d]) => num(d[key]) !== null).map(([e, d]) => [e + 1, d[key]]);
    return {
      loss: [{ name: "train", points: col("train_loss"), color: 1, markers: true },
        { name: "val", points: col("val_loss"), color: 2, markers: true },
        { name: "arch (val batches)", points: col("arch_loss"), color: 4, markers: true, dashed: true }],
      acc: [{ name: "train", points: col("train_acc"), color: 1, markers: true },
        { name: "val", points: col("val_acc"), color: 2, markers: true },
        { name: "arch (val batches)", points: col("arch_acc"), color: 4, markers: true, dashed: true }],
      cost: [{ name: "expected cost", points: col("expected_cost"), color: 3, markers: true },
        { name: "derived architecture", points: col("derived_cost"), color: 5, markers: true, dashed: true }],
    };
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
    this.container.dataset.mode = mode;
    this.emptyNote.hidden = any;
    this.onMode?.(mode);
    return mode;
  }
}
