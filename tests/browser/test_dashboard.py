"""The dashboard in real headless Chromium against the real app (see conftest.py)."""

from __future__ import annotations

import re

import pytest

from .support import FakeSearch, Worker, epoch_event, login, screenshot, start_job, step_event

pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=2)]

SEARCH_SPEC = {
    "space": "mbv2-small",
    "epochs": 4,
    "warmup_epochs": 1,
    "dataset": {"name": "synthetic"},
}


@pytest.fixture(scope="module")
def user(server):
    """A project member's token and an API client with it."""
    token = server.token("browser-user", project="default")
    with server.client(token) as http:
        yield token, http


def create_job(http, kind="search", spec=None, priority=0, **extra):
    r = http.post(
        "/v1/jobs", json={"kind": kind, "spec": spec or SEARCH_SPEC, "priority": priority, **extra}
    )
    assert r.status_code == 201, r.text
    return r.json()


def points(page, testid: str) -> int:
    return int(page.get_by_test_id(testid).get_attribute("data-points") or 0)


def test_login_rejects_bad_token_and_shows_identity(page, server, user, request):
    request.node.allowed_console_errors = ("401",)  # Chromium logs the rejected /v1/me
    token, _ = user
    page.goto(f"{server.url}/")
    page.wait_for_url(re.compile(r"/login\?next=%2F$"))  # nothing shown without a token
    page.get_by_label("API token").fill("dn_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("login-error").wait_for()
    assert "not valid" in page.get_by_test_id("login-error").inner_text()
    screenshot(page, "login")

    page.get_by_label("API token").fill(token)
    page.keyboard.press("Enter")  # the form works from the keyboard
    page.wait_for_url(f"{server.url}/")
    page.get_by_test_id("whoami").wait_for()
    assert "project default" in page.get_by_test_id("whoami-project").inner_text()
    assert page.get_by_test_id("whoami-admin").is_hidden()
    assert page.evaluate("sessionStorage.getItem('densenas.token')") == token

    page.get_by_test_id("logout").click()
    page.wait_for_url(re.compile(r"/login"))
    assert page.evaluate("sessionStorage.getItem('densenas.token')") is None


def test_admin_badge(page, server):
    login(page, server, server.token("browser-admin", admin=True))
    page.get_by_test_id("whoami").wait_for()
    assert page.get_by_test_id("whoami-admin").is_visible()


def test_jobs_list_filters_and_live_progress(page, server, user):
    token, http = user
    running = create_job(http, priority=5)
    queued = create_job(http, kind="profile", spec={"space": "mbv2-small"})
    worker = start_job(server, running["id"])
    worker.events(step_event(1, 0))

    login(page, server, token)
    rows = page.get_by_test_id("job-row")
    rows.first.wait_for()
    row = page.locator(f'[data-testid="job-row"][data-job-id="{running["id"]}"]')
    assert row.get_attribute("data-status") == "running"
    assert page.locator(f'[data-testid="job-row"][data-job-id="{queued["id"]}"]').count() == 1
    page.get_by_test_id("count-running").wait_for()

    # live: new events of a visible running job update its row without a reload
    before = row.get_by_test_id("job-progress").inner_text()
    worker.events(epoch_event(0), epoch_event(1), step_event(25, 2))
    page.wait_for_function(
        """([id, before]) => {
             const el = document.querySelector(
               `[data-job-id="${id}"] [data-testid="job-progress"]`);
             return el && el.innerText !== before && el.innerText.includes("epoch 3/4");
           }""",
        arg=[running["id"], before],
    )
    screenshot(page, "jobs_list")

    # server-side filter: kind=profile keeps only profile jobs, and the URL says so
    page.get_by_test_id("filter-kind").select_option("profile")
    page.wait_for_url(re.compile(r"kind=profile"))
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="job-row"]')]
        .every((r) => r.children[2].innerText === 'profile')""")
    assert page.locator(f'[data-job-id="{queued["id"]}"]').count() == 1
    page.go_back()
    page.wait_for_function(f"""() => document.querySelector('[data-job-id="{running["id"]}"]')""")


def test_jobs_list_follows_every_running_row_over_one_stream(page, server, user):
    """Six running jobs on screen (more than a browser's ~6 connections per host allow as
    separate streams) all update live, over /v1/events from each job's last_event_id."""
    from service import jobs as job_queue

    token, http = user
    made = [create_job(http)["id"] for _ in range(6)]
    with server.session() as s:
        claimed = {job.id: tok for job, tok in job_queue.claim(s, "browser-tests", 100)}
    workers = [Worker(server, jid, claimed[jid]) for jid in made]
    for w in workers:
        w.events(step_event(1, 0))
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/v1/events?" in r.url else None)

    login(page, server, token)
    for jid in made:
        page.locator(f'[data-testid="job-row"][data-job-id="{jid}"]').wait_for()
    for _ in range(100):
        if streams:
            break
        page.wait_for_timeout(100)
    assert streams, "the list opened no /v1/events stream"
    for w in workers:
        w.events(epoch_event(0), epoch_event(1), step_event(25, 2))
    page.wait_for_function(
        """(ids) => ids.every((id) => {
             const el = document.querySelector(
               `[data-job-id="${id}"] [data-testid="job-progress"]`);
             return el && el.innerText.includes("epoch 3/4");
           })""",
        arg=made,
    )
    from urllib.parse import parse_qs, urlparse

    last = dict(p.split(":") for p in parse_qs(urlparse(streams[-1]).query)["jobs"][0].split(","))
    assert {str(j) for j in made} <= set(last)  # one stream follows all of them
    assert all(last[str(j)] for j in made)  # … each from its last_event_id: nothing replayed
    for w in workers:
        w.complete("failed", error="stopped by the test")


