"""A search's configuration (the algorithm's part of a ``search`` job spec) and the schedule it
resolves to for a run of a given size (see :class:`Schedule`)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ._loop import SpecConfig
from .cost import COST_METRICS, COST_MODES, chained_cost, local_cost
from .data import DatasetSpec, default_dataset

#: keys of the job spec that concern scheduling, not the algorithm (ignored here)
ORCHESTRATION_KEYS = frozenset({"num_workers", "use_gpu", "checkpoint_every"})
SCHEDULES = ("scaled", "paper")
#: the expected-cost estimate in the arch loss: DenseNAS's chained one, or the paper's local
#: baseline that sums every block as if it were on the path (docs/algorithm.md §Local cost)
COST_ESTIMATORS = {"chained": chained_cost, "local": local_cost}
WEIGHT_SHARING = ("entangled", "separate")
#: the paper's MBV2 search (docs/algorithm.md §Paper schedule): SGD 0.2 at batch 352, Adam 3e-4
#: over ~7,000 arch steps
PAPER_W_LR, PAPER_BATCH, PAPER_A_LR, PAPER_ARCH_STEPS = 0.2, 352, 3e-4, 7000
A_LR_MAX = 0.05


def _default_cost() -> dict[str, Any]:
    return {"metric": "flops", "mode": "log", "lam": 0.15, "tau": None, "target": None,
            "latency_table_id": None, "estimator": "chained"}


@dataclass
class SearchConfig(SpecConfig):
    """The algorithm's part of a ``search`` job spec (field names as in docs/DESIGN.md)."""

    SPEC_KIND: ClassVar[str] = "search"
    IGNORED: ClassVar[frozenset[str]] = ORCHESTRATION_KEYS

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
