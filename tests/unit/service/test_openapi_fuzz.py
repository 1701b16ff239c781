"""Property-based fuzzing of every operation in /openapi.json with schemathesis (ASGI, in
process): with a valid admin token no request may produce a 5xx, and without a token every /v1
operation answers 401. Bounded (few examples per operation, no deadline) to stay fast."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from service.app import create_app
from service.errors import DenseNASError
from service.routes.events import parse_job_cursors
from service.settings import Settings
from service.tokens import create_token

# The schema is built at import (schemathesis parametrizes at collection time); the app's
# lifespan — migrations, bootstrap token — runs in the module fixture below.
_ROOT = Path(tempfile.mkdtemp(prefix="densenas-fuzz-"))
atexit.register(shutil.rmtree, _ROOT, True)  # also when the module's tests are deselected
APP = create_app(
    Settings(
        database_url=f"sqlite:///{_ROOT / 'fuzz.db'}",
        data_dir=_ROOT / "data",
        executor="none",
        sse_poll_s=0.01,
        max_payload_bytes=256 * 1024,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def fuzz_app():
    with TestClient(APP) as c:
        token = APP.state.settings.admin_token_path.read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        # something to find: a finished job (streams end), a queued one, their events
        done = c.post("/v1/jobs", headers=admin, json={"kind": "search"}).json()
        c.post(f"/v1/jobs/{done['id']}/cancel", headers=admin)
        FINISHED.append(done["id"])
        c.post("/v1/jobs", headers=admin, json={"kind": "profile"})
        yield APP
    shutil.rmtree(_ROOT, ignore_errors=True)


FUZZ = settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _content_type(response) -> str:
    value = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
    return value[0] if isinstance(value, list) else value


FINISHED: list[int] = []  # a cancelled job: its streams end at once


def _prepare(case) -> None:
    # A live SSE stream of a still-running job never ends; the JSON view covers the route
    # (the stream itself is tested over a real server in test_sse.py).
    if case.method == "GET" and case.path.endswith("/events") and case.path != "/v1/events":
        case.query = {**(case.query or {}), "format": "json"}
    if case.path == "/v1/events" and FINISHED:
        # a valid job list is pointed at the finished job (streams of others never end)
        try:
            parse_job_cursors(str((case.query or {}).get("jobs", "")))
        except DenseNASError:
            pass
        else:
            case.query = {**(case.query or {}), "jobs": str(FINISHED[0])}
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}


#: The one operation whose fuzzing takes seconds (6-8 s on 2 cores; the others together ~6 s):
#: it runs in the slow run only.
SLOW_OPERATION = "POST /v1/jobs"


@schema.exclude(name=SLOW_OPERATION).parametrize()
@FUZZ
def test_no_server_errors_with_a_valid_token(case, fuzz_app):
    _no_server_errors_with_a_valid_token(case, fuzz_app)


@pytest.mark.slow
@schema.include(name=SLOW_OPERATION).parametrize()
@FUZZ
def test_no_server_errors_with_a_valid_token_submitting_jobs(case, fuzz_app):
    _no_server_errors_with_a_valid_token(case, fuzz_app)


def _no_server_errors_with_a_valid_token(case, fuzz_app) -> None:
    _prepare(case)
    with fuzz_app.state.session_factory() as s:  # fresh: the fuzzer may revoke tokens
        token = create_token(s, "fuzz", "default", admin=True)
        s.commit()
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
    if response.status_code >= 400:
        assert _content_type(response).startswith("application/problem+json"), response.text


@schema.parametrize()
@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_v1_without_token_is_401(case):
    _prepare(case)
    response = case.call()
    if case.path.startswith("/v1"):
        assert response.status_code == 401, (case.method, case.formatted_path, response.text)
    else:
        assert response.status_code < 500