CHART_TEXT_JS = """(testid) => {
    const svg = document.querySelector(`[data-testid="${testid}"]`);
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    const box = (el) => el.getBoundingClientRect();
    const ticks = [...svg.querySelectorAll("text.tick")].map((t) => ({
        px: parseFloat(getComputedStyle(t).fontSize) * scale, r: box(t) }));
    const titles = [...svg.querySelectorAll("text.axis-title")].map(box);
    const hit = (a, b) =>
        a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    return { ticks: ticks.length, titles: titles.length,
        minPx: Math.min(...ticks.map((t) => t.px)),
        overlaps: titles.filter((a) => ticks.some((t) => hit(a, t.r))).length };
}"""


def check_chart_text(page, testid: str) -> None:
    """Tick labels are drawn at 11 px or more and no axis title overlaps a tick label."""
    got = page.evaluate(CHART_TEXT_JS, testid)
    assert got["ticks"] >= 4 and got["titles"] >= 1, (testid, got)
    assert got["minPx"] >= 11 - 0.01, (testid, got)
    assert got["overlaps"] == 0, (testid, got)


def test_running_job_curves_grow_with_events(page, server, user):
    token, http = user
    job = create_job(http)
    worker = start_job(server, job["id"])
    search = FakeSearch(seed=1)
    worker.events(*(step_event(g, 0) for g in range(1, 6)))

    login(page, server, token, f"/jobs/{job['id']}")
    page.get_by_test_id("stream-state").wait_for()
    page.wait_for_function("""() => +document.querySelector('[data-testid="chart-loss"]')
        .getAttribute('data-points') === 5""")
    assert page.get_by_test_id("job-status").inner_text() == "running"
    assert page.get_by_test_id("job-cancel").is_visible()
    assert page.get_by_test_id("job-retry").is_hidden()
    page.wait_for_function("""() => document.querySelector('[data-testid="stream-state"]')
        .dataset.state === 'live'""")

    # events posted while the page is open arrive over SSE and extend the curve
    n0 = points(page, "chart-loss")
    worker.events(*(step_event(g, 0) for g in range(6, 11)))
    page.wait_for_function(f"""() => +document.querySelector('[data-testid="chart-loss"]')
        .getAttribute('data-points') > {n0}""")
    n1 = points(page, "chart-loss")
    assert n1 == 10
    worker.events(step_event(11, 1, "arch"), step_event(12, 1, "weights"))
    page.wait_for_function("""() => +document.querySelector('[data-testid="chart-loss"]')
        .getAttribute('data-points') === 12""")
    assert page.locator('[data-testid="chart-loss"] polyline').count() == 2  # both phases
    assert points(page, "chart-cost") == 12
    for testid in ("chart-loss", "chart-acc", "chart-cost"):
        check_chart_text(page, testid)

    # epoch events: the charts switch to per-epoch; the search view follows `arch` events
    worker.events(epoch_event(0), search.arch_event(0), epoch_event(1), search.arch_event(1))
    page.get_by_test_id("search-view").wait_for()
    page.wait_for_function("""() => document.querySelector('[data-testid="charts"]')
        .dataset.mode === 'epoch'""")
    assert points(page, "chart-acc") >= 4  # train + val + arch per epoch
    page.wait_for_function("""() => document.querySelector('[data-testid="search-view"]')
        .dataset.epochs === '2'""")
    page.get_by_test_id("xaxis-step").check()
    assert page.get_by_test_id("charts").get_attribute("data-mode") == "step"
    page.get_by_test_id("xaxis-epoch").check()
    log_count = page.get_by_test_id("job-history").locator("li").count()
    assert log_count >= 1
    screenshot(page, "job_running")


