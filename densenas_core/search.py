"""The DenseNAS search loop: dropping-path weight and arch steps, chained cost
(docs/algorithm.md §Dropping-path search).

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

The pieces: :mod:`densenas_core.search_config` (``SearchConfig``, the resolved ``Schedule``),
:mod:`densenas_core.search_session` (``SearchSession``: one run's state and its weight/arch
steps and evaluation, the public step API) and, here, the loop (:func:`run_search`) and its
progress figures. Every name is importable from this module.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ._archopt import MaskedAdamW, rebalance
from ._graph import space_graph
from ._loop import (
    check_checkpoint,
    cosine_lr,
    epoch_batches,
    mix_seed,
    num_batches,
    rng_state,
    set_rng_state,
    snapshot,
    step_emitter,
    warmup_cosine_lr,
)
from .data import dataset_meta, fetch_batch, load_search_data
from .reporting import NullReporter, Reporter, Stopped
from .search_config import (
    A_LR_MAX,
    COST_ESTIMATORS,
    PAPER_A_LR,
    PAPER_ARCH_STEPS,
    PAPER_BATCH,
    PAPER_W_LR,
    Schedule,
    SearchConfig,
    resolve_schedule,
)
from .search_session import W_GRAD_CLIP, SearchSession
from .spaces import get_space
from .specs import SCHEDULES, WEIGHT_SHARING, DatasetSpec
from .summary import arch_summary
from .supernet import SuperNet

__all__ = [
    "SearchConfig",
    "SearchResult",
    "SearchSession",
    "Schedule",
    "resolve_schedule",
    "run_search",
    "arch_progress",
    "arch_param_rows",
    "rebalance",
    "MaskedAdamW",
    "cosine_lr",
    "CHECKPOINT_VERSION",
    "COST_ESTIMATORS",
    "SCHEDULES",
    "WEIGHT_SHARING",
    "W_GRAD_CLIP",
    "A_LR_MAX",
    "PAPER_A_LR",
    "PAPER_ARCH_STEPS",
    "PAPER_BATCH",
    "PAPER_W_LR",
]

#: 2: entangled op weights, resolved schedule, BN-honest evaluation
CHECKPOINT_VERSION = 2


@dataclass
class SearchResult:
    architecture: dict[str, Any]
    arch_params: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _new_accum() -> dict[str, float]:
    return {
        "w_loss": 0.0,
        "w_correct": 0,
        "w_n": 0,
        "w_steps": 0,
        "a_loss": 0.0,
        "a_correct": 0,
        "a_n": 0,
        "a_steps": 0,
        "a_cost": 0.0,
        "seconds": 0.0,
    }


def run_search(
    config: SearchConfig | Mapping[str, Any],
    train_data: Any = None,
    val_data: Any = None,
    reporter: Reporter | None = None,
    *,
    device: str | torch.device = "cpu",
    grad_sync: Callable[[list[torch.Tensor]], None] | None = None,
    checkpoint_fn: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int | None = None,
    resume_state: Mapping[str, Any] | None = None,
    cost_table: Any = None,
    data_info: Mapping[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    log_every: int = 10,
) -> SearchResult:
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
        train_data, val_data, data_info = load_search_data(spec, config.seed, config.val_fraction)
    meta = dataset_meta(train_data)
    if data_info:
        meta["classes"] = list(data_info.get("classes", meta["classes"]))
    bs = config.batch_size
    n_w = num_batches(len(train_data) // world_size, bs)
    n_a = num_batches(len(val_data) // world_size, bs)
    total_w = config.epochs * n_w
    sched = resolve_schedule(
        config, bs * world_size, total_w, (config.epochs - config.warmup_epochs) * n_a
    )
    run = SearchSession(config, meta, device, cost_table, sched)
    net = run.net
    log_every = max(1, int(log_every))

    def lr_at(step: int) -> float:
        return warmup_cosine_lr(step, total_w, sched.w_lr, config.w_lr_min, sched.lr_warmup_steps)

    st: dict[str, Any] = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "weight_steps": 0,
        "accum": _new_accum(),
        "history": [],
        "prev_argmax": None,
        "best": {"val_acc": -1.0, "epoch": -1, "global_step": 0, "architecture": None},
    }
    if resume_state is not None:
        rs = resume_state
        check_checkpoint(rs, "search", CHECKPOINT_VERSION)
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

    emit = step_emitter(reporter, st)

    def state() -> dict[str, Any]:
        copied: dict[str, Any] = snapshot(
            {
                "version": CHECKPOINT_VERSION,
                "kind": "search",
                "config": config.to_dict(),
                "model": net.state_dict(),
                "w_opt": run.w_opt.state_dict(),
                "a_opt": run.a_opt.state_dict(),
                "scheduler": {"weight_steps": st["weight_steps"], "total_weight_steps": total_w},
                "cost_kw": run.cost_kw,
                "rng": rng_state(device),
                "epoch": st["epoch"],
                "step_in_epoch": st["step_in_epoch"],
                "global_step": st["global_step"],
                "weight_steps": st["weight_steps"],
                "accum": st["accum"],
                "history": st["history"],
                "best": st["best"],
                "prev_argmax": st["prev_argmax"],
                "schedule": sched.to_dict(),
                "data": dict(data_info) if data_info else {"classes": meta["classes"]},
            }
        )
        return copied

    if st["global_step"] == 0:
        emit(
            "log",
            message=f"search on {space.name}: {len(train_data)} train / "
            f"{len(val_data)} arch images, {config.epochs} epochs "
            f"({config.warmup_epochs} warm-up), {n_w} weight + {n_a} arch steps per epoch; "
            f"schedule {sched.name}: weight lr {sched.w_lr:.4g} (global batch "
            f"{sched.global_batch}, {sched.lr_warmup_steps} warm-up steps), arch lr "
            f"{sched.a_lr:.4g} over {sched.arch_steps} arch steps, {sched.weight_sharing} "
            f"op weights",
            schedule=sched.to_dict(),
        )

    t_start = time.perf_counter()
    while st["epoch"] < config.epochs:
        epoch = st["epoch"]
        arch_phase = epoch >= config.warmup_epochs
        plan: list[tuple[str, torch.Tensor]] = []
        if arch_phase:
            plan += [
                ("arch", b)
                for b in epoch_batches(
                    len(val_data), bs, mix_seed(config.seed, epoch, 1), rank, world_size
                )
            ]
        plan += [
            ("weights", b)
            for b in epoch_batches(
                len(train_data), bs, mix_seed(config.seed, epoch, 0), rank, world_size
            )
        ]
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
                emit(
                    "step",
                    phase=phase,
                    epoch=epoch,
                    step=s,
                    loss=loss,
                    acc=correct / len(y),
                    lr=lr,
                    expected_cost=cost if cost is not None else run.expected_cost(),
                )
            if (
                checkpoint_fn is not None
                and checkpoint_every
                and st["global_step"] % checkpoint_every == 0
            ):
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
            "epoch": epoch,
            "phase": "search" if arch_phase else "warmup",
            "train_loss": acc["w_loss"] / max(acc["w_n"], 1),
            "train_acc": acc["w_correct"] / max(acc["w_n"], 1),
            **ev,
            "supernet_val_loss": sup_loss,
            "supernet_val_acc": sup_acc,
            "arch_loss": acc["a_loss"] / acc["a_n"] if acc["a_n"] else None,
            "arch_acc": acc["a_correct"] / acc["a_n"] if acc["a_n"] else None,
            "expected_cost": exp_cost,
            "derived_cost": run.derived_cost(),
            "cost_unit": run.table.unit,
            "lr": lr_at(max(st["weight_steps"] - 1, 0)),
            "steps": acc["w_steps"] + acc["a_steps"],
            "epoch_seconds": acc["seconds"],
            **progress,
        }
        emit("epoch", **record)
        emit("arch", epoch=epoch, probs=net.export_probs(), architecture=arch_doc, **rows)
        st["history"].append({**record, "global_step": st["global_step"]})
        if arch_phase and val_acc > st["best"]["val_acc"]:
            st["best"] = {
                "val_acc": val_acc,
                "epoch": epoch,
                "global_step": st["global_step"],
                "architecture": arch_doc,
            }
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
        "val_loss": last.get("val_loss"),
        "val_acc": last.get("val_acc"),
        "train_loss": last.get("train_loss"),
        "train_acc": last.get("train_acc"),
        "expected_cost": run.expected_cost(),
        "derived_cost": run.derived_cost(),
        "cost_metric": run.table.metric,
        "cost_unit": run.table.unit,
        "cost_mode": run.cost_kw["mode"],
        "lam": run.cost_kw["lam"],
        "tau": run.cost_kw["tau"],
        "target": run.cost_kw["target"],
        "mult_adds": summary["mult_adds"],
        "params": summary["params"],
        "depth": summary["depth"],
        "input_size": meta["input_size"],
        "num_classes": meta["num_classes"],
        "epochs": config.epochs,
        "global_steps": st["global_step"],
        "best_val_acc": st["best"]["val_acc"] if st["best"]["epoch"] >= 0 else None,
        "best_epoch": st["best"]["epoch"] if st["best"]["epoch"] >= 0 else None,
        "supernet_val_acc": last.get("supernet_val_acc"),
        "val_eval": last.get("val_eval"),
        "derived_val_acc": last.get("derived_val_acc"),
        "alpha_top_gap": last.get("alpha_top_gap"),
        "alpha_entropy": last.get("alpha_entropy"),
        "schedule": sched.to_dict(),
        "search_seconds": sum(h.get("epoch_seconds", 0.0) for h in st["history"]),
        "wall_seconds": time.perf_counter() - t_start,
    }
    return SearchResult(
        architecture=arch_doc,
        arch_params={"alpha": net.alpha_lists(), "beta": net.beta_lists()},
        metrics=metrics,
        history=[dict(h) for h in st["history"]],
    )


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of ``p`` divided by log(row length): 1 = uniform, 0 = one-hot."""
    k = p.shape[-1]
    h = -(p * p.clamp_min(1e-30).log()).sum(-1)
    return h / math.log(k) if k > 1 else torch.zeros_like(h)


