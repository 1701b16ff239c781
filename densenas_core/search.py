"""The DenseNAS search loop (SPEC §5): dropping-path weight and arch steps, chained cost.

Schedule, scaled by :class:`SearchConfig`: the first ``warmup_epochs`` epochs train weights
only, sampling one op per row uniformly; every later epoch runs a pass of arch steps over the
arch split and then a pass of weight steps over the train split, both sampling by softmax(α)
(two ops per row without replacement for arch steps, one for weight steps). Weights: SGD with
momentum and coupled weight decay, lr cosine from ``w_lr`` to ``w_lr_min`` over all weight
steps. α/β: :class:`MaskedAdamW` (decoupled decay, only the sampled α entries and the valid β
entries) followed by the re-balancing of the sampled α entries.

Determinism: the op samples of global step s come from a generator seeded by (seed, s) and the
batch order of each pass from one seeded by (seed, epoch, pass), so every rank of a data-parallel
run draws the same sub-networks, and a run resumed from a checkpoint taken mid-epoch continues
bit-for-bit like an uninterrupted one (on the same device). With ``world_size > 1`` rank r takes
the r-th stride of every pass's permutation; ``grad_sync`` is called with the gradients after
every backward (weights: those with a gradient; arch: α_align, α_layer, β) to all-reduce them.

Events (``reporter.report``): ``step`` every ``log_every`` global steps, then per epoch
``epoch`` and ``arch`` (probability tables + the current derived architecture); each carries
``global_step`` and ``seq = 4·global_step + slot`` (slot 0 step, 1 epoch, 2 arch, 3 log), so a
resumed run re-emits the same ``seq`` for the same event.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch.nn import functional as F

from ._archopt import MaskedAdamW, rebalance, sampled_mask
from ._loop import (
    SLOT, config_kwargs, epoch_batches, mix_seed, num_batches, rng_state, set_rng_state, snapshot,
    cosine_lr,
)
from .arch import arch_summary
from .cost import (
    COST_METRICS, COST_MODES, CostTable, chained_cost, choice_probs, cost_term, default_tau,
    flops_table, latency_table,
)
from .data import DatasetSpec, dataset_meta, default_dataset, fetch_batch, load_search_data
from .derive import derive_choices
from .reporting import NullReporter, Reporter, Stopped
from .spaces import get_space
from .supernet import SuperNet

__all__ = ["SearchConfig", "SearchResult", "run_search", "rebalance", "MaskedAdamW",
           "cosine_lr", "ORCHESTRATION_KEYS"]

#: keys of the job spec that concern scheduling, not the algorithm (ignored here)
ORCHESTRATION_KEYS = frozenset({"num_workers", "use_gpu", "checkpoint_every"})
CHECKPOINT_VERSION = 1
#: weight-step gradient-norm clipping (the reference trainer's ``grad_clip`` option, on here:
#: with few classes, lr 0.2 made the first epoch diverge — loss 2.3 → 7–9 — without it)
W_GRAD_CLIP = 5.0


def _default_cost() -> dict[str, Any]:
    return {"metric": "flops", "mode": "log", "lam": 0.15, "tau": None, "target": None,
            "latency_table_id": None}


@dataclass
class SearchConfig:
    """The algorithm's part of a ``search`` job spec (field names as in docs/DESIGN.md)."""

    space: Any = "mbv2-small"
    dataset: dict[str, Any] = field(default_factory=default_dataset)
    epochs: int = 4
    warmup_epochs: int = 1
    batch_size: int = 64
    seed: int = 0
    w_lr: float = 0.2
    w_lr_min: float = 1e-4
    w_momentum: float = 0.9
    w_wd: float = 4e-5
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_wd: float = 1e-3
    cost: dict[str, Any] = field(default_factory=_default_cost)
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        self.dataset = {**default_dataset(), **dict(self.dataset or {})}
        self.cost = {**_default_cost(), **dict(self.cost or {})}
        self.a_betas = tuple(float(b) for b in self.a_betas)  # type: ignore[assignment]
        self._validate()

    def _validate(self) -> None:
        def need(cond: bool, where: str, msg: str) -> None:
            if not cond:
                raise ValueError(f"{where}: {msg}")

        for f in ("epochs", "batch_size"):
            v = getattr(self, f)
            need(isinstance(v, int) and v >= 1, f, f"expected an integer ≥ 1, got {v!r}")
        need(isinstance(self.warmup_epochs, int) and 0 <= self.warmup_epochs <= self.epochs,
             "warmup_epochs", f"expected 0..epochs, got {self.warmup_epochs!r}")
        for f in ("w_lr", "a_lr"):
            need(getattr(self, f) > 0, f, "must be positive")
        for f in ("w_lr_min", "w_momentum", "w_wd", "a_wd"):
            need(getattr(self, f) >= 0, f, "must be ≥ 0")
        need(len(self.a_betas) == 2 and all(0 <= b < 1 for b in self.a_betas), "a_betas",
             f"expected two numbers in [0, 1), got {list(self.a_betas)}")
        need(0 < self.val_fraction < 1, "val_fraction", "expected a number in (0, 1)")
        c = self.cost
        unknown = sorted(set(c) - set(_default_cost()))
        need(not unknown, f"cost.{unknown[0] if unknown else ''}", "unknown field")
        need(c["metric"] in COST_METRICS, "cost.metric", f"expected one of {COST_METRICS}")
        need(c["mode"] in COST_MODES, "cost.mode", f"expected one of {COST_MODES}")
        need(c["lam"] >= 0, "cost.lam", "must be ≥ 0")
        need(c["tau"] is None or c["tau"] > 1, "cost.tau", "must be > 1 (or null)")
        need(c["target"] is None or c["target"] > 0, "cost.target", "must be positive")
        need(c["mode"] != "target" or c["target"] is not None, "cost.target",
             "required when cost.mode is 'target'")
        DatasetSpec.from_dict(self.dataset)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | "SearchConfig") -> "SearchConfig":
        if isinstance(d, SearchConfig):
            return d
        return cls(**config_kwargs(cls, d, ORCHESTRATION_KEYS, "search"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["a_betas"] = list(self.a_betas)
        if hasattr(self.space, "to_dict"):
            d["space"] = self.space.to_dict()
        return d


@dataclass
class SearchResult:
    architecture: dict[str, Any]
    arch_params: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve_cost_table(config: SearchConfig, cost_table: Any, space, input_size: int,
                        num_classes: int, in_channels: int) -> CostTable:
    if isinstance(cost_table, CostTable):
        return cost_table
    if cost_table is not None:
        return latency_table(space, cost_table, input_size, num_classes, in_channels)
    if config.cost["metric"] == "latency":
        raise ValueError("cost.metric: 'latency' needs a latency table (pass cost_table)")
    return flops_table(space, input_size, num_classes, in_channels)


class _Search:
    """State and steps of one search run (the loop lives in :func:`run_search`)."""

    def __init__(self, config: SearchConfig, meta: dict[str, Any], device: torch.device,
                 cost_table: Any) -> None:
        self.config = config
        self.device = device
        self.space = get_space(config.space)
        self.meta = meta
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.net = SuperNet(self.space, meta["num_classes"], meta["input_size"],
                                meta["in_channels"]).to(device)
        # NHWC halves the time of the depthwise-heavy MBConv steps on CPU (oneDNN)
        self.memory_format = torch.channels_last if device.type == "cpu" else \
            torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        table = _resolve_cost_table(config, cost_table, self.space, meta["input_size"],
                                    meta["num_classes"], meta["in_channels"])
        self.table = table.to(device, torch.float32)
        self.table64 = table
        self.weights = self.net.weight_parameters()
        self.arch = self.net.arch_parameters()
        self.w_opt = torch.optim.SGD(self.weights, lr=config.w_lr, momentum=config.w_momentum,
                                     weight_decay=config.w_wd)
        self.a_opt = MaskedAdamW(self.arch, lr=config.a_lr, betas=config.a_betas,
                                 weight_decay=config.a_wd)
        c = config.cost
        tau = c["tau"]
        if c["mode"] == "log" and tau is None:
            tau = default_tau(self.expected_cost())
        self.cost_kw = {"mode": c["mode"], "lam": float(c["lam"]), "tau": tau,
                        "target": c["target"]}

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def expected_cost(self, grad: bool = False) -> Any:
        if grad:
            return chained_cost(self.net.graph, self.table, *self.net.probs())
        with torch.no_grad():
            return float(chained_cost(self.net.graph, self.table64,
                                      *(p.double().cpu() for p in self.net.probs())))

    def derived_cost(self) -> float:
        path, align, layers = derive_choices(self.space, self.net.alpha_lists(),
                                             self.net.beta_lists())
        probs = choice_probs(self.net.graph, path, align, layers)
        return float(chained_cost(self.net.graph, self.table64, *probs))

    def weight_step(self, x, y, gen, lr: float, uniform: bool, grad_sync) -> tuple[float, int]:
        self.net.train()
        sample = self.net.sample(gen, k=1, uniform=uniform)
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        self.w_opt.zero_grad(set_to_none=True)
        logits = self.net(x, sample)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        sampled = [p for p in self.weights if p.grad is not None]  # the sampled ops' weights
        if grad_sync is not None:
            grad_sync([p.grad for p in sampled])
        torch.nn.utils.clip_grad_norm_(sampled, W_GRAD_CLIP)
        self.w_opt.step()
        return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())

    def arch_step(self, x, y, gen, grad_sync) -> tuple[float, int, float]:
        net = self.net
        net.train()
        sample = net.sample(gen, k=2, arch=True)
        logits = net(x, sample)
        ce = F.cross_entropy(logits, y)
        cost = self.expected_cost(grad=True)
        loss = ce + cost_term(cost, **self.cost_kw)
        grads = torch.autograd.grad(loss, self.arch)
        for p, g in zip(self.arch, grads):
            p.grad = g
        if grad_sync is not None:
            grad_sync([p.grad for p in self.arch])
        with torch.no_grad():
            old_a, old_l = net.alpha_align.clone(), net.alpha_layer.clone()
            masks = [sampled_mask(net.alpha_align.shape, sample.align, self.device),
                     sampled_mask(net.alpha_layer.shape, sample.layers, self.device),
                     net.beta_mask]
            self.a_opt.step(masks)
            net.alpha_align.copy_(rebalance(old_a, net.alpha_align, sample.align))
            net.alpha_layer.copy_(rebalance(old_l, net.alpha_layer, sample.layers))
        for p in self.arch:
            p.grad = None
        return float(ce.detach()), int((logits.detach().argmax(1) == y).sum()), float(cost.detach())

    @torch.no_grad()
    def evaluate(self, ds, bs: int) -> tuple[float, float]:
        """Loss/accuracy of the argmax sub-network (eval-mode BN) on ``ds``."""
        self.net.eval()
        sample = self.net.argmax_sample()
        loss_sum, correct, n = 0.0, 0, len(ds)
        for i in range(0, n, bs):
            x, y = fetch_batch(ds, torch.arange(i, min(i + bs, n)))
            x, y = self.inputs(x, y)
            logits = self.net(x, sample)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        self.net.train()
        return (loss_sum / max(n, 1), correct / max(n, 1))


def _new_accum() -> dict[str, float]:
    return {"w_loss": 0.0, "w_correct": 0, "w_n": 0, "w_steps": 0,
            "a_loss": 0.0, "a_correct": 0, "a_n": 0, "a_steps": 0, "a_cost": 0.0,
            "seconds": 0.0}


def run_search(config: SearchConfig | Mapping[str, Any], train_data: Any = None,
               val_data: Any = None, reporter: Reporter | None = None, *,
               device: str | torch.device = "cpu",
               grad_sync: Callable[[list[torch.Tensor]], None] | None = None,
               checkpoint_fn: Callable[[dict[str, Any]], None] | None = None,
               checkpoint_every: int | None = None,
               resume_state: Mapping[str, Any] | None = None,
               cost_table: Any = None, data_info: Mapping[str, Any] | None = None,
               rank: int = 0, world_size: int = 1, log_every: int = 10) -> SearchResult:
    """Search ``config.space`` on (train split, arch split); see the module doc.

    Without data, loads ``config.dataset`` with :func:`load_search_data`. ``cost_table``: a
    :class:`CostTable`, or a latency table (object with ``.get`` or its dict) for
    ``cost.metric == "latency"``; default the FLOPs table. ``checkpoint_fn(state)`` receives a
    CPU snapshot every ``checkpoint_every`` global steps and after every epoch;
    ``resume_state`` is such a state.
    """
    config = SearchConfig.from_dict(config)
    reporter = reporter or NullReporter()
    device = torch.device(device)
    space = get_space(config.space)
    if train_data is None or val_data is None:
        spec = DatasetSpec.from_dict(config.dataset, default_input_size=space.input_size)
        train_data, val_data, data_info = load_search_data(spec, config.seed,
                                                           config.val_fraction)
    meta = dataset_meta(train_data)
    if data_info:
        meta["classes"] = list(data_info.get("classes", meta["classes"]))
    run = _Search(config, meta, device, cost_table)
    net = run.net
    bs = config.batch_size
    n_w = num_batches(len(train_data) // world_size, bs)
    n_a = num_batches(len(val_data) // world_size, bs)
    total_w = config.epochs * n_w
    log_every = max(1, int(log_every))

    st: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "weight_steps": 0,
                          "accum": _new_accum(), "history": [],
                          "best": {"val_acc": -1.0, "epoch": -1, "global_step": 0,
                                   "architecture": None}}
    if resume_state is not None:
        rs = resume_state
        if rs.get("version") != CHECKPOINT_VERSION or rs.get("kind") != "search":
            raise ValueError("resume_state: not a search checkpoint of this version")
        net.load_state_dict(rs["model"])
        run.w_opt.load_state_dict(rs["w_opt"])
        run.a_opt.load_state_dict(rs["a_opt"])
        run.cost_kw = dict(rs["cost_kw"])
        set_rng_state(rs["rng"], device)
        for k in ("epoch", "step_in_epoch", "global_step", "weight_steps"):
            st[k] = int(rs[k])
        st["accum"] = dict(rs["accum"])
        st["history"] = copy.deepcopy(list(rs["history"]))
        st["best"] = copy.deepcopy(dict(rs["best"]))

    def emit(kind: str, **data: Any) -> None:
        data["global_step"] = st["global_step"]
        data["seq"] = 4 * st["global_step"] + SLOT[kind]
        reporter.report(kind, **data)

    def state() -> dict[str, Any]:
        return snapshot({
            "version": CHECKPOINT_VERSION, "kind": "search", "config": config.to_dict(),
            "model": net.state_dict(), "w_opt": run.w_opt.state_dict(),
            "a_opt": run.a_opt.state_dict(),
            "scheduler": {"weight_steps": st["weight_steps"], "total_weight_steps": total_w},
            "cost_kw": run.cost_kw, "rng": rng_state(device),
            "epoch": st["epoch"], "step_in_epoch": st["step_in_epoch"],
            "global_step": st["global_step"], "weight_steps": st["weight_steps"],
            "accum": st["accum"], "history": st["history"], "best": st["best"],
            "data": dict(data_info) if data_info else {"classes": meta["classes"]},
        })

    if st["global_step"] == 0:
        emit("log", message=f"search on {space.name}: {len(train_data)} train / "
             f"{len(val_data)} arch images, {config.epochs} epochs "
             f"({config.warmup_epochs} warm-up), {n_w} weight + {n_a} arch steps per epoch")

    t_start = time.perf_counter()
    while st["epoch"] < config.epochs:
        epoch = st["epoch"]
        arch_phase = epoch >= config.warmup_epochs
        plan: list[tuple[str, torch.Tensor]] = []
        if arch_phase:
            plan += [("arch", b) for b in epoch_batches(
                len(val_data), bs, mix_seed(config.seed, epoch, 1), rank, world_size)]
        plan += [("weights", b) for b in epoch_batches(
            len(train_data), bs, mix_seed(config.seed, epoch, 0), rank, world_size)]
        acc = st["accum"]
        t_epoch = time.perf_counter()
        for s in range(st["step_in_epoch"], len(plan)):
            phase, idx = plan[s]
            ds = val_data if phase == "arch" else train_data
            x, y = run.inputs(*fetch_batch(ds, idx))
            gen = torch.Generator().manual_seed(mix_seed(config.seed, 7, st["global_step"]))
            if phase == "arch":
                loss, correct, cost = run.arch_step(x, y, gen, grad_sync)
                acc["a_loss"] += loss * len(y)
                acc["a_correct"] += correct
                acc["a_n"] += len(y)
                acc["a_steps"] += 1
                acc["a_cost"] = cost
                lr = cosine_lr(st["weight_steps"], total_w, config.w_lr, config.w_lr_min)
            else:
                lr = cosine_lr(st["weight_steps"], total_w, config.w_lr, config.w_lr_min)
                loss, correct = run.weight_step(x, y, gen, lr, not arch_phase, grad_sync)
                st["weight_steps"] += 1
                acc["w_loss"] += loss * len(y)
                acc["w_correct"] += correct
                acc["w_n"] += len(y)
                acc["w_steps"] += 1
                cost = None
            st["global_step"] += 1
            st["step_in_epoch"] = s + 1
            if st["global_step"] % log_every == 0:
                emit("step", phase=phase, epoch=epoch, step=s, loss=loss,
                     acc=correct / len(y), lr=lr,
                     expected_cost=cost if cost is not None else run.expected_cost())
            if checkpoint_fn is not None and checkpoint_every and \
                    st["global_step"] % checkpoint_every == 0:
                acc["seconds"] += time.perf_counter() - t_epoch
                t_epoch = time.perf_counter()
                checkpoint_fn(state())
            if reporter.should_stop():
                raise Stopped(f"search stopped at global step {st['global_step']}")
        acc["seconds"] += time.perf_counter() - t_epoch

        val_loss, val_acc = run.evaluate(val_data, bs)
        exp_cost = run.expected_cost()
        arch_doc = net.export()
        record = {
            "epoch": epoch, "phase": "search" if arch_phase else "warmup",
            "train_loss": acc["w_loss"] / max(acc["w_n"], 1),
            "train_acc": acc["w_correct"] / max(acc["w_n"], 1),
            "val_loss": val_loss, "val_acc": val_acc,
            "arch_loss": acc["a_loss"] / acc["a_n"] if acc["a_n"] else None,
            "arch_acc": acc["a_correct"] / acc["a_n"] if acc["a_n"] else None,
            "expected_cost": exp_cost, "derived_cost": run.derived_cost(),
            "cost_unit": run.table.unit,
            "lr": cosine_lr(max(st["weight_steps"] - 1, 0), total_w, config.w_lr,
                            config.w_lr_min),
            "steps": acc["w_steps"] + acc["a_steps"], "epoch_seconds": acc["seconds"],
        }
        emit("epoch", **record)
        emit("arch", epoch=epoch, probs=net.export_probs(), architecture=arch_doc)
        st["history"].append({**record, "global_step": st["global_step"]})
        if arch_phase and val_acc > st["best"]["val_acc"]:
            st["best"] = {"val_acc": val_acc, "epoch": epoch, "global_step": st["global_step"],
                          "architecture": arch_doc}
        st["epoch"] += 1
        st["step_in_epoch"] = 0
        st["accum"] = _new_accum()
        if checkpoint_fn is not None:
            checkpoint_fn(state())
        if reporter.should_stop():
            raise Stopped(f"search stopped after epoch {epoch}")

    arch_doc = net.export()
    summary = arch_summary(arch_doc)
    last = st["history"][-1] if st["history"] else {}
    metrics = {
        "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
        "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "expected_cost": run.expected_cost(), "derived_cost": run.derived_cost(),
        "cost_metric": run.table.metric, "cost_unit": run.table.unit,
        "cost_mode": run.cost_kw["mode"], "lam": run.cost_kw["lam"], "tau": run.cost_kw["tau"],
        "target": run.cost_kw["target"],
        "mult_adds": summary["mult_adds"], "params": summary["params"],
        "depth": summary["depth"], "input_size": meta["input_size"],
        "num_classes": meta["num_classes"], "epochs": config.epochs,
        "global_steps": st["global_step"],
        "best_val_acc": st["best"]["val_acc"] if st["best"]["epoch"] >= 0 else None,
        "best_epoch": st["best"]["epoch"] if st["best"]["epoch"] >= 0 else None,
        "search_seconds": sum(h.get("epoch_seconds", 0.0) for h in st["history"]),
        "wall_seconds": time.perf_counter() - t_start,
    }
    return SearchResult(architecture=arch_doc,
                        arch_params={"alpha": net.alpha_lists(), "beta": net.beta_lists()},
                        metrics=metrics,
                        history=[{k: v for k, v in h.items()} for h in st["history"]])


def arch_param_rows(space: Any) -> list[dict[str, Any]]:
    """What each row of ``arch_params["alpha"]`` is (alignment branch or basic layer)."""
    from ._graph import space_graph

    return space_graph(get_space(space)).alpha_rows()

