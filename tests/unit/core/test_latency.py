"""Latency tables: keys, JSON round trip, lookup, merge, profiling a small space, prediction."""

from __future__ import annotations

import json
from dataclasses import astuple

import pytest
import torch

from densenas_core.arch import architecture_from_choices, build_network, get_arch, op_sites
from densenas_core.latency import (
    LatencyStat,
    LatencyTable,
    LatencyTableError,
    OpKey,
    OpSig,
    measure_network_latency,
    predict_latency,
    profile_space,
    space_op_signatures,
)
from densenas_core.spaces import get_space


def _table(**kw):
    t = LatencyTable(device_name="test-cpu", device_kind="cpu", batch=1, **kw)
    t.entries[t.key("mb_k3_e6", 16, 24, 2, 112, 112)] = LatencyStat(1.5, 1.2, 1.9, 0.2, 30)
    t.entries[t.key("skip", 24, 24, 1, 56, 56)] = LatencyStat(0.0, 0.0, 0.0, 0.0, 0)
    return t


def test_opkey_string_round_trip():
    k = OpKey("mb_k3_e6", 16, 24, 2, 112, 112, 32, "float16", "cuda")
    assert str(k) == "mb_k3_e6/16-24/s2/112x112/b32/float16/cuda"
    assert OpKey.parse(str(k)) == k
    with pytest.raises(ValueError, match="not an op key"):
        OpKey.parse("mb_k3_e6|16")


def test_table_json_round_trip_and_lookup():
    t = _table(input_size=224)
    doc = json.loads(json.dumps(t.to_dict()))
    assert doc["version"] == 1 and doc["entries"][0]["key"].startswith("mb_k3_e6/16-24")
    t2 = LatencyTable.from_dict(doc)
    assert t2 == t
    assert t2.get("mb_k3_e6", 16, 24, 2, 112, 112) == 1.5
    assert t2.stat("mb_k3_e6", 16, 24, 2, 112, 112).p90_ms == 1.9
    assert OpSig("skip", 24, 24, 1, 56, 56) in t2
    with pytest.raises(KeyError, match="mb_k5_e6/16-24/s2/112x112/b1/float32/cpu"):
        t2.get("mb_k5_e6", 16, 24, 2, 112, 112)


def test_table_from_dict_errors_name_the_field():
    doc = _table().to_dict()
    with pytest.raises(LatencyTableError, match="^version"):
        LatencyTable.from_dict({**doc, "version": 9})
    with pytest.raises(LatencyTableError, match="^device_kind"):
        LatencyTable.from_dict({**doc, "device_kind": "tpu"})
    bad = {**doc, "entries": [{"op": "x"}]}
    with pytest.raises(LatencyTableError, match=r"^entries\[0\]"):
        LatencyTable.from_dict(bad)


def test_merge_keeps_both_and_refuses_other_devices():
    a = _table(spaces=["a"])
    b = LatencyTable(device_name="test-cpu", device_kind="cpu", batch=1, spaces=["b"])
    b.entries[b.key("conv1x1", 384, 1984, 1, 7, 7)] = LatencyStat(0.3, 0.2, 0.4, 0.1, 5)
    b.entries[b.key("mb_k3_e6", 16, 24, 2, 112, 112)] = LatencyStat(9.0, 9.0, 9.0, 0.0, 5)
    m = a.merge(b)
    assert len(m) == 3 and m.spaces == ["a", "b"]
    assert m.get("mb_k3_e6", 16, 24, 2, 112, 112) == 1.5
    assert a.merge(b, overwrite=True).get("mb_k3_e6", 16, 24, 2, 112, 112) == 9.0
    other = LatencyTable(device_name="test-cpu", device_kind="cpu", batch=32)
    with pytest.raises(LatencyTableError, match="different conditions"):
        a.merge(other)


def test_space_signatures_mbv2_imagenet():
    space = get_space("mbv2-imagenet")
    sigs = space_op_signatures(space)
    assert len(sigs) == len(set(sigs))
    assert sigs[0] == OpSig("conv3x3", 3, 16, 2, 224, 224)
    assert sigs[1] == OpSig("mb_k3_e1", 16, 16, 1, 112, 112)
    assert sigs[-1] == OpSig("linear", 1984, 1000, 1, 7, 7)
    # 51 branches × 6 ops (distinct shapes), 13 blocks with layers × 7 ops, 3 tail convs
    assert sum(s.op.startswith("mb_") for s in sigs) == 1 + 51 * 6 + 13 * 6
    assert sum(s.op == "skip" for s in sigs) == 13
    assert sum(s.op == "conv1x1" for s in sigs) == 3
    # a derived network's ops are all in the table of its space
    assert {
        OpSig(s.op, s.c_in, s.c_out, s.stride, s.h, s.w) for s in op_sites(get_arch("densenas-c"))
    } <= set(sigs)


