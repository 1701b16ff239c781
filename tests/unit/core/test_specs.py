"""The job specs' science part (densenas_core.specs): one declaration per field, one validator."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

import pytest

from densenas_core.specs import (
    JOB_SPECS,
    CostSpec,
    DataError,
    DatasetSpec,
    ProfileSpec,
    RetrainSpec,
    SearchSpec,
    Spec,
    SpecError,
    spec_fields,
)


@pytest.mark.parametrize(
    "spec, where, kind",
    [
        ({"epochs": 0}, "epochs", "range"),
        ({"epochs": 1001}, "epochs", "range"),
        ({"epochs": True}, "epochs", "type"),
        ({"epochs": 2.0}, "epochs", "type"),
        ({"batch_size": "64"}, "batch_size", "type"),
        ({"w_lr": 0}, "w_lr", "range"),
        ({"a_betas": [0.5, 1.5]}, "a_betas[1]", "range"),
        ({"a_betas": [True, 0.9]}, "a_betas[0]", "type"),
        ({"a_betas": [0.5]}, "a_betas", "type"),
        ({"schedule": "fast"}, "schedule", "type"),
        ({"space": 3}, "space", "type"),
        ({"epoch": 3}, "epoch", "extra"),
        ({"epochs": 2, "warmup_epochs": 3}, "warmup_epochs", "range"),
        ({"dataset": {"name": "mnist"}}, "dataset.name", "type"),
        ({"dataset": {"limit_train": 0}}, "dataset.limit_train", "range"),
        ({"dataset": {"root": "x" * 4097}}, "dataset.root", "range"),
        ({"dataset": {"name": "imagefolder"}}, "dataset.root", "missing"),
        ({"dataset": {"bogus": 1}}, "dataset.bogus", "extra"),
        ({"dataset": []}, "dataset", "type"),
        ({"cost": {"mode": "target"}}, "cost.target", "missing"),
        ({"cost": {"tau": 1.0}}, "cost.tau", "range"),
        ({"cost": {"latency_table_id": 3}}, "cost.latency_table_id", "extra"),
    ],
)
def test_errors_name_the_field_path(spec, where, kind):
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict(spec)
    assert (e.value.where, e.value.kind) == (where, kind)
    assert str(e.value).startswith(f"{where}: ")
    assert isinstance(e.value, DataError) == where.startswith("dataset")


def test_messages_say_what_was_expected():
    def message(**spec):
        with pytest.raises(SpecError) as e:
            SearchSpec.from_dict(spec)
        return str(e.value)

    assert message(epochs=0) == "epochs: expected an integer ≥ 1, got 0"
    assert message(w_lr=-1) == "w_lr: expected a number > 0 (or null), got -1"
    assert message(dataset={"name": "mnist"}) == (
        "dataset.name: expected one of fashion-mnist, cifar10, imagefolder, synthetic, got 'mnist'"
    )
    assert message(epoch=3).startswith("epoch: unknown search field (allowed: space, dataset,")


def test_values_are_normalised_and_round_trip_through_json():
    s = SearchSpec.from_dict(
        {"w_lr": 1, "a_betas": [0.5, 0.9], "dataset": {"name": "synthetic"}, "cost": {"lam": 0}}
    )
    assert s.w_lr == 1.0 and isinstance(s.w_lr, float) and s.a_betas == (0.5, 0.9)
    assert isinstance(s.dataset, DatasetSpec) and isinstance(s.cost, CostSpec)
    assert s.cost.lam == 0.0 and s.dataset.limit_train is None
    assert SearchSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert SearchSpec(dataset={"name": "synthetic"}).dataset == DatasetSpec(name="synthetic")
    assert SearchSpec.from_dict(s) is s and SearchSpec.from_dict(None) == SearchSpec()


def test_nested_specs_sit_in_the_field_named_by_their_path():
    """A nested spec's messages start with its ``WHERE``: the name of the field it sits in."""
    for spec in JOB_SPECS.values():
        for f, tp, _meta in spec_fields(spec):
            if isinstance(tp, type) and issubclass(tp, Spec):
                assert tp.WHERE == f.name, (spec, f.name)


def test_every_field_has_a_default_and_the_specs_are_frozen():
    for spec in JOB_SPECS.values():
        for f in dataclasses.fields(spec):
            assert (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            ), f.name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(spec(), dataclasses.fields(spec)[0].name, None)
    assert (RetrainSpec().epochs, ProfileSpec().repeats) == (10, 30)


def test_importing_the_specs_does_not_import_torch():
    code = "import sys, densenas_core.specs\nsys.exit(1 if 'torch' in sys.modules else 0)\n"
    root = pathlib.Path(__file__).resolve().parents[3]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=120).returncode == 0
