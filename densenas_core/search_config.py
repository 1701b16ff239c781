"""A search's configuration (:class:`SearchConfig`: the algorithm's part of a ``search`` job spec,
declared in :mod:`densenas_core.specs`) and the schedule it resolves to for a run of a given
size (see :class:`Schedule`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .cost import chained_cost, local_cost
from .specs import COST_ESTIMATOR_NAMES, SearchSpec

#: the config of a search is its spec (fields, defaults and validation: ``specs.SearchSpec``)
SearchConfig = SearchSpec
#: the expected-cost estimate in the arch loss: DenseNAS's chained one, or the paper's local
#: baseline that sums every block as if it were on the path (docs/algorithm.md §Local cost)
COST_ESTIMATORS = {"chained": chained_cost, "local": local_cost}
if tuple(COST_ESTIMATORS) != COST_ESTIMATOR_NAMES:
    raise RuntimeError("search_config: COST_ESTIMATORS differ from the cost.estimator choices")
#: the paper's MBV2 search (docs/algorithm.md §Paper schedule): SGD 0.2 at batch 352, Adam 3e-4
#: over ~7,000 arch steps
PAPER_W_LR, PAPER_BATCH, PAPER_A_LR, PAPER_ARCH_STEPS = 0.2, 352, 3e-4, 7000
A_LR_MAX = 0.05


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


def resolve_schedule(
    config: SearchConfig, global_batch: int, weight_steps: int, arch_steps: int
) -> Schedule:
    """The :class:`Schedule` of ``config`` for a run of that many steps at that batch."""
    paper = config.schedule == "paper"
    w_lr = (
        config.w_lr
        if config.w_lr is not None
        else (PAPER_W_LR if paper else PAPER_W_LR * math.sqrt(global_batch / PAPER_BATCH))
    )
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
    return Schedule(
        config.schedule,
        float(w_lr),
        int(warm),
        float(a_lr),
        sharing,
        int(global_batch),
        int(weight_steps),
        int(arch_steps),
    )
