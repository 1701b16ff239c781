"""The OpenAPI schema documents itself (issue 15): nearly every schema property carries a
description, and the typed response models (event data, progress, results) are in it."""

from __future__ import annotations

from typing import Any

import pytest

from service.app import create_app

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
