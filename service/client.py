"""A typed HTTP client for the DenseNAS control plane (the REST contract in docs/DESIGN.md).

The CLI, the tests and user scripts all talk to the service through this one class, so every
route has exactly one place that knows its path, its verb and its body. Errors come back as
RFC 7807 problem+json and are raised as :class:`ApiError`, never as raw ``httpx`` exceptions
from a status code, so callers can show ``detail`` and the per-field ``errors`` to a person.

Configuration is found the way a user expects on a laptop: ``DENSENAS_URL``/``DENSENAS_TOKEN``,
then ``~/.config/densenas/config.toml``, then the admin token a freshly started local server
wrote to its data directory (so ``densenas serve`` in one terminal and ``densenas jobs`` in
another works with no setup).
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .jobs.states import TERMINAL as TERMINAL_STATUSES

DEFAULT_URL = "http://127.0.0.1:8000"

JSON = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the service, parsed from its problem+json body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: list[Any] | None = None,
        *,
        type_: str | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        self.type = type_
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.status} {self.title}"
        if self.detail and self.detail != self.title:
            text += f": {self.detail}"
        return text

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        body: Any = None
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            pass
        if isinstance(body, Mapping):
            title = str(body.get("title") or response.reason_phrase or "Error")
            detail = body.get("detail")
            if detail is not None and not isinstance(detail, str):
                # FastAPI's default 422 puts the field list under "detail"
                errors = detail if isinstance(detail, list) else [detail]
                return cls(
                    response.status_code,
                    title,
                    _summarise_errors(errors),
                    errors,
                    type_=body.get("type"),
                )
            return cls(
                response.status_code, title, detail, body.get("errors"), type_=body.get("type")
            )
        text = response.text.strip()
        return cls(response.status_code, response.reason_phrase or "Error", text[:500] or None)


def _summarise_errors(errors: list[Any]) -> str:
    parts = []
    for e in errors:
        if isinstance(e, Mapping):
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {e.get('msg', e)}" if loc else str(e.get("msg", e)))
        else:
            parts.append(str(e))
    return "; ".join(parts)


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event; ``data`` is the decoded JSON payload (or the raw text)."""

    id: str | None
    event: str
    data: Any
    raw: str = field(default="", repr=False)

    @property
    def type(self) -> str:
        """The job event type: the SSE ``event:`` name, or ``type`` inside an event row."""
        if self.event and self.event != "message":
            return self.event
        if isinstance(self.data, Mapping) and isinstance(self.data.get("type"), str):
            return self.data["type"]
        return self.event

    @property
    def payload(self) -> Any:
        """The event's own data (unwraps a job-event row ``{"type", "data", ...}``)."""
        d = self.data
        if isinstance(d, Mapping) and "data" in d and ("type" in d or "seq" in d):
            return d["data"]
        return d


def iter_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parse an SSE line stream (WHATWG rules: ``field: value``, blank line dispatches)."""
    event_id: str | None = None
    event_type = ""
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                raw = "\n".join(data)
                try:
                    value: Any = json.loads(raw)
                except ValueError:
                    value = raw
                yield SseEvent(event_id, event_type or "message", value, raw)
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive ping
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            event_id = value or None
        # "retry" and unknown fields are ignored


class _Busy(Exception):
    """A 503/429 answer to a request that may be repeated."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _retry_wait(state: Any) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, _Busy):
        try:
            return min(5.0, max(0.0, float(exc.response.headers.get("Retry-After", ""))))
        except ValueError:
            pass
    return min(5.0, 0.5 * 2 ** (state.attempt_number - 1))


