"""Architecture documents, presets (DenseNAS-C, R1–R3), standalone networks and ONNX export."""

from __future__ import annotations

import json

import pytest
import torch

from densenas_core.arch import (
    ARCH_PRESETS,
    ArchError,
    Architecture,
    arch_summary,
    architecture_from_choices,
    build_network,
    get_arch,
    op_sites,
    predict_cost,
    space_mismatches,
)
from densenas_core.flops import count_flops_params
from densenas_core.spaces import get_space


def test_densenas_c_matches_the_released_figures():
    """docs/algorithm.md §DenseNAS-C: 360.8 M mult-adds and 6.13 M parameters at 224², 1000
    classes."""
    model = build_network("densenas-c", num_classes=1000, input_size=224)
    macs, params = count_flops_params(model, (3, 224, 224))
    assert round(macs / 1e6, 1) == 360.8
    assert round(params / 1e6, 2) == 6.13
    assert (macs, params) == (360_808_256, 6_134_144)
    s = arch_summary("densenas-c")
    assert (s["mult_adds"], s["params"]) == (macs, params)
    assert s["depth"] == 19
    assert [b["out_size"] for b in s["blocks"]] == [112, 56, 28, 14, 14, 7, 7, 7]


def test_densenas_c_listing():
    a = ARCH_PRESETS["densenas-c"]
    assert [(b.c_in, b.c_out, b.align_op, b.stride, list(b.layers)) for b in a.blocks] == [
        (16, 16, "mb_k3_e1", 1, []),
        (16, 24, "mb_k3_e6", 2, []),
        (24, 48, "mb_k7_e6", 2, ["mb_k3_e3"]),
        (48, 72, "mb_k5_e6", 2, ["mb_k3_e6", "mb_k3_e3"]),
        (72, 128, "mb_k3_e6", 1, ["mb_k3_e3", "mb_k3_e3"]),
        (128, 160, "mb_k3_e6", 2, ["mb_k7_e3", "mb_k5_e6", "mb_k7_e3"]),
        (160, 176, "mb_k3_e3", 1, ["mb_k3_e6"] * 3),
        (176, 384, "mb_k7_e6", 1, []),
    ]
    assert (a.tail.c_in, a.tail.c_out, a.tail_has_conv) == (384, 1984, True)


# docs/algorithm.md §Reference results: R1 11.1M params 1.61B, R2 19.5M 3.06B, R3 24.7M 3.41B
@pytest.mark.parametrize(
    "name,gmacs,mparams",
    [("densenas-r1", 1.61, 11.1), ("densenas-r2", 3.06, 19.5), ("densenas-r3", 3.41, 24.7)],
)
def test_resnet_presets_match_paper(name, gmacs, mparams):
    s = arch_summary(name, 224, 1000)
    assert round(s["mult_adds"] / 1e9, 2) == gmacs
    assert round(s["params"] / 1e6, 1) == mparams
    assert not get_arch(name).tail_has_conv  # pool + fc right after the last block


@pytest.mark.parametrize("name", ["densenas-r1", "densenas-r2", "densenas-r3"])
def test_resnet_presets_build_and_forward(name):
    model = build_network(name, num_classes=10).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    assert count_flops_params(model, (3, 64, 64)) == tuple(
        arch_summary(name, 64, 10)[k] for k in ("mult_adds", "params")
    )


def test_presets_sit_in_their_spaces():
    assert space_mismatches(ARCH_PRESETS["densenas-c"], get_space("mbv2-imagenet")) == []
    for n in ("densenas-r1", "densenas-r2"):
        assert space_mismatches(ARCH_PRESETS[n], get_space("resnet-imagenet")) == []


def test_round_trip_and_json():
    for a in ARCH_PRESETS.values():
        doc = json.loads(a.to_json())
        assert doc["version"] == 1
        assert Architecture.from_dict(doc) == a
        assert get_arch(doc) == a


def test_get_arch_from_file(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(ARCH_PRESETS["densenas-r1"].to_json())
    assert get_arch(str(p)) == ARCH_PRESETS["densenas-r1"]
    with pytest.raises(ArchError, match="neither a preset"):
        get_arch("no-such-arch")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ArchError, match="bad.json: invalid JSON"):
        get_arch(str(tmp_path / "bad.json"))