def test_job_actions_cancel_retry_and_error(page, server, user):
    token, http = user
    job = create_job(http, max_attempts=1)
    worker = start_job(server, job["id"])
    worker.events(step_event(1, 0))
    login(page, server, token, f"/jobs/{job['id']}")
    cancel = page.get_by_test_id("job-cancel")
    cancel.wait_for()
    assert page.get_by_test_id("job-retry").is_hidden()
    cancel.click()  # running: the request is recorded and the worker told on its next report
    page.get_by_test_id("flash").wait_for()
    assert "Cancellation requested" in page.get_by_test_id("flash").inner_text()
    assert cancel.is_hidden()
    assert "requested" in page.get_by_test_id("job-facts").inner_text()
    assert worker.events(step_event(2, 0))["cancel_requested"] is True
    worker.complete("cancelled", error="stopped at global step 2")
    page.wait_for_function("""() => document.querySelector('[data-testid="job-status"]')
        .dataset.status === 'cancelled'""")
    history = page.get_by_test_id("history-item").all_inner_texts()
    assert any("cancel requested" in h for h in history), history
    retry = page.get_by_test_id("job-retry")
    retry.wait_for()
    retry.click()
    page.wait_for_function("""() => document.querySelector('[data-testid="job-status"]')
        .dataset.status === 'queued'""")
    assert retry.is_hidden() and cancel.is_visible()

    # a failed attempt shows the worker's error text, in the outcome and per attempt with the
    # end of its traceback folded away
    worker = start_job(server, job["id"])
    worker.complete(
        "failed",
        error="Traceback (most recent call last):\nRuntimeError: boom",
        traceback_tail='  File "search.py", line 7, in step\nRuntimeError: boom',
    )
    page.wait_for_function("""() => document.querySelector('[data-testid="job-status"]')
        .dataset.status === 'failed'""")
    page.get_by_test_id("job-error").wait_for()
    assert "RuntimeError: boom" in page.get_by_test_id("job-error").inner_text()
    [attempt] = page.get_by_test_id("attempt-error").all()
    assert attempt.get_attribute("data-attempt") == "2"  # attempt 1 was cancelled, not failed
    assert "RuntimeError: boom" in attempt.get_by_test_id("attempt-error-message").inner_text()
    tb = attempt.get_by_test_id("attempt-error-traceback")
    assert tb.locator("pre").is_hidden()
    tb.locator("summary").click()
    assert "line 7, in step" in tb.locator("pre").inner_text()
    history = page.get_by_test_id("history-item").all_inner_texts()
    assert any("running → failed" in h and "RuntimeError: boom" in h for h in history), history
    screenshot(page, "job_failed")


def _path_from_doc(doc, tail=10):
    """The block path (stem … tail) of a derived architecture; mbv2-small's tail is block 10."""
    hops = [b for b in doc["blocks"] if b["from_block"] is not None]
    return [hops[0]["from_block"]] + [b["to_block"] for b in hops] + [tail]


