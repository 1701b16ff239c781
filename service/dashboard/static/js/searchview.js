// The search view of a search job: supernet graph + α heat-maps for a chosen epoch's `arch` event.
import { api } from "./api.js";
import { byTestId } from "./dom.js";
import { alphaRows, betaEntropyByBlock, betaMatrix, drawAlphaHeatmaps, drawSupernet, graphFromProbs, graphFromBlockTable, pathFromArchitecture, viterbi } from "./supernet.js";

export class SearchView {
  constructor(job, section) {
    this.job = job;
    this.section = section;
    this.archEvents = []; // sorted by epoch
    this.graph = null;
    this.space = null;
    this.derivedPath = null;
    this.derivedFor = null;
    this.slider = byTestId("epoch-slider", section);
    this.label = byTestId("epoch-label", section);
    this.follow = byTestId("follow-latest", section);
    this.slider.addEventListener("input", () => {
      this.follow.checked = Number(this.slider.value) === this.archEvents.length - 1;
      this.render();
    });
    this.follow.addEventListener("change", () => { if (this.follow.checked) this.renderLatest(); });
  }

  async init() {
    const sp = this.job.spec?.space ?? "mbv2-small";
    if (typeof sp === "string") {
      this.space = await api(`/v1/spaces/${encodeURIComponent(sp)}`);
      const table = this.space.block_table || this.space.blocks;
      if (Array.isArray(table)) this.graph = graphFromBlockTable(table);
    }
    this.section.hidden = false;
    this.renderLatest();
  }

  setJob(job) {
    this.job = job;
    const first = job.produced?.architectures?.[0];
    if (first && this.derivedFor !== first) {
      this.derivedFor = first;
      api(`/v1/architectures/${first}`).then((a) => {
        this.derivedPath = this.graph ? pathFromArchitecture(a.doc, this.graph.tail) : null;
        this.render();
      }).catch(() => {});
    }
  }

  addArch(ev) {
    const epoch = ev.data?.epoch ?? this.archEvents.length;
    const i = this.archEvents.findIndex((e) => (e.data?.epoch ?? -1) === epoch);
    if (i >= 0) this.archEvents[i] = ev; else this.archEvents.push(ev);
    this.archEvents.sort((a, b) => (a.data?.epoch ?? 0) - (b.data?.epoch ?? 0));
    this.slider.max = String(Math.max(0, this.archEvents.length - 1));
    if (this.follow.checked) this.renderLatest();
  }

  renderLatest() {
    this.slider.value = String(Math.max(0, this.archEvents.length - 1));
    this.render();
  }

  render() {
    const idx = Number(this.slider.value);
    const ev = this.archEvents[idx];
    const d = ev?.data || {};
    const probs = d.probs || d;
    if (!this.graph && Array.isArray(probs.beta)) this.graph = graphFromProbs(probs); // custom space
    if (!this.graph) {
      this.label.value = "no arch events yet";
      return;
    }
    const beta = betaMatrix(this.graph, probs.beta);
    const isLast = idx === this.archEvents.length - 1;
    // The path of the architecture derived at that epoch (the core's Viterbi), else the same
    // max-product rule computed here from β; the final answer once the search succeeded.
    let path = pathFromArchitecture(d.architecture, this.graph.tail) || [];
    let source = "derived at this epoch";
    if (!path.length && beta) { path = viterbi(this.graph, beta); source = "Viterbi on β (computed here)"; }
    if (isLast && this.derivedPath && this.job.status === "succeeded") { path = this.derivedPath; source = "final architecture"; }
    this.slider.disabled = this.archEvents.length < 2;
    const text = ev ? `epoch ${(d.epoch ?? idx) + 1} · path: ${source}` : "no arch events yet";
    this.label.value = text;
    const svg = drawSupernet(byTestId("supernet-graph", this.section), this.graph, beta, path);
    svg.dataset.epoch = d.epoch ?? "";
    svg.dataset.pathSource = source;
    svg.dataset.path = path.join(",");
    const alpha = alphaRows(this.graph, probs.alpha, {
      alignOps: this.space?.align_ops || this.space?.description?.align_ops || [],
      layerOps: this.space?.layer_ops || this.space?.description?.layer_ops || [],
      entropy: d.alpha_entropy_rows,
    });
    drawAlphaHeatmaps(byTestId("alpha-heatmaps", this.section), this.graph, alpha,
      { path, betaEntropy: betaEntropyByBlock(this.graph, d.beta_entropy_rows) });
    this.section.dataset.epochs = this.archEvents.length;
  }
}
