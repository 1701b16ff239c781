"""One search's state and steps: :class:`SearchSession`, the public step API.

:func:`densenas_core.search.run_search` drives a session through its schedule; benchmarks and
tests build one directly and call its steps::

    session = SearchSession(SearchConfig(space="mbv2-small", batch_size=64),
                            {"num_classes": 10, "input_size": 32, "in_channels": 3})
    x, y = session.inputs(x, y)                      # device and memory format of the steps
    loss, correct = session.weight_step(x, y, gen, lr=0.05, uniform=True)
    loss, correct, cost = session.arch_step(x, y, gen)
    figures = session.evaluate(val_data, train_data, batch_size)

``weight_step`` draws its sub-network from ``gen`` (one op per row, uniformly or by softmax α)
unless given one (``sample=``, e.g. a fixed sub-network); ``arch_step`` draws two ops per row
by softmax α and updates α/β (masked AdamW, then re-balancing of the sampled entries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, overload

import torch
from torch.nn import functional as F

from ._archopt import MaskedAdamW, rebalance, sampled_mask
from ._loop import mix_seed
from .cost import (
    CostTable,
    chained_cost,
    choice_probs,
    cost_term,
    default_tau,
    flops_table,
    latency_table,
)
from .data import fetch_batch
from .derive import derive_choices
from .evaluation import batch_statistics, recalibrated_bn
from .search_config import COST_ESTIMATORS, Schedule, SearchConfig, resolve_schedule
from .spaces import SearchSpace, get_space
from .supernet import Sample, SuperNet

#: weight-step gradient-norm clipping (the reference trainer's ``grad_clip`` option, on here:
#: with few classes, lr 0.2 made the first epoch diverge — loss 2.3 → 7–9 — without it)
W_GRAD_CLIP = 5.0

GradSync = Callable[[list[torch.Tensor]], None]


def _grads(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The ``.grad`` tensors themselves (not copies) of those of ``params`` that have one."""
    return [g for g in (p.grad for p in params) if g is not None]


def _resolve_cost_table(
    config: SearchConfig,
    cost_table: Any,
    space: SearchSpace,
    input_size: int,
    num_classes: int,
    in_channels: int,
) -> CostTable:
    if isinstance(cost_table, CostTable):
        return cost_table
    if cost_table is not None:
        return latency_table(space, cost_table, input_size, num_classes, in_channels)
    if config.cost.metric == "latency":
        raise ValueError("cost.metric: 'latency' needs a latency table (pass cost_table)")
    return flops_table(space, input_size, num_classes, in_channels)