class DenseNASClient:
    """One method per REST route; JSON in, JSON out, :class:`ApiError` on failure."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
        retries: int = 4,
        sleep: Any = time.sleep,
        on_retry: Callable[[BaseException, int], None] | None = None,
    ) -> None:
        """``on_retry(error, attempt)``: called before each wait of a retried request (the CLI
        says there that the server is unreachable, rather than waiting silently)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self._sleep = sleep
        self.on_retry = on_retry
        headers = {"User-Agent": "densenas-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_env(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        **options: Any,
    ) -> DenseNASClient:
        """Explicit arguments, then env vars, then the config file, then the local admin token;
        ``options``: the constructor's other keywords (``retries``, ``on_retry``)."""
        cfg = read_config_file()
        url = url or os.environ.get("DENSENAS_URL") or cfg.get("url") or DEFAULT_URL
        token = (
            token or os.environ.get("DENSENAS_TOKEN") or cfg.get("token") or read_bootstrap_token()
        )
        return cls(str(url), token, timeout, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DenseNASClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call; a request that is safe to repeat (a GET, or a create with an
        Idempotency-Key) is retried on 503/429 (``Retry-After``, else 0.5 s doubling, ≤ 5 s)
        and on connection failures, ``retries`` times."""
        import tenacity

        clean = {k: v for k, v in (params or {}).items() if v is not None}
        repeatable = method == "GET" or "Idempotency-Key" in (headers or {})

        def once() -> httpx.Response:
            resp = self._http.request(
                method, path, params=clean or None, json=json_body, headers=dict(headers or {})
            )
            if repeatable and resp.status_code in (429, 503):
                raise _Busy(resp)
            return resp

        def before_sleep(state: Any) -> None:
            if self.on_retry is not None and state.outcome is not None:
                self.on_retry(state.outcome.exception(), state.attempt_number)

        try:
            resp = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(1 + (self.retries if repeatable else 0)),
                wait=_retry_wait,
                sleep=self._sleep,
                reraise=True,
                retry=tenacity.retry_if_exception_type((_Busy, httpx.ConnectError)),
                before_sleep=before_sleep,
            )(once)
        except _Busy as busy:
            resp = busy.response
        if resp.status_code >= 400:
            raise ApiError.from_response(resp)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # -- health -----------------------------------------------------------------------------
    def healthz(self) -> JSON:
        return self._json("GET", "/healthz")

    # -- jobs -------------------------------------------------------------------------------
    def create_job(
        self,
        kind: str,
        spec: Mapping[str, Any],
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        project: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> JSON:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body: JSON = {"kind": kind, "spec": dict(spec), "priority": priority}
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        if tags:
            body["tags"] = list(tags)
        if project is not None:
            body["project"] = project  # admins only
        return self._json("POST", "/v1/jobs", json_body=body, headers=headers)

    def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        project: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        tags: Sequence[str] | None = None,
        parent: int | None = None,
        top_level: bool | None = None,
    ) -> JSON:
        """``{"data": [job, ...], "next_cursor": str | None}``; ``tags``: jobs carrying all of
        them, ``parent``: a sweep's trials, ``top_level``: without any sweep's trials."""
        return self._json(
            "GET",
            "/v1/jobs",
            params={
                "status": status,
                "kind": kind,
                "project": project,
                "created_after": created_after,
                "created_before": created_before,
                "sort": sort,
                "limit": limit,
                "cursor": cursor,
                "tag": list(tags) if tags else None,
                "parent": parent,
                "top_level": None if top_level is None else str(top_level).lower(),
            },
        )

    def iter_jobs(self, **filters: Any) -> Iterator[JSON]:
        """Every job matching ``filters``, following ``next_cursor``."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list_jobs(cursor=cursor, **filters)
            yield from page.get("data", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get_job(self, job_id: int) -> JSON:
        return self._json("GET", f"/v1/jobs/{int(job_id)}")

    def sweep_trials(self, sweep_id: int) -> JSON:
        """A sweep's trials now: ``{data: [trial...], pareto_front: [job ids], counts}``."""
        return self._json("GET", f"/v1/jobs/{sweep_id}/trials")

    def set_tags(self, job_id: int, tags: Sequence[str]) -> JSON:
        """Replace a job's tags; returns the job."""
        return self._json("PUT", f"/v1/jobs/{int(job_id)}/tags", json_body={"tags": list(tags)})

    def job_resources(self, job_id: int) -> JSON:
        """Where a job runs and what it uses: its live processes (job actor, Train controller,
        ranks) with node, pid and usage, or the ranks its result recorded once it ended."""
        return self._json("GET", f"/v1/jobs/{int(job_id)}/resources")

    def job_checkpoints(self, job_id: int) -> JSON:
        """The job's complete checkpoints under its storage path, oldest first."""
        return self._json("GET", f"/v1/jobs/{int(job_id)}/checkpoints")

    def cancel_job(self, job_id: int) -> JSON:
        return self._json("POST", f"/v1/jobs/{int(job_id)}/cancel")

    def retry_job(self, job_id: int) -> JSON:
        return self._json("POST", f"/v1/jobs/{int(job_id)}/retry")

    def derive(
        self, job_id: int, cost: Mapping[str, Any] | None = None, *, name: str | None = None
    ) -> JSON:
        """Re-derive an architecture from a finished search under a budget → architecture.

        ``cost``: ``max_mult_adds`` (absolute count), ``max_latency_ms`` with
        ``latency_table_id``, ``top_k``.
        """
        body: JSON = {"cost": dict(cost or {})}
        if name is not None:
            body["name"] = name
        return self._json("POST", f"/v1/jobs/{int(job_id)}/derive", json_body=body)

    def derive_family(
        self, job_id: int, budgets: Sequence[Mapping[str, Any]], *, name: str | None = None
    ) -> list[JSON]:
        """One architecture per budget (2-16, each like :meth:`derive`'s ``cost``) from a finished
        search, derived in one transaction → the architectures in the budgets' order.

        ``name``: prefix of their names (each followed by its budget)."""
        body: JSON = {"budgets": [dict(b) for b in budgets]}
        if name is not None:
            body["name"] = name
        out = self._json("POST", f"/v1/jobs/{int(job_id)}/derive-family", json_body=body)
        return list(out["data"])

    def job_events(
        self, job_id: int, *, after: int | str | None = None, limit: int | None = None
    ) -> JSON:
        """``{"data": [event, ...], "next_after": id}`` (the JSON view of the event log)."""
        return self._json(
            "GET",
            f"/v1/jobs/{int(job_id)}/events",
            params={"format": "json", "after": after, "limit": limit},
            headers={"Accept": "application/json"},
        )

    def stream_events(
        self,
        job_id: int,
        after: int | str | None = None,
        *,
        reconnect: bool = True,
        max_retries: int = 20,
        read_timeout: float | None = 60.0,
        backoff: float = 0.5,
    ) -> Iterator[SseEvent]:
        """Follow a job's events over SSE until the job is terminal.

        A dropped connection, or a stream the server closes while the job still runs, is
        re-opened with ``Last-Event-ID`` set to the last id seen, so no event is lost or repeated.
        """
        last_id: str | None = None if after is None else str(after)
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            timeout = httpx.Timeout(self.timeout, read=read_timeout)
            try:
                with self._http.stream(
                    "GET", f"/v1/jobs/{int(job_id)}/events", headers=headers, timeout=timeout
                ) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise ApiError.from_response(resp)
                    for ev in iter_sse(resp.iter_lines()):
                        failures = 0
                        if ev.id is not None:
                            last_id = ev.id
                        yield ev
            except (httpx.TransportError, httpx.RemoteProtocolError):
                failures += 1
                if not reconnect or failures > max_retries:
                    raise
                time.sleep(min(backoff * failures, 5.0))
                continue
            # the server closed the stream cleanly: done if the job is, else resume
            if not reconnect or self.get_job(job_id).get("status") in TERMINAL_STATUSES:
                return
            failures += 1
            if failures > max_retries:
                return
            time.sleep(min(backoff * failures, 5.0))

    # -- architectures ----------------------------------------------------------------------
    def list_architectures(
        self,
        *,
        space: str | None = None,
        max_mult_adds: float | None = None,
        max_latency_ms: float | None = None,
        latency_table_id: int | None = None,
        min_accuracy: float | None = None,
        pareto: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JSON:
        return self._json(
            "GET",
            "/v1/architectures",
            params={
                "space": space,
                "max_mult_adds": max_mult_adds,
                "max_latency_ms": max_latency_ms,
                "latency_table_id": latency_table_id,
                "min_accuracy": min_accuracy,
                "pareto": pareto,
                "limit": limit,
                "cursor": cursor,
            },
        )

    def get_architecture(self, arch_id: int) -> JSON:
        return self._json("GET", f"/v1/architectures/{int(arch_id)}")

    def download_architecture(self, arch_id: int, format: str = "json") -> bytes:
        resp = self._request(
            "GET", f"/v1/architectures/{int(arch_id)}/download", params={"format": format}
        )
        return resp.content

    # -- latency tables, spaces, identity ---------------------------------------------------
    def list_latency_tables(self) -> JSON:
        return self._json("GET", "/v1/latency-tables")

    def get_latency_table(self, table_id: int) -> JSON:
        return self._json("GET", f"/v1/latency-tables/{int(table_id)}")

    def list_spaces(self) -> Any:
        return self._json("GET", "/v1/spaces")

    def get_space(self, name: str) -> JSON:
        return self._json("GET", f"/v1/spaces/{name}")

    def me(self) -> JSON:
        return self._json("GET", "/v1/me")

    # -- tokens (admin) ---------------------------------------------------------------------
    def create_token(self, name: str, *, project: str | None = None, admin: bool = False) -> JSON:
        body: JSON = {"name": name, "admin": admin}
        if project is not None:
            body["project"] = project
        return self._json("POST", "/v1/tokens", json_body=body)

    def list_tokens(self) -> Any:
        return self._json("GET", "/v1/tokens")

    def delete_token(self, token_id: int) -> None:
        self._json("DELETE", f"/v1/tokens/{int(token_id)}")


# -- configuration ---------------------------------------------------------------------------


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "densenas" / "config.toml"


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """``url`` and ``token`` from the user's config file; an absent or broken file is empty."""
    p = path or config_path()
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {k: data[k] for k in ("url", "token") if isinstance(data.get(k), str) and data[k]}


def bootstrap_token_path() -> Path:
    """Where the local server writes its bootstrap admin token (``<data_dir>/admin_token``)."""
    try:
        from service.settings import Settings

        return Path(Settings().data_dir) / "admin_token"
    except Exception:  # noqa: BLE001 - no usable settings here: the default layout
        return Path(os.environ.get("DENSENAS_DATA_DIR", ".densenas")) / "admin_token"


def read_bootstrap_token() -> str | None:
    try:
        text = bootstrap_token_path().read_text().strip()
    except OSError:
        return None
    return text or None
