"""Candidate operations, in the timm manner, addressed by short op codes.

Op codes are parsed once (``parse_op``) and built by one factory (``build_op``) so that search
spaces, latency tables and derived architectures all speak the same vocabulary. Each op kind
is an :class:`OpKind` in the registry :data:`OP_KINDS`, added by the ``@register_op(name)``
decorator on its builder:

* ``mb_k{k}_e{t}`` — MobileNetV2 inverted residual, kernel k, expansion t
* ``skip``         — identity (only where the shapes already match)
* ``basic``        — ResNet basic block (two 3×3 convs)
* ``bottleneck``   — ResNet bottleneck (1×1 → 3×3 → 1×1, mid width = C_out / 4)
* ``conv1x1``      — 1×1 conv + BN + activation (the fixed tail projection)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

_MB = re.compile(r"^mb_k(?P<k>[1-9][0-9]*)_e(?P<e>[1-9][0-9]*)$")


class OpError(ValueError):
    """An op code that does not exist or cannot map the requested shapes."""


@dataclass(frozen=True)
class OpSpec:
    kind: str  # "mbconv" | "skip" | "basic" | "bottleneck" | "conv1x1"
    kernel: int = 3
    expand: int = 1

    @property
    def code(self) -> str:
        if self.kind == "mbconv":
            return f"mb_k{self.kernel}_e{self.expand}"
        return self.kind


@lru_cache(maxsize=4096)  # bounded: codes come from users' space descriptions
def parse_op(code: str) -> OpSpec:
    kind = OP_KINDS.get(code)
    if kind is not None and not kind.parametric:
        return OpSpec(code)
    m = _MB.match(code)
    if not m:
        raise OpError(
            f"unknown op code {code!r}: expected mb_k<kernel>_e<expansion>, skip, basic, "
            "bottleneck or conv1x1"
        )
    k, e = int(m["k"]), int(m["e"])
    if k % 2 == 0:
        raise OpError(f"op {code!r}: kernel size must be odd, got {k}")
    return OpSpec("mbconv", kernel=k, expand=e)


def _act(name: str) -> nn.Module:
    return nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


class ConvBnAct(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        act: str | None = "relu6",
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)
        self.act = _act(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn(self.conv(x)))
        return y


class MBConv(nn.Module):
    """Inverted residual: [1×1 expand, BN, ReLU6] → k×k depthwise, BN, ReLU6 → 1×1 project, BN.

    The expansion conv is omitted when t = 1; the residual is used iff output shape == input shape.
    """

    def __init__(
        self, c_in: int, c_out: int, *, stride: int, kernel: int, expand: int, affine: bool = True
    ) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_residual = stride == 1 and c_in == c_out
        self.conv_pw: nn.Conv2d | None
        if expand != 1:
            self.conv_pw = nn.Conv2d(c_in, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid, affine=affine)
            self.act1 = nn.ReLU6(inplace=True)
        else:
            self.conv_pw = None
        self.conv_dw = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, affine=affine)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv_pwl = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = x
        if self.conv_pw is not None:
            y = self.act1(self.bn1(self.conv_pw(y)))
        y = self.act2(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.has_residual else y


class _Shortcut(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool) -> None:
        super().__init__()
        self.proj: nn.Sequential | None
        if stride == 1 and c_in == c_out:
            self.proj = None
        else:
            self.proj = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out, affine=affine)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return x
        y: torch.Tensor = self.proj(x)
        return y


class BasicBlock(nn.Module):
    """ResNet basic block: 3×3 (stride s) → BN → ReLU → 3×3 → BN, plus shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, affine: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, affine=affine)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, affine=affine)
        self.shortcut = _Shortcut(c_in, c_out, stride, affine)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        out: torch.Tensor = self.act(y + self.shortcut(x))
        return out


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1×1 (C_out/4) → 3×3 stride s → 1×1 (C_out), plus shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, affine: bool = True) -> None:
        super().__init__()
        mid = max(1, c_out // 4)
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, affine=affine)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, affine=affine)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, affine=affine)
        self.shortcut = _Shortcut(c_in, c_out, stride, affine)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        out: torch.Tensor = self.act(y + self.shortcut(x))
        return out


# -- the op registry ---------------------------------------------------------------------------

