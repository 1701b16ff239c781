"""Exact mult-add and parameter counts, by forward hooks and in closed form.

Convention (DenseNAS, docs/algorithm.md §FLOPs): FLOPs are the *mult-adds of convolution and
linear layers* — ``k·k·C_in/groups·C_out·H_out·W_out`` per conv, ``in·out`` per linear, per
sample. Batch norm, activations, pooling, residual additions and biases are not counted.
Parameters are every trainable tensor, BN affine weights included.

Two ways to get the same number:

* :func:`count_flops_params` runs a model once with hooks on ``Conv2d``/``Linear`` (works for any
  module, including a built network);
* :func:`op_mult_adds` computes one candidate op at one shape in closed form (no torch, cached),
  which is what cost tables need for thousands of ops. Tests hold the two equal on built ops.

:func:`supernet_bound` adds the closed forms up over a whole search space (every candidate op of
every row, separate weights): what the service checks against its limits before it builds
anything for a user's space.

Besides the op codes of :mod:`densenas_core.ops`, :func:`op_mult_adds` knows two pseudo-ops that
cost tables need for the fixed parts of a network: ``conv3x3`` (the stem conv) and ``linear``
(global pooling + the classifier; ``c_in`` features → ``c_out`` classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .network import build_network
from .ops import OpError, parse_op
from .presets import get_arch

if TYPE_CHECKING:
    from .spaces import SearchSpace

#: pseudo-op codes used for the fixed stem conv and the classifier in cost tables
STEM_OP = "conv3x3"
CLASSIFIER_OP = "linear"


# -- closed form -------------------------------------------------------------------------------


def out_size(in_size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded odd-kernel conv (or a 1×1 conv) at ``stride``."""
    return math.ceil(in_size / stride)


