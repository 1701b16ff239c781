"""Closed-form op mult-adds/params equal the hook count on the built module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densenas_core.flops import (
    CLASSIFIER_OP,
    STEM_OP,
    count_flops_params,
    op_mult_adds,
    op_params,
)
from densenas_core.ops import ConvBnAct, OpError, build_op

CASES = [
    # code, c_in, c_out, stride, size
    ("mb_k3_e1", 16, 16, 1, 112),
    ("mb_k3_e6", 16, 24, 2, 112),
    ("mb_k5_e3", 24, 24, 1, 28),
    ("mb_k7_e6", 24, 48, 2, 56),
    ("mb_k3_e3", 40, 40, 1, 13),  # odd size
    ("mb_k5_e6", 48, 56, 2, 27),  # odd size, stride 2 → ceil
    ("skip", 32, 32, 1, 14),
    ("basic", 32, 48, 2, 56),
    ("basic", 64, 64, 1, 14),
    ("basic", 64, 72, 1, 14),  # projection shortcut without stride
    ("bottleneck", 48, 192, 1, 56),
    ("bottleneck", 192, 288, 2, 55),
    ("conv1x1", 384, 1984, 1, 7),
]


@pytest.mark.parametrize("code,c_in,c_out,stride,size", CASES)
def test_op_mult_adds_matches_hooks(code, c_in, c_out, stride, size):
    op = build_op(code, c_in, c_out, stride)
    macs, params = count_flops_params(op, (c_in, size, size))
    assert op_mult_adds(code, c_in, c_out, stride, size) == macs
    assert op_params(code, c_in, c_out, stride) == params


def test_batch_multiplies_mult_adds():
    op = build_op("mb_k3_e6", 24, 32, 2)
    one, _ = count_flops_params(op, (1, 24, 28, 28))
    four, _ = count_flops_params(op, (4, 24, 28, 28))
    assert four == 4 * one == op_mult_adds("mb_k3_e6", 24, 32, 2, 28, batch=4)


def test_pseudo_ops_stem_and_classifier():
    stem = ConvBnAct(3, 16, kernel=3, stride=2)
    macs, params = count_flops_params(stem, (3, 224, 224))
    assert macs == op_mult_adds(STEM_OP, 3, 16, 2, 224) == 3 * 3 * 3 * 16 * 112 * 112
    assert params == op_params(STEM_OP, 3, 16, 2)
    fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1984, 1000))
    macs, params = count_flops_params(fc, (1984, 7, 7))
    assert macs == op_mult_adds(CLASSIFIER_OP, 1984, 1000, 1, 7) == 1984 * 1000
    assert params == op_params(CLASSIFIER_OP, 1984, 1000, 1)


def test_hooks_removed_and_mode_restored():
    op = build_op("basic", 8, 8, 1)
    op.train()
    count_flops_params(op, (8, 8, 8))
    assert op.training
    assert all(not m._forward_hooks for m in op.modules())


def test_skip_with_shape_change_is_an_error():
    with pytest.raises(OpError):
        op_mult_adds("skip", 8, 16, 1, 8)


def test_input_shape_forms():
    op = build_op("conv1x1", 3, 4, 1)
    a = count_flops_params(op, 8)
    b = count_flops_params(op, (8, 8))
    c = count_flops_params(op, (3, 8, 8))
    assert a == b == c == (3 * 4 * 64, 3 * 4 + 8)
    with pytest.raises(ValueError):
        count_flops_params(op, (1, 2, 3, 4, 5))


def test_dtype_follows_model():
    op = build_op("mb_k3_e3", 8, 8, 1).to(torch.float64)
    assert count_flops_params(op, (8, 6, 6))[0] == op_mult_adds("mb_k3_e3", 8, 8, 1, 6)


@pytest.mark.parametrize("name", ["mbv2-small", "resnet-small"])
def test_supernet_bound_covers_the_built_supernet(name, one_thread):
    """The closed-form bound the service admits spaces by: its mult-adds equal a forward pass
    that runs every candidate op of every row (mbv2: every tail conv exists; resnet: at most),
    and its parameters are at least those built (BN there is not affine)."""
    from densenas_core.flops import supernet_bound
    from densenas_core.spaces import get_space
    from densenas_core.supernet import SuperNet

    space = get_space(name)
    net = SuperNet(space, num_classes=10, input_size=16, entangled=False).eval()
    ma, params = supernet_bound(space, 16, num_classes=10)
    counted = 0

    def hook(m, _inp, out):
        nonlocal counted
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            counted += kh * kw * (m.in_channels // m.groups) * out[0].numel()
        else:
            counted += m.in_features * m.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, 16, 16), net.sample(k=100))  # every op of every row
    for h in handles:
        h.remove()
    if space.family == "mbv2":
        assert counted == ma
    else:
        assert 0.8 * ma <= counted <= ma
    built = sum(p.numel() for p in net.weight_parameters())
    assert built <= params <= 1.1 * built
