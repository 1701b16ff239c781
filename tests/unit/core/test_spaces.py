"""Search-space presets match docs/algorithm.md §Search space; user spaces from JSON/YAML fail
with field-naming errors."""

from __future__ import annotations

import json

import pytest

from densenas_core.spaces import (
    SPACE_NAMES,
    SpaceError,
    get_space,
    load_space_file,
    space_from_dict,
)

# docs/algorithm.md §MobileNetV2 space table, "inputs (from block, stride)" column, blocks
# 1..17 (17 = tail)
MBV2_INPUTS = {
    1: [(0, 2)],
    2: [(1, 2)],
    3: [(2, 1), (1, 2)],
    4: [(3, 1), (2, 1), (1, 2)],
    5: [(4, 2), (3, 2), (2, 2)],
    6: [(5, 1), (4, 2), (3, 2), (2, 2)],
    7: [(6, 1), (5, 1), (4, 2), (3, 2)],
    8: [(7, 1), (6, 1), (5, 1)],
    9: [(8, 1), (7, 1), (6, 1), (5, 1)],
    10: [(9, 1), (8, 1), (7, 1), (6, 1)],
    11: [(10, 2), (9, 2), (8, 2)],
    12: [(11, 1), (10, 2), (9, 2), (8, 2)],
    13: [(12, 1), (11, 1), (10, 2), (9, 2)],
    14: [(13, 1), (12, 1), (11, 1)],
    15: [(14, 1), (13, 1), (12, 1), (11, 1)],
    16: [(15, 1), (14, 1), (13, 1), (12, 1)],
    17: [(16, 1), (15, 1), (14, 1)],
}
MBV2_ROWS = [  # block, ch, H×W, stage, basic layers
    (0, 16, 112, 0, 0),
    (1, 24, 56, 1, 3),
    (2, 32, 28, 2, 3),
    (3, 40, 28, 2, 3),
    (4, 48, 28, 2, 3),
    (5, 56, 14, 3, 3),
    (6, 64, 14, 3, 3),
    (7, 72, 14, 3, 3),
    (8, 96, 14, 4, 3),
    (9, 112, 14, 4, 3),
    (10, 128, 14, 4, 3),
    (11, 160, 7, 5, 3),
    (12, 176, 7, 5, 3),
    (13, 192, 7, 5, 3),
    (14, 320, 7, 6, 0),
    (15, 352, 7, 6, 0),
    (16, 384, 7, 6, 0),
    (17, 1984, 7, 7, 0),
]


def test_mbv2_imagenet_counts():
    s = get_space("mbv2-imagenet")
    assert s.summary() == {
        "routing_blocks": 16,
        "paths": 54,
        "alignment_branches": 51,
        "alignment_ops": 6,
        "basic_layers": 39,
        "layer_ops": 7,
        "block_paths": 15_456,
    }


def test_mbv2_imagenet_table_matches_spec_exactly():
    table = get_space("mbv2-imagenet").block_table(224)
    assert [
        (r["block"], r["channels"], r["size"], r["stage"], r["basic_layers"]) for r in table
    ] == MBV2_ROWS
    assert {r["block"]: r["inputs"] for r in table if r["block"]} == MBV2_INPUTS
    assert table[0]["kind"] == "stem" and table[-1]["kind"] == "tail"


def test_resnet_imagenet_counts():
    s = get_space("resnet-imagenet").summary()
    assert (s["routing_blocks"], s["paths"], s["basic_layers"], s["block_paths"]) == (
        20,
        87,
        113,
        540_225,
    )
    assert (s["alignment_ops"], s["layer_ops"]) == (1, 2)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_every_preset_is_connected_and_round_trips(name):
    s = get_space(name)
    assert all(s.in_paths[b.index] for b in s.blocks[1:])
    assert all(s.out_paths[b.index] for b in s.blocks[:-1])
    assert 1 <= max(len(p) for p in s.out_paths) <= s.max_connections
    again = space_from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and again.paths == s.paths
    assert s.count_block_paths() > 0


def _custom(**patch):
    d = {
        "name": "tiny",
        "stem": {"channels": 8, "stride": 1, "fixed_op": "mb_k3_e1"},
        "stage_strides": [2, 2],
        "widths": [[16, 24], [32]],
        "num_layers": [1, 0],
        "tail_channels": 64,
        "align_ops": ["mb_k3_e3"],
        "layer_ops": ["mb_k3_e3", "skip"],
        "input_size": 16,
    }
    d.update(patch)
    return d


def test_custom_space_from_json_and_yaml(tmp_path):
    j = tmp_path / "tiny.json"
    j.write_text(json.dumps(_custom()))
    s = load_space_file(j)
    assert s.summary()["routing_blocks"] == 3 and s.tail.channels == 64
    yaml = pytest.importorskip("yaml")
    y = tmp_path / "tiny.yaml"
    y.write_text(yaml.safe_dump(_custom()))
    assert load_space_file(y) == s
    assert get_space(_custom()) == s


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"widths": [[16, 24]]}, "widths"),  # 1 width list vs 2 stages
        ({"num_layers": [1]}, "widths"),
        ({"widths": [[16, -1], [32]]}, r"stages\[0\].widths\[1\]"),
        ({"stage_strides": [2, 3]}, r"stages\[1\].stride"),
        ({"align_ops": ["mb_k4_e3"]}, r"align_ops\[0\]"),
        ({"align_ops": ["skip"]}, "align_ops"),
        ({"layer_ops": []}, "layer_ops"),
        ({"tail_channels": 0}, "tail_channels"),
        ({"stem": {"stride": 2}}, "stem.channels"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_custom_space_errors_name_the_field(patch, field):
    with pytest.raises(SpaceError, match=rf"^{field}"):
        space_from_dict(_custom(**patch))


def test_invalid_json_file_names_the_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{")
    with pytest.raises(SpaceError, match="broken.json"):
        load_space_file(p)


def test_unknown_preset():
    with pytest.raises(SpaceError, match="unknown preset"):
        get_space("nope")
