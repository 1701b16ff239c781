"""The job page's Workers panel and checkpoint table (issue 15) with real data: a server with
the inline executor runs a tiny real search; while it runs the panel lists the process it runs
in with its pid and measured CPU and memory (every 5 s), and once it ended the rank its result
recorded and the checkpoints the search wrote, read from its storage."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.browser.support import login, screenshot
from tests.support.live import LiveServer
from tests.support.tiny_specs import tiny_space
from tests.support.waiting import wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

# ~12 s of search on one core (10 epochs × 30 weight steps; 3 epochs take 3.5 s here), so the
# page sees it running; a checkpoint every 10 steps.
SEARCH = {
    "space": tiny_space(input_size=16),
    "dataset": {"name": "synthetic", "limit_train": 600, "num_classes": 4, "input_size": 16},
    "epochs": 10,
    "warmup_epochs": 1,
    "batch_size": 16,
    "checkpoint_every": 10,
}


@pytest.fixture(scope="module")
def inline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from service.settings import Settings

    data = tmp_path_factory.mktemp("workers-panel")

    def settings(url: str) -> Settings:
        return Settings(
            database_url=f"sqlite:///{data}/densenas.db",
            executor="inline",
            data_dir=data,
            host="127.0.0.1",
            port=int(url.rsplit(":", 1)[1]),
            public_url=url,
            poll_interval_s=0.1,
            ray_dashboard_url="http://127.0.0.1:8265",
            env="dev",
        )

    with LiveServer(settings) as live:
        yield live


def test_workers_panel_live_then_stored_with_checkpoints(page, inline_server):
    server = inline_server
    token = server.admin_token()
    c = server.client(token)
    r = c.post("/v1/jobs", json={"kind": "search", "spec": SEARCH})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    wait_status(c, job_id, {"running", "succeeded", "failed"}, timeout=60)

    login(page, server, token, f"/jobs/{job_id}")
    panel = page.get_by_test_id("workers-panel")
    link = page.get_by_test_id("ray-dashboard-link")
    link.wait_for()  # shown once /resources answered
    assert link.get_attribute("href") == "http://127.0.0.1:8265/"

    # while it runs: this process (the inline executor's thread), measured
    live_row = panel.locator('[data-testid="worker-row"][data-role="inline thread"]')
    assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    live_row.wait_for(timeout=15_000)
    assert live_row.get_attribute("data-pid") == str(os.getpid())
    assert re.fullmatch(r"[\d.]+ %", live_row.get_by_test_id("worker-cpu").inner_text())
    assert re.fullmatch(r"[\d.]+ (MiB|GiB)", live_row.get_by_test_id("worker-rss").inner_text())
    source = page.get_by_test_id("workers-source")
    assert source.get_attribute("data-mode") == "live" and "inline" in source.inner_text()

    job = wait_status(c, job_id, {"succeeded", "failed"}, timeout=300)
    assert job["status"] == "succeeded", job["error"]
    ckpts = c.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]
    assert ckpts, "the search wrote no checkpoint"

    # ended: the page keeps polling once more, then shows the stored rank and checkpoints
    page.reload()
    stored = panel.locator('[data-testid="worker-row"][data-role="rank 0 of 1"]')
    stored.wait_for()
    (worker,) = job["result"]["workers"]
    assert stored.get_attribute("data-pid") == str(worker["pid"]) == str(os.getpid())
    assert worker["hostname"] in stored.inner_text() and "cpu" in stored.inner_text()
    assert page.get_by_test_id("workers-source").get_attribute("data-mode") == "stored"
    rows = page.get_by_test_id("checkpoint-row")
    assert rows.count() == len(ckpts)
    newest = ckpts[-1]
    first = rows.first.inner_text()
    assert newest["name"] in first and str(newest["global_step"]) in first
    assert re.search(r"\d+(\.\d+)? KiB", first)
    assert page.get_by_test_id("checkpoints-empty").is_hidden()
    assert (
        str(server.settings.job_storage_path(job_id))
        in page.get_by_test_id("checkpoints-location").inner_text()
    )
    screenshot(page, "job-workers")