def conv_mult_adds(c_in: int, c_out: int, kernel: int, out_hw: int, groups: int = 1) -> int:
    return kernel * kernel * (c_in // groups) * c_out * out_hw * out_hw


def _conv_params(c_in: int, c_out: int, kernel: int, groups: int = 1) -> int:
    return kernel * kernel * (c_in // groups) * c_out


@cache
def op_mult_adds(
    code: str, c_in: int, c_out: int, stride: int, in_size: int, batch: int = 1
) -> int:
    """Mult-adds of ``code`` mapping c_in × in_size² → c_out at ``stride``, times ``batch``."""
    if code == CLASSIFIER_OP:
        return batch * c_in * c_out
    ho = out_size(in_size, stride)
    if code == STEM_OP:
        return batch * conv_mult_adds(c_in, c_out, 3, ho)
    spec = parse_op(code)
    if spec.kind == "skip":
        if c_in != c_out or stride != 1:
            raise OpError(f"skip cannot map {c_in}→{c_out} at stride {stride}")
        return 0
    if spec.kind == "conv1x1":
        return batch * conv_mult_adds(c_in, c_out, 1, ho)
    if spec.kind == "mbconv":
        mid = c_in * spec.expand
        total = 0
        if spec.expand != 1:
            total += conv_mult_adds(c_in, mid, 1, in_size)
        total += conv_mult_adds(mid, mid, spec.kernel, ho, groups=mid)
        total += conv_mult_adds(mid, c_out, 1, ho)
        return batch * total
    shortcut = 0 if (stride == 1 and c_in == c_out) else conv_mult_adds(c_in, c_out, 1, ho)
    if spec.kind == "basic":
        return batch * (
            conv_mult_adds(c_in, c_out, 3, ho) + conv_mult_adds(c_out, c_out, 3, ho) + shortcut
        )
    if spec.kind == "bottleneck":
        mid = max(1, c_out // 4)
        return batch * (
            conv_mult_adds(c_in, mid, 1, in_size)
            + conv_mult_adds(mid, mid, 3, ho)
            + conv_mult_adds(mid, c_out, 1, ho)
            + shortcut
        )
    raise OpError(f"no mult-add formula for op {code!r}")  # pragma: no cover


@cache
def op_params(code: str, c_in: int, c_out: int, stride: int) -> int:
    """Trainable parameters of op ``code`` as built by ``build_op(..., affine=True)``.

    ``conv3x3`` counts conv + BN; ``linear`` counts weight + bias of the classifier.
    """
    if code == CLASSIFIER_OP:
        return c_in * c_out + c_out
    if code == STEM_OP:
        return _conv_params(c_in, c_out, 3) + 2 * c_out
    spec = parse_op(code)
    if spec.kind == "skip":
        return 0
    if spec.kind == "conv1x1":
        return _conv_params(c_in, c_out, 1) + 2 * c_out
    if spec.kind == "mbconv":
        mid = c_in * spec.expand
        total = 0
        if spec.expand != 1:
            total += _conv_params(c_in, mid, 1) + 2 * mid
        total += _conv_params(mid, mid, spec.kernel, groups=mid) + 2 * mid
        total += _conv_params(mid, c_out, 1) + 2 * c_out
        return total
    shortcut = 0 if (stride == 1 and c_in == c_out) else _conv_params(c_in, c_out, 1) + 2 * c_out
    if spec.kind == "basic":
        return (
            _conv_params(c_in, c_out, 3)
            + 2 * c_out
            + _conv_params(c_out, c_out, 3)
            + 2 * c_out
            + shortcut
        )
    if spec.kind == "bottleneck":
        mid = max(1, c_out // 4)
        return (
            _conv_params(c_in, mid, 1)
            + 2 * mid
            + _conv_params(mid, mid, 3)
            + 2 * mid
            + _conv_params(mid, c_out, 1)
            + 2 * c_out
            + shortcut
        )
    raise OpError(f"no parameter formula for op {code!r}")  # pragma: no cover


def supernet_bound(
    space: SearchSpace,
    input_size: int | None = None,
    *,
    in_channels: int = 3,
    num_classes: int = 1000,
) -> tuple[int, int]:
    """(mult-adds of one image, parameters) of the supernet of ``space`` with *every* candidate
    op of every row and a tail conv on every tail path, with separate (not entangled) weights.

    An upper bound on what :class:`~densenas_core.supernet.SuperNet` builds and on what any step
    runs; computed from the block table alone (no modules, no caches filled: the per-op
    formulas are called unwrapped, so user-given shapes do not accumulate in this process).
    """
    mult_adds = _op_mult_adds_raw
    params = _op_params_raw
    res = input_size or space.input_size
    blocks = space.blocks
    size = [b.size(res) for b in blocks]
    c0, stride0 = space.stem.channels, space.stem.stride
    total_ma = mult_adds(STEM_OP, in_channels, c0, stride0, res)
    total_p = params(STEM_OP, in_channels, c0, stride0)
    if space.stem.fixed_op:
        total_ma += mult_adds(space.stem.fixed_op, c0, c0, 1, size[0])
        total_p += params(space.stem.fixed_op, c0, c0, 1)
    tail = len(blocks) - 1
    for p in space.paths:
        c_in, c_out = blocks[p.src].channels, blocks[p.dst].channels
        codes = ("conv1x1",) if p.dst == tail else space.align_ops
        for code in codes:
            total_ma += mult_adds(code, c_in, c_out, p.stride, size[p.src])
            total_p += params(code, c_in, c_out, p.stride)
    for b in space.routing_blocks:
        if not b.num_layers:
            continue
        row_ma = sum(
            mult_adds(code, b.channels, b.channels, 1, size[b.index]) for code in space.layer_ops
        )
        row_p = sum(params(code, b.channels, b.channels, 1) for code in space.layer_ops)
        total_ma += b.num_layers * row_ma
        total_p += b.num_layers * row_p
    total_ma += mult_adds(CLASSIFIER_OP, space.tail_channels, num_classes, 1, 1)
    total_p += params(CLASSIFIER_OP, space.tail_channels, num_classes, 1)
    return total_ma, total_p


_op_mult_adds_raw = op_mult_adds.__wrapped__
_op_params_raw = op_params.__wrapped__


# -- hooks ---------------------------------------------------------------------------------------


def _conv_hook_count(m: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    n, c_out, h, w = out.shape
    return n * kh * kw * (m.in_channels // m.groups) * c_out * h * w


def _linear_hook_count(m: nn.Linear, out: torch.Tensor) -> int:
    return (out.numel() // m.out_features) * m.in_features * m.out_features


def _normalise_shape(input_shape: int | Sequence[int], in_channels: int) -> tuple[int, ...]:
    if isinstance(input_shape, int):
        return (1, in_channels, input_shape, input_shape)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        return (1, in_channels) + shape
    if len(shape) == 3:
        return (1,) + shape
    if len(shape) == 4:
        return shape
    raise ValueError(
        f"input_shape: expected an int, (H, W), (C, H, W) or (N, C, H, W), got {input_shape!r}"
    )


def count_flops_params(
    model: nn.Module | Any,
    input_shape: int | Sequence[int] = 224,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
) -> tuple[int, int]:
    """(mult-adds, parameters) of ``model`` for one forward pass at ``input_shape``.

    ``input_shape`` is ``(C, H, W)`` (batch 1), ``(N, C, H, W)`` (mult-adds for the whole batch),
    ``(H, W)`` or a square size. ``model`` may also be an architecture (``Architecture``, its
    dict, a preset name or a file path), which is then built at that resolution first.
    """
    if not isinstance(model, nn.Module):
        arch = get_arch(model)
        in_channels = arch.in_channels
        shape = _normalise_shape(input_shape, in_channels)
        model = build_network(arch, num_classes=num_classes, input_size=shape[-1])
    else:
        shape = _normalise_shape(input_shape, in_channels)
    total = 0

    def hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += _conv_hook_count(m, out)
        elif isinstance(m, nn.Linear):
            total += _linear_hook_count(m, out)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, params


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
