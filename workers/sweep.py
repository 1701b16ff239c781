"""A sweep's worker: its trials run as one Ray Tune ``Tuner`` (or one after another without
Ray), each trial the same Ray Train search a ``search`` job runs.

Each trial starts its own job through the control plane (``POST /v1/jobs/{sweep}/trials/{i}/
start`` with the sweep's token → the trial's launch payload, with the trial's own job token),
heartbeats and reports like a lone search, and posts its own ``complete``: the control plane
stores its architecture as for any search. What a trial's worker could not say (stopped early by
ASHA, its process gone) the sweep's worker says after the Tuner returns (``/trials/{i}/end``).
The sweep then completes: ``succeeded`` when a trial succeeded (in this attempt or an earlier
one), ``cancelled`` on request, else ``failed`` naming the first trial error. The control plane
writes the sweep's result (the trials table and Pareto front) from the trials' rows.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from .outcomes import finish_from, post_failure
from .payload import JobPayload
from .reporter import HttpReporter, ReporterError
from .train_fns import describe, run_job

logger = logging.getLogger(__name__)

#: Resources Tune reserves for a trial's driver (the process that waits on its trainer): Tune
#: needs a non-empty request, and a CPU share would keep the trainers' whole CPUs from fitting.
TRIAL_DRIVER_RESOURCES: dict[str, float] = {"memory": 1.0}


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, as the sweep's worker saw it."""

    trial: int
    outcome: str  # succeeded | failed | cancelled | unknown (its worker said nothing)
    error: str | None = None
    val_acc: float | None = None
    epochs_done: int | None = None


#: ``(payload, trial indices) -> outcomes``: runs the trials (Tune on Ray, a loop inline)
RunTrials = Callable[[JobPayload, list[int]], list[TrialOutcome]]
#: ``child payload -> its final record``: runs one trial's search (a TorchTrainer, or inline)
RunSearch = Callable[[JobPayload], Mapping[str, Any]]


def sweep_client(sweep: JobPayload) -> HttpReporter:
    """The sweep token's calls to its trial routes (no background thread)."""
    return HttpReporter(
        sweep.api_url, sweep.job_id, sweep.job_token, flush_interval_s=0, heartbeat_interval_s=0
    )


def run_trial(sweep: JobPayload, index: int, run_search: RunSearch) -> TrialOutcome:
    """Start trial ``index`` through the control plane and run its search to the end; the
    trial's own worker posts its outcome (or, failing that, this does with its token)."""
    client = sweep_client(sweep)
    try:
        launch = client.request(f"/trials/{index}/start", {})
    except ReporterError as exc:
        if exc.status == 409:  # the sweep is cancelling or over, or the trial is not queued
            return TrialOutcome(index, "cancelled", error=str(exc))
        raise
    finally:
        client.close()
    child = JobPayload.from_dict(launch["payload"])
    # Heartbeats from the start (a trainer can wait minutes for resources): the trial's job
    # is running, and a silent one is reaped like any search.
    beat = HttpReporter(
        child.api_url,
        child.job_id,
        child.job_token,
        flush_interval_s=0,
        heartbeat_interval_s=float(os.environ.get("DENSENAS_HEARTBEAT_S", 10.0)),
    )
    try:
        final = dict(run_search(child) or {})
    except Exception as exc:  # noqa: BLE001 - the trial's failure, not the sweep's
        logger.warning("sweep %s trial %s failed: %s", sweep.job_id, index, describe(exc))
        post_failure(child, exc)
        # The trial may have completed before its trainer failed to shut down (its placement
        # group swept a moment early): what counts is what the control plane recorded.
        client = sweep_client(sweep)
        try:
            status = end_unreported(client, TrialOutcome(index, "unknown", error=describe(exc)))
        finally:
            client.close()
        return TrialOutcome(index, status or "failed", error=describe(exc))
    finally:
        beat.close()
    finish_from(child, final)
    return TrialOutcome(index, str(final.get("outcome") or "failed"), error=final.get("error"))


