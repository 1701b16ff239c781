"""The standalone network built from an architecture document (for retraining and export)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .document import Architecture, BlockDoc
from .ops import ConvBnAct, build_op
from .presets import get_arch


class ArchBlock(nn.Module):
    """One derived routing block: its alignment op, then its basic layers."""

    def __init__(self, b: BlockDoc, act: str) -> None:
        super().__init__()
        self.align = build_op(b.align_op, b.c_in, b.c_out, b.stride, act=act)
        self.layers = nn.Sequential(*(build_op(c, b.c_out, b.c_out, 1, act=act) for c in b.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.layers(self.align(x))
        return y


class DenseNASNet(nn.Module):
    """stem → blocks → [1×1 head] → global average pool → classifier.

    Module names are stable (``stem``, ``blocks.{i}.align``, ``blocks.{i}.layers.{j}``,
    ``head``, ``classifier``) so checkpoints and ONNX graphs are readable.
    """

    def __init__(self, arch: Architecture, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        act = arch.stem.act
        self.stem = ConvBnAct(
            arch.in_channels, arch.stem.c_out, kernel=3, stride=arch.stem.stride, act=act
        )
        self.blocks = nn.Sequential(*(ArchBlock(b, act) for b in arch.blocks))
        self.head = (
            ConvBnAct(arch.tail.c_in, arch.tail.c_out, kernel=1, act=act)
            if arch.tail_has_conv
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(arch.tail.c_out, arch.num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.head(self.blocks(self.stem(x)))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(x)), 1)
        logits: torch.Tensor = self.classifier(self.dropout(x))
        return logits


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def build_network(
    arch: Architecture | Mapping[str, Any] | str,
    num_classes: int | None = None,
    input_size: int | None = None,
    in_channels: int | None = None,
    *,
    dropout: float = 0.0,
) -> DenseNASNet:
    """A standalone network (BN affine, fresh weights) for ``arch``.

    ``num_classes``/``input_size``/``in_channels`` override the document's values (e.g. a
    DenseNAS-C retrained on Fashion-MNIST: ``in_channels=1, num_classes=10, input_size=28``);
    the network itself accepts any resolution (global pooling), ``input_size`` is recorded on
    ``model.arch`` for summaries.
    """
    a = get_arch(arch)
    changes = {
        k: v
        for k, v in (
            ("num_classes", num_classes),
            ("input_size", input_size),
            ("in_channels", in_channels),
        )
        if v is not None
    }
    if changes:
        a = a.replace(**changes)
    return DenseNASNet(a, dropout=dropout)
