"""The sweep page (issue 14) in real headless Chromium, on a sweep that really ran: a control
plane with the inline executor runs a 3-value grid over ``cost.target`` on the tiny space
(three searches that store three architectures); the page shows the trials table with the grid
column, the cost-vs-accuracy scatter with the service's Pareto front, val_acc by grid field,
and opens the compare view of the selected trials with their real epoch curves."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.support.live import LiveServer
from tests.support.tiny_specs import tiny_space
from tests.support.waiting import wait_status

from .support import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=2)]

TARGETS = [0.02, 0.05, 0.2]  # M mult-adds: the tiny space is ~0.07 M


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    data = tmp_path_factory.mktemp("sweep-page")

    def settings(url: str) -> Settings:
        return Settings(
            database_url=f"sqlite:///{data}/densenas.db",
            executor="inline",
            data_dir=data,
            public_url=url,
            poll_interval_s=0.1,
            env="dev",
        )

    with LiveServer(settings) as live:
        token = live.admin_token()
        with live.client(token) as c:
            spec = {
                "search": {
                    "space": tiny_space(),
                    "epochs": 2,
                    "warmup_epochs": 0,
                    "batch_size": 16,
                    "dataset": {"name": "synthetic", "limit_train": 160, "num_classes": 4},
                    "w_lr": 0.1,
                    "cost": {"mode": "target", "target": TARGETS[0]},
                },
                "grid": {"cost.target": TARGETS},
            }
            r = c.post("/v1/jobs", json={"kind": "sweep", "spec": spec, "tags": ["family"]})
            assert r.status_code == 201, r.text
            sweep = wait_status(c, r.json()["id"], {"succeeded", "failed"}, timeout=600)
            assert sweep["status"] == "succeeded", sweep["error"]
        yield live, token, sweep


def test_sweep_page_shows_the_family_and_opens_the_compare_view(page, ran):
    live, token, sweep = ran
    trials = sweep["result"]["trials"]
    front = set(sweep["result"]["pareto_front"])
    login(page, live, token, f"/jobs/{sweep['id']}")
    page.wait_for_selector('[data-testid="sweep-status"][data-loaded="1"]')
    assert page.get_attribute('[data-testid="sweep-status"]', "data-status") == "succeeded"

    rows = page.locator('[data-testid="trial-row"]')
    assert rows.count() == len(TARGETS)
    assert page.locator('[data-testid="trial-config-col"]').all_inner_texts() == ["cost.target"]
    for i, t in enumerate(trials):
        row = rows.nth(i)
        assert row.get_attribute("data-status") == "succeeded"
        text = row.inner_text()
        assert f"#{t['job_id']}" in text and f"#{t['architecture_id']}" in text
        star = row.locator('[data-testid="trial-front"]').inner_text()
        assert (star == "★") == (t["job_id"] in front)
    facts = page.locator('[data-testid="sweep-facts"]').inner_text()
    assert "cost.target" in facts and "3 succeeded" in facts and "family" in facts

    svg = page.locator('[data-testid="sweep-scatter-svg"]')
    assert svg.get_attribute("data-points") == str(len(TARGETS))
    on_front = page.locator(
        '[data-testid="sweep-scatter"] [data-testid="scatter-point"][data-front="1"]'
    )
    assert on_front.count() == len(front)
    fields = page.locator('[data-testid="sweep-field"]')
    assert fields.count() == 1 and fields.first.get_attribute("data-field") == "cost.target"
    assert fields.first.locator('[data-testid="scatter-point"]').count() == len(TARGETS)
    assert fields.first.locator('[data-testid="pareto-line"]').count() == 0  # not a front
    screenshot(page, "sweep-page")

    # select two trials → the compare view with their real epoch curves
    boxes = page.locator('[data-testid="trial-select"]')
    boxes.nth(0).check()
    assert page.locator('[data-testid="trials-compare"]').is_disabled()
    boxes.nth(2).check()
    page.click('[data-testid="trials-compare"]')
    page.wait_for_url("**/compare?ids=*")
    wanted = f"{trials[0]['job_id']},{trials[2]['job_id']}"
    assert page.url.endswith(f"ids={wanted}")
    page.wait_for_selector('[data-testid="compare-svg"]')
    page.wait_for_function(
        """() => document.querySelectorAll('[data-testid="compare-jobs-body"] tr').length === 2"""
    )
    series = page.locator(
        '[data-testid="compare-svg"] path.series, [data-testid="compare-svg"] polyline'
    )
    assert series.count() >= 2

    page.goto(live.url + f"/jobs/{trials[1]['job_id']}")
    link = page.locator('[data-testid="job-sweep-link"]')
    link.wait_for()
    assert link.inner_text() == f"trial 1 of sweep #{sweep['id']}"