def arch_progress(
    net: SuperNet, prev_argmax: list[int] | None
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
        a_gap = (
            torch.cat([r.max(-1).values - 1.0 / r.shape[-1] for r in alpha])
            if alpha
            else torch.zeros(0)
        )
        argmax = torch.cat([r.argmax(-1) for r in alpha]).tolist() if alpha else []
        b_ent = [
            float(_entropy(torch.tensor(row, dtype=torch.float64).softmax(-1)))
            for row in net.beta_lists()
            if len(row) > 1
        ]
    changes = (
        None
        if prev_argmax is None or len(prev_argmax) != len(argmax)
        else sum(a != b for a, b in zip(argmax, prev_argmax))
    )
    summary = {
        "alpha_entropy": float(a_ent.mean()) if a_ent.numel() else None,
        "beta_entropy": sum(b_ent) / len(b_ent) if b_ent else None,
        "alpha_top_gap": float(a_gap.max()) if a_gap.numel() else None,
        "argmax_changes": changes,
    }
    rows = {
        "alpha_entropy_rows": [round(float(v), 6) for v in a_ent],
        "beta_entropy_rows": [round(v, 6) for v in b_ent],
        "argmax": argmax,
    }
    return summary, rows


def arch_param_rows(space: Any) -> list[dict[str, Any]]:
    """What each row of ``arch_params["alpha"]`` is (alignment branch or basic layer)."""
    return space_graph(get_space(space)).alpha_rows()
