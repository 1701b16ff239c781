"""Documents the control plane stores: a valid architecture and latency tables for it or for a
whole search space (made-up timings)."""

from __future__ import annotations

from typing import Any


def small_arch_doc(name: str = "test-arch") -> dict[str, Any]:
    """A valid architecture document (DenseNAS-C at 32 px, 10 classes)."""
    from densenas_core.arch import get_arch

    return get_arch("densenas-c").replace(input_size=32, num_classes=10, name=name).to_dict()


def latency_table_doc(
    arch_doc: dict[str, Any], ms_per_op: float = 0.5, device_name: str = "test-cpu"
) -> dict[str, Any]:
    """A latency table with an entry for every op of ``arch_doc`` (``ms_per_op`` each)."""
    from densenas_core.arch import get_arch, op_sites
    from densenas_core.latency import LatencyStat, LatencyTable

    arch = get_arch(arch_doc)
    table = LatencyTable(
        device_name=device_name, device_kind="cpu", batch=1, input_size=arch.input_size
    )
    for s in op_sites(arch, arch.input_size):
        table.entries[table.key(s.op, s.c_in, s.c_out, s.stride, s.h, s.w)] = LatencyStat(
            ms_per_op, ms_per_op, ms_per_op, 0.0, 10
        )
    return table.to_dict()


def space_latency_table_doc(
    space: str = "mbv2-small",
    input_size: int = 32,
    in_channels: int = 1,
    num_classes: int = 10,
    ms_per_mmadd: float = 1.0,
) -> dict[str, Any]:
    """A latency table covering every candidate op of ``space`` (latency ∝ mult-adds)."""
    from densenas_core.flops import op_mult_adds
    from densenas_core.latency import LatencyStat, LatencyTable, space_op_signatures
    from densenas_core.spaces import get_space

    table = LatencyTable(
        device_name="proportional", device_kind="cpu", batch=1, input_size=input_size
    )
    for sig in space_op_signatures(
        get_space(space), input_size, in_channels=in_channels, num_classes=num_classes
    ):
        ms = op_mult_adds(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h) * ms_per_mmadd / 1e6
        table.entries[table.key(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h, sig.w)] = (
            LatencyStat(ms, ms, ms, 0.0, 5)
        )
    return table.to_dict()
