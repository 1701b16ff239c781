"""Batch norm over the global batch for data-parallel searches, on any device (gloo or NCCL).

A search on N workers should be the search on one worker with the same global batch: same
weights, same α/β, same derived architecture. Gradient averaging gives that only if every layer
computes what it would on the whole batch, and batch norm in training mode does not: each rank
would normalise with the statistics of its own shard. ``torch.nn.SyncBatchNorm`` fixes that for
GPU tensors only, and needs the model, which ``run_search`` builds inside core.

:func:`global_batch_norm` therefore swaps ``torch.nn.functional.batch_norm`` — what every
``nn.BatchNorm*`` module calls — for the duration of the loop in this worker process: in
training mode mean and variance come from all ranks (two differentiable all-reduces: the sum,
then the centred sum of squares, as a one-pass formula would lose precision), and the running
statistics are updated with the global values, so they too stay identical on every rank. Eval
mode is untouched. The backward of the all-reduce sums the statistics' gradients over ranks,
which with gradient averaging yields exactly the gradient of the global-batch mean loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def _global_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    momentum: float | None,
    eps: float,
) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce  # differentiable (sum in backward)

    c = x.shape[1]
    dims = [0, *range(2, x.dim())]
    shape = [1, c] + [1] * (x.dim() - 2)
    count = torch.full((1,), x.numel() // c, dtype=x.dtype, device=x.device)
    head = all_reduce(torch.cat([x.sum(dims), count]))
    total = head[c]
    mean = head[:c] / total
    centred = x - mean.view(shape)
    var = all_reduce((centred * centred).sum(dims)) / total
    y = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    if running_mean is not None and running_var is not None and momentum is not None:
        with torch.no_grad():
            n = float(total)
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(
                var.detach() * (n / max(n - 1.0, 1.0)), alpha=momentum
            )
    return y


@contextmanager
def global_batch_norm(world_size: int) -> Iterator[None]:
    """Within the block, training-mode batch norm uses the statistics of all ranks."""
    if world_size <= 1:
        yield
        return
    local = F.batch_norm

    def batch_norm(
        input,
        running_mean,
        running_var,
        weight=None,
        bias=None,
        training=False,
        momentum=0.1,
        eps=1e-5,
    ):
        if not training:
            return local(input, running_mean, running_var, weight, bias, training, momentum, eps)
        return _global_batch_norm(input, running_mean, running_var, weight, bias, momentum, eps)

    F.batch_norm = batch_norm
    try:
        with warnings.catch_warnings():
            # torch.distributed.nn.functional.all_reduce is "deprecated" for the functional
            # collectives, which have no autograd on CPU/gloo; it is the one that does.
            warnings.filterwarnings(
                "ignore", message=".*torch.distributed.nn.functional.all_reduce is deprecated.*"
            )
            yield
    finally:
        F.batch_norm = local