def test_search_view_epoch_slider_and_completion(page, server, user):
    token, http = user
    job = create_job(http)
    worker = start_job(server, job["id"])
    search = FakeSearch(seed=2)
    for e in range(3):
        worker.events(step_event(10 * e + 1, e), epoch_event(e), search.arch_event(e))

    login(page, server, token, f"/jobs/{job['id']}")
    view = page.get_by_test_id("search-view")
    view.wait_for()
    graph = page.get_by_test_id("supernet-svg")
    graph.wait_for()
    page.wait_for_function("""() => document.querySelector('[data-testid="search-view"]')
        .dataset.epochs === '3'""")
    # every path of the space is an edge; blocks = stem + routing + tail
    assert page.get_by_test_id("supernet-edge").count() == len(search.space.paths)
    assert page.get_by_test_id("supernet-block").count() == len(search.space.blocks)
    # highlighted path = the architecture the core derived at that epoch
    want = _path_from_doc(search.architecture(2))
    assert graph.get_attribute("data-path") == ",".join(map(str, want))
    on_path = page.locator('[data-testid="supernet-edge"][data-on-path="1"]')
    assert on_path.count() == len(want) - 1
    # the client-side Viterbi (same max-product rule) agrees with the core's derivation
    cases = [FakeSearch(seed=s) for s in range(6)]
    client_paths = page.evaluate(
        """async (all) => {
        const m = await import('/ui/static/js/supernet.js');
        const r = await fetch('/v1/spaces/mbv2-small', {headers: {
            Authorization: 'Bearer ' + sessionStorage.getItem('densenas.token')}});
        const g = m.graphFromBlockTable((await r.json()).blocks);
        return all.map((probs) => m.viterbi(g, m.betaMatrix(g, probs.beta)));
    }""",
        [c.probs(2) for c in cases],
    )
    assert client_paths == [_path_from_doc(c.architecture(2)) for c in cases]
    # α heat-maps: one per routing block with layers or alignment branches
    assert page.get_by_test_id("alpha-block").count() == len(search.space.routing_blocks)
    # each with its colour legend: a gradient bar between the scale's min and max
    blocks = page.get_by_test_id("alpha-block")
    for i in range(blocks.count()):
        fig = blocks.nth(i)
        assert fig.get_by_test_id("alpha-heatmap").count() == 1
        legend = fig.get_by_test_id("alpha-legend")
        assert legend.is_visible()
        assert legend.get_by_test_id("alpha-legend-min").inner_text() == "0.000"
        assert legend.get_by_test_id("alpha-legend-max").inner_text() == "1.000"
        bar = legend.locator(".heat-legend-bar")
        assert "linear-gradient" in bar.evaluate("el => getComputedStyle(el).backgroundImage")
        assert bar.bounding_box()["width"] > 20

    # the slider goes back in time; edge weights change with the epoch
    edge_ps = lambda: page.locator('[data-testid="supernet-edge"]').evaluate_all(  # noqa: E731
        "els => els.map((e) => e.dataset.p)"
    )
    p_last = edge_ps()
    slider = page.get_by_test_id("epoch-slider")
    slider.focus()
    page.keyboard.press("Home")  # keyboard operable
    page.wait_for_function("""() => document.querySelector('[data-testid="supernet-svg"]')
        .dataset.epoch === '0'""")
    assert not page.get_by_test_id("follow-latest").is_checked()
    assert edge_ps() != p_last
    assert page.get_by_test_id("supernet-svg").get_attribute("data-path") == ",".join(
        map(str, _path_from_doc(search.architecture(0)))
    )
    screenshot(page, "search_view_epoch1")
    page.keyboard.press("End")
    page.wait_for_function("""() => document.querySelector('[data-testid="supernet-svg"]')
        .dataset.epoch === '2'""")

    # completion: the status event arrives, the page refetches and links the architecture
    final = search.architecture(3)
    worker.events(search.arch_event(3))
    worker.complete(
        result={
            "architecture": final,
            "arch_params": search.arch_params(3),
            "metrics": {"val_acc": 0.8},
        }
    )
    page.wait_for_function("""() => document.querySelector('[data-testid="job-status"]')
        .dataset.status === 'succeeded'""")
    link = page.get_by_test_id("produced-architecture")
    link.wait_for()
    assert page.get_by_test_id("job-cancel").is_hidden()
    assert page.get_by_test_id("stream-state").get_attribute("data-state") == "closed"
    history = page.get_by_test_id("history-item").all_inner_texts()
    assert any("running → succeeded" in h for h in history), history
    page.get_by_test_id("supernet-svg").scroll_into_view_if_needed()
    screenshot(page, "search_view")


