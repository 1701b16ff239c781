"""``densenas derive JOB --max-mult-adds 12M --max-mult-adds 20M``: a family of architectures
from one search, one row per budget (issue 14), against a real control plane."""

from __future__ import annotations

import pytest

from service.cli.catalog import family_budgets, ops_path
from service.cli.common import CliError
from tests.unit.cli.test_cli_service import Service, finished_search
from tests.unit.cli.test_cli_service import service as service  # fixture


def test_family_budgets_broadcast_a_single_bound_and_pair_repeated_ones():
    common = {"top_k": 8}
    assert family_budgets(common, [1, 2], []) == [
        {"top_k": 8, "max_mult_adds": 1},
        {"top_k": 8, "max_mult_adds": 2},
    ]
    assert family_budgets({}, [5], [1.0, 2.0]) == [
        {"max_mult_adds": 5, "max_latency_ms": 1.0},
        {"max_mult_adds": 5, "max_latency_ms": 2.0},
    ]
    assert family_budgets({}, [1, 2], [1.0, 2.0])[1] == {"max_mult_adds": 2, "max_latency_ms": 2.0}
    with pytest.raises(CliError, match="--max-mult-adds given 2 times"):
        family_budgets({}, [1, 2], [1.0, 2.0, 3.0])


def test_ops_path_lists_each_routing_block_stem_to_tail():
    doc = {
        "blocks": [
            {"align_op": "mb_k3_e1", "layers": [], "from_block": None, "to_block": 0},
            {
                "align_op": "mb_k3_e6",
                "layers": ["mb_k5_e3", "skip"],
                "from_block": 0,
                "to_block": 2,
            },
            {"align_op": "mb_k7_e6", "layers": [], "from_block": 2, "to_block": 4},
        ]
    }
    assert ops_path(doc) == "2:mb_k3_e6+mb_k5_e3+skip → 4:mb_k7_e6"


def test_derive_a_family(service: Service) -> None:
    jid = str(finished_search(service)["id"])

    archs = service.cli_json("derive", jid, "--max-mult-adds", "20M", "--max-mult-adds", "12M")
    assert [a["mult_adds"] <= b for a, b in zip(archs, (20e6, 12e6))] == [True, True]
    assert archs[1]["mult_adds"] < archs[0]["mult_adds"]
    assert [a["name"] for a in archs] == [
        f"search-{jid}-20000000madds",
        f"search-{jid}-12000000madds",
    ]

    r = service.cli(
        "derive", jid, "--max-mult-adds", "12M", "--max-mult-adds", "20M", "--name", "f"
    )
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if "madds" not in line and "→" in line]
    assert len(rows) == 2, r.stdout
    assert "12.00M" in rows[0] and "20.00M" in rows[1]  # one row per budget, in order
    assert f"{archs[1]['mult_adds'] / 1e6:.2f}M" in rows[0]
    assert "mb_k" in rows[0]  # the ops path

    r = service.cli("derive", jid, "--max-mult-adds", "20M", "--max-mult-adds", "1k")
    assert r.exit_code == 1 and "budgets[1]" in r.stderr and "Traceback" not in r.output