def run_sweep(payload: JobPayload, run_trials: RunTrials) -> dict[str, Any]:
    """One attempt of a sweep: run every trial that has not succeeded, end those whose worker
    said nothing, and complete the sweep → its final record (posted)."""
    trials = payload.trials or []
    succeeded_before = sum(1 for t in trials if t.get("status") == "succeeded")
    pending = [int(t["trial"]) for t in trials if t.get("status") != "succeeded"]
    client = sweep_client(payload)
    try:
        outcomes = [
            o
            if o.outcome != "unknown"
            # what the control plane says the trial ended as (its own word may have come
            # first: a trial that finished as the scheduler stopped it succeeded)
            else TrialOutcome(o.trial, end_unreported(client, o) or "failed", error=o.error)
            for o in (run_trials(payload, pending) if pending else [])
        ]
        ok = succeeded_before + sum(1 for o in outcomes if o.outcome == "succeeded")
        beat = client.heartbeat()
        failed = [o for o in outcomes if o.outcome == "failed"]
        if beat.get("cancel_requested"):
            outcome, error = "cancelled", "sweep cancelled on request"
        elif ok:
            outcome, error = "succeeded", None
        else:
            first = failed[0] if failed else None
            outcome = "failed"
            error = f"all {len(trials)} trials failed" + (
                f"; trial {first.trial}: {first.error}" if first and first.error else ""
            )
        client.complete(outcome, error=error)
        return {"final": True, "outcome": outcome, "posted": True, "error": error}
    finally:
        client.close()


def end_unreported(client: HttpReporter, o: TrialOutcome) -> str | None:
    """End trial ``o`` whose Tune trial stopped without its outcome: stopped by the scheduler
    (``cancelled``, saying after how many epochs) or its process failed (``failed``) → the
    trial's status as the control plane has it now (None when it could not be asked). A trial
    that already ended is left as it is."""
    stopped = o.error is None
    if not stopped:
        how, why = "failed", f"trial process ended without an outcome: {o.error}"
    elif o.val_acc is not None:
        how = "cancelled"
        why = (
            f"stopped early by the ASHA scheduler after {o.epochs_done} epoch(s) "
            f"(val_acc {o.val_acc:.4f})"
        )
    else:
        how, why = "cancelled", "stopped early by the scheduler"
    try:
        return client.request(f"/trials/{o.trial}/end", {"outcome": how, "error": why}).get(
            "status"
        )
    except ReporterError as exc:
        logger.warning("trial %s: end not recorded: %s", o.trial, exc)
        return None


# -- inline: one trial after another in this thread -----------------------------------------------


def inline_trials(stop: threading.Event | None = None) -> RunTrials:
    """Trials one after another in this process (no Ray: tests, a laptop without Ray)."""

    def run(payload: JobPayload, indices: list[int]) -> list[TrialOutcome]:
        out = []
        for index in indices:
            if stop is not None and stop.is_set():
                break
            out.append(run_trial(payload, index, partial(run_job, stop_event=stop)))
        return out

    return run


# -- Ray Tune -------------------------------------------------------------------------------------


def _tune_search(child: JobPayload, cpus_per_worker: float) -> Mapping[str, Any]:
    """A trial's search on Ray Train, its reports forwarded to Tune (ASHA reads val_acc)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from .ray_job import build_trainer

    trainer = build_trainer(
        child, cpus_per_worker=cpus_per_worker, callbacks=[TuneReportCallback()]
    )
    return trainer.fit().return_value or {}


def _tune_trial(config: dict[str, Any], sweep: dict[str, Any], cpus_per_worker: float) -> dict:
    """A Tune trial's function: one trial of the sweep."""
    o = run_trial(
        JobPayload.from_dict(sweep),
        int(config["trial"]),
        partial(_tune_search, cpus_per_worker=cpus_per_worker),
    )
    return {"trial_outcome": o.outcome, "trial_error": o.error}


#: seq range of the sweep's own ``trial`` progress events (disjoint from the loops' and from
#: ``train_fns.WORKER_SEQ_BASE``): base + attempt·2³² + trial·2¹⁶ + epochs done
TRIAL_SEQ_BASE = 2**41


def trial_progress_seq(attempt: int, trial: int, epochs_done: int) -> int:
    return TRIAL_SEQ_BASE + attempt * 2**32 + trial * 2**16 + epochs_done