def _progress_cells(d: dict) -> list[str]:
    """A search-progress table row as the page formats it: accuracies as percentages with one
    decimal, entropies and top gap with three, argmax changes as a count ("—" when none)."""
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    fixed = lambda v: f"{v:.3f}"  # noqa: E731
    return [
        str(d["epoch"] + 1),
        pct(d["val_acc"]),
        pct(d["derived_val_acc"]),
        pct(d["supernet_val_acc"]),
        fixed(d["alpha_entropy"]),
        fixed(d["beta_entropy"]),
        fixed(d["alpha_top_gap"]),
        "—" if d["argmax_changes"] is None else str(d["argmax_changes"]),
    ]


def test_search_progress_panel_accuracies_and_entropy_rows(page, server, user):
    """α/β entropy, α top gap and argmax changes per epoch; the derived net's val accuracy
    next to the sampled supernet's; per-row α entropy under the heat-maps."""
    token, http = user
    job = create_job(http)
    worker = start_job(server, job["id"])
    search = FakeSearch(seed=5)
    for e in range(3):
        worker.events(epoch_event(e), search.arch_event(e))

    login(page, server, token, f"/jobs/{job['id']}")
    panel = page.get_by_test_id("search-progress")
    panel.wait_for()
    rows = page.get_by_test_id("progress-row")
    rows.first.wait_for()
    table = lambda: rows.evaluate_all(  # noqa: E731
        "rs => rs.map((r) => [...r.children].map((c) => c.textContent))"
    )
    # newest first: epoch 3, 2, 1
    assert table() == [_progress_cells(epoch_event(e)[1]) for e in (2, 1, 0)]
    # three lines of three epochs; bars for the two epochs that have a previous one
    assert points(page, "chart-progress") == 9
    bars = page.locator('[data-testid="chart-argmax"] rect.bar')
    assert bars.evaluate_all("bs => bs.map((b) => [+b.dataset.x, +b.dataset.value])") == [
        [2, 4],
        [3, 2],
    ]
    legend = panel.locator(".legend").first.inner_text()
    assert "α entropy (mean) (0.58)" in legend and "α top gap (max) (0.24)" in legend, legend

    # accuracy chart: the argmax net (BN recalibrated), the derived single-path one and the
    # sampled supernet
    acc = page.get_by_test_id("chart-acc")
    series = acc.locator("polyline").evaluate_all(
        "ps => Object.fromEntries(ps.map((p) => [p.dataset.series, +p.dataset.n]))"
    )
    assert series["val: argmax net (BN recalibrated)"] == 3
    assert series["val: derived single-path"] == 3
    assert series["val: supernet (sampled)"] == 3
    assert (
        "val: supernet (sampled) (0.56)"
        in page.locator('[data-testid="charts"] figure', has=acc).locator(".legend").inner_text()
    )
    assert (
        "argmax sub-network, BN recalibrated on 512 train images"
        in page.get_by_test_id("chart-acc-note").inner_text()
    )

    # α heat-maps: one entropy cell per α row, the arch event's values; β entropy per block
    want = search.arch_event(2)[1]
    cells = page.get_by_test_id("alpha-entropy-cell")
    got = cells.evaluate_all("cs => cs.map((c) => +c.dataset.value)")
    assert sorted(got) == sorted(want["alpha_entropy_rows"])
    # the first layer row follows the alignment rows; its cell is column L<layer + 1>
    layer = search.probs(2)["alpha"]["layers"][0]
    n_align = len(search.probs(2)["alpha"]["align"])
    cell = page.locator(
        f'[data-testid="alpha-block"][data-block="{layer["block"]}"] '
        f'[data-testid="alpha-entropy-cell"][data-col="L{layer["layer"] + 1}"]'
    )
    assert float(cell.get_attribute("data-value")) == want["alpha_entropy_rows"][n_align]
    caption = page.locator('[data-testid="alpha-block"][data-block="1"] figcaption').inner_text()
    assert f"β entropy {want['beta_entropy_rows'][0]:.3f}" in caption, caption

    # live: the next epoch arrives over SSE and tops the table
    worker.events(epoch_event(3))
    page.wait_for_function("""() => document.querySelector('[data-testid="progress-row"]')
        ?.dataset.epoch === '3'""")
    assert table()[0] == _progress_cells(epoch_event(3)[1])
    assert table()[0][-1] == "0"
    panel.scroll_into_view_if_needed()
    screenshot(page, "search_progress")


