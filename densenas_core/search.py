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
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch.nn import functional as F

from ._archopt import MaskedAdamW, rebalance, sampled_mask
from ._loop import (
    SLOT, config_kwargs, epoch_batches, mix_seed, num_batches, rng_state, set_rng_state, snapshot,
    cosine_lr, warmup_cosine_lr,
)
from .summary import arch_summary
from .cost import (
    COST_METRICS, COST_MODES, CostTable, chained_cost, choice_probs, cost_term, default_tau,
    flops_table, latency_table, local_cost,
)
from .data import DatasetSpec, dataset_meta, default_dataset, fetch_batch, load_search_data
from .derive import derive_choices
from .reporting import NullReporter, Reporter, Stopped
from .spaces import get_space
from .evaluation import batch_statistics, recalibrated_bn
from .supernet import Sample, SuperNet

__all__ = ["SearchConfig", "SearchResult", "run_search", "rebalance", "MaskedAdamW",
           "cosine_lr", "ORCHESTRATION_KEYS"]

#: keys of the job spec that concern scheduling, not the algorithm (ignored here)
ORCHESTRATION_KEYS = frozenset({"num_workers", "use_gpu", "checkpoint_every"})
#: 2: entangled op weights, resolved schedule, BN-honest evaluation
CHECKPOINT_VERSION = 2
SCHEDULES = ("scaled", "paper")
#: the expected-cost estimate in the arch loss: DenseNAS's chained one, or the supplementary
#: A.5 baseline that sums every block as if it were on the path
COST_ESTIMATORS = {"chained": chained_cost, "local": local_cost}
WEIGHT_SHARING = ("entangled", "separate")
#: the paper's MBV2 search (SPEC §5): SGD 0.2 at batch 352, Adam 3e-4 over ~7,000 arch steps
PAPER_W_LR, PAPER_BATCH, PAPER_A_LR, PAPER_ARCH_STEPS = 0.2, 352, 3e-4, 7000
A_LR_MAX = 0.05
#: weight-step gradient-norm clipping (the reference trainer's ``grad_clip`` option, on here:
#: with few classes, lr 0.2 made the first epoch diverge — loss 2.3 → 7–9 — without it)
W_GRAD_CLIP = 5.0


def _default_cost() -> dict[str, Any]:
    return {"metric": "flops", "mode": "log", "lam": 0.15, "tau": None, "target": None,
            "latency_table_id": None, "estimator": "chained"}


