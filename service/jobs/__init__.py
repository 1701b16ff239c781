"""The job state machine and the queries around it, by concern:

* :mod:`.states` — :class:`JobStatus`, the terminal set and the transitions table;
* :mod:`.transitions` — the guarded ``UPDATE`` each move is, its ``status`` event, the end of
  an attempt, and the moves a person asks for (cancel, retry);
* :mod:`.create` — queueing a job (Idempotency-Key, references inside its spec);
* :mod:`.queries` — what the API reads (pages, counts, extras, events);
* :mod:`.document` — ``GET /v1/jobs/{id}`` as JSON from one Core read (the hot path);
* :mod:`.queue` — the dispatcher's claims and the attempts it ends;
* :mod:`.events` — the worker's events, heartbeats and ``complete``.

Callers use the package (``jobs.claim``, ``from service.jobs import claim``). Functions are
units of work: they commit on success and leave the session clean on error.

:mod:`.states` loads with the package: :mod:`service.models`, :mod:`service.schemas` and the
HTTP client take the statuses from it. The other modules import :mod:`service.models`, so they
load on the first use of a name of theirs (else importing the models would import them back).
"""

from __future__ import annotations

import importlib
from typing import Any

from .states import (  # noqa: F401 (the package's names)
    RETRYABLE,
    TERMINAL,
    TRANSITIONS,
    JobStatus,
    is_terminal,
    transition,
)

_MODULES = ("transitions", "create", "queries", "document", "queue", "events")


def _load() -> dict[str, Any]:
    names = globals()
    for name in _MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        names.update({n: getattr(module, n) for n in module.__all__})
    return names


def __getattr__(name: str) -> Any:
    names = _load()
    if name in names:
        return names[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_load())