CUSTOM_SPACE = {
    "name": "tiny",
    "family": "mbv2",
    "input_size": 32,
    "stem": {"channels": 8, "stride": 1, "fixed_op": "mb_k3_e1"},
    "stages": [
        {"stride": 2, "widths": [16, 24], "num_layers": 1},
        {"stride": 2, "widths": [32, 40], "num_layers": 2},
    ],
    "tail_channels": 64,
    "align_ops": ["mb_k3_e3", "mb_k5_e3"],
    "layer_ops": ["mb_k3_e3", "skip"],
    "max_connections": 3,
}


def test_search_view_of_a_custom_space(page, server, user):
    """No preset block table: the graph comes from the `arch` events themselves."""
    token, http = user
    job = create_job(http, spec={**SEARCH_SPEC, "space": CUSTOM_SPACE})
    worker = start_job(server, job["id"])
    search = FakeSearch(CUSTOM_SPACE, seed=4)
    worker.events(search.arch_event(0))
    login(page, server, token, f"/jobs/{job['id']}")
    page.get_by_test_id("supernet-svg").wait_for()
    assert page.get_by_test_id("supernet-edge").count() == len(search.space.paths)
    assert page.get_by_test_id("supernet-block").count() == len(search.space.blocks)
    tail = len(search.space.blocks) - 1
    assert page.get_by_test_id("supernet-svg").get_attribute("data-path") == ",".join(
        map(str, _path_from_doc(search.architecture(0), tail))
    )
    # α columns per block: its incoming alignment branches and its basic layers, each with
    # its entropy in the row under the ops
    for b in search.space.routing_blocks:
        fig = page.locator(f'[data-testid="alpha-block"][data-block="{b.index}"]')
        cells = fig.locator("rect.cell:not(.footer)").count()
        rows = len(set(search.space.align_ops) | set(search.space.layer_ops))
        columns = len(search.space.in_paths[b.index]) + b.num_layers
        assert cells == rows * columns
        assert fig.get_by_test_id("alpha-entropy-cell").count() == columns
    page.get_by_test_id("search-view").scroll_into_view_if_needed()
    screenshot(page, "search_view_custom_space")


@pytest.fixture(scope="module")
def catalog(server, user):
    """Five finished searches, one retrain each (accuracy), and a latency table."""
    from .support import fake_latency_table

    _, http = user
    profile = create_job(http, kind="profile", spec={"space": "mbv2-small"})
    start_job(server, profile["id"]).complete(result={"latency_table": fake_latency_table()})
    table_id = http.get(f"/v1/jobs/{profile['id']}").json()["produced"]["latency_tables"][0]
    archs = []
    for seed in range(3, 8):
        search = FakeSearch(seed=seed)
        job = create_job(http)
        start_job(server, job["id"]).complete(
            result={
                "architecture": search.architecture(3),
                "arch_params": search.arch_params(3),
                "metrics": {"val_acc": 0.7},
                "measured_latency": {"test-cpu": 1.0 + seed / 10},
            }
        )
        arch_id = http.get(f"/v1/jobs/{job['id']}").json()["produced"]["architectures"][0]
        retrain = create_job(
            http,
            kind="retrain",
            spec={"architecture_id": arch_id, "epochs": 1, "dataset": {"name": "synthetic"}},
        )
        start_job(server, retrain["id"]).complete(
            result={"metrics": {"top1": 0.6 + 0.05 * (seed % 4), "top5": 0.95, "loss": 0.9}}
        )
        archs.append(http.get(f"/v1/architectures/{arch_id}").json())
    return {"table_id": table_id, "archs": archs}


