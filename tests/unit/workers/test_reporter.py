"""HttpReporter against a real (tiny) HTTP server: batching, seq, retries, cancel, complete."""

from __future__ import annotations

import time

import pytest

from densenas_core.reporting import Reporter
from tests.support.fake_control_plane import FakeControlPlane
from workers.reporter import (
    EPOCH_SPAN,
    SLOTS,
    HttpReporter,
    RankReporter,
    ReporterError,
    SeqAllocator,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def plane():
    with FakeControlPlane() as p:
        p.add_job(7, token="secret")
        yield p


def make(plane: FakeControlPlane, **kw) -> HttpReporter:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return HttpReporter(plane.url, 7, "secret", **kw)


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def steps(rep, epoch, n, start=0):
    for s in range(start, start + n):
        rep.report("step", phase="weights", epoch=epoch, step=s, loss=1.0 / (s + 1), acc=0.5)


def test_is_a_reporter(plane):
    with make(plane, heartbeat_interval_s=0, flush_interval_s=0) as rep:
        assert isinstance(rep, Reporter)


def test_batches_by_size_and_on_epoch_end(plane):
    rep = make(plane, batch_size=4, flush_interval_s=60, heartbeat_interval_s=60)
    try:
        steps(rep, 0, 3)
        time.sleep(0.2)
        assert plane.jobs[7].batches == []  # below the batch size, before the interval
        steps(rep, 0, 1, start=3)
        wait_for(lambda: len(plane.jobs[7].batches) == 1)
        assert len(plane.jobs[7].batches[0]) == 4
        steps(rep, 0, 1, start=4)
        rep.report("epoch", epoch=0, train_loss=0.5, val_acc=0.4)  # epoch end flushes
        wait_for(lambda: len(plane.jobs[7].events) == 6)
    finally:
        rep.close()
    assert list(plane.jobs[7].batches) and plane.jobs[7].duplicates == 0


def test_flushes_on_interval(plane):
    rep = make(plane, batch_size=100, flush_interval_s=0.1, heartbeat_interval_s=60)
    try:
        steps(rep, 0, 2)
        wait_for(lambda: len(plane.jobs[7].events) == 2, timeout=3)
    finally:
        rep.close()


def test_seq_is_deterministic_so_a_resumed_attempt_dedupes(plane):
    def attempt(first_step, n):
        rep = make(plane, batch_size=5, flush_interval_s=0, heartbeat_interval_s=0)
        rep.report("log", message="start")
        for s in range(first_step, first_step + n):
            epoch = s // 10
            rep.report("step", phase="weights", epoch=epoch, step=s % 10, loss=0.1)
            rep.report("step", phase="arch", epoch=epoch, step=s % 10, loss=0.2)
            if s % 10 == 9:
                rep.report("epoch", epoch=epoch, train_loss=0.3)
                rep.report("arch", epoch=epoch, alpha=[[0.5, 0.5]])
        rep.close()
        return rep

    attempt(0, 17)  # "dies" after step 16; checkpoint was at step 12
    second = attempt(12, 18)  # resumes at 12, re-sends 12..16, runs to 29
    job = plane.jobs[7]
    assert second.duplicates == 5 * 2 + 1  # steps 12..16 in both phases + the start log
    assert job.duplicates == second.duplicates
    kept = job.of_type("step")
    assert [(d["epoch"], d["step"], d["phase"]) for d in kept] == [
        (s // 10, s % 10, ph) for s in range(30) for ph in ("weights", "arch")
    ]
    assert [d["epoch"] for d in job.of_type("epoch")] == [0, 1, 2]
    seqs = sorted(job.events)
    assert len(seqs) == len(set(seqs))
    # order of seq == order of emission in a clean run
    types = [job.events[s]["type"] for s in seqs]
    assert types[0] == "log" and types[-2:] == ["epoch", "arch"]


def test_seq_allocator_layout():
    a = SeqAllocator()
    assert a.seq_for("log", {"message": "x"}) == 2
    w = a.seq_for("step", {"phase": "weights", "epoch": 0, "step": 0})
    ar = a.seq_for("step", {"phase": "arch", "epoch": 0, "step": 0})
    log = a.seq_for("log", {"message": "y"})
    assert (w, ar, log) == (SLOTS, SLOTS + 1, SLOTS + 2)
    end0 = a.seq_for("epoch", {"epoch": 0})
    assert end0 == (EPOCH_SPAN - 1) * SLOTS
    assert a.seq_for("step", {"phase": "weights", "epoch": 1, "step": 0}) > end0
    for _ in range(SLOTS - 2):
        assert a.seq_for("log", {"message": "z"}) is not None
    assert a.seq_for("log", {"message": "overflow"}) is None
    # 1024 epochs of 262k steps fit a 32-bit column
    assert a.seq_for("epoch", {"epoch": 1023}) < 2**31


def test_retries_after_transient_503(plane):
    plane.fail_next = 3
    rep = make(plane, batch_size=2, flush_interval_s=0, heartbeat_interval_s=0)
    steps(rep, 0, 2)
    rep.close()
    assert len(plane.jobs[7].events) == 2
    assert [s for _, s in plane.requests] == [503, 503, 503, 200]


def test_gives_up_after_bounded_retries_and_keeps_events(plane):
    plane.fail_next = 100
    rep = make(plane, batch_size=100, flush_interval_s=0, heartbeat_interval_s=0, max_attempts=3)
    steps(rep, 0, 2)
    with pytest.raises(ReporterError, match="503"):
        rep.flush()
    assert len(plane.requests) == 3
    plane.fail_next = 0
    rep.flush()  # kept buffered: delivered once the control plane is back
    assert len(plane.jobs[7].events) == 2
    rep.close()


def test_cancel_flag_from_event_response(plane):
    rep = make(plane, batch_size=1, flush_interval_s=0, heartbeat_interval_s=0)
    steps(rep, 0, 1)
    assert not rep.should_stop()
    plane.jobs[7].cancel_requested = True
    steps(rep, 0, 1, start=1)
    assert rep.should_stop()
    rep.close()


def test_cancel_flag_from_background_heartbeat(plane):
    rep = make(plane, heartbeat_interval_s=0.05, flush_interval_s=0)
    try:
        wait_for(lambda: plane.jobs[7].heartbeats >= 1)
        assert not rep.should_stop()
        plane.jobs[7].cancel_requested = True
        wait_for(rep.should_stop)
    finally:
        rep.close()


def test_rejected_attempt_stops(plane):
    rep = HttpReporter(
        plane.url, 7, "wrong-token", batch_size=1, flush_interval_s=0, heartbeat_interval_s=0
    )
    steps(rep, 0, 1)
    assert rep.should_stop() and "401" in rep.rejected
    rep.close()


def test_complete_flushes_then_posts_outcome(plane):
    plane.fail_next = 1
    rep = make(plane, batch_size=50, flush_interval_s=0, heartbeat_interval_s=0)
    steps(rep, 0, 3)
    rep.complete("succeeded", result={"metrics": {"top1": float("nan"), "n": 3}})
    rep.close()
    job = plane.jobs[7]
    assert len(job.events) == 3
    assert job.completions == [
        {"outcome": "succeeded", "error": None, "result": {"metrics": {"top1": None, "n": 3}}}
    ]
    with pytest.raises(ValueError):
        rep.complete("exploded")


def test_rank_reporter_single_process():
    from densenas_core.reporting import ListReporter

    inner = ListReporter(stop_after=2)
    r0, r1 = RankReporter(inner, rank=0), RankReporter(inner, rank=1)
    r1.report("log", message="ignored")
    r0.report("log", message="a")
    assert not r0.should_stop()
    r0.report("log", message="b")
    assert r0.should_stop() and not r1.should_stop()
    assert len(inner.events) == 2
