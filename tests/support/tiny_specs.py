"""The tiny search space the worker tests run real searches and profiles on (seconds on CPU)."""

from __future__ import annotations

from typing import Any


def tiny_space(
    input_size: int = 8, align_ops: tuple[str, ...] = ("mb_k3_e3", "mb_k5_e3")
) -> dict[str, Any]:
    """Two stages (8, then 8 or 12 channels), one layer each, 16 tail channels."""
    return {
        "name": "tiny",
        "family": "mbv2",
        "input_size": input_size,
        "stem": {"channels": 4, "stride": 1},
        "stages": [
            {"stride": 2, "widths": [8], "num_layers": 1},
            {"stride": 1, "widths": [8, 12], "num_layers": 1},
        ],
        "tail_channels": 16,
        "align_ops": list(align_ops),
        "layer_ops": ["mb_k3_e3", "skip"],
    }