def test_architecture_page_diagram_and_actions(page, server, user, catalog):
    token, http = user
    arch = catalog["archs"][0]
    doc = arch["doc"]
    login(page, server, token, f"/architectures/{arch['id']}")
    page.get_by_test_id("arch-diagram-svg").wait_for()
    # one box per op: stem conv, each block's alignment op and layers, tail 1×1, classifier
    n_ops = 1 + sum(1 + len(b["layers"]) for b in doc["blocks"]) + 2
    assert page.get_by_test_id("arch-op").count() == n_ops
    assert (
        page.locator('[data-testid="arch-op"][data-role="align"][data-block="0"]').get_attribute(
            "data-op"
        )
        == doc["blocks"][0]["align_op"]
    )
    facts = page.get_by_test_id("arch-facts").inner_text()
    assert "mbv2-small" in facts and "Search job" in facts
    assert page.get_by_test_id("arch-madds").inner_text() != "—"
    assert page.get_by_test_id("latency-measured").count() == 1
    retrains = page.get_by_test_id("retrain-item").all_inner_texts()
    assert len(retrains) == 1 and "succeeded" in retrains[0] and "top-1" in retrains[0]
    assert page.get_by_test_id("download-json").get_attribute("href").endswith("format=json")
    screenshot(page, "architecture")

    # JSON download goes through fetch with the bearer token
    with page.expect_download() as dl:
        page.get_by_test_id("download-json").click()
    assert dl.value.suggested_filename == f"architecture-{arch['id']}.json"

    # "retrain this" creates a retrain job of this architecture
    page.get_by_label("Epochs").fill("2")
    page.get_by_test_id("retrain-submit").click()
    link = page.get_by_test_id("retrain-job-link")
    link.wait_for()
    new_id = int(link.get_attribute("href").rsplit("/", 1)[1])
    job = http.get(f"/v1/jobs/{new_id}").json()
    assert (job["kind"], job["architecture_id"], job["spec"]["epochs"]) == (
        "retrain",
        arch["id"],
        2,
    )

    # "derive with another budget" re-derives from the search's α/β under a mult-adds bound
    page.get_by_test_id("derive-madds").fill(str(arch["mult_adds"] * 1.5 / 1e6))
    page.get_by_test_id("derive-submit").click()
    page.wait_for_function("""() => document.querySelector('[data-testid="derive-result"]')
        .textContent.trim() !== ''""")
    derived = page.get_by_test_id("derived-link")
    assert derived.count() == 1, page.get_by_test_id("derive-result").inner_text()
    derived_id = int(derived.get_attribute("href").rsplit("/", 1)[1])
    d = http.get(f"/v1/architectures/{derived_id}").json()
    assert d["mult_adds"] <= arch["mult_adds"] * 1.5
    derived.click()
    page.wait_for_url(f"{server.url}/architectures/{derived_id}")
    page.get_by_test_id("arch-diagram-svg").wait_for()


def test_architectures_explorer_scatter_and_pareto(page, server, user, catalog):
    token, http = user
    login(page, server, token, "/architectures")
    svg = page.get_by_test_id("scatter-svg")
    svg.wait_for()
    with_acc = [
        a
        for a in http.get("/v1/architectures", params={"limit": 500}).json()["data"]
        if a["accuracy_top1"] is not None
    ]
    assert page.get_by_test_id("scatter-point").count() == len(with_acc) >= 5
    front = http.get(
        "/v1/architectures", params={"pareto": "mult_adds,accuracy", "limit": 500}
    ).json()["data"]
    assert page.locator('[data-testid="scatter-point"][data-front="1"]').count() == len(front)
    if len(front) > 1:
        assert page.get_by_test_id("pareto-line").count() == 1

    # latency of a table on the x axis
    page.get_by_test_id("filter-table").select_option(str(catalog["table_id"]))
    page.wait_for_url(re.compile(r"latency_table_id="))
    page.get_by_test_id("x-metric").select_option("latency")
    page.wait_for_function("""() => document.querySelector('[data-testid="scatter-svg"]')
        ?.getAttribute('aria-label').includes('latency')""")
    assert page.get_by_test_id("scatter-point").count() == len(with_acc)
    screenshot(page, "architectures_explorer")
    # a point is a link to its architecture, reachable from the keyboard
    page.get_by_test_id("scatter-svg").locator("a").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/architectures/\d+$"))


