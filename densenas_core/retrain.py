"""Retraining a derived architecture from scratch (docs/algorithm.md §Retrain schedule, scaled
by the job's config).

SGD with momentum and weight decay, lr cosine from ``lr`` to ``lr_min`` over all steps,
cross-entropy with label smoothing, random crop (zero padding of size/8) + horizontal flip.
Per epoch it reports train loss/accuracy and test loss/top-1/top-5. Determinism and data
parallelism as in :mod:`densenas_core.search`: batch order and augmentation come from
generators seeded by (seed, epoch) and (seed, step), rank r takes the r-th stride of each
permutation, and either ``grad_sync`` all-reduces the gradients after every backward or the
model is wrapped in ``DistributedDataParallel`` (then leave ``grad_sync`` unset).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from . import _loop as loop
from .data import fetch_batch
from .evaluation import estimate_bn_stats
from .reporting import NullReporter, Reporter, Stopped
from .specs import RetrainSpec

CHECKPOINT_VERSION = 1
#: the config of a retrain is its spec (fields, defaults and validation: ``specs.RetrainSpec``)
RetrainConfig = RetrainSpec


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by size/8, and a random horizontal flip, per sample."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [b, h, 1]
    cols = ox[:, None] + torch.arange(w, device=x.device)  # [b, w]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # [b, 1, w]
    bi = torch.arange(b, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 3, 1, 2).contiguous()


def _precise_bn(
    model: nn.Module,
    ds: Any,
    n: int,
    bs: int,
    device: torch.device,
    fmt: torch.memory_format | None,
    seed: int,
) -> None:
    """BN statistics of ``model`` re-estimated on ``n`` un-augmented training images (a fixed
    seeded choice, the same on every rank, so data-parallel replicas stay identical)."""
    order = torch.randperm(
        len(ds), generator=torch.Generator().manual_seed(loop.mix_seed(seed, 17))
    )[: min(n, len(ds))]

    def batches() -> Iterator[torch.Tensor]:
        for i in range(0, len(order), bs):
            x = fetch_batch(ds, order[i : i + bs])[0].to(device)
            yield x.contiguous(memory_format=fmt) if fmt is not None else x

    estimate_bn_stats(model, batches(), model)


@torch.no_grad()
def evaluate(
    model: nn.Module, ds: Any, batch_size: int, device: torch.device, label_smoothing: float = 0.0
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy (top-k with k ≤ classes) on ``ds``."""
    was = model.training
    model.eval()
    n = len(ds)
    loss_sum, c1, c5 = 0.0, 0, 0
    for i in range(0, n, batch_size):
        x, y = fetch_batch(ds, torch.arange(i, min(i + batch_size, n)))
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(
            F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing)
        )
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(1).sum())
    model.train(was)
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n}


