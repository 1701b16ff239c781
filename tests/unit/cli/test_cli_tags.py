"""Job tags in the CLI and the Python client (issue 14): ``submit … --tag``, ``jobs --tag``, the
TAGS column of the jobs table, and DenseNASClient's ``tags=`` / ``set_tags``."""

from __future__ import annotations

import json

import httpx

from service.cli import app
from service.client import DenseNASClient

# The real control plane of the CLI tests (a module-scoped fixture: this module gets its own).
from tests.unit.cli.test_cli_service import (  # noqa: F401
    Service,
    runner,
    service,
    submit,
)


def test_submit_tag_and_jobs_tag(service: Service) -> None:  # noqa: F811
    a = submit(service, "--tag", "exp-cli", "--tag", "lr=0.1", "--tag", "exp-cli")
    b = submit(service, "--tag", "exp-cli")
    c = submit(service)
    assert a["tags"] == ["exp-cli", "lr=0.1"] and b["tags"] == ["exp-cli"] and c["tags"] == []
    page = service.cli_json("jobs", "--tag", "exp-cli", "--limit", "50")
    assert [j["id"] for j in page["data"]] == [b["id"], a["id"]]
    page = service.cli_json("jobs", "--tag", "exp-cli", "--tag", "lr=0.1")
    assert [j["id"] for j in page["data"]] == [a["id"]]
    r = service.cli("jobs", "--tag", "exp-cli")
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if "kind" in line)
    assert "tags" in header
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith(str(a["id"])))
    assert "exp-cli, lr=0.1" in row
    one = service.cli("job", str(a["id"]))
    assert one.exit_code == 0 and "exp-cli, lr=0.1" in one.stdout
    r = service.cli("submit", "search", "--tag", "no spaces allowed")
    assert r.exit_code == 1 and "tags" in r.stderr and "Traceback" not in r.output
    for job in (a, b, c):
        service.cli("cancel", str(job["id"]))


def test_jobs_table_folds_long_tags_never_elides(service: Service) -> None:  # noqa: F811
    long_tags = [f"{'x' * 40}-{i}" for i in range(4)]
    job = submit(service, *[arg for t in long_tags for arg in ("--tag", t)])
    r = runner.invoke(
        app,
        ["--url", service.url, "--token", service.token, "jobs", "--tag", long_tags[0]],
        env={"COLUMNS": "90"},
    )
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    # folded over several lines of the TAGS column: every character is there
    assert r.stdout.count("x") == 4 * 40
    assert all(f"-{i}" in r.stdout for i in range(4))
    service.cli("cancel", str(job["id"]))


def make(handler) -> DenseNASClient:
    return DenseNASClient("http://test", "tok", transport=httpx.MockTransport(handler))


def test_client_tags_on_create_list_and_set_tags() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.method == "GET":
            return httpx.Response(200, json={"data": [], "next_cursor": None})
        return httpx.Response(200, json={"id": 7, "tags": ["a", "b"]})

    c = make(handler)
    c.create_job("search", {}, tags=["b", "a"])
    assert json.loads(seen[-1].content)["tags"] == ["b", "a"]
    c.create_job("search", {})
    assert "tags" not in json.loads(seen[-1].content)
    c.list_jobs(tags=["a", "b"], parent=3, top_level=True)
    assert seen[-1].url.params.get_list("tag") == ["a", "b"]
    assert seen[-1].url.params["parent"] == "3" and seen[-1].url.params["top_level"] == "true"
    c.list_jobs()
    assert not seen[-1].url.params
    assert c.set_tags(7, ["a", "b"]) == {"id": 7, "tags": ["a", "b"]}
    assert seen[-1].method == "PUT" and seen[-1].url.path == "/v1/jobs/7/tags"
    assert json.loads(seen[-1].content) == {"tags": ["a", "b"]}
