"""The failure message a user sees is the innermost real error, named."""

from __future__ import annotations

from workers.payload import TRACEBACK_TAIL_CHARS, TRACEBACK_TAIL_LINES, tail
from workers.train_fns import describe, failure_tail


class WorkerGroupError(Exception):  # shape of ray.train.WorkerGroupError
    def __init__(self, failures):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


def test_plain_exception():
    assert (
        describe(FileNotFoundError(2, "No such file", "/x"))
        == "FileNotFoundError: [Errno 2] No such file: '/x'"
    )


def test_unwraps_worker_group_and_causes():
    try:
        try:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except RuntimeError as inner:
            raise ValueError("step failed") from inner
    except ValueError as exc:
        wrapped = WorkerGroupError({0: exc})
    assert describe(wrapped) == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_message_already_named_is_not_prefixed_twice():
    assert describe(ValueError("ValueError: bad")) == "ValueError: bad"


class RayTaskError(Exception):  # shape of ray.exceptions.RayTaskError
    def __init__(self, cause, traceback_str):
        super().__init__(traceback_str)
        self.cause, self.traceback_str = cause, traceback_str


def test_failure_tail_is_the_end_of_the_local_traceback():
    noise = "\n".join(f"allocator stat {i}" for i in range(80))
    try:
        raise RuntimeError(f"{noise}\nCUDA out of memory")
    except RuntimeError as exc:
        text = failure_tail(exc)
    lines = text.splitlines()
    assert len(lines) == TRACEBACK_TAIL_LINES and lines[-1] == "CUDA out of memory"
    assert "Traceback" not in text  # its start is what the tail leaves out


def test_failure_tail_prefers_the_remote_workers_traceback():
    remote = "Traceback (most recent call last):\n  File \"worker.py\", line 3\nKeyError: 'x'"
    wrapped = WorkerGroupError({0: RayTaskError(KeyError("x"), remote)})
    assert failure_tail(wrapped) == remote


def test_tail_keeps_the_last_lines_and_characters():
    assert tail(None) is None and tail("") is None
    assert tail("a\nb\nc\n", lines=2) == "b\nc"
    long = tail("x" * 10_000)
    assert len(long) == TRACEBACK_TAIL_CHARS and long.startswith("…")