@dataclass
class SearchConfig:
    """The algorithm's part of a ``search`` job spec (field names as in docs/DESIGN.md)."""

    space: Any = "mbv2-small"
    dataset: dict[str, Any] = field(default_factory=default_dataset)
    epochs: int = 4
    warmup_epochs: int = 1
    batch_size: int = 64
    seed: int = 0
    schedule: str = "scaled"
    w_lr: float | None = None
    w_lr_min: float = 1e-4
    lr_warmup_steps: int | None = None
    w_momentum: float = 0.9
    w_wd: float = 4e-5
    a_lr: float | None = None
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_wd: float = 1e-3
    weight_sharing: str | None = None
    bn_calibration: int = 512
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
        need(self.schedule in SCHEDULES, "schedule", f"expected one of {SCHEDULES}")
        need(self.weight_sharing is None or self.weight_sharing in WEIGHT_SHARING,
             "weight_sharing", f"expected one of {WEIGHT_SHARING} (or null)")
        for f in ("w_lr", "a_lr"):
            v = getattr(self, f)
            need(v is None or (_number(v) and v > 0), f, "must be positive (or null)")
        need(self.lr_warmup_steps is None or (_integer(self.lr_warmup_steps)
                                              and self.lr_warmup_steps >= 0),
             "lr_warmup_steps", "expected an integer ≥ 0 (or null)")
        need(_integer(self.bn_calibration) and self.bn_calibration >= 0, "bn_calibration",
             "expected an integer ≥ 0 (0: evaluate with batch statistics)")
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
        need(c["estimator"] in COST_ESTIMATORS, "cost.estimator",
             f"expected one of {tuple(COST_ESTIMATORS)}")
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


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Schedule:
    """The resolved optimisation schedule of one search (what ``schedule`` and the budget give).

    ``scaled`` (default) adapts the paper's settings to the run's budget:

    * weight lr = 0.2·√(global batch / 352): the paper's 0.2 at its batch of 352, scaled by the
      square root, which keeps the per-step noise of the gradient estimate constant (linear
      scaling gives 0.036 at batch 64, measured ~25 % slower to learn under op sampling; the
      unscaled 0.2 diverged there), with a linear lr warm-up over the first
      ``lr_warmup_steps`` weight steps (default 5 % of them, 5..500);
    * arch lr = 2.1 / arch steps (clamped to [3e-4, 0.05]): the paper moves α/β with Adam at
      3e-4 for ~7,000 arch steps, so an entry can travel at most ~2.1 in logit; a run with N arch
      steps gets the same reach, where 3e-4 would leave α at its init noise;
    * weight sharing ``entangled`` (see :class:`densenas_core.ops.MBKernel`).

    ``paper`` is the reference setting unchanged: 0.2, no warm-up, 3e-4, separate op weights.
    Explicit ``w_lr`` / ``a_lr`` / ``lr_warmup_steps`` / ``weight_sharing`` override either.
    """

    name: str
    w_lr: float
    lr_warmup_steps: int
    a_lr: float
    weight_sharing: str
    global_batch: int
    weight_steps: int
    arch_steps: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_schedule(config: "SearchConfig", global_batch: int, weight_steps: int,
                     arch_steps: int) -> Schedule:
    """The :class:`Schedule` of ``config`` for a run of that many steps at that batch."""
    paper = config.schedule == "paper"
    w_lr = config.w_lr if config.w_lr is not None else (
        PAPER_W_LR if paper else PAPER_W_LR * math.sqrt(global_batch / PAPER_BATCH))
    if config.lr_warmup_steps is not None:
        warm = config.lr_warmup_steps
    else:
        warm = 0 if paper else min(500, max(5, round(0.05 * weight_steps)))
    warm = min(warm, max(weight_steps - 1, 0))
    if config.a_lr is not None:
        a_lr = config.a_lr
    elif paper or arch_steps <= 0:
        a_lr = PAPER_A_LR
    else:
        a_lr = min(A_LR_MAX, max(PAPER_A_LR, PAPER_A_LR * PAPER_ARCH_STEPS / arch_steps))
    sharing = config.weight_sharing or ("separate" if paper else "entangled")
    return Schedule(config.schedule, float(w_lr), int(warm), float(a_lr), sharing,
                    int(global_batch), int(weight_steps), int(arch_steps))


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
                 cost_table: Any, schedule: Schedule | None = None) -> None:
        self.config = config
        self.device = device
        self.space = get_space(config.space)
        self.meta = meta
        self.schedule = schedule or resolve_schedule(config, config.batch_size, 1, 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.net = SuperNet(self.space, meta["num_classes"], meta["input_size"],
                                meta["in_channels"],
                                entangled=self.schedule.weight_sharing == "entangled").to(device)
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
        self.w_opt = torch.optim.SGD(self.weights, lr=self.schedule.w_lr,
                                     momentum=config.w_momentum, weight_decay=config.w_wd)
        self.a_opt = MaskedAdamW(self.arch, lr=self.schedule.a_lr, betas=config.a_betas,
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
        """The cost term's estimate (``cost.estimator``: chained, or the local baseline)."""
        estimate = COST_ESTIMATORS[self.config.cost["estimator"]]
        if grad:
            return estimate(self.net.graph, self.table, *self.net.probs())
        with torch.no_grad():
            return float(estimate(self.net.graph, self.table64,
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

    def derived_sample(self) -> tuple[Sample, list[float]]:
        """The derived architecture inside the supernet: argmax ops on the Viterbi block
        sequence, its paths at weight 1 and every other path off."""
        path, align, layers = derive_choices(self.space, self.net.alpha_lists(),
                                             self.net.beta_lists())
        a, la, p = choice_probs(self.net.graph, path, align, layers)
        return Sample(a.argmax(1, keepdim=True), la.argmax(1, keepdim=True)), p.tolist()

    @torch.no_grad()
    def _scan(self, ds, bs: int, run: Callable[[torch.Tensor, int], torch.Tensor]
              ) -> tuple[float, float]:
        loss_sum, correct, n = 0.0, 0, len(ds)
        for b, i in enumerate(range(0, n, bs)):
            x, y = self.inputs(*fetch_batch(ds, torch.arange(i, min(i + bs, n))))
            logits = run(x, b)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum / max(n, 1), correct / max(n, 1)

    def calibration_batches(self, ds, bs: int) -> list[torch.Tensor]:
        """The first ``bn_calibration`` images of a fixed seeded order of ``ds`` (the same on
        every rank and at every epoch)."""
        n = min(self.config.bn_calibration, len(ds))
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(
            mix_seed(self.config.seed, 11)))[:n]
        return [self.inputs(*fetch_batch(ds, order[i:i + bs]))[0] for i in range(0, n, bs)]

    def _evaluate_fixed(self, ds, calib: list[torch.Tensor], bs: int, sample: Sample,
                        path_w: list[float] | None) -> tuple[float, float]:
        def fwd(x: torch.Tensor, _b: int = 0) -> torch.Tensor:
            return self.net(x, sample, path_weights=path_w)

        if calib:
            with recalibrated_bn(self.net, calib, fwd):
                return self._scan(ds, bs, fwd)
        with batch_statistics(self.net):
            return self._scan(ds, bs, fwd)

    def evaluate(self, ds, calib_ds, bs: int) -> dict[str, Any]:
        """Validation figures of two fixed sub-networks, BN honest for each.

        ``val``: the argmax sub-network — the most probable op of every row, every path at
        its β probability (what the weight steps train, and what the search converges to).
        ``derived``: the derived architecture inside the supernet — the Viterbi block sequence
        alone, its paths at weight 1. Every path of the supernet is always active in training,
        so this single-path network is off the distribution the shared weights learned (it
        scores below the argmax sub-network; a derived network is retrained from scratch).
        BN statistics are re-estimated for each on ``bn_calibration`` images of ``calib_ds``
        (or, with 0, each batch uses its own statistics); see :mod:`densenas_core.evaluation`.
        """
        calib = self.calibration_batches(calib_ds, bs) if self.config.bn_calibration > 0 else []
        loss, acc = self._evaluate_fixed(ds, calib, bs, self.net.argmax_sample(), None)
        sample, path_w = self.derived_sample()
        d_loss, d_acc = self._evaluate_fixed(ds, calib, bs, sample, path_w)
        n = sum(len(x) for x in calib)
        bn = f"BN recalibrated on {n} train images" if n else "BN on batch statistics"
        return {"val_loss": loss, "val_acc": acc, "derived_val_loss": d_loss,
                "derived_val_acc": d_acc,
                "val_eval": f"argmax sub-network (most probable op per row, β-weighted paths), "
                            f"{bn}; derived_val_acc: the derived single-path network, {bn}"}

    def evaluate_sampled(self, ds, bs: int, epoch: int, uniform: bool) -> tuple[float, float]:
        """(loss, accuracy) of the supernet as it trains: a sub-network drawn per batch (by
        softmax α, or uniformly in the warm-up; β-weighted paths), BN on batch statistics."""
        gen = torch.Generator().manual_seed(mix_seed(self.config.seed, 13, epoch))

        def fwd(x: torch.Tensor, _b: int) -> torch.Tensor:
            return self.net(x, self.net.sample(gen, k=1, uniform=uniform))

        with batch_statistics(self.net):
            return self._scan(ds, bs, fwd)


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
    bs = config.batch_size
    n_w = num_batches(len(train_data) // world_size, bs)
    n_a = num_batches(len(val_data) // world_size, bs)
    total_w = config.epochs * n_w
    sched = resolve_schedule(config, bs * world_size, total_w,
                             (config.epochs - config.warmup_epochs) * n_a)
    run = _Search(config, meta, device, cost_table, sched)
    net = run.net
    log_every = max(1, int(log_every))

    def lr_at(step: int) -> float:
        return warmup_cosine_lr(step, total_w, sched.w_lr, config.w_lr_min,
                                sched.lr_warmup_steps)

    st: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "weight_steps": 0,
                          "accum": _new_accum(), "history": [], "prev_argmax": None,
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
        st["prev_argmax"] = copy.deepcopy(rs.get("prev_argmax"))
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
            "prev_argmax": st["prev_argmax"], "schedule": sched.to_dict(),
            "data": dict(data_info) if data_info else {"classes": meta["classes"]},
        })

    if st["global_step"] == 0:
        emit("log", message=f"search on {space.name}: {len(train_data)} train / "
             f"{len(val_data)} arch images, {config.epochs} epochs "
             f"({config.warmup_epochs} warm-up), {n_w} weight + {n_a} arch steps per epoch; "
             f"schedule {sched.name}: weight lr {sched.w_lr:.4g} (global batch "
             f"{sched.global_batch}, {sched.lr_warmup_steps} warm-up steps), arch lr "
             f"{sched.a_lr:.4g} over {sched.arch_steps} arch steps, {sched.weight_sharing} "
             f"op weights", schedule=sched.to_dict())

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
                lr = lr_at(st["weight_steps"])
            else:
                lr = lr_at(st["weight_steps"])
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

        ev = run.evaluate(val_data, train_data, bs)
        val_acc = ev["val_acc"]
        sup_loss, sup_acc = run.evaluate_sampled(val_data, bs, epoch, uniform=not arch_phase)
        exp_cost = run.expected_cost()
        arch_doc = net.export()
        progress, rows = arch_progress(net, st["prev_argmax"])
        st["prev_argmax"] = rows.pop("argmax")
        record = {
            "epoch": epoch, "phase": "search" if arch_phase else "warmup",
            "train_loss": acc["w_loss"] / max(acc["w_n"], 1),
            "train_acc": acc["w_correct"] / max(acc["w_n"], 1),
            **ev, "supernet_val_loss": sup_loss, "supernet_val_acc": sup_acc,
            "arch_loss": acc["a_loss"] / acc["a_n"] if acc["a_n"] else None,
            "arch_acc": acc["a_correct"] / acc["a_n"] if acc["a_n"] else None,
            "expected_cost": exp_cost, "derived_cost": run.derived_cost(),
            "cost_unit": run.table.unit,
            "lr": lr_at(max(st["weight_steps"] - 1, 0)),
            "steps": acc["w_steps"] + acc["a_steps"], "epoch_seconds": acc["seconds"],
            **progress,
        }
        emit("epoch", **record)
        emit("arch", epoch=epoch, probs=net.export_probs(), architecture=arch_doc, **rows)
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
        "supernet_val_acc": last.get("supernet_val_acc"), "val_eval": last.get("val_eval"),
        "derived_val_acc": last.get("derived_val_acc"),
        "alpha_top_gap": last.get("alpha_top_gap"), "alpha_entropy": last.get("alpha_entropy"),
        "schedule": sched.to_dict(),
        "search_seconds": sum(h.get("epoch_seconds", 0.0) for h in st["history"]),
        "wall_seconds": time.perf_counter() - t_start,
    }
    return SearchResult(architecture=arch_doc,
                        arch_params={"alpha": net.alpha_lists(), "beta": net.beta_lists()},
                        metrics=metrics,
                        history=[{k: v for k, v in h.items()} for h in st["history"]])


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of ``p`` divided by log(row length): 1 = uniform, 0 = one-hot."""
    k = p.shape[-1]
    h = -(p * p.clamp_min(1e-30).log()).sum(-1)
    return h / math.log(k) if k > 1 else torch.zeros_like(h)


def arch_progress(net: SuperNet, prev_argmax: list[int] | None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """How far α/β have moved: (epoch summary, per-row detail with the new argmax list).

    Summary: mean normalised entropy of α rows and of β rows (blocks with ≥ 2 out-paths);
    ``alpha_top_gap`` = max over α rows of (top probability − 1/k); ``argmax_changes`` = α rows
    whose most probable op differs from ``prev_argmax`` (None on the first epoch).
    """
    with torch.no_grad():
        pa, pl, _ = (t.detach().double().cpu() for t in net.probs())
        alpha = [r for r in (pa, pl) if r.numel()]
        a_ent = torch.cat([_entropy(r) for r in alpha]) if alpha else torch.zeros(0)
        a_gap = torch.cat([r.max(-1).values - 1.0 / r.shape[-1] for r in alpha]) \
            if alpha else torch.zeros(0)
        argmax = torch.cat([r.argmax(-1) for r in alpha]).tolist() if alpha else []
        b_ent = [float(_entropy(torch.tensor(row, dtype=torch.float64).softmax(-1)))
                 for row in net.beta_lists() if len(row) > 1]
    changes = (None if prev_argmax is None or len(prev_argmax) != len(argmax)
               else sum(a != b for a, b in zip(argmax, prev_argmax)))
    summary = {
        "alpha_entropy": float(a_ent.mean()) if a_ent.numel() else None,
        "beta_entropy": sum(b_ent) / len(b_ent) if b_ent else None,
        "alpha_top_gap": float(a_gap.max()) if a_gap.numel() else None,
        "argmax_changes": changes,
    }
    rows = {"alpha_entropy_rows": [round(float(v), 6) for v in a_ent],
            "beta_entropy_rows": [round(v, 6) for v in b_ent], "argmax": argmax}
    return summary, rows


def arch_param_rows(space: Any) -> list[dict[str, Any]]:
    """What each row of ``arch_params["alpha"]`` is (alignment branch or basic layer)."""
    from ._graph import space_graph

    return space_graph(get_space(space)).alpha_rows()

