"""Evaluating one sub-network of a weight-sharing supernet honestly.

A supernet op runs only when it is sampled, so its batch-norm running statistics barely move
from their initial values (mean 0, variance 1); eval-mode BN on them is not the network the
weights describe (a search once reported 4 % on weights that give 28–30 % — one class predicted
for every image). Single-path NAS work therefore either recalibrates BN for the evaluated
sub-network on a few hundred training images before evaluating it, or evaluates with batch
statistics. Both are here, and both leave the supernet's stored statistics as they found them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

_BN = nn.modules.batchnorm._BatchNorm


def _bn_modules(model: nn.Module) -> list[_BN]:
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


def _running_stats(m: _BN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tracking BN's running mean, running variance and batch count."""
    mean, var, n = m.running_mean, m.running_var, m.num_batches_tracked
    # None only without track_running_stats, and _bn_modules keeps only the BNs that track
    assert mean is not None and var is not None and n is not None
    return mean, var, n


@contextmanager
def _saved_bn_state(bns: list[_BN]) -> Iterator[None]:
    saved = [(tuple(t.clone() for t in _running_stats(m)), m.momentum) for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (stats, mom) in zip(bns, saved):
                for t, old in zip(_running_stats(m), stats):
                    t.copy_(old)
                m.momentum = mom


def estimate_bn_stats(
    model: nn.Module, batches: Iterable[torch.Tensor], forward: Callable[[torch.Tensor], object]
) -> None:
    """Replace every BN's running statistics by their estimate over ``batches`` ("precise
    BN"): reset, then a cumulative average (``momentum=None``) of the per-batch mean and
    unbiased variance while ``forward(x)`` runs in train mode without gradients. Momenta and
    the train/eval mode are restored; the new statistics stay."""
    bns = _bn_modules(model)
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                forward(x)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)


@contextmanager
def recalibrated_bn(
    model: nn.Module, batches: Iterable[torch.Tensor], forward: Callable[[torch.Tensor], object]
) -> Iterator[None]:
    """Inside the block, ``model`` is in eval mode with BN statistics re-estimated by running
    ``forward(x)`` (train mode, no grad) over ``batches``.

    Every BN's running statistics are reset and accumulated as a cumulative average
    (``momentum=None``): the mean of the batch means and of the batch (unbiased) variances —
    with one batch, exactly that batch's statistics. BNs the forward does not reach keep their
    reset values, which no forward of the same sub-network reads. On exit the previous
    statistics, momenta and train/eval mode are restored.
    """
    was_training = model.training
    with _saved_bn_state(_bn_modules(model)):
        estimate_bn_stats(model, batches, forward)
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside the block BN normalises with each batch's own statistics (train mode) and the
    stored running statistics are left untouched."""
    was_training = model.training
    with _saved_bn_state(_bn_modules(model)):
        model.train()
        try:
            yield
        finally:
            model.train(was_training)
