"""Typed response views of the JSON a job stores as it runs (issue 15): its ``progress``, its
``result`` and the ``data`` of each worker event type. They only describe: every field is
optional, producers may add keys (``extra="allow"``), and a view serializes to exactly the JSON
it was read from (the keys it was given, in their order) — stored JSON and responses do not
change. What the events carry comes from ``densenas_core.search`` / ``densenas_core.retrain``
(``_loop.step_emitter`` stamps ``global_step``) and ``workers.train_fns``; ``progress`` is kept
by :func:`service.jobs.events.ingest_events` and :func:`service.watchdog.record_steps`; the
``result`` by :mod:`service.results`. :mod:`service.schemas` re-exports every name."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

#: a JSON number as sent: an integer stays an integer
Number = int | float


class AsStored(BaseModel):
    """A view of stored JSON: unknown keys kept, and serialized as read (only the keys it was
    given, in their order; no defaults added)."""

    model_config = ConfigDict(extra="allow")

    _keys: list[str] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        view = handler(data)
        if isinstance(data, dict) and isinstance(view, AsStored):
            view._keys = list(data)
        return view

    @model_serializer(mode="wrap")
    def _as_read(
        self, handler: SerializerFunctionWrapHandler
    ):  # no return type: the schema stays the model's
        out = handler(self)
        if self._keys is not None:
            return {k: out[k] for k in self._keys if k in out}
        keep = self.model_fields_set | set(self.model_extra or {})
        return {k: v for k, v in out.items() if k in keep}


def _d(text: str) -> Any:
    return Field(None, description=text)


# -- event data --------------------------------------------------------------------------------


class StepEventData(AsStored):
    """``step``: one optimizer step (search: weight or arch step; retrain) or, in a profile,
    every 10th measured op."""

    phase: str | None = _d("search: 'weights' or 'arch'; retrain: 'retrain'; profile: 'profile'")
    epoch: int | None = _d("epoch, 0-based (always 0 in a profile)")
    step: int | None = _d("step within the epoch, 0-based (profile: ops measured so far)")
    global_step: int | None = _d("steps since the job started, over all epochs and attempts")
    loss: Number | None = _d("training loss of the batch")
    acc: Number | None = _d("training accuracy of the batch, 0..1")
    lr: Number | None = _d("learning rate of the step")
    expected_cost: Number | None = _d(
        "search: the supernet's expected cost (in the cost's unit: mult-adds or ms)"
    )
    total: int | None = _d("profile: ops to measure")
    op: str | None = _d("profile: the op last measured")


class EpochEventData(AsStored):
    """``epoch``: the summary of a finished epoch."""

    epoch: int | None = _d("epoch, 0-based")
    global_step: int | None = _d("steps since the job started")
    phase: str | None = _d("search: 'warmup' (weights only) or 'search'")
    train_loss: Number | None = _d("mean training loss over the epoch")
    train_acc: Number | None = _d("training accuracy over the epoch, 0..1")
    val_loss: Number | None = _d("validation loss (search: of the argmax sub-network)")
    val_acc: Number | None = _d("validation top-1 accuracy, 0..1")
    top1: Number | None = _d("retrain: validation top-1 accuracy, 0..1")
    top5: Number | None = _d("retrain: validation top-5 accuracy, 0..1")
    derived_val_acc: Number | None = _d(
        "search: validation accuracy of the derived single-path network, 0..1"
    )
    supernet_val_loss: Number | None = _d("search: loss of sampled sub-networks on validation")
    supernet_val_acc: Number | None = _d("search: accuracy of sampled sub-networks, 0..1")
    arch_loss: Number | None = _d("search: mean arch-step loss; null in warm-up epochs")
    arch_acc: Number | None = _d("search: arch-step accuracy, 0..1; null in warm-up epochs")
    expected_cost: Number | None = _d("search: expected cost of the supernet (cost_unit)")
    derived_cost: Number | None = _d("search: cost of the derived network (cost_unit)")
    cost_unit: str | None = _d("search: unit of the costs (mult-adds or ms)")
    lr: Number | None = _d("weight learning rate at the epoch's last step")
    steps: int | None = _d("search: weight + arch steps in the epoch")
    epoch_seconds: Number | None = _d("seconds spent training in the epoch")
    alpha_entropy: Number | None = _d("search: mean normalised entropy of the α rows, 0..1")
    beta_entropy: Number | None = _d("search: mean normalised entropy of the β rows, 0..1")
    alpha_top_gap: Number | None = _d("search: max over α rows of (top probability − 1/k), 0..1")
    argmax_changes: int | None = _d(
        "search: α rows whose most probable op changed since the last epoch; null on the first"
    )


class ArchEventData(AsStored):
    """``arch`` (search only): the architecture after an epoch."""

    epoch: int | None = _d("epoch, 0-based")
    global_step: int | None = _d("steps since the job started")
    probs: Any = _d("softmax of the α/β arch parameters (SuperNet.export_probs)")
    architecture: dict[str, Any] | None = _d(
        "the derived architecture document (densenas_core.document)"
    )
    alpha_entropy_rows: list[Number] | None = _d("normalised entropy of each α row, 0..1")
    beta_entropy_rows: list[Number] | None = _d(
        "normalised entropy of each β row with at least 2 out-paths, 0..1"
    )


class LogEventData(AsStored):
    """``log``: a line for people (e.g. the search's setup, a resume from a checkpoint)."""

    message: str | None = _d("the text")
    global_step: int | None = _d("steps since the job started, when sent by a loop")
    schedule: dict[str, Any] | None = _d("search's first log: the resolved lr/warm-up schedule")


class ErrorEventData(AsStored):
    """``error``: a failure a worker reports while running."""

    message: str | None = _d("what went wrong")
    traceback_tail: str | None = _d("last lines of the traceback")


class TrialEventData(AsStored):
    """``trial``: a sweep's trial moved (the control plane: ``status``) or finished an epoch
    (the sweep's worker: ``epochs_done``, ``val_acc``)."""

    trial: int | None = _d("0-based index of the trial in the sweep's grid")
    job_id: int | None = _d("the trial's search job")
    config: dict[str, Any] | None = _d("the trial's grid values, by dotted field path")
    status: str | None = _d("the trial job's new status (a move)")
    attempt: int | None = _d("the trial job's attempt (a move)")
    reason: str | None = _d("why it moved, when said")
    epochs_done: int | None = _d("epochs the trial's search has finished (progress)")
    val_acc: Number | None = _d("its val_acc after that epoch, 0..1 (progress)")


#: the event types workers send (``workers.payload.WORKER_EVENT_TYPES``) → their data
EVENT_DATA_MODELS: dict[str, type[AsStored]] = {
    "step": StepEventData,
    "epoch": EpochEventData,
    "arch": ArchEventData,
    "log": LogEventData,
    "error": ErrorEventData,
    "trial": TrialEventData,
}

EventData = (
    StepEventData | EpochEventData | ArchEventData | LogEventData | ErrorEventData | TrialEventData
)


# -- progress ----------------------------------------------------------------------------------


class PaceLast(AsStored):
    phase: str | None = _d("phase of the last step reported")
    epoch: int | None = _d("epoch of the last step reported")
    step: int | None = _d("step (within its epoch) of the last step reported")


class JobPace(AsStored):
    """The progress watchdog's step clock of the current attempt."""

    attempt: int | None = _d("the attempt this clock belongs to")
    first_at: str | None = _d("first step report of the attempt (ISO 8601, UTC)")
    last_at: str | None = _d("last step report (ISO 8601, UTC)")
    reports: int | None = _d("event batches with steps in them")
    steps: int | None = _d("step events received in the attempt (re-sent steps count)")
    last: PaceLast | None = _d("the last step reported")


class JobProgress(AsStored):
    """A running job's latest ``step`` and ``epoch`` data and its pace."""

    step: StepEventData | None = _d("data of the last accepted step event")
    epoch: EpochEventData | None = _d("data of the last accepted epoch event")
    pace: JobPace | None = _d("the current attempt's step clock")
    updated_at: str | None = _d("when progress last changed (ISO 8601, UTC)")


# -- results -----------------------------------------------------------------------------------


class SweepTrial(AsStored):
    """One trial of a sweep's result."""

    trial: int | None = _d("0-based index in the sweep's grid")
    job_id: int | None = _d("the trial's search job (GET /v1/jobs/{job_id})")
    config: dict[str, Any] | None = _d("the grid values of this trial, by dotted field path")
    status: str | None = _d("the trial job's status when the sweep ended")
    attempt: int | None = _d("the trial job's attempt (one per sweep attempt that ran it)")
    error: str | None = _d("why the trial failed or was cancelled; null otherwise")
    val_acc: Number | None = _d("the search's final val_acc (argmax sub-network), 0..1")
    derived_val_acc: Number | None = _d("the derived network's val_acc in the supernet, 0..1")
    architecture_id: int | None = _d("the architecture the trial stored")
    mult_adds: int | None = _d("that architecture's multiply-adds")
    params: int | None = _d("that architecture's parameters")


class JobResult(AsStored):
    """What a succeeded job stored: search → ``architecture_id``, ``metrics``, ``workers``;
    retrain → ``architecture_id``, ``metrics``, ``workers``; profile → ``latency_table_id``.
    The architecture, its arch params and measured latency, or the latency table, are rows of
    their own (GET /v1/architectures/{id}, /v1/latency-tables/{id})."""

    architecture_id: int | None = _d(
        "search: the architecture it found; retrain: the one it trained"
    )
    latency_table_id: int | None = _d("profile: the latency table it measured")
    metrics: dict[str, Any] | None = _d(
        "search/retrain: the loop's final figures (retrain: top1, top5, loss, train_loss, "
        "train_acc, best_top1, epochs, global_steps, train_seconds, wall_seconds), with "
        "world_size"
    )
    workers: list[dict[str, Any]] | None = _d(
        "where the data-parallel ranks ran: {rank, world_size, node_id, hostname, pid, "
        "device} per rank; absent when the worker did not say"
    )
    trials: list[SweepTrial] | None = _d("sweep: one entry per trial, in grid order")
    pareto_front: list[int] | None = _d(
        "sweep: job ids of the trials no other beats on both mult-adds and val_acc, cheapest first"
    )
    counts: dict[str, int] | None = _d("sweep: trials by status")
