"""CLI commands that need no server: spaces, FLOPs, minting tokens straight into a database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app, parse_count

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env={"COLUMNS": "160", **(env or {})})


def test_space_show_mbv2_imagenet_json_counts() -> None:
    r = invoke("space", "show", "mbv2-imagenet", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"] == {
        "routing_blocks": 16,
        "paths": 54,
        "alignment_branches": 51,
        "alignment_ops": 6,
        "basic_layers": 39,
        "layer_ops": 7,
        "block_paths": 15456,
    }
    blocks = doc["blocks"]
    assert len(blocks) == 18
    assert blocks[7]["inputs"] == [[6, 1], [5, 1], [4, 2], [3, 2]]
    assert blocks[-1]["kind"] == "tail" and blocks[-1]["channels"] == 1984


def test_space_show_human_and_input_size() -> None:
    r = invoke("space", "show", "resnet-imagenet")
    assert r.exit_code == 0, r.output
    assert "20 routing blocks, 87 paths" in r.stdout and "540,225 block paths" in r.stdout
    r = invoke("space", "show", "mbv2-imagenet", "--input", "320", "--json")
    assert json.loads(r.stdout)["blocks"][0]["size"] == 160


def test_space_show_file_and_errors(tmp_path: Path) -> None:
    from densenas_core.spaces import get_space

    f = tmp_path / "mine.json"
    f.write_text(json.dumps(get_space("mbv2-small").to_dict()))
    r = invoke("space", "show", str(f), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"] == get_space("mbv2-small").summary()

    r = invoke("space", "show", "no-such-space")
    assert r.exit_code == 1
    assert "unknown preset" in r.stderr and "Traceback" not in r.output
    r = invoke("space", "show", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 1 and "no such file" in r.stderr


def test_arch_flops_densenas_c_json() -> None:
    r = invoke("arch", "flops", "densenas-c", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["input_size"] == 224 and doc["num_classes"] == 1000
    assert round(doc["mult_adds"] / 1e6, 1) == 360.8
    assert round(doc["params"] / 1e6, 2) == 6.13
    assert doc["mult_adds_m"] == pytest.approx(360.808, abs=1e-3)


def test_arch_flops_human_and_other_resolution() -> None:
    r = invoke("arch", "flops", "densenas-c", "--input", "112", "--classes", "10")
    assert r.exit_code == 0, r.output
    assert "mult-adds" in r.stdout and "params" in r.stdout
    r2 = invoke("arch", "flops", "densenas-c", "--input", "112", "--json")
    assert json.loads(r2.stdout)["mult_adds"] < 360.8e6 / 3


def test_arch_flops_unknown_is_one_red_line() -> None:
    r = invoke("arch", "flops", "densenas-zz")
    assert r.exit_code == 1
    assert "Error:" in r.stderr and "Traceback" not in r.output


def test_token_create_mints_into_a_fresh_sqlite_database(tmp_path: Path) -> None:
    from sqlalchemy import select

    from service.db import make_engine, make_session_factory
    from service.models import Token
    from service.tokens import find_token

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"DENSENAS_DATABASE_URL": url, "DENSENAS_DATA_DIR": str(tmp_path / "data")}
    r = invoke("token", "create", "--name", "alice", "--project", "vision", env=env)
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert token.startswith("dn_") and "\n" not in token  # only the token on stdout

    r = invoke("token", "create", "--name", "root", "--admin", "--json", env=env)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["admin"] is True and info["token"].startswith("dn_") and info["id"]

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as s:
            row = find_token(s, token)
            assert row is not None and row.name == "alice" and row.project == "vision"
            assert not row.is_admin
            assert find_token(s, info["token"]).is_admin
            assert all(t.token_hash != token for t in s.scalars(select(Token)))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "text,value",
    [
        ("300M", 300_000_000),
        ("1.5G", 1_500_000_000),
        ("250k", 250_000),
        ("300", 300_000_000),
        ("360808256", 360_808_256),
    ],
)
def test_parse_count(text: str, value: int) -> None:
    assert parse_count(text) == value


def test_help_lists_every_command() -> None:
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in (
        "serve",
        "token",
        "submit",
        "jobs",
        "job",
        "watch",
        "cancel",
        "retry",
        "derive",
        "arch",
        "space",
        "tables",
        "demo",
        "migrate",
    ):
        assert cmd in r.stdout


def test_arch_table_at_80_columns_keeps_every_op_name_and_number_whole() -> None:
    """Piped output is 80 columns: op names, channels and costs are the point, never elided."""
    from densenas_core.arch import get_arch

    result = invoke("arch", "flops", "densenas-c", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "…" not in result.output
    tokens = result.output.split()
    doc = get_arch("densenas-c").to_dict()
    for block in doc["blocks"]:
        for op in [block["align_op"], *block["layers"]]:
            assert op in tokens, op
        assert f"{block['c_in']}→{block['c_out']}" in tokens
    assert "MAdds" in tokens and "params" in tokens