def test_latency_tables_page_heatmap(page, server, user, catalog):
    token, http = user
    table = http.get(f"/v1/latency-tables/{catalog['table_id']}").json()
    login(page, server, token, "/latency-tables")
    row = page.locator(f'[data-testid="latency-row"][data-table-id="{catalog["table_id"]}"]')
    row.wait_for()
    assert str(table["entry_count"]) in row.inner_text()
    row.get_by_role("link").click()
    page.get_by_test_id("latency-heatmap-svg").wait_for()
    filled = page.locator('[data-testid="latency-heatmap-svg"] rect.cell:not(.empty)').count()
    assert filled == table["entry_count"]
    screenshot(page, "latency_table")


def test_jobs_list_stays_fast_with_10000_jobs(page, server):
    """Keyset pages: the first, a later and a filtered page each load quickly at 10k jobs."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from service.models import Job

    t0 = datetime.now(UTC) - timedelta(days=2)
    rows = [
        {
            "kind": ("search", "retrain", "profile")[i % 3],
            "status": ("queued", "running", "succeeded", "failed", "cancelled")[i % 5],
            "project": "bulk",
            "priority": i % 7,
            "spec": {"epochs": 4},
            "attempt": 1,
            "max_attempts": 3,
            "scheduled_at": t0,
            "cancel_requested": False,
            "created_at": t0 + timedelta(seconds=i),
            "updated_at": t0 + timedelta(seconds=i),
        }
        for i in range(10_000)
    ]
    with server.session() as s:
        s.execute(insert(Job), rows)
        s.commit()
    token = server.token("bulk-user", project="bulk")
    login(page, server, token)
    page.get_by_test_id("job-row").first.wait_for()
    assert page.get_by_test_id("job-row").count() == 50

    # Each action is timed inside the page: from the user's input to the new first row.
    timed = """([kind, testid, value]) => new Promise((resolve) => {
        const body = document.querySelector('[data-testid="jobs-body"]');
        const first = body.firstElementChild?.dataset.jobId;
        const t0 = performance.now();
        const obs = new MutationObserver(() => {
          const now = body.firstElementChild?.dataset.jobId;
          if (now && now !== first) { obs.disconnect(); resolve(performance.now() - t0); }
        });
        obs.observe(body, { childList: true });
        const el = document.querySelector(`[data-testid="${testid}"]`);
        if (kind === "click") el.click();
        else { el.value = value; el.dispatchEvent(new Event("change", { bubbles: true })); }
    })"""
    timings = {}
    for name, args in [
        ("next", ["click", "page-next", None]),
        ("next2", ["click", "page-next", None]),
        ("prev", ["click", "page-prev", None]),
        ("filter", ["select", "filter-status", "failed"]),
        ("sort", ["select", "sort", "-priority"]),
    ]:
        timings[name] = page.evaluate(timed, args) / 1000
    assert page.get_by_test_id("page-label").inner_text().startswith("page 1")
    rows_status = page.locator('[data-testid="job-row"]').evaluate_all(
        "rs => rs.map((r) => r.dataset.status)"
    )
    assert set(rows_status) == {"failed"}
    print("page timings (s):", {k: round(v, 3) for k, v in timings.items()})
    assert max(timings.values()) < 3.0, timings
    screenshot(page, "jobs_list_10k")


def test_error_pages_are_html(page, server, user, request):
    request.node.allowed_console_errors = ("404", "422")
    token, http = user
    login(page, server, token)
    cases = [
        ("/jobs/abc", 422, "/"),
        ("/jobs/999999", 404, "/"),
        ("/architectures/999999", 404, "/architectures"),
        ("/latency-tables/999999", 404, "/latency-tables"),
    ]
    for path, status, back in cases:
        resp = page.goto(f"{server.url}{path}")
        assert resp is not None and resp.status == status, path
        assert resp.headers["content-type"].startswith("text/html"), path
        assert page.locator("header.site-header").is_visible()  # the site's layout
        assert page.get_by_test_id("error-message").inner_text().strip()
        assert page.get_by_test_id("error-back").get_attribute("href") == back
        assert page.get_by_test_id("download-json").count() == 0  # no dead buttons
        assert page.get_by_test_id("download-onnx").count() == 0
    # The API keeps answering problem+json.
    r = http.get("/v1/jobs/999999")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
