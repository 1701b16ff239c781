"""The worker protocol's bodies: events, heartbeats and the completion a worker reports, with
the result of each job kind (:mod:`service.results` stores them). :mod:`service.schemas`
re-exports every name."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from .jobs.states import Outcome, StatusName


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    seq: int | None = Field(
        None,
        ge=0,
        le=2**62,
        description=(
            "worker sequence number, 0..2^62; a repeated seq is counted as a duplicate and "
            "not stored again"
        ),
    )
    type: str = Field(
        ...,
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$",
        description="event type (1..32 characters: letter, then letters, digits, _ . : -)",
    )
    data: dict[str, Any] = Field(default_factory=dict, description="event payload")


class EventsIn(BaseModel):
    events: list[EventIn] = Field(..., max_length=5000, description="events to store, at most 5000")


class EventsAccepted(BaseModel):
    accepted: Annotated[int, Field(description="events stored")]
    duplicates: Annotated[
        int, Field(description="events skipped because their seq was already stored")
    ]
    cancel_requested: Annotated[
        bool, Field(description="whether the job should stop (a cancel was requested)")
    ]


class HeartbeatOut(BaseModel):
    cancel_requested: Annotated[
        bool, Field(description="whether the job should stop (a cancel was requested)")
    ]
    status: Annotated[StatusName, Field(description="the job's current status")]


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outcome: Annotated[Outcome, Field(description="how the attempt ended")]
    error: Annotated[str | None, Field(description="failure message; null on success")] = None
    traceback_tail: str | None = Field(
        None,
        description=("the last lines of the failing worker's traceback (kept to 50 lines / 8 KB)"),
    )
    result: Annotated[
        dict[str, Any] | None,
        Field(
            description=(
                "the job kind's result on success (see SearchResultIn, RetrainResultIn, "
                "ProfileResultIn)"
            )
        ),
    ] = None


#: Where a job's data-parallel ranks ran: ``{rank, world_size, node_id, hostname, pid, device}``
#: per rank (``workers.runtime.Runtime.worker_info``); kept in the job's result.
WorkersIn = list[dict[str, Any]] | None


class SearchResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    architecture: dict[str, Any]
    arch_params: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    measured_latency: dict[str, Any] | None = None
    workers: WorkersIn = Field(None, max_length=4096)


class RetrainResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    metrics: dict[str, Any] = Field(default_factory=dict)
    workers: WorkersIn = Field(None, max_length=4096)


class ProfileResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    latency_table: dict[str, Any]
