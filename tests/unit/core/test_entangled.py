"""Weight-entangled supernet rows: each MBConv candidate is an exact slice of its row's kernel."""

from __future__ import annotations

import pytest
import torch

from densenas_core.ops import MBConv, SharedMBConv, build_row
from densenas_core.spaces import MBV2_LAYER_OPS
from densenas_core.supernet import SuperNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "code,c_in,c_out,stride",
    [("mb_k3_e3", 8, 8, 1), ("mb_k5_e6", 8, 8, 1), ("mb_k7_e3", 8, 12, 2), ("mb_k3_e6", 6, 10, 2)],
)
def test_a_shared_op_computes_the_standalone_op_with_the_sliced_weights(code, c_in, c_out, stride):
    torch.manual_seed(0)
    row = build_row(
        ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6"),
        c_in,
        c_out,
        stride,
    )
    with torch.no_grad():
        for p in row.parameters():
            p.normal_()  # not the nested init: every tap and column non-zero
    op = next(
        m for m in row if isinstance(m, SharedMBConv) and f"mb_k{m.kernel}_e{m.expand}" == code
    )
    k, e = op.kernel, op.expand
    ref = MBConv(c_in, c_out, stride=stride, kernel=k, expand=e, affine=False)
    kern, mid, off = op.shared, c_in * e, (7 - k) // 2
    with torch.no_grad():
        ref.conv_pw.weight.copy_(kern.pw[:mid])
        ref.conv_dw.weight.copy_(kern.dw[:mid, :, off : off + k, off : off + k])
        ref.conv_pwl.weight.copy_(kern.pwl[:, :mid])
    x = torch.randn(4, c_in, 10, 10)
    torch.testing.assert_close(op(x), ref(x), rtol=1e-5, atol=1e-5)


def test_nested_init_makes_every_candidate_of_a_row_the_same_function():
    torch.manual_seed(0)
    row = build_row(MBV2_LAYER_OPS, 16, 16, 1)
    x = torch.randn(8, 16, 8, 8)
    outs = [m(x) for m in row if isinstance(m, SharedMBConv)]
    assert len(outs) == 6
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-5)


def test_an_op_trains_only_its_slice_of_the_kernel():
    torch.manual_seed(0)
    row = build_row(MBV2_LAYER_OPS, 8, 8, 1)
    small = row[0]  # mb_k3_e3
    small(torch.randn(2, 8, 6, 6)).square().sum().backward()
    k = small.shared
    assert k.pw.grad[:24].abs().sum() > 0 and (k.pw.grad[24:] == 0).all()
    inside = torch.zeros(7, 7, dtype=torch.bool)
    inside[2:5, 2:5] = True
    assert (k.dw.grad[:, :, ~inside] == 0).all() and k.dw.grad[:24, :, inside].abs().sum() > 0
    assert (k.dw.grad[24:] == 0).all()


def test_entangled_supernet_shares_one_kernel_per_row_and_separate_has_none():
    ent = SuperNet("mbv2-small", 10, in_channels=1)
    sep = SuperNet("mbv2-small", 10, in_channels=1, entangled=False)
    kernels = {id(op.shared) for row in ent.layers for op in row if isinstance(op, SharedMBConv)}
    assert len(kernels) == len(ent.layers)
    assert not any(isinstance(op, SharedMBConv) for row in sep.layers for op in row)
    n = lambda net: sum(p.numel() for p in net.weight_parameters())  # noqa: E731
    assert n(ent) < n(sep) / 3  # one kernel per row instead of six ops