def _progress_callback(sweep: JobPayload) -> Any:
    """A Tune callback that posts each trial's finished epochs (``epochs_done``, ``val_acc``,
    forwarded from its trainer's reports) as ``trial`` events of the sweep: one stream follows
    the family. Tune pickles its callbacks with the experiment's state, so the HTTP client is
    made on first use and never pickled."""
    from ray.tune import Callback

    configs = {int(t["trial"]): t.get("config") or {} for t in sweep.trials or []}
    where = (sweep.api_url, sweep.job_id, sweep.job_token, sweep.attempt)

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.sent: dict[int, int] = {}
            self._reporter: HttpReporter | None = None

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "_reporter": None}

        def _report(self, **data: Any) -> None:
            if self._reporter is None:
                url, job_id, token, _ = where
                self._reporter = HttpReporter(url, job_id, token, heartbeat_interval_s=0)
            self._reporter.report("trial", **data)

        def on_trial_result(
            self, iteration: int, trials: Any, trial: Any, result: Any, **info: Any
        ) -> None:
            done, index = result.get("epochs_done"), (trial.config or {}).get("trial")
            if not isinstance(done, int) or not isinstance(index, int):
                return
            if self.sent.get(index, 0) >= done:
                return
            self.sent[index] = done
            self._report(
                seq=trial_progress_seq(where[3], index, done),
                trial=index,
                config=configs.get(index, {}),
                epochs_done=done,
                val_acc=result.get("val_acc"),
            )

        def _client(self) -> HttpReporter:
            url, job_id, token, _ = where
            return HttpReporter(url, job_id, token, flush_interval_s=0, heartbeat_interval_s=0)

        def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            """A trial the scheduler stopped ends now, not when the whole Tuner returns (its
            heartbeats stopped with its process: the reaper would call it lost)."""
            last = trial.last_result or {}
            if "trial_outcome" not in last and isinstance((trial.config or {}).get("trial"), int):
                client = self._client()
                try:
                    end_unreported(client, _outcome_from(trial.config, last, None))
                finally:
                    client.close()

        def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            if isinstance((trial.config or {}).get("trial"), int):
                error = trial.get_error() if hasattr(trial, "get_error") else None
                client = self._client()
                try:
                    end_unreported(
                        client,
                        _outcome_from(
                            trial.config, {}, describe(error) if error else "the Tune trial failed"
                        ),
                    )
                finally:
                    client.close()

        def on_experiment_end(self, trials: Any, **info: Any) -> None:
            if self._reporter is not None:
                self._reporter.close()

    return TrialProgress()


def tune_trials(payload: JobPayload, *, cpus_per_worker: float = 1.0) -> RunTrials:
    """Trials as one Ray Tune ``Tuner`` (``max_concurrent`` at once, ASHA when asked)."""

    def run(sweep: JobPayload, indices: list[int]) -> list[TrialOutcome]:
        from ray import tune

        spec = sweep.spec
        # Only ASHA reads a metric, and not every report carries one; a trial that ASHA
        # stops ends within seconds, not Tune's default 10 minutes.
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "10")
        scheduler = None
        if spec.get("scheduler") == "asha":
            from ray.tune.schedulers import ASHAScheduler

            epochs = int((spec.get("search") or {}).get("epochs") or 1)
            scheduler = ASHAScheduler(
                time_attr="epochs_done",
                metric="val_acc",
                mode="max",
                # beyond the last epoch: a trial that reaches it finishes and reports itself,
                # never stopped by the scheduler in the middle of posting its outcome
                max_t=max(epochs, 1) + 1,
                grace_period=min(int(spec.get("grace_epochs") or 1), max(epochs, 1)),
            )
        trainable = tune.with_resources(
            partial(_tune_trial, sweep=sweep.to_dict(), cpus_per_worker=cpus_per_worker),
            TRIAL_DRIVER_RESOURCES,
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(indices)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=int(spec.get("max_concurrent") or 1),
                scheduler=scheduler,
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=f"densenas-sweep-{sweep.job_id}-a{sweep.attempt}",
                storage_path=sweep.storage_path,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[_progress_callback(sweep)],
            ),
        )
        grid = tuner.fit()
        return [_outcome_of(grid[i]) for i in range(len(grid))]

    return run


def _outcome_of(result: Any) -> TrialOutcome:
    """A Tune trial's result → how the trial ended (``unknown``: its function never returned:
    stopped by the scheduler, or its process died)."""
    error = describe(result.error) if result.error is not None else None
    return _outcome_from(result.config, result.metrics or {}, error)


def _outcome_from(config: Any, metrics: Mapping[str, Any], error: str | None) -> TrialOutcome:
    index = int((config or {}).get("trial", -1))
    if error is not None:
        return TrialOutcome(index, "unknown", error=error)
    if "trial_outcome" in metrics:
        return TrialOutcome(index, str(metrics["trial_outcome"]), error=metrics.get("trial_error"))
    val, done = metrics.get("val_acc"), metrics.get("epochs_done")
    return TrialOutcome(
        index,
        "unknown",
        val_acc=float(val) if isinstance(val, (int, float)) else None,
        epochs_done=int(done) if isinstance(done, (int, float)) else None,
    )