#: ``build(spec, c_in, c_out, stride, affine=..., act=...)`` → the op's module
OpBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class OpKind:
    """One kind of candidate op (``OpSpec.kind``) and how its module is built.

    ``parametric``: its codes carry parameters (``mb_k{k}_e{t}``) and are read by
    :func:`parse_op`'s pattern; otherwise the kind's name is its only code.
    ``same_shape_only``: it can only map C→C at stride 1 (an identity).
    """

    name: str
    build: OpBuilder
    parametric: bool = False
    same_shape_only: bool = False


#: every op kind by name, filled by :func:`register_op`
OP_KINDS: dict[str, OpKind] = {}


def register_op(
    name: str, *, parametric: bool = False, same_shape_only: bool = False
) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator: register ``build`` as the builder of op kind ``name``."""

    def register(build: OpBuilder) -> OpBuilder:
        if name in OP_KINDS:
            raise ValueError(f"op kind {name!r} is already registered")
        OP_KINDS[name] = OpKind(name, build, parametric, same_shape_only)
        return build

    return register


@register_op("mbconv", parametric=True)
def _mbconv(
    spec: OpSpec, c_in: int, c_out: int, stride: int, *, affine: bool, act: str
) -> nn.Module:
    return MBConv(c_in, c_out, stride=stride, kernel=spec.kernel, expand=spec.expand, affine=affine)


@register_op("skip", same_shape_only=True)
def _skip(spec: OpSpec, c_in: int, c_out: int, stride: int, *, affine: bool, act: str) -> nn.Module:
    return nn.Identity()


@register_op("basic")
def _basic(
    spec: OpSpec, c_in: int, c_out: int, stride: int, *, affine: bool, act: str
) -> nn.Module:
    return BasicBlock(c_in, c_out, stride=stride, affine=affine)


@register_op("bottleneck")
def _bottleneck(
    spec: OpSpec, c_in: int, c_out: int, stride: int, *, affine: bool, act: str
) -> nn.Module:
    return Bottleneck(c_in, c_out, stride=stride, affine=affine)


@register_op("conv1x1")
def _conv1x1(
    spec: OpSpec, c_in: int, c_out: int, stride: int, *, affine: bool, act: str
) -> nn.Module:
    return ConvBnAct(c_in, c_out, kernel=1, stride=stride, act=act, affine=affine)


def _maps(kind: OpKind, c_in: int, c_out: int, stride: int) -> bool:
    return not (kind.same_shape_only and (c_in != c_out or stride != 1))


def op_is_valid(code: str, c_in: int, c_out: int, stride: int) -> bool:
    return _maps(OP_KINDS[parse_op(code).kind], c_in, c_out, stride)


def build_op(
    code: str, c_in: int, c_out: int, stride: int, *, affine: bool = True, act: str = "relu6"
) -> nn.Module:
    """Build the module for ``code`` mapping ``c_in``→``c_out`` at ``stride``."""
    spec = parse_op(code)
    kind = OP_KINDS.get(spec.kind)
    if kind is None:  # pragma: no cover - parse_op only returns registered kinds
        raise OpError(f"no builder for op {code!r}")
    if not _maps(kind, c_in, c_out, stride):
        raise OpError(f"{spec.code} cannot map {c_in}→{c_out} at stride {stride}")
    return kind.build(spec, c_in, c_out, stride, affine=affine, act=act)


# -- weight-entangled candidate rows (the supernet's default) -------------------------------------


class MBKernel(nn.Module):
    """The largest MBConv of a row: every MBConv candidate of the row is a slice of it.

    An op with kernel k and expansion t uses the first ``c_in·t`` hidden channels and the centre
    k×k of the depthwise kernel (the "super-kernel" of Single-Path NAS / OFA). All candidates of a
    row then train one set of weights, so the sub-network sampled at one step computes features
    the next step's sample can build on. With independent weights each op of a 7-way row sees
    1/7 of the updates and its features are uncorrelated with its neighbours' — the reason
    per-step sampling learned many times slower than one fixed sample (docs/DESIGN.md).

    ``nested_init``: the taps outside the smallest kernel and the projection columns beyond the
    smallest expansion start at zero, so at initialisation every MBConv candidate of the row
    computes the same function; they grow apart as those weights learn.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        expand: int,
        *,
        small_kernel: int | None = None,
        small_expand: int | None = None,
        nested_init: bool = True,
    ) -> None:
        super().__init__()
        mid = c_in * expand
        small_kernel = small_kernel or kernel
        small_expand = small_expand or expand
        self.kernel, self.expand = kernel, expand
        self.pw = nn.Parameter(torch.empty(mid, c_in, 1, 1)) if expand != 1 else None
        self.dw = nn.Parameter(torch.empty(mid, 1, kernel, kernel))
        self.pwl = nn.Parameter(torch.empty(c_out, mid, 1, 1))
        for w in (self.pw, self.dw, self.pwl):
            if w is not None:
                nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        if nested_init:
            with torch.no_grad():
                c = kernel // 2
                ring = torch.ones(kernel, kernel, dtype=torch.bool)
                ring[
                    c - small_kernel // 2 : c + small_kernel // 2 + 1,
                    c - small_kernel // 2 : c + small_kernel // 2 + 1,
                ] = False
                self.dw[:, :, ring] = 0.0
                self.pwl[:, c_in * small_expand :] = 0.0


