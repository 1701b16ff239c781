"""The API's job-spec models are derived from the spec dataclasses (densenas_core.specs,
workers.payload): same fields, defaults and rules; the service adds only the rows a spec names."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from densenas_core.specs import JOB_SPECS
from service.schemas import SPEC_MODELS, CostSpec, worker_spec
from workers.payload import JOB_RESOURCES, JobPayload

#: the fields the service declares itself: ids of stored rows, resolved into the payload
SERVICE_FIELDS = {"search": set(), "retrain": {"architecture_id"}, "profile": set()}


def _payload(kind, spec):
    return JobPayload(
        job_id=1,
        kind=kind,
        attempt=1,
        spec=spec,
        api_url="http://x",
        job_token="t",
        storage_path="/tmp/x",
        architecture={"blocks": []} if kind == "retrain" else None,
    )


@pytest.mark.parametrize("kind", sorted(SPEC_MODELS))
def test_models_have_the_dataclasses_fields_and_defaults(kind):
    model = SPEC_MODELS[kind]
    core, resources = JOB_SPECS[kind], JOB_RESOURCES[kind]
    names = [f.name for f in dataclasses.fields(core) + dataclasses.fields(resources)]
    assert set(model.model_fields) - set(names) == SERVICE_FIELDS[kind]
    stored = model(**({"architecture_id": 1} if kind == "retrain" else {})).model_dump(mode="json")
    payload = _payload(kind, worker_spec(kind, stored))
    assert payload.core_spec() == core() and payload.resources() == resources()
    assert set(payload.spec) == set(names)  # nothing but the two parts reaches a worker


def test_cost_model_adds_only_the_latency_table_id():
    assert set(CostSpec.model_fields) == {
        f.name for f in dataclasses.fields(JOB_SPECS["search"]().cost)
    } | {"latency_table_id"}
    with pytest.raises(ValidationError, match="latency_table_id"):
        CostSpec(metric="latency")
    with pytest.raises(ValidationError, match="mode 'target' needs a target"):
        CostSpec(mode="target")  # the core's rule, run on the model


def test_specs_stored_before_later_fields_still_load():
    """A job row written by an older version lacks the fields added since: defaults fill them,
    and the ids only the control plane reads never reach the worker."""
    search = {
        "space": "mbv2-small",
        "epochs": 2,
        "warmup_epochs": 1,
        "batch_size": 32,
        "dataset": {"name": "synthetic", "limit_train": None, "limit_val": None},
        "cost": {
            "metric": "flops",
            "mode": "log",
            "lam": 0.15,
            "tau": None,
            "target": None,
            "latency_table_id": None,
        },
        "num_workers": 2,
        "use_gpu": False,
        "checkpoint_every": 50,
    }
    p = _payload("search", worker_spec("search", search))
    assert "latency_table_id" not in p.spec["cost"]
    config = p.core_spec()
    assert (config.epochs, config.batch_size, config.bn_calibration, config.schedule) == (
        2,
        32,
        512,
        "scaled",
    )
    assert config.cost.estimator == "chained" and p.resources().num_workers == 2
    retrain = {
        "architecture_id": 4,
        "epochs": 3,
        "num_nodes": 1,
        "workers_per_node": 2,
        "gpus_per_worker": 0,
        "dataset": {"name": "synthetic"},
    }
    p = _payload("retrain", worker_spec("retrain", retrain))
    assert "architecture_id" not in p.spec
    assert (p.core_spec().precise_bn, p.core_spec().epochs) == (1024, 3)
    assert p.resources().num_workers == 2
