"""Alembic is the only way the schema changes: head matches the models (no autogenerate diff),
downgrade to base and back works. Settings refuse insecure production defaults."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import inspect

from service.db import downgrade, make_engine, run_migrations
from service.models import Base
from service.settings import Settings


def schema_diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_sqlite_head_matches_models_and_round_trips(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    run_migrations(url)
    assert schema_diff(url) == []
    assert {"jobs", "job_events", "architectures", "latency_tables", "tokens"} <= tables(url)
    run_migrations(url)  # idempotent
    downgrade(url, "base")
    assert tables(url) <= {"alembic_version"}
    run_migrations(url)
    assert schema_diff(url) == []


def test_drift_is_detected(tmp_path):
    """The check can fail: a column the migrations do not create shows up as a diff."""
    from sqlalchemy import Column, Integer, MetaData, Table

    url = f"sqlite:///{tmp_path / 'd.db'}"
    run_migrations(url)
    md = MetaData()
    for t in Base.metadata.tables.values():
        t.to_metadata(md)
    Table("jobs", md, Column("shiny_new_column", Integer), extend_existing=True)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), md)
    finally:
        engine.dispose()
    assert any(d[0] == "add_column" and d[3].name == "shiny_new_column" for d in diff)


def test_settings_env_and_ray_address(monkeypatch):
    monkeypatch.setenv("DENSENAS_PORT", "9001")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    monkeypatch.setenv("DENSENAS_EXECUTOR", "inline")
    s = Settings()
    assert (s.port, s.ray_address, s.executor) == (9001, "head:6379", "inline")
    assert s.admin_token_path.name == "admin_token"
    assert s.checkpoints_dir.name == "checkpoints"
    monkeypatch.setenv("DENSENAS_EXECUTOR", "kubernetes")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"database_url": "sqlite:///./densenas.db"}, "database_url"),
        ({"database_url": "postgresql+psycopg://densenas:densenas@db/densenas"}, "password"),
        ({"database_url": "postgresql+psycopg://u@db/densenas"}, "password"),
        (
            {
                "database_url": "postgresql+psycopg://u:Xq9v-long-Secret@db/d",
                "admin_token": "short",
            },
            "admin_token",
        ),
    ],
)
def test_prod_refuses_insecure_defaults(overrides, needle):
    with pytest.raises(ValidationError) as e:
        Settings(env="prod", **overrides)
    assert needle in str(e.value)


def test_prod_accepts_a_proper_configuration(tmp_path):
    s = Settings(
        env="prod",
        database_url="postgresql+psycopg://u:Xq9v-long-Secret@db/d",
        admin_token="a" * 40,
    )
    assert s.env == "prod"
    s = Settings(env="prod", database_url=f"sqlite:///{tmp_path / 'abs.db'}")
    assert s.is_sqlite