class SharedMBConv(nn.Module):
    """An MBConv candidate whose conv weights are a slice of its row's :class:`MBKernel`.

    BN stays per op (``affine=False``: statistics only), since each slice has its own activation
    statistics; shapes, FLOPs and the residual rule are those of :class:`MBConv`.
    """

    def __init__(
        self,
        shared: MBKernel,
        c_in: int,
        c_out: int,
        *,
        stride: int,
        kernel: int,
        expand: int,
        affine: bool = False,
    ) -> None:
        super().__init__()
        if kernel > shared.kernel or expand > shared.expand:
            raise OpError(
                f"mb_k{kernel}_e{expand} does not fit the row's "
                f"mb_k{shared.kernel}_e{shared.expand} kernel"
            )
        self.shared = shared
        self.stride, self.kernel, self.expand = stride, kernel, expand
        self.mid = c_in * expand
        off = (shared.kernel - kernel) // 2
        self._dw_slice = slice(off, off + kernel)
        self.has_residual = stride == 1 and c_in == c_out
        self.bn1 = nn.BatchNorm2d(self.mid, affine=affine) if expand != 1 else None
        self.bn2 = nn.BatchNorm2d(self.mid, affine=affine)
        self.bn3 = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, mid, s = self.shared, self.mid, self._dw_slice
        y: torch.Tensor = x
        if self.bn1 is not None:
            # bn1 exists iff expand != 1, and expand <= shared.expand, so the row has a pw kernel
            assert k.pw is not None
            y = F.relu6(self.bn1(F.conv2d(y, k.pw[:mid])))
        y = F.conv2d(
            y, k.dw[:mid, :, s, s], stride=self.stride, padding=self.kernel // 2, groups=mid
        )
        y = F.relu6(self.bn2(y))
        y = self.bn3(F.conv2d(y, k.pwl[:, :mid]))
        return y + x if self.has_residual else y


def build_row(
    codes: tuple[str, ...] | list[str],
    c_in: int,
    c_out: int,
    stride: int,
    *,
    act: str = "relu6",
    entangled: bool = True,
) -> nn.ModuleList:
    """The candidate ops of one supernet row (BN ``affine=False``).

    ``entangled``: the row's MBConv candidates share one :class:`MBKernel` (each op module
    holds it, so a sub-network of some of them still owns its weights); other ops, and rows
    with a single MBConv, are built as by :func:`build_op`.
    """
    specs = [parse_op(c) for c in codes]
    mbs = [s for s in specs if s.kind == "mbconv"]
    if not entangled or len(mbs) < 2:
        return nn.ModuleList(build_op(c, c_in, c_out, stride, affine=False, act=act) for c in codes)
    shared = MBKernel(
        c_in,
        c_out,
        max(s.kernel for s in mbs),
        max(s.expand for s in mbs),
        small_kernel=min(s.kernel for s in mbs),
        small_expand=min(s.expand for s in mbs),
    )
    return nn.ModuleList(
        SharedMBConv(shared, c_in, c_out, stride=stride, kernel=s.kernel, expand=s.expand)
        if s.kind == "mbconv"
        else build_op(c, c_in, c_out, stride, affine=False, act=act)
        for c, s in zip(codes, specs)
    )
