"""Honest evaluation of a sub-network: BN recalibrated, or batch statistics (evaluation.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densenas_core.evaluation import batch_statistics, recalibrated_bn

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False),
        nn.BatchNorm2d(3, affine=False),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
    )


def _direct(net: nn.Sequential, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor):
    h = net[0](x)
    h = (h - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + net[1].eps)
    return net[3](h.flatten(1))


def test_recalibrated_eval_equals_a_direct_computation_and_restores_the_stats():
    net = _toy()
    bn = net[1]
    with torch.no_grad():  # stale statistics, as a rarely sampled supernet op has
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
    calib = [torch.randn(16, 2, 6, 6) * 2 + 1, torch.randn(8, 2, 6, 6) * 0.5 - 1]
    x = torch.randn(4, 2, 6, 6)
    with torch.no_grad():
        feats = [net[0](c) for c in calib]
        # momentum=None: the cumulative average of the per-batch mean and unbiased variance
        mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
        var = torch.stack([f.transpose(0, 1).flatten(1).var(1, unbiased=True) for f in feats]).mean(
            0
        )
        want = _direct(net, x, mean, var)
        with recalibrated_bn(net, calib, net):
            assert not net.training
            got = net(x)
            torch.testing.assert_close(bn.running_mean, mean)
            torch.testing.assert_close(bn.running_var, var)
    torch.testing.assert_close(got, want)
    assert net.training  # the mode it was in
    assert (bn.running_mean == 5.0).all() and (bn.running_var == 9.0).all()
    assert bn.momentum == 0.1


def test_batch_statistics_normalise_each_batch_and_leave_running_stats_alone():
    net = _toy().eval()
    x = torch.randn(8, 2, 6, 6) * 3
    with torch.no_grad(), batch_statistics(net):
        got = net(x)
        h = net[0](x)
        want = _direct(
            net, x, h.mean((0, 2, 3)), h.transpose(0, 1).flatten(1).var(1, unbiased=False)
        )
    torch.testing.assert_close(got, want)
    assert not net.training
    assert (net[1].running_mean == 0).all() and (net[1].running_var == 1).all()
    assert int(net[1].num_batches_tracked) == 0