def _doc(**patch):
    d = ARCH_PRESETS["densenas-c"].to_dict()
    d.update(patch)
    return d


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.pop("version"), "version"),
        (lambda d: d.update(family="vgg"), "family"),
        (lambda d: d.update(input_size=0), "input_size"),
        (lambda d: d.update(num_classes="10"), "num_classes"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["stem"].update(act="gelu"), "stem.act"),
        (lambda d: d["stem"].pop("c_out"), "stem.c_out"),
        (lambda d: d.update(blocks=[]), "blocks"),
        (lambda d: d["blocks"][2].update(c_in=32), r"blocks\[2\].c_in"),
        (lambda d: d["blocks"][2].update(stride=3), r"blocks\[2\].stride"),
        (lambda d: d["blocks"][3].update(align_op="mb_k4_e6"), r"blocks\[3\].align_op"),
        (lambda d: d["blocks"][3].update(align_op="skip"), r"blocks\[3\].align_op"),
        (lambda d: d["blocks"][3]["layers"].append("skip"), r"blocks\[3\].layers\[2\]"),
        (lambda d: d["blocks"][3]["layers"].append(7), r"blocks\[3\].layers\[2\]"),
        (lambda d: d["blocks"][3].update(from_block=-1), r"blocks\[3\].from_block"),
        (lambda d: d["blocks"][3].update(bogus=1), r"blocks\[3\].bogus"),
        (lambda d: d["tail"].update(c_in=100), "tail.c_in"),
    ],
)
def test_validation_names_the_field(mutate, field):
    d = _doc()
    mutate(d)
    with pytest.raises(ArchError, match=rf"^{field}"):
        Architecture.from_dict(d)


def test_from_choices_reproduces_densenas_c():
    space = get_space("mbv2-imagenet")
    c = ARCH_PRESETS["densenas-c"]
    path = [0] + [b.to_block for b in c.blocks[1:]] + [space.tail.index]
    align = {(b.from_block, b.to_block): b.align_op for b in c.blocks[1:]}
    layers = {b.to_block: list(b.layers) + ["skip"] * (3 - len(b.layers)) for b in c.blocks[1:]}
    a = architecture_from_choices(space, path, align, layers, num_classes=1000, name="densenas-c")
    assert a == c
    with pytest.raises(ArchError, match="block_path"):
        architecture_from_choices(space, [0, 5, 17], {}, {}, num_classes=10)


def test_small_space_arch_builds_at_28px_grey():
    space = get_space("mbv2-small")
    path = [0, 1, 3, 5, 7, 9, space.tail.index]
    align = {
        (0, 1): "mb_k3_e3",
        (1, 3): "mb_k5_e6",
        (3, 5): "mb_k3_e3",
        (5, 7): "mb_k7_e3",
        (7, 9): "mb_k5_e3",
    }
    a = architecture_from_choices(
        space, path, align, {3: ["mb_k3_e3", "skip"]}, num_classes=10, input_size=28, in_channels=1
    )
    model = build_network(a).eval()
    with torch.inference_mode():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert count_flops_params(model, (1, 28, 28)) == tuple(
        arch_summary(a)[k] for k in ("mult_adds", "params")
    )


def test_module_names_are_clean():
    names = {n for n, _ in build_network("densenas-c").named_modules()}
    assert {"stem", "blocks.0.align", "blocks.3.layers.1", "head", "classifier"} <= names


def test_predict_cost_sums_lookup():
    a = get_arch("densenas-c")
    sites = op_sites(a)
    assert sites[0].op == "conv3x3" and sites[-1].op == "linear"
    assert predict_cost(a, lambda *k: 1.0) == len(sites) == 1 + 19 + 1 + 1

    class Table:
        def get(self, op, c_in, c_out, stride, h, w):
            raise KeyError((op, c_in, c_out, stride, h, w))

    with pytest.raises(KeyError):
        predict_cost(a, Table())


def test_onnx_export_passes_checker(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = build_network("densenas-c", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "c.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}},
        opset_version=17,
    )
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert [o.name for o in m.graph.output] == ["logits"]
