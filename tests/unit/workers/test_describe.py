"""The failure message a user sees is the innermost real error, named."""
from __future__ import annotations

from workers.train_fns import describe


class WorkerGroupError(Exception):  # shape of ray.train.WorkerGroupError
    def __init__(self, failures):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


def test_plain_exception():
    assert describe(FileNotFoundError(2, "No such file", "/x")) == \
        "FileNotFoundError: [Errno 2] No such file: '/x'"


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
