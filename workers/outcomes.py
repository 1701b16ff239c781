"""Outcomes a job attempt's body could not post itself, posted on its behalf by whoever ran it
(an executor's thread, the detached job actor): the same ``complete`` call the job makes, with
the job's token."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .payload import JobPayload
from .reporter import HttpReporter, ReporterError
from .train_fns import describe, failure_tail

logger = logging.getLogger(__name__)


def post_outcome(
    payload: JobPayload,
    outcome: str,
    *,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    traceback_tail: str | None = None,
    max_attempts: int = 8,
) -> bool:
    """Report an outcome the job body could not report itself. False when the control plane
    refused it (typically 409: the attempt was already completed) or stayed unreachable."""
    reporter = HttpReporter(
        payload.api_url,
        payload.job_id,
        payload.job_token,
        flush_interval_s=0,
        heartbeat_interval_s=0,
        max_attempts=max_attempts,
    )
    try:
        reporter.complete(outcome, result=result, error=error, traceback_tail=traceback_tail)
        return True
    except ReporterError as exc:
        logger.warning("job %s: outcome %s not accepted: %s", payload.job_id, outcome, exc)
        return False
    finally:
        reporter.close()


def post_failure(payload: JobPayload, exc: BaseException) -> bool:
    """Report ``exc`` as the attempt's failure: its message and the end of its traceback."""
    return post_outcome(payload, "failed", error=describe(exc), traceback_tail=failure_tail(exc))


def finish_from(payload: JobPayload, final: Mapping[str, Any] | None) -> None:
    """Post what the job body left unposted (its final report says whether it posted)."""
    if not final or not final.get("final"):
        post_outcome(payload, "failed", error="the trainer finished without reporting an outcome")
    elif not final.get("posted"):
        post_outcome(
            payload,
            final["outcome"],
            result=final.get("result"),
            error=final.get("error"),
            traceback_tail=final.get("traceback_tail"),
        )
