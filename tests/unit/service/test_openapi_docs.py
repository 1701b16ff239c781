"""The OpenAPI schema documents itself (issue 15): nearly every schema property carries a
description, and the typed response models (event data, progress, results) are in it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from service.app import create_app
from service.schemas import EventPublic, JobProgress, JobResult

NOW = datetime(2026, 1, 1, tzinfo=UTC)

MIN_DESCRIBED = 0.90


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from service.settings import Settings

    root = tmp_path_factory.mktemp("openapi-docs")
    settings = Settings(
        database_url=f"sqlite:///{root / 'docs.db'}", data_dir=root / "data", executor="none"
    )
    return create_app(settings).openapi()


def _properties(openapi: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{name}.{prop}", sub)
        for name, schema in openapi["components"]["schemas"].items()
        for prop, sub in (schema.get("properties") or {}).items()
    ]


def test_schema_properties_are_described(openapi: dict[str, Any]) -> None:
    props = _properties(openapi)
    undescribed = sorted(name for name, sub in props if not sub.get("description"))
    share = 1 - len(undescribed) / len(props)
    assert share >= MIN_DESCRIBED, (
        f"{share:.0%} of {len(props)} schema properties described (want {MIN_DESCRIBED:.0%}); "
        f"undescribed: {', '.join(undescribed)}"
    )


def test_event_data_progress_and_result_models_are_in_the_schema(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for name in (
        "StepEventData",
        "EpochEventData",
        "ArchEventData",
        "LogEventData",
        "ErrorEventData",
        "JobProgress",
        "JobPace",
        "JobResult",
    ):
        assert schemas[name].get("properties"), name
    refs = json.dumps(schemas["EventPublic"]["properties"]["data"])
    for name in ("StepEventData", "EpochEventData", "ArchEventData", "LogEventData"):
        assert f"#/components/schemas/{name}" in refs
    job = schemas["JobPublic"]["properties"]
    assert "#/components/schemas/JobProgress" in json.dumps(job["progress"])
    assert "#/components/schemas/JobResult" in json.dumps(job["result"])


def test_typed_views_serialize_the_stored_json_unchanged() -> None:
    """Response models only: the keys a view was given, in their order, and nothing added."""
    progress = {
        "updated_at": "2026-01-01T00:00:00+00:00",
        "step": {"step": 3, "phase": "weights", "loss": 1, "lr": 0.1, "custom": [1, 2]},
        "pace": {"steps": 4, "attempt": 1, "last": {"step": 3, "epoch": None}},
    }
    result = {"metrics": {"top1": 0.5}, "architecture_id": 7}
    event = {"from": "queued", "to": "running", "attempt": 1}
    view = JobProgress.model_validate(progress)
    assert view.model_dump_json() == json.dumps(progress, separators=(",", ":"))
    assert JobResult.model_validate(result).model_dump(mode="json") == result
    assert list(JobResult.model_validate(result).model_dump(mode="json")) == list(result)
    ev = EventPublic.model_validate(
        {"id": 1, "job_id": 2, "seq": None, "type": "status", "data": event, "created_at": NOW}
    )
    assert ev.model_dump(mode="json")["data"] == event
    step = {"epoch": 0, "step": 1, "acc": 0.5, "global_step": 1}
    ev = EventPublic.model_validate(
        {"id": 2, "job_id": 2, "seq": 4, "type": "step", "data": step, "created_at": NOW}
    )
    assert json.dumps(ev.model_dump(mode="json")["data"]) == json.dumps(step)
