"""Tags on the jobs list and the compare view (issue 14), in real headless Chromium against the
real app: filter the list by a tag, select two jobs with real epoch events, compare their
curves (one per job), log scale, smoothing, and the CSV of exactly the plotted points."""

from __future__ import annotations

import csv
import io
import re
import uuid

import pytest

from .support import Worker, epoch_event, login, screenshot, step_event
from .test_dashboard import SEARCH_SPEC, check_chart_text

pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=2)]

EPOCHS = 4


@pytest.fixture(scope="module")
def member(server):
    token = server.token("compare-user", project="default")
    with server.client(token) as http:
        yield token, http


# The list shows exactly the jobs `ids` (the argument).
ROWS_ARE = """(ids) => {
    const rows = [...document.querySelectorAll('[data-testid="job-row"]')];
    return rows.length === ids.length && rows.every((r) => ids.includes(+r.dataset.jobId));
}"""


def run_epochs(worker: Worker, shift: float) -> list[dict]:
    """Post EPOCHS epochs (val_acc shifted by ``shift``) with a step each → their data."""
    sent = []
    for e in range(EPOCHS):
        _, data = epoch_event(e)
        data = {**data, "val_acc": round(data["val_acc"] + shift, 6)}
        worker.events(step_event(10 * e + 1, e), ("epoch", data))
        sent.append(data)
    return sent


def ema(values: list[float], a: float) -> list[float]:
    out, s = [], None
    for v in values:
        s = v if s is None else a * s + (1 - a) * v
        out.append(s)
    return out