def test_space_signatures_resnet_tail_conv_only_when_widths_differ():
    sigs = space_op_signatures(get_space("resnet-imagenet"))
    tail = [s for s in sigs if s.op == "conv1x1"]
    assert {(s.c_in, s.c_out) for s in tail} == {(480, 512), (496, 512)}
    assert {
        OpSig(s.op, s.c_in, s.c_out, s.stride, s.h, s.w) for s in op_sites(get_arch("densenas-r1"))
    } <= set(sigs)


def test_profile_small_space_and_predict_vs_measured():
    torch.manual_seed(0)
    space = get_space("mbv2-small")
    seen = []
    threads = torch.get_num_threads()
    # one thread: on a shared CPU, oversubscribed OpenMP barriers make timings jump 10–100×
    table = profile_space(
        space,
        batch=1,
        warmup=1,
        repeats=3,
        num_classes=10,
        num_threads=1,
        progress=lambda i, n, s: seen.append((i, n)),
    )
    assert torch.get_num_threads() == threads and table.num_threads == 1
    sigs = space_op_signatures(space, num_classes=10)
    assert len(table) == len(sigs) and seen[-1] == (len(sigs), len(sigs))
    assert table.method == "cpu-perf_counter" and table.device_kind == "cpu"
    assert table.build_seconds is not None and table.build_seconds > 0
    st = table.stat(*astuple(sigs[2]))
    assert st.n == 3 and st.p10_ms <= st.median_ms <= st.p90_ms
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table

    path = [0, 1, 3, 5, 7, 9, space.tail.index]
    align = {
        (0, 1): "mb_k3_e6",
        (1, 3): "mb_k5_e6",
        (3, 5): "mb_k3_e3",
        (5, 7): "mb_k7_e3",
        (7, 9): "mb_k5_e3",
    }
    arch = architecture_from_choices(
        space, path, align, {3: ["mb_k3_e6", "mb_k3_e3"]}, num_classes=10
    )
    predicted = predict_latency(arch, table)
    assert predicted > 0
    measured = measure_network_latency(
        build_network(arch), (1, 3, 32, 32), warmup=2, repeats=5, num_threads=1
    )
    assert measured["n"] == 5 and measured["p10_ms"] <= measured["median_ms"]
    # sum of isolated ops vs the whole network: same order of magnitude on a CPU
    assert 0.2 < predicted / measured["median_ms"] < 5


def test_profile_filter_and_reuse():
    space = get_space("mbv2-small")
    first = profile_space(space, warmup=0, repeats=1, num_classes=10, ops_filter="mb_k3_e3")
    assert {k.op for k in first.entries} == {"mb_k3_e3"}
    calls = []
    full = profile_space(
        space,
        warmup=0,
        repeats=1,
        num_classes=10,
        table=first,
        ops_filter=lambda s: s.op in ("mb_k3_e3", "conv3x3"),
        progress=lambda i, n, s: calls.append(s.op),
    )
    assert calls == ["conv3x3"]  # mb_k3_e3 entries reused, not re-measured
    assert {k.op for k in full.entries} == {"mb_k3_e3", "conv3x3"}


def test_measure_network_latency_rejects_bad_shape():
    with pytest.raises(ValueError, match="input_shape"):
        measure_network_latency(torch.nn.Identity(), (3, 32, 32))


def test_bench_script_cpu_quick(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "latency_gpu.py"
    spec = importlib.util.spec_from_file_location("latency_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    summary = mod.main(["--out", str(tmp_path), "--cpu-quick"])
    assert summary["mode"] == "cpu-quick"
    assert (tmp_path / "summary.json").is_file()
    for info in summary["tables"]:
        table = LatencyTable.from_dict(json.loads((tmp_path / info["file"]).read_text()))
        assert len(table) == info["entries"] > 0
    e2e = summary["end_to_end"][0]
    assert e2e["predicted_ms"] > 0 and e2e["measured_median_ms"] > 0
