"""The pure parts of sweeps: grid expansion, dotted-path application, field-path checks and the
Pareto front (against a brute-force definition), and the sweep's resource demand."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from service.capacity import Demand, demand
from service.spec_models import SweepSpec
from service.sweeps import apply_config, grid_points, pareto_front


def test_grid_points_are_every_combination_first_key_slowest():
    grid = {"cost.target": [10, 20], "seed": [0, 1, 2]}
    points = grid_points(grid)
    assert points == [
        {"cost.target": t, "seed": s} for t, s in itertools.product([10, 20], [0, 1, 2])
    ]


def test_apply_config_sets_dotted_paths_without_touching_the_base():
    base = {"epochs": 3, "cost": {"mode": "target", "target": 10}}
    out = apply_config(base, {"cost.target": 20, "dataset.name": "synthetic", "seed": 4})
    assert out == {
        "epochs": 3,
        "cost": {"mode": "target", "target": 20},
        "dataset": {"name": "synthetic"},
        "seed": 4,
    }
    assert base == {"epochs": 3, "cost": {"mode": "target", "target": 10}}


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"cost.nope": [1]}, "'nope' is not a field of cost"),
        ({"nope": [1]}, "'nope' is not a field of the search spec"),
        ({"epochs.x": [1]}, "'epochs' has no fields"),
        ({"seed": list(range(9)), "a_lr": list(range(8))}, "more than 64 combinations"),
    ],
)
def test_a_grid_key_must_be_a_search_spec_field(grid, message):
    with pytest.raises(ValidationError, match=message):
        SweepSpec.model_validate({"grid": grid})


def test_empty_grids_and_value_lists_are_refused():
    for grid in ({}, {"seed": []}):
        with pytest.raises(ValidationError):
            SweepSpec.model_validate({"grid": grid})


def brute_front(points):
    def beaten(p):
        return any(
            q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2])
            for q in points
            if q[0] != p[0]
        )

    return {p[0] for p in points if not beaten(p)}


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.floats(0, 1, allow_nan=False)), min_size=0, max_size=12
    )
)
def test_pareto_front_matches_brute_force(raw):
    points = [(i, float(c), a) for i, (c, a) in enumerate(raw)]
    front = pareto_front(points)
    assert set(front) == brute_front(points)
    costs = [next(c for j, c, _ in points if j == i) for i in front]
    assert costs == sorted(costs)  # cheapest first


def test_a_sweep_holds_max_concurrent_of_its_largest_trials():
    spec = {
        "search": {"num_workers": 1},
        "grid": {"num_workers": [1, 2, 3]},
        "max_concurrent": 2,
    }
    assert demand("sweep", spec) == Demand(cpus=5.0)  # the two largest: 3 + 2 workers
    spec["max_concurrent"] = 8  # more than there are trials: all of them
    assert demand("sweep", spec) == Demand(cpus=6.0)
    assert demand("sweep", {"search": {}, "grid": {"seed": [0, 1]}, "max_concurrent": 2}) == (
        Demand(cpus=2.0)
    )
