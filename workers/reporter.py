"""The worker side of the worker ⇄ control-plane protocol (docs/DESIGN.md).

:class:`HttpReporter` implements ``densenas_core.reporting.Reporter`` over HTTP: loops report
events, the reporter buffers them and POSTs batches to ``/v1/jobs/{id}/events`` with the job's
bearer token; a background thread flushes on an interval and sends heartbeats; every response
may carry ``cancel_requested``, which turns :meth:`HttpReporter.should_stop` true.

Sequence numbers are a pure function of the event, never a counter of what this process
happened to send: an attempt that resumes from a checkpoint re-sends the steps after the
checkpoint with the same ``seq`` and the server drops them as duplicates, so the stored stream
has neither gaps nor repeats. A loop that numbers its events passes ``seq=`` (the core loops use
``4·global_step + slot``); otherwise :class:`SeqAllocator` derives it from epoch/step/type.
A loop must :meth:`HttpReporter.flush` before it persists a checkpoint (the train functions
do), otherwise buffered events older than the checkpoint could die with the process and
never be re-sent.

:class:`RankReporter` lets every rank of a process group hold "a reporter": rank 0 talks HTTP,
the others stay silent, and all ranks agree on stopping through a broadcast of rank 0's flag.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import tenacity

from .payload import tail

logger = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "failed", "cancelled")

# -- sequence numbers -------------------------------------------------------------------------
#
# seq = position * SLOTS + slot. A position is an (epoch, step) pair laid out epoch-major; the
# last position of an epoch's range holds the epoch-level events (epoch summary, arch tables).
# Position 0 is "before the first step" (setup logs). Slots separate the events that share a
# position: the weight step, the arch step, then a few free-form events (logs) in emission order.
# 8 slots × 2**18 positions per epoch stays below 2**31 for 1024 epochs (fits an INTEGER column);
# Python ints and BIGINT have no such limit.
SLOTS = 8
EPOCH_SPAN = 2**18
_STEP_SLOTS = {"weights": 0, "arch": 1}
_EPOCH_SLOTS = {"epoch": 0, "arch": 1}
_FIRST_FREE_SLOT = 2


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class SeqAllocator:
    """Derives a deterministic ``seq`` for each event from the event itself.

    Events without their own epoch/step (logs) take the next free slot of the position of the
    last positioned event; past the slots of that position they are not numbered (``None``) and
    the reporter logs them locally instead of sending them.
    """

    def __init__(self) -> None:
        self._position = 0
        self._next_free: dict[int, int] = {}

    @staticmethod
    def step_position(epoch: int, step: int) -> int:
        if not 0 <= step < EPOCH_SPAN - 2:
            raise ValueError(f"step {step} outside the sequence range [0, {EPOCH_SPAN - 2})")
        return epoch * EPOCH_SPAN + step + 1

    @staticmethod
    def epoch_end_position(epoch: int) -> int:
        return (epoch + 1) * EPOCH_SPAN - 1

    def set_position(self, epoch: int | None, step: int | None = None) -> None:
        """Pin the position (a resumed attempt: free-form events follow the restored step)."""
        if epoch is None:
            self._position = 0
        elif step is None:
            self._position = self.epoch_end_position(epoch)
        else:
            self._position = self.step_position(epoch, step)

    def seq_for(self, event_type: str, data: Mapping[str, Any]) -> int | None:
        epoch, step = _as_int(data.get("epoch")), _as_int(data.get("step"))
        if event_type == "step" and epoch is not None and step is not None:
            self._position = self.step_position(epoch, step)
            slot = _STEP_SLOTS.get(str(data.get("phase", "weights")))
            if slot is not None:
                return self._position * SLOTS + slot
        elif event_type in _EPOCH_SLOTS and epoch is not None and step is None:
            self._position = self.epoch_end_position(epoch)
            return self._position * SLOTS + _EPOCH_SLOTS[event_type]
        elif epoch is not None and step is not None:
            self._position = self.step_position(epoch, step)
        elif epoch is not None:
            self._position = self.epoch_end_position(epoch)
        slot = self._next_free.get(self._position, _FIRST_FREE_SLOT)
        if slot >= SLOTS:
            return None
        self._next_free[self._position] = slot + 1
        return self._position * SLOTS + slot


def jsonable(value: Any) -> Any:
    """Plain JSON values out of what loops report (tensors, numpy scalars, tuples, NaN)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # torch tensors, numpy arrays and scalars
    if callable(tolist):
        return jsonable(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return jsonable(item())
    return str(value)


# -- HTTP -------------------------------------------------------------------------------------


class ReporterError(RuntimeError):
    """The control plane could not be reached, or refused the request for good (``status``:
    the HTTP status of a refusal; None when unreachable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Transient(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


# The control plane answers these when this attempt is no longer the job's live attempt
# (token revoked, job finished or reassigned): stop rather than train for nobody.
_REJECTED = {401, 403, 404, 409, 410}


class HttpReporter:
    """Reporter that POSTs batched events to the control plane; see the module docstring."""

    def __init__(
        self,
        api_url: str,
        job_id: int,
        job_token: str,
        *,
        batch_size: int = 32,
        flush_interval_s: float = 2.0,
        heartbeat_interval_s: float = 10.0,
        timeout_s: float = 10.0,
        max_attempts: int = 8,
        backoff_s: float = 0.2,
        backoff_max_s: float = 10.0,
        max_buffer: int = 20_000,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = f"{api_url.rstrip('/')}/v1/jobs/{int(job_id)}"
        self.job_id = int(job_id)
        self.batch_size = max(1, batch_size)
        self.flush_interval_s = flush_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_buffer = max_buffer
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {job_token}"},
            timeout=timeout_s,
            transport=transport,
        )
        # A fresh Retrying for each request (its state is per call).
        self._retrying = functools.partial(
            tenacity.Retrying,
            stop=tenacity.stop_after_attempt(max(1, max_attempts)),
            wait=tenacity.wait_exponential(multiplier=backoff_s, max=backoff_max_s),
            retry=tenacity.retry_if_exception_type((httpx.TransportError, _Transient)),
            sleep=sleep,
            reraise=True,
        )
        self._seq = SeqAllocator()
        self._buffer: list[dict[str, Any]] = []
        self._buffer_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._last_flush = time.monotonic()
        #: When events were last delivered: they refresh the heartbeat on the server too.
        self._last_delivered = float("-inf")
        self._cancel = threading.Event()
        self._rejected: str | None = None
        self._closed = threading.Event()
        self._wake = threading.Event()
        self.sent = 0
        self.duplicates = 0
        self.last_status: str | None = None
        self._thread: threading.Thread | None = None
        if heartbeat_interval_s > 0 or flush_interval_s > 0:
            self._thread = threading.Thread(
                target=self._background, name=f"densenas-reporter-{job_id}", daemon=True
            )
            self._thread.start()

    # -- Reporter protocol ----------------------------------------------------------------------

    def report(self, event_type: str, **data: Any) -> None:
        try:
            seq = data.pop("seq", None)  # a loop that numbers its own events (core loops do)
            if not isinstance(seq, int) or isinstance(seq, bool):
                seq = self._seq.seq_for(event_type, data)
        except ValueError as exc:
            logger.warning("job %s: event %s not sent: %s", self.job_id, event_type, exc)
            return
        if seq is None:
            logger.info(
                "job %s: %s %s (no free seq slot; kept local)", self.job_id, event_type, data
            )
            return
        event = {"seq": seq, "type": str(event_type), "data": jsonable(data)}
        with self._buffer_lock:
            self._buffer.append(event)
            if len(self._buffer) > self.max_buffer:  # control plane down for long: keep newest
                del self._buffer[: len(self._buffer) - self.max_buffer]
            due = (
                len(self._buffer) >= self.batch_size
                or event_type == "epoch"
                or (
                    self.flush_interval_s > 0
                    and time.monotonic() - self._last_flush >= self.flush_interval_s
                )
            )
        if due:
            if self._thread is not None:
                self._wake.set()  # the background thread sends it: the loop never waits on HTTP
            else:
                self.flush(raise_errors=False)

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    # -- control ----------------------------------------------------------------------------------

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def rejected(self) -> str | None:
        """Why the control plane refused this attempt (then :meth:`should_stop` is true)."""
        return self._rejected

    def set_position(self, epoch: int | None, step: int | None = None) -> None:
        self._seq.set_position(epoch, step)

    def flush(self, *, raise_errors: bool = True) -> None:
        """Send everything buffered, in order; on failure the events stay buffered."""
        with self._send_lock:
            while True:
                with self._buffer_lock:
                    batch = self._buffer[: self.batch_size]
                    self._last_flush = time.monotonic()
                if not batch:
                    return
                try:
                    body = self._post("/events", {"events": batch})
                except ReporterError as exc:
                    if raise_errors:
                        raise
                    logger.warning(
                        "job %s: events not delivered yet (%s); kept %d buffered",
                        self.job_id,
                        exc,
                        len(self._buffer),
                    )
                    return
                with self._buffer_lock:
                    # The buffer may have been trimmed meanwhile; drop exactly what was sent.
                    sent = {id(e) for e in batch}
                    self._buffer = [e for e in self._buffer if id(e) not in sent]
                self.sent += int(body.get("accepted", len(batch)))
                self.duplicates += int(body.get("duplicates", 0))
                self._last_delivered = time.monotonic()

    def heartbeat(self) -> dict[str, Any]:
        body = self._post("/heartbeat", {})
        self.last_status = body.get("status", self.last_status)
        return body

    def complete(
        self,
        outcome: str,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        traceback_tail: str | None = None,
    ) -> dict[str, Any]:
        """Flush, then report the attempt's outcome (retried; raises :class:`ReporterError`);
        a failure carries the end of the worker's traceback (``workers.payload.tail``)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        try:
            self.flush()
        except ReporterError as exc:  # the outcome matters more than the last few events
            logger.warning("job %s: final events lost: %s", self.job_id, exc)
        payload = {"outcome": outcome, "error": error, "result": jsonable(dict(result or {}))}
        if traceback_tail:
            payload["traceback_tail"] = tail(traceback_tail)
        return self._post("/complete", payload, allow_rejected=False)

    def request(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to another of the job's worker routes (``path`` after
        ``/v1/jobs/{id}``: a sweep's ``/trials/{i}/start``), retried like events; a refusal
        raises :class:`ReporterError` with its status and does not stop the job."""
        return self._post(path, jsonable(dict(payload)), allow_rejected=False)

    def close(self) -> None:
        """Stop the background thread, send what is buffered (best effort), close the client."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except ReporterError as exc:
            logger.warning("job %s: events lost on close: %s", self.job_id, exc)
        self._client.close()

    def __enter__(self) -> HttpReporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    def _background(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_interval_s
        tick = min(x for x in (self.flush_interval_s, self.heartbeat_interval_s, 1.0) if x > 0)
        while not self._closed.is_set():
            woken = self._wake.wait(tick)
            self._wake.clear()
            if self._closed.is_set():
                return
            now = time.monotonic()
            try:
                if woken or (
                    self.flush_interval_s > 0 and now - self._last_flush >= self.flush_interval_s
                ):
                    self.flush(raise_errors=False)
                if self.heartbeat_interval_s > 0 and now >= next_beat:
                    next_beat = now + self.heartbeat_interval_s
                    # coalesced: events delivered within the interval were a heartbeat already
                    # (and told of a cancel); at 10,000 jobs each skipped beat is 1,000 POSTs/s
                    if now - self._last_delivered >= self.heartbeat_interval_s:
                        self.heartbeat()
            except ReporterError as exc:
                logger.warning("job %s: heartbeat failed: %s", self.job_id, exc)
            except Exception:  # never let the thread die silently mid-job
                logger.exception("job %s: reporter background thread error", self.job_id)

    def _post(
        self, path: str, payload: dict[str, Any], *, allow_rejected: bool = True
    ) -> dict[str, Any]:
        url = self.base + path

        def once() -> httpx.Response:
            response = self._client.post(url, json=payload)
            if response.status_code >= 500 or response.status_code == 429:
                raise _Transient(response.status_code, response.text)
            return response

        try:
            response = self._retrying()(once)
        except (httpx.TransportError, _Transient) as exc:
            raise ReporterError(f"POST {url} failed after retries: {exc}") from exc
        if response.status_code >= 400:
            message = f"POST {url} -> HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code in _REJECTED and allow_rejected:
                self._rejected = message
                self._cancel.set()
            raise ReporterError(message, response.status_code)
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if isinstance(body, dict) and body.get("cancel_requested"):
            self._cancel.set()
        return body if isinstance(body, dict) else {}


# -- distributed ------------------------------------------------------------------------------


class RankReporter:
    """A reporter for every rank of a torch.distributed group.

    Rank 0 wraps the real reporter; other ranks report nothing. ``should_stop`` is a collective
    (rank 0's answer broadcast to all), so every rank must call it the same number of times; the
    core loops call it once per step on every rank, which keeps the ranks in step and makes them
    leave the loop together.
    """

    def __init__(
        self, inner: Any | None, *, rank: int = 0, world_size: int = 1, device: Any = "cpu"
    ) -> None:
        self.inner = inner if rank == 0 else None
        self.rank = rank
        self.world_size = world_size
        self.device = device

    def report(self, event_type: str, **data: Any) -> None:
        if self.inner is not None:
            self.inner.report(event_type, **data)

    def should_stop(self) -> bool:
        local = bool(self.inner.should_stop()) if self.inner is not None else False
        if self.world_size <= 1:
            return local
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def flush(self) -> None:
        if self.inner is not None and hasattr(self.inner, "flush"):
            self.inner.flush(raise_errors=False)