def run_retrain(
    config: RetrainConfig | Mapping[str, Any],
    model: nn.Module,
    train_data: Any,
    val_data: Any,
    reporter: Reporter | None = None,
    *,
    device: str | torch.device = "cpu",
    grad_sync: Callable[[list[torch.Tensor]], None] | None = None,
    checkpoint_fn: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int | None = None,
    resume_state: Mapping[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    log_every: int = 20,
    augment: bool = True,
) -> dict[str, Any]:
    """Train ``model`` (already on ``device``, possibly DDP-wrapped) and return final metrics
    ``{"top1", "top5", "loss", "train_loss", "train_acc", "best_top1", ...}``."""
    config = RetrainConfig.from_dict(config)
    reporter = reporter or NullReporter()
    device = torch.device(device)
    wrapped = getattr(model, "module", None)  # DistributedDataParallel's inner model
    inner = wrapped if isinstance(wrapped, nn.Module) else model
    # NHWC is ~2× faster for MBConv on CPU; left alone under DDP (its buckets hold the params)
    fmt = torch.channels_last if device.type == "cpu" and inner is model else None
    if fmt is not None:
        model.to(memory_format=fmt)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.wd)
    bs = config.batch_size
    per_epoch = loop.num_batches(len(train_data) // world_size, bs)
    total = config.epochs * per_epoch
    st: dict[str, Any] = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "accum": {"loss": 0.0, "correct": 0, "n": 0, "seconds": 0.0},
        "history": [],
        "best_top1": -1.0,
    }
    if resume_state is not None:
        rs = resume_state
        loop.check_checkpoint(rs, "retrain", CHECKPOINT_VERSION)
        inner.load_state_dict(rs["model"])
        opt.load_state_dict(rs["opt"])
        loop.set_rng_state(rs["rng"], device)
        for k in ("epoch", "step_in_epoch", "global_step"):
            st[k] = int(rs[k])
        st["accum"] = dict(rs["accum"])
        st["history"] = list(rs["history"])
        st["best_top1"] = float(rs["best_top1"])

    emit = loop.step_emitter(reporter, st)

    def state() -> dict[str, Any]:
        copied: dict[str, Any] = loop.snapshot(
            {
                "version": CHECKPOINT_VERSION,
                "kind": "retrain",
                "config": config.to_dict(),
                "model": inner.state_dict(),
                "opt": opt.state_dict(),
                "rng": loop.rng_state(device),
                "epoch": st["epoch"],
                "step_in_epoch": st["step_in_epoch"],
                "global_step": st["global_step"],
                "accum": st["accum"],
                "history": st["history"],
                "best_top1": st["best_top1"],
            }
        )
        return copied

    model.train()
    t_start = time.perf_counter()
    while st["epoch"] < config.epochs:
        epoch = st["epoch"]
        batches = loop.epoch_batches(
            len(train_data), bs, loop.mix_seed(config.seed, epoch, 2), rank, world_size
        )
        acc = st["accum"]
        t0 = time.perf_counter()
        for s in range(st["step_in_epoch"], len(batches)):
            x, y = fetch_batch(train_data, batches[s])
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if augment:
                x = _augment(
                    x,
                    torch.Generator().manual_seed(loop.mix_seed(config.seed, 9, st["global_step"])),
                )
            if fmt is not None:
                x = x.contiguous(memory_format=fmt)
            lr = loop.cosine_lr(st["global_step"], total, config.lr, config.lr_min)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            torch.autograd.backward(loss)  # = loss.backward(), which torch leaves unannotated
            if grad_sync is not None:
                grad_sync([p.grad for p in params if p.grad is not None])
            opt.step()
            correct = int((logits.detach().argmax(1) == y).sum())
            acc["loss"] += float(loss.detach()) * len(y)
            acc["correct"] += correct
            acc["n"] += len(y)
            st["global_step"] += 1
            st["step_in_epoch"] = s + 1
            if st["global_step"] % max(1, log_every) == 0:
                emit(
                    "step",
                    phase="retrain",
                    epoch=epoch,
                    step=s,
                    loss=float(loss.detach()),
                    acc=correct / len(y),
                    lr=lr,
                )
            if (
                checkpoint_fn is not None
                and checkpoint_every
                and st["global_step"] % checkpoint_every == 0
            ):
                checkpoint_fn(state())
            if reporter.should_stop():
                raise Stopped(f"retrain stopped at global step {st['global_step']}")
        acc["seconds"] += time.perf_counter() - t0
        if config.precise_bn:
            _precise_bn(inner, train_data, config.precise_bn, bs, device, fmt, config.seed)
        ev = evaluate(model, val_data, bs, device)
        record = {
            "epoch": epoch,
            "train_loss": acc["loss"] / max(acc["n"], 1),
            "train_acc": acc["correct"] / max(acc["n"], 1),
            "val_loss": ev["loss"],
            "val_acc": ev["top1"],
            "top1": ev["top1"],
            "top5": ev["top5"],
            "lr": loop.cosine_lr(max(st["global_step"] - 1, 0), total, config.lr, config.lr_min),
            "epoch_seconds": acc["seconds"],
        }
        emit("epoch", **record)
        st["history"].append(record)
        st["best_top1"] = max(st["best_top1"], ev["top1"])
        st["epoch"] += 1
        st["step_in_epoch"] = 0
        st["accum"] = {"loss": 0.0, "correct": 0, "n": 0, "seconds": 0.0}
        if checkpoint_fn is not None:
            checkpoint_fn(state())
        if reporter.should_stop():
            raise Stopped(f"retrain stopped after epoch {epoch}")

    last = st["history"][-1] if st["history"] else evaluate(model, val_data, bs, device)
    return {
        "top1": last.get("top1"),
        "top5": last.get("top5"),
        "loss": last.get("val_loss", last.get("loss")),
        "train_loss": last.get("train_loss"),
        "train_acc": last.get("train_acc"),
        "best_top1": st["best_top1"] if st["history"] else last.get("top1"),
        "epochs": config.epochs,
        "global_steps": st["global_step"],
        "train_seconds": sum(h["epoch_seconds"] for h in st["history"]),
        "wall_seconds": time.perf_counter() - t_start,
        "history": st["history"],
    }
