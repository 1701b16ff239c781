"""The op registry builds the same modules as the if/elif factory it replaced (issue 13)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densenas_core.ops import OP_KINDS, OpError, build_op, op_is_valid, parse_op, register_op

SHAPES = ((8, 8, 1), (8, 16, 2))  # (c_in, c_out, stride)
# per code, for SHAPES × (affine True, False): (parameters, buffer elements, output C×H×W for a
# 9×9 input, modules), computed with the if/elif factory before the registry; None: invalid
BEFORE = {
    "skip": [(0, 0, (8, 9, 9), 1), (0, 0, (8, 9, 9), 1), None, None],
    "basic": [
        (1184, 34, (8, 9, 9), 7),
        (1152, 34, (8, 9, 9), 7),
        (3680, 99, (16, 5, 5), 10),
        (3584, 99, (16, 5, 5), 10),
    ],
    "bottleneck": [
        (92, 27, (8, 9, 9), 9),
        (68, 27, (8, 9, 9), 9),
        (448, 84, (16, 5, 5), 12),
        (368, 84, (16, 5, 5), 12),
    ],
    "conv1x1": [
        (80, 17, (8, 9, 9), 4),
        (64, 17, (8, 9, 9), 4),
        (160, 33, (16, 5, 5), 4),
        (128, 33, (16, 5, 5), 4),
    ],
    "mb_k3_e1": [
        (168, 34, (8, 9, 9), 6),
        (136, 34, (8, 9, 9), 6),
        (248, 50, (16, 5, 5), 6),
        (200, 50, (16, 5, 5), 6),
    ],
    "mb_k3_e3": [
        (712, 115, (8, 9, 9), 9),
        (600, 115, (8, 9, 9), 9),
        (920, 131, (16, 5, 5), 9),
        (792, 131, (16, 5, 5), 9),
    ],
    "mb_k3_e6": [
        (1408, 211, (8, 9, 9), 9),
        (1200, 211, (8, 9, 9), 9),
        (1808, 227, (16, 5, 5), 9),
        (1584, 227, (16, 5, 5), 9),
    ],
    "mb_k5_e3": [
        (1096, 115, (8, 9, 9), 9),
        (984, 115, (8, 9, 9), 9),
        (1304, 131, (16, 5, 5), 9),
        (1176, 131, (16, 5, 5), 9),
    ],
    "mb_k5_e6": [
        (2176, 211, (8, 9, 9), 9),
        (1968, 211, (8, 9, 9), 9),
        (2576, 227, (16, 5, 5), 9),
        (2352, 227, (16, 5, 5), 9),
    ],
    "mb_k7_e3": [
        (1672, 115, (8, 9, 9), 9),
        (1560, 115, (8, 9, 9), 9),
        (1880, 131, (16, 5, 5), 9),
        (1752, 131, (16, 5, 5), 9),
    ],
    "mb_k7_e6": [
        (3328, 211, (8, 9, 9), 9),
        (3120, 211, (8, 9, 9), 9),
        (3728, 227, (16, 5, 5), 9),
        (3504, 227, (16, 5, 5), 9),
    ],
}


def test_every_registered_kind_is_covered():
    assert set(OP_KINDS) == {"mbconv", "skip", "basic", "bottleneck", "conv1x1"}
    assert {parse_op(c).kind for c in BEFORE} == set(OP_KINDS)


@pytest.mark.parametrize("code", sorted(BEFORE))
def test_modules_are_what_the_if_elif_factory_built(code):
    got = []
    for c_in, c_out, stride in SHAPES:
        for affine in (True, False):
            if not op_is_valid(code, c_in, c_out, stride):
                with pytest.raises(OpError, match=f"{code} cannot map"):
                    build_op(code, c_in, c_out, stride, affine=affine)
                got.append(None)
                continue
            m = build_op(code, c_in, c_out, stride, affine=affine).eval()
            with torch.no_grad():
                y = m(torch.randn(2, c_in, 9, 9))
            got.append(
                (
                    sum(p.numel() for p in m.parameters()),
                    sum(b.numel() for b in m.buffers()),
                    tuple(y.shape[1:]),
                    len(list(m.modules())),
                )
            )
    assert got == BEFORE[code]


def test_conv1x1_takes_the_activation_and_registering_twice_fails():
    assert isinstance(build_op("conv1x1", 4, 4, 1, act="relu").act, nn.ReLU)
    assert isinstance(build_op("conv1x1", 4, 4, 1).act, nn.ReLU6)
    with pytest.raises(ValueError, match="already registered"):
        register_op("skip")(lambda *a, **k: nn.Identity())
    with pytest.raises(OpError, match="unknown op code 'mbconv'"):
        parse_op("mbconv")  # a parametric kind's name is not a code
