"""JobSignals without a database: subscriptions, notifications and their payloads."""

from __future__ import annotations

import asyncio
import threading

from service.signals import ALL, CHANNEL, JobSignals
from service.tokens import REVOCATIONS_CHANNEL, revocation_epoch


def test_notifications_wake_only_the_streams_of_their_jobs():
    async def main() -> None:
        signals = JobSignals()
        signals.bind(asyncio.get_running_loop())
        with signals.subscribe([1, 2]) as both, signals.subscribe([3]) as three:
            signals.received(CHANNEL, "other-process:2,9")
            assert both.is_set() and not three.is_set()
            both.clear()
            signals.received(CHANNEL, f"{signals.origin}:3")  # our own commit, already seen
            assert not three.is_set()
            signals.received(CHANNEL, f"other-process:{ALL}")
            assert both.is_set() and three.is_set()
            both.clear(), three.clear()
            signals.received(CHANNEL, "other-process:12,x")  # unreadable: wake everything
            assert both.is_set() and three.is_set()
            both.clear()
            signals.notify_threadsafe([1])  # from the loop's own thread: at once
            assert both.is_set()
        assert signals._subscribers == {}  # unsubscribed on exit

    run_on_a_fresh_loop(main)


def run_on_a_fresh_loop(main) -> None:
    """``asyncio.run(main())`` in a thread of its own: the main thread of a full test run may
    still count as running an event loop (left by another test's framework)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 — re-raised in the test's thread
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]


def test_a_revocation_notification_moves_the_token_cache_epoch():
    before = revocation_epoch()
    JobSignals().received(REVOCATIONS_CHANNEL, "")
    assert revocation_epoch() == before + 1