class SearchSession:
    """State and steps of one search run (the loop lives in
    :func:`densenas_core.search.run_search`; see the module docstring).

    ``config``: a :class:`SearchConfig` or its dict; ``meta``: the data's ``num_classes``,
    ``input_size`` and ``in_channels``; ``cost_table``: a :class:`CostTable`, a latency table
    (for ``cost.metric: latency``) or None for the FLOPs table; ``schedule``: the resolved
    schedule of the run (default: resolved for one weight step at ``config.batch_size``).
    The supernet is initialised from ``config.seed`` without touching the global RNG.
    """

    def __init__(
        self,
        config: SearchConfig | Mapping[str, Any],
        meta: Mapping[str, Any],
        device: str | torch.device = "cpu",
        cost_table: Any = None,
        schedule: Schedule | None = None,
    ) -> None:
        config = SearchConfig.from_dict(config)
        device = torch.device(device)
        self.config = config
        self.device = device
        self.space = get_space(config.space)
        self.meta = meta
        self.schedule = schedule or resolve_schedule(config, config.batch_size, 1, 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.net = SuperNet(
                self.space,
                meta["num_classes"],
                meta["input_size"],
                meta["in_channels"],
                entangled=self.schedule.weight_sharing == "entangled",
            ).to(device)
        # NHWC halves the time of the depthwise-heavy MBConv steps on CPU (oneDNN)
        self.memory_format = (
            torch.channels_last if device.type == "cpu" else torch.contiguous_format
        )
        self.net.to(memory_format=self.memory_format)
        table = _resolve_cost_table(
            config,
            cost_table,
            self.space,
            meta["input_size"],
            meta["num_classes"],
            meta["in_channels"],
        )
        self.table = table.to(device, torch.float32)
        self.table64 = table
        self.weights = self.net.weight_parameters()
        self.arch = self.net.arch_parameters()
        self.w_opt = torch.optim.SGD(
            self.weights,
            lr=self.schedule.w_lr,
            momentum=config.w_momentum,
            weight_decay=config.w_wd,
        )
        self.a_opt = MaskedAdamW(
            self.arch, lr=self.schedule.a_lr, betas=config.a_betas, weight_decay=config.a_wd
        )
        c = config.cost
        tau = c.tau
        if c.mode == "log" and tau is None:
            tau = default_tau(self.expected_cost())
        self.cost_kw: dict[str, Any] = {
            "mode": c.mode,
            "lam": float(c.lam),
            "tau": tau,
            "target": c.target,
        }

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the session's device, images in the steps' memory format."""
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    @overload
    def expected_cost(self, grad: Literal[True]) -> torch.Tensor: ...
    @overload
    def expected_cost(self, grad: Literal[False] = False) -> float: ...

    def expected_cost(self, grad: bool = False) -> torch.Tensor | float:
        """The cost term's estimate (``cost.estimator``: chained, or the local baseline): a
        tensor in the autograd graph with ``grad``, else a float."""
        estimate = COST_ESTIMATORS[self.config.cost.estimator]
        if grad:
            return estimate(self.net.graph, self.table, *self.net.probs())
        with torch.no_grad():
            return float(
                estimate(
                    self.net.graph, self.table64, *(p.double().cpu() for p in self.net.probs())
                )
            )

    def derived_cost(self) -> float:
        """The chained cost of the architecture derived from the current α/β."""
        path, align, layers = derive_choices(
            self.space, self.net.alpha_lists(), self.net.beta_lists()
        )
        probs = choice_probs(self.net.graph, path, align, layers)
        return float(chained_cost(self.net.graph, self.table64, *probs))

    def weight_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator | None,
        lr: float,
        uniform: bool = False,
        grad_sync: GradSync | None = None,
        *,
        sample: Sample | None = None,
    ) -> tuple[float, int]:
        """One SGD step of the weights of a sub-network: ``sample``, else one op per row drawn
        from ``gen`` (uniformly, or by softmax α). Gradients are clipped to
        :data:`W_GRAD_CLIP`; ``grad_sync`` gets them first (data parallel). → (CE loss,
        correct predictions)."""
        self.net.train()
        if sample is None:
            sample = self.net.sample(gen, k=1, uniform=uniform)
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        self.w_opt.zero_grad(set_to_none=True)
        logits = self.net(x, sample)
        loss = F.cross_entropy(logits, y)
        torch.autograd.backward(loss)  # = loss.backward(), which torch leaves unannotated
        sampled = [p for p in self.weights if p.grad is not None]  # the sampled ops' weights
        if grad_sync is not None:
            grad_sync(_grads(sampled))
        torch.nn.utils.clip_grad_norm_(sampled, W_GRAD_CLIP)
        self.w_opt.step()
        return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())

    def arch_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator,
        grad_sync: GradSync | None = None,
    ) -> tuple[float, int, float]:
        """One step of α/β on CE + the cost term, two ops per row drawn from ``gen`` by
        softmax α → (CE loss, correct predictions, expected cost)."""
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
            grad_sync(_grads(self.arch))
        with torch.no_grad():
            old_a, old_l = net.alpha_align.clone(), net.alpha_layer.clone()
            masks = [
                sampled_mask(net.alpha_align.shape, sample.align, self.device),
                sampled_mask(net.alpha_layer.shape, sample.layers, self.device),
                net.beta_mask,
            ]
            self.a_opt.step(masks)
            net.alpha_align.copy_(rebalance(old_a, net.alpha_align, sample.align))
            net.alpha_layer.copy_(rebalance(old_l, net.alpha_layer, sample.layers))
        for p in self.arch:
            p.grad = None
        return float(ce.detach()), int((logits.detach().argmax(1) == y).sum()), float(cost.detach())

    def derived_sample(self) -> tuple[Sample, list[float]]:
        """The derived architecture inside the supernet: argmax ops on the Viterbi block
        sequence, its paths at weight 1 and every other path off."""
        path, align, layers = derive_choices(
            self.space, self.net.alpha_lists(), self.net.beta_lists()
        )
        a, la, p = choice_probs(self.net.graph, path, align, layers)
        return Sample(a.argmax(1, keepdim=True), la.argmax(1, keepdim=True)), p.tolist()

    @torch.no_grad()
    def _scan(
        self, ds: Any, bs: int, run: Callable[[torch.Tensor, int], torch.Tensor]
    ) -> tuple[float, float]:
        loss_sum, correct, n = 0.0, 0, len(ds)
        for b, i in enumerate(range(0, n, bs)):
            x, y = self.inputs(*fetch_batch(ds, torch.arange(i, min(i + bs, n))))
            logits = run(x, b)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum / max(n, 1), correct / max(n, 1)

    def calibration_batches(self, ds: Any, bs: int) -> list[torch.Tensor]:
        """The first ``bn_calibration`` images of a fixed seeded order of ``ds`` (the same on
        every rank and at every epoch)."""
        n = min(self.config.bn_calibration, len(ds))
        order = torch.randperm(
            len(ds), generator=torch.Generator().manual_seed(mix_seed(self.config.seed, 11))
        )[:n]
        return [self.inputs(*fetch_batch(ds, order[i : i + bs]))[0] for i in range(0, n, bs)]

    def _evaluate_fixed(
        self,
        ds: Any,
        calib: list[torch.Tensor],
        bs: int,
        sample: Sample,
        path_w: list[float] | None,
    ) -> tuple[float, float]:
        def fwd(x: torch.Tensor, _b: int = 0) -> torch.Tensor:
            logits: torch.Tensor = self.net(x, sample, path_weights=path_w)
            return logits

        if calib:
            with recalibrated_bn(self.net, calib, fwd):
                return self._scan(ds, bs, fwd)
        with batch_statistics(self.net):
            return self._scan(ds, bs, fwd)

    def evaluate(self, ds: Any, calib_ds: Any, bs: int) -> dict[str, Any]:
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
        return {
            "val_loss": loss,
            "val_acc": acc,
            "derived_val_loss": d_loss,
            "derived_val_acc": d_acc,
            "val_eval": f"argmax sub-network (most probable op per row, β-weighted paths), "
            f"{bn}; derived_val_acc: the derived single-path network, {bn}",
        }

    def evaluate_sampled(self, ds: Any, bs: int, epoch: int, uniform: bool) -> tuple[float, float]:
        """(loss, accuracy) of the supernet as it trains: a sub-network drawn per batch (by
        softmax α, or uniformly in the warm-up; β-weighted paths), BN on batch statistics."""
        gen = torch.Generator().manual_seed(mix_seed(self.config.seed, 13, epoch))

        def fwd(x: torch.Tensor, _b: int) -> torch.Tensor:
            logits: torch.Tensor = self.net(x, self.net.sample(gen, k=1, uniform=uniform))
            return logits

        with batch_statistics(self.net):
            return self._scan(ds, bs, fwd)
