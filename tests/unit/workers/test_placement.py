"""Placement groups named per job attempt, found and judged stale; exact per-node plans."""

from __future__ import annotations

import pytest

from workers.placement import (
    NODE_ID_LABEL,
    JobGroup,
    PlacementError,
    _named,
    bundle_selectors,
    group_name,
    job_groups,
    node_layout_error,
    parse_group_name,
    plan_nodes,
    stale_groups,
)


def test_group_names_round_trip_and_foreign_names_are_ignored():
    assert parse_group_name(group_name(12, 3, 1)) == (12, 3)
    for other in (
        None,
        "",
        "densenas-job-12",
        "densenas-job-x-a1-1",
        "trainer-pg",
        "densenas-job-12-a3-1-extra",
    ):
        assert parse_group_name(other) is None


def test_the_wrapper_names_every_group_and_keeps_an_explicit_name():
    calls = []
    create = _named(lambda *a, **kw: calls.append(kw) or len(calls), job_id=7, attempt=2)
    create(bundles=[{"CPU": 1}], strategy="PACK")
    create(bundles=[{"CPU": 1}], strategy="PACK", name="")
    create(bundles=[{"CPU": 1}], name="mine")
    assert [c["name"] for c in calls] == ["densenas-job-7-a2-1", "densenas-job-7-a2-2", "mine"]


def _row(pg_id, name, state="CREATED", cpus=(1.0, 1.0)):
    return {
        "placement_group_id": pg_id,
        "name": name,
        "state": state,
        "bundles": {i: {"CPU": c} for i, c in enumerate(cpus)},
    }


def test_job_groups_reads_the_table_and_stale_groups_keeps_only_running_attempts():
    table = {
        "01": _row("01", group_name(1, 1, 1)),  # job 1 retried: attempt 1 stale
        "02": _row("02", group_name(1, 2, 1), "PENDING"),  # job 1's running attempt
        "03": _row("03", group_name(2, 1, 1), cpus=(2.0,)),  # job 2 finished
        "04": _row("04", group_name(3, 1, 1), "REMOVED"),  # already gone
        "05": _row("05", "someone-elses-group"),  # not ours
    }
    groups = job_groups(table)
    assert sorted(g.id for g in groups) == ["01", "02", "03"]
    assert {g.id: g.cpus for g in groups} == {"01": 2.0, "02": 2.0, "03": 2.0}
    stale = stale_groups(groups, running={1: 2})
    assert sorted(g.id for g in stale) == ["01", "03"]
    assert stale_groups(groups, running={1: 1, 2: 1}) == [
        JobGroup("02", group_name(1, 2, 1), 1, 2, "PENDING", 2.0)
    ]


def _nodes(*spec):
    return [{"NodeID": n, "Alive": alive, "Resources": res} for n, alive, res in spec]


def test_plan_nodes_picks_nodes_with_room_for_their_share_and_prefers_free_ones():
    nodes = _nodes(
        ("a", True, {"CPU": 4, "GPU": 2}),
        ("b", True, {"CPU": 4}),
        ("c", False, {"CPU": 8, "GPU": 8}),
        ("d", True, {"CPU": 2, "GPU": 2}),
        ("e", True, {"CPU": 8, "GPU": 4}),
    )
    # 2 workers × {CPU 1, GPU 1}: b has no GPU, c is dead
    assert plan_nodes(nodes, 2, 2, {"CPU": 1, "GPU": 1}) == ["a", "d"]
    free = {"a": {"CPU": 0, "GPU": 0}, "d": {"CPU": 2, "GPU": 2}, "e": {"CPU": 8, "GPU": 4}}
    assert plan_nodes(nodes, 2, 2, {"CPU": 1, "GPU": 1}, free) == ["d", "e"]
    assert plan_nodes(nodes, 3, 2, {"CPU": 1, "GPU": 1}, free) == ["d", "e", "a"]
    with pytest.raises(PlacementError, match="2 nodes with room for 5 workers.*has 1$"):
        plan_nodes(nodes, 2, 5, {"CPU": 1, "GPU": 0})


def test_bundle_selectors_put_consecutive_ranks_on_each_node():
    assert bundle_selectors(["x", "y"], 3) == [{NODE_ID_LABEL: n} for n in "xxxyyy"]


def test_node_layout_error_names_what_ran_where():
    assert node_layout_error(["a", "a", "b", "b"], 2, 2) is None
    assert node_layout_error(["a", "b"], 2, 1) is None
    err = node_layout_error(["a", "a", "a", "b"], 2, 2)
    assert err and "2 nodes × 2 workers" in err and "a×3" in err and "b×1" in err
    assert "ran on 1 node(s)" in node_layout_error(["a", "a"], 2, 1)