def test_filter_by_tag_select_two_and_compare(page, server, member):
    from service import jobs as job_queue

    token, http = member
    exp = f"cmp-{uuid.uuid4().hex[:8]}"

    def create(tags):
        r = http.post("/v1/jobs", json={"kind": "search", "spec": SEARCH_SPEC, "tags": tags})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    a, b = create([exp, "lr=0.1"]), create([exp, "lr=0.05"])
    other = create([f"{exp}-other"])
    with server.session() as s:
        claimed = {job.id: tok for job, tok in job_queue.claim(s, "browser-tests", 100)}
    workers = {jid: Worker(server, jid, claimed[jid]) for jid in (a, b)}
    sent = {a: run_epochs(workers[a], 0.0), b: run_epochs(workers[b], -0.2)}
    for w in workers.values():
        w.complete("failed", error="stopped by the test")

    # the jobs list: filter by the tag, then the spec and tag columns of the two rows
    login(page, server, token)
    page.get_by_test_id("job-row").first.wait_for()
    page.get_by_test_id("filter-tag").fill(exp)
    page.get_by_test_id("filter-tag").press("Enter")
    page.wait_for_url(re.compile(rf"tag={exp}$"))
    page.wait_for_function(ROWS_ARE, arg=[a, b])
    assert page.locator(f'[data-job-id="{other}"]').count() == 0
    row_a = page.locator(f'[data-testid="job-row"][data-job-id="{a}"]')
    assert row_a.locator('[data-col="space"]').inner_text() == "mbv2-small"
    assert row_a.locator('[data-col="budget"]').inner_text() == "log λ 0.15 flops"
    assert row_a.locator('[data-col="epochs"]').inner_text() == str(SEARCH_SPEC["epochs"])
    tags_a = row_a.locator(".tag").all_inner_texts()
    assert tags_a == [exp, "lr=0.1"]

    compare = page.get_by_test_id("compare-button")
    assert compare.is_disabled()
    row_a.get_by_test_id("job-select").check()
    assert compare.is_disabled()  # one job is not a comparison
    page.locator(f'[data-job-id="{b}"] [data-testid="job-select"]').check()
    assert compare.is_enabled()
    screenshot(page, "jobs_list_tags_selection")
    # a tag in a row narrows the filter to it too; the selection stays across the filters
    row_a.locator('.tag[data-tag="lr=0.1"]').click()
    page.wait_for_url(re.compile(rf"tag={exp}&tag=lr%3D0.1$"))
    page.wait_for_function(ROWS_ARE, arg=[a])
    assert page.get_by_test_id("filter-tag").input_value() == f"{exp} lr=0.1"
    assert row_a.get_by_test_id("job-select").is_checked() and compare.is_enabled()
    page.go_back()
    page.wait_for_function(ROWS_ARE, arg=[a, b])
    compare.click()
    page.wait_for_url(re.compile(rf"/compare\?ids={min(a, b)},{max(a, b)}"))

    # one curve per job, named by id and tags, drawn with readable ticks
    svg = page.get_by_test_id("compare-svg")
    page.wait_for_function(
        """() => document.querySelector('[data-testid="compare-svg"]')?.dataset.series === "2" """
    )
    assert svg.locator("polyline.series:not(.faint)").count() == 2
    assert svg.locator("polyline.series.faint").count() == 0
    assert int(svg.get_attribute("data-points") or 0) == 2 * EPOCHS
    assert page.get_by_test_id("compare-metric").input_value() == "val_acc"
    legend = page.locator(".chart .legend li").all_inner_texts()
    assert any(t.startswith(f"#{a} {exp}, lr=0.1") for t in legend), legend
    assert any(t.startswith(f"#{b} {exp}, lr=0.05") for t in legend), legend
    assert page.get_by_test_id("compare-job-row").count() == 2
    check_chart_text(page, "compare-svg")

    def y_ticks() -> list[tuple[str, float]]:
        """(label, height on the chart) of each y tick."""
        return [
            (text, float(y))
            for text, y in svg.locator("text.y-tick").evaluate_all(
                "ts => ts.map((t) => [t.textContent, t.getAttribute('y')])"
            )
        ]

    # log scale: the axis says so, the ticks change, the choice is in the address
    linear = y_ticks()
    page.get_by_test_id("compare-log").check()
    page.wait_for_url(re.compile(r"log=1"))
    assert "(log)" in svg.locator("text.axis-title").all_text_contents()[-1]
    logged = y_ticks()
    assert logged != linear
    # on a log axis equal steps of value get shorter as the value grows
    gaps = [lo[1] - hi[1] for lo, hi in zip(logged, logged[1:])]
    assert len(gaps) >= 2 and gaps == sorted(gaps, reverse=True) and gaps[0] > gaps[-1] + 1
    assert svg.locator("polyline.series:not(.faint)").count() == 2
    check_chart_text(page, "compare-svg")
    page.get_by_test_id("compare-log").uncheck()

    # smoothing: the EMA is the line, the measured values are drawn faintly behind it
    page.get_by_test_id("compare-smoothing").evaluate(
        """(el) => { el.value = "0.5"; el.dispatchEvent(new Event("input", { bubbles: true })); }"""
    )
    assert page.get_by_test_id("compare-smoothing-value").inner_text() == "0.50"
    assert svg.locator("polyline.series:not(.faint)").count() == 2
    assert svg.locator("polyline.series.faint").count() == 2
    screenshot(page, "compare_view")

    # the CSV: exactly the plotted points, with the smoothed values
    with page.expect_download() as info:
        page.get_by_test_id("compare-download").click()
    text = info.value.path().read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["job_id", "epoch", "metric", "value", "smoothed"]
    assert len(rows) == 2 * EPOCHS
    for jid in (a, b):
        mine = [r for r in rows if int(r["job_id"]) == jid]
        values = [d["val_acc"] for d in sent[jid]]
        assert [int(r["epoch"]) for r in mine] == list(range(1, EPOCHS + 1))
        assert {r["metric"] for r in mine} == {"val_acc"}
        assert [float(r["value"]) for r in mine] == pytest.approx(values)
        assert [float(r["smoothed"]) for r in mine] == pytest.approx(ema(values, 0.5))

    # another metric, and the view comes back from its address
    page.get_by_test_id("compare-metric").select_option("train_loss")
    page.wait_for_url(re.compile(r"metric=train_loss"))
    page.reload()
    page.wait_for_function(
        """() => document.querySelector('[data-testid="compare-svg"]')?.dataset.series === "2" """
    )
    assert page.get_by_test_id("compare-metric").input_value() == "train_loss"
    assert page.get_by_test_id("compare-smoothing-value").inner_text() == "0.50"


def test_compare_bad_ids_are_the_html_error_page(page, server, member, request):
    request.node.allowed_console_errors = ("404", "422")
    token, http = member
    ids = [
        http.post("/v1/jobs", json={"kind": "search", "spec": SEARCH_SPEC}).json()["id"]
        for _ in range(2)
    ]
    login(page, server, token)
    cases = [
        ("/compare?ids=abc,1", 422, "not a job number"),
        ("/compare", 422, "Compare 2 to 8"),
        (f"/compare?ids={ids[0]}", 422, "Compare 2 to 8"),
        (f"/compare?ids={ids[0]},{ids[0]}", 422, "Compare 2 to 8"),
        ("/compare?ids=" + ",".join(str(i) for i in range(1, 10)), 422, "Compare 2 to 8"),
        (f"/compare?ids={ids[0]},999999", 404, "no job #999999"),
    ]
    for path, status, words in cases:
        resp = page.goto(f"{server.url}{path}")
        assert resp is not None and resp.status == status, path
        assert resp.headers["content-type"].startswith("text/html"), path
        assert page.locator("header.site-header").is_visible()
        assert words in page.get_by_test_id("error-message").inner_text(), path
        assert page.get_by_test_id("error-back").get_attribute("href") == "/"
    resp = page.goto(f"{server.url}/compare?ids={ids[0]},{ids[1]}")
    assert resp is not None and resp.status == 200
    page.get_by_test_id("compare-empty").wait_for()  # no epochs yet: said so, no chart
