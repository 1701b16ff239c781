"""Admission (service.admission): what a job may ask for, refused with a 422 that names the field
and the limit before anything expensive runs — custom spaces counted before they are built (and
never on the event loop), resources a job can never get, dataset roots outside the configured
directories — plus the schema's strict types and NUL-free strings."""

from __future__ import annotations

import os
import threading
import time

import pytest

from service.admission import max_paths
from service.settings import Settings
from tests.support.live import LiveServer

SPACE = {  # a small valid custom space: two stages of two blocks
    "name": "tiny",
    "stem": {"channels": 16, "stride": 1},
    "tail_channels": 64,
    "align_ops": ["mb_k3_e3"],
    "layer_ops": ["mb_k3_e3", "skip"],
    "stages": [
        {"stride": 2, "widths": [24, 32], "num_layers": 1},
        {"stride": 2, "widths": [40, 48], "num_layers": 1},
    ],
}


def space(blocks: int = 4, k: int = 4, width: int = 32, **kw):
    return {
        **SPACE,
        "stages": [{"stride": 1, "widths": [width] * blocks, "num_layers": 1}],
        "max_connections": k,
        **kw,
    }


def post(client, headers, kind="search", **spec):
    return client.post("/v1/jobs", headers=headers, json={"kind": kind, "spec": spec})


def refused(r, loc: str, *needles: str) -> str:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert loc in [e["loc"] for e in problem["errors"]], problem
    msg = next(e["msg"] for e in problem["errors"] if e["loc"] == loc)
    for n in needles:
        assert n in msg or n in problem["detail"], problem
    return msg


# -- custom spaces ----------------------------------------------------------------------------


def test_huge_spaces_are_refused_fast_while_healthz_keeps_answering(make_settings):
    """The reported freeze: one POST of a 10,000-block × 10,000-connection space held the event
    loop (and 8 GB). Over a real uvicorn server, the huge spaces are refused in well under 3 s
    each while /healthz, polled from another thread throughout, answers in under 1 s."""
    with (
        LiveServer(lambda url: make_settings(public_url=url)) as live,
        live.client(live.admin_token()) as api,
        live.client() as probe,
    ):
        latencies: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            cases = [
                (space(10_000, 10_000), "spec.space.stages", "10000 blocks"),
                (space(10_000), "spec.space.stages", "DENSENAS_MAX_SPACE_BLOCKS"),
                (space(1_000, 1_000), "spec.space.max_connections", "DENSENAS_MAX_SPACE_PATHS"),
                (
                    space(4, width=10_000),
                    "spec.space.stages[0].widths[0]",
                    "DENSENAS_MAX_SPACE_CHANNELS",
                ),
            ]
            for desc, loc, needle in cases:
                for kind in ("search", "profile"):
                    t0 = time.perf_counter()
                    r = post(api, {}, kind, space=desc)
                    elapsed = time.perf_counter() - t0
                    assert 400 <= r.status_code < 500 and elapsed < 3.0, (r.status_code, elapsed)
                    refused(r, loc, needle)
            time.sleep(0.05)
        finally:
            stop.set()
            poller.join(10)
        assert latencies and max(latencies) < 1.0, max(latencies)
        # a valid default search is still accepted by the same server
        assert api.post("/v1/jobs", json={"kind": "search"}).status_code == 201


def test_space_limits_name_the_field_and_the_setting(client, user, rows):
    before = rows("jobs")
    r = post(client, user, space=space(10_000, 10_000))
    assert (
        refused(r, "spec.space.stages")
        == "10000 blocks exceeds the limit of 64 (DENSENAS_MAX_SPACE_BLOCKS)"
    )
    assert (
        r.json()["detail"] == "spec.space.stages: 10000 blocks exceeds the limit of 64 "
        "(DENSENAS_MAX_SPACE_BLOCKS)"
    )
    refused(
        post(client, user, space=space(1_000, 1_000)),
        "spec.space.max_connections",
        "up to",
        "DENSENAS_MAX_SPACE_PATHS",
    )
    refused(post(client, user, space=space(50, 50)), "spec.space.max_connections", "limit of 1024")
    refused(
        post(client, user, space=space(width=10_000)),
        "spec.space.stages[0].widths[0]",
        "10000 channels",
        "DENSENAS_MAX_SPACE_CHANNELS",
    )
    refused(
        post(client, user, space={**SPACE, "tail_channels": 10_000}),
        "spec.space.tail_channels",
        "DENSENAS_MAX_SPACE_CHANNELS",
    )
    refused(
        post(client, user, space={**SPACE, "stem": {"channels": 5000, "stride": 1}}),
        "spec.space.stem.channels",
        "DENSENAS_MAX_SPACE_CHANNELS",
    )
    refused(
        post(client, user, space=space(4, num_layers=1)), "spec.space.stages", "not both"
    )  # what only the build knows is still named by it
    deep = {**SPACE, "stages": [{"stride": 1, "widths": [32, 32], "num_layers": 300}]}
    refused(
        post(client, user, space=deep),
        "spec.space.stages",
        "600 basic layers",
        "DENSENAS_MAX_SPACE_LAYERS",
    )
    ops = [f"mb_k{k}_e{e}" for k in (1, 3, 5, 7, 9) for e in (1, 2, 3, 4)]
    refused(
        post(client, user, space={**SPACE, "layer_ops": ops}),
        "spec.space.layer_ops",
        "20 ops",
        "DENSENAS_MAX_SPACE_OPS",
    )
    refused(
        post(client, user, space={**SPACE, "align_ops": ["mb_k3_e" + "9" * 5000]}),
        "spec.space.align_ops[0]",
        "characters",
    )
    refused(
        post(client, user, space={**SPACE, "input_size": 100_000}),
        "spec.space.input_size",
        "DENSENAS_MAX_SPACE_INPUT_SIZE",
    )
    refused(post(client, user, space={**SPACE, "name": "n" * 101}), "spec.space.name")
    # parallel-list form: counted the same way
    parallel = {k: v for k, v in SPACE.items() if k != "stages"}
    parallel.update(stage_strides=[1], widths=[[32] * 500], num_layers=[1])
    refused(post(client, user, space=parallel), "spec.space.widths", "500 blocks")
    assert rows("jobs") == before


def test_supernet_bound_is_closed_form_and_refuses_what_would_not_fit(client, user):
    # 64 blocks of 4096 channels at 1024 px: within every count, far beyond the supernet bound
    big = {
        **SPACE,
        "input_size": 1024,
        "stem": {"channels": 4096, "stride": 1},
        "tail_channels": 4096,
        "stages": [{"stride": 1, "widths": [4096] * 16, "num_layers": 1}],
    }
    t0 = time.perf_counter()
    r = post(client, user, "profile", space=big)
    assert time.perf_counter() - t0 < 3
    msgs = " ".join(e["msg"] for e in r.json()["errors"])
    refused(r, "spec.space")
    assert "DENSENAS_MAX_SUPERNET_PARAMS" in msgs and "DENSENAS_MAX_SUPERNET_MULT_ADDS" in msgs
    # the resolution the job runs at counts: the small space is fine at 32 px
    assert post(client, user, "profile", space=SPACE, input_size=32).status_code == 201


def test_space_limits_come_from_settings(make_settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(make_settings(max_space_blocks=3, max_supernet_mult_adds=10**6))
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {app.state.settings.admin_token_path.read_text().strip()}"}
        assert (
            refused(post(c, h, space=SPACE), "spec.space.stages")
            == "4 blocks exceeds the limit of 3 (DENSENAS_MAX_SPACE_BLOCKS)"
        )
        tiny = {**SPACE, "stages": SPACE["stages"][:1]}
        refused(post(c, h, space=tiny), "spec.space", "DENSENAS_MAX_SUPERNET_MULT_ADDS")


def test_valid_custom_space_and_default_search_are_accepted(client, user):
    assert client.post("/v1/jobs", headers=user, json={"kind": "search"}).status_code == 201
    # every count at its limit, at 32 px (at 224 px without down-sampling: 339 G mult-adds)
    r = post(client, user, space=space(64, 16), dataset={"name": "synthetic", "input_size": 32})
    assert r.status_code == 201, r.text
    refused(
        post(client, user, space=space(64, 16), dataset={"name": "synthetic"}),
        "spec.space",
        "per 224×224 image",
    )
    assert post(client, user, "profile", space=SPACE).status_code == 201


def test_max_paths_counts_block_pairs_within_max_connections():
    from densenas_core.spaces import space_from_dict

    for blocks, k in ((1, 1), (4, 2), (10, 4), (10, 10), (10, 50), (30, 7)):
        built = space_from_dict(space(blocks, k))
        # one stage: the rule stops nothing but stem → tail (two stages apart)
        assert len(built.paths) == max_paths(blocks, k) - (k >= blocks + 1)


# -- resources --------------------------------------------------------------------------------


def test_resources_beyond_capacity_are_refused(make_settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(
        make_settings(
            max_workers_per_job=4, max_gpus_per_worker=2, max_gpus_per_job=4, max_nodes_per_job=2
        )
    )
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {app.state.settings.admin_token_path.read_text().strip()}"}
        assert (
            refused(post(c, h, num_workers=5), "spec.num_workers")
            == "5 workers exceeds the limit of 4 workers per job (DENSENAS_MAX_WORKERS_PER_JOB)"
        )
        assert post(c, h, num_workers=4).status_code == 201
        refused(post(c, h, num_workers=1000), "spec.num_workers", "DENSENAS_MAX_WORKERS_PER_JOB")
        refused(post(c, h, num_workers=1025), "spec.num_workers")  # the schema's own cap
        assert post(c, h, num_workers=4, use_gpu=True).status_code == 201  # 4 GPUs in all
        refused(
            post(c, h, "retrain", architecture_id=1, num_nodes=2, workers_per_node=3),
            "spec.workers_per_node",
            "2 × 3 = 6 workers",
            "DENSENAS_MAX_WORKERS_PER_JOB",
        )
        refused(
            post(c, h, "retrain", architecture_id=1, num_nodes=3),
            "spec.num_nodes",
            "DENSENAS_MAX_NODES_PER_JOB",
        )
        refused(
            post(c, h, "retrain", architecture_id=1, gpus_per_worker=3),
            "spec.gpus_per_worker",
            "DENSENAS_MAX_GPUS_PER_WORKER",
        )
        refused(
            post(c, h, "retrain", architecture_id=1, workers_per_node=4, gpus_per_worker=2),
            "spec.gpus_per_worker",
            "8 GPUs",
            "DENSENAS_MAX_GPUS_PER_JOB",
        )


def test_local_capacity_defaults_follow_this_machine(tmp_path):
    base = dict(database_url=f"sqlite:///{tmp_path / 'x.db'}", data_dir=tmp_path)
    local = Settings(**base, executor="ray")
    assert local.runs_jobs_locally and local.nodes_capacity == 1
    assert local.workers_capacity == len(os.sched_getaffinity(0))
    cluster = Settings(**base, executor="ray", ray_address="ray://head:10001")
    assert not cluster.runs_jobs_locally
    assert (
        cluster.workers_capacity,
        cluster.gpus_per_worker_capacity,
        cluster.gpus_per_job_capacity,
    ) == (1024, 64.0, None)
    assert Settings(**base, executor="inline", max_workers_per_job=7).workers_capacity == 7


def test_embedded_default_refuses_more_workers_than_cpus(make_settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    class Idle:  # an executor that never runs anything
        def start(self, payload): ...
        def alive(self, job_id):
            return False

        def cancel(self, job_id): ...
        def shutdown(self): ...

    settings = make_settings(executor="inline")  # jobs run on this machine
    app = create_app(settings, Idle())
    cpus = settings.workers_capacity
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {settings.admin_token_path.read_text().strip()}"}
        refused(
            post(c, h, num_workers=cpus + 1), "spec.num_workers", f"limit of {cpus} workers per job"
        )


# -- strict types, NUL bytes, profile bounds ----------------------------------------------------


@pytest.mark.parametrize(
    "kind,spec,loc",
    [
        ("search", {"epochs": True}, "spec.epochs"),
        ("search", {"batch_size": "64"}, "spec.batch_size"),
        ("search", {"epochs": 2.0}, "spec.epochs"),
        ("search", {"use_gpu": 1}, "spec.use_gpu"),
        ("search", {"a_betas": [True, 0.9]}, "spec.a_betas[0]"),
        (
            "search",
            {"dataset": {"name": "imagefolder", "root": "/data/\u0000x"}},
            "spec.dataset.root",
        ),
        ("search", {"dataset": {"root": "\u0000"}}, "spec.dataset.root"),
        ("search", {"space": {**SPACE, "name": "a\u0000b"}}, "spec.space"),
        ("profile", {"device": {"gpu_type": "A100\u0000"}}, "spec.device.gpu_type"),
        ("profile", {"repeats": 100_000}, "spec.repeats"),
        ("profile", {"warmup": 100_000}, "spec.warmup"),
    ],
)
def test_strict_types_nul_bytes_and_profile_bounds(client, user, rows, kind, spec, loc):
    r = client.post("/v1/jobs", headers=user, json={"kind": kind, "spec": spec})
    refused(r, loc)
    assert rows("jobs") == 0


def test_strict_types_still_take_what_json_writes(client, user):
    r = post(client, user, a_betas=[0.5, 0.99], w_lr=1, epochs=2, dataset={"name": "synthetic"})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["a_betas"] == [0.5, 0.99] and r.json()["spec"]["w_lr"] == 1.0
    assert post(client, user, "profile", repeats=10_000, warmup=10_000).status_code == 201


# -- dataset roots ------------------------------------------------------------------------------


def test_dataset_roots_are_confined(make_settings, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app

    allowed = tmp_path / "datasets"
    (allowed / "imgs" / "cat").mkdir(parents=True)
    (allowed / "escape").symlink_to("/etc")
    settings = make_settings(dataset_roots=[allowed])
    app = create_app(settings)
    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {settings.admin_token_path.read_text().strip()}"}

        def root(r, name="imagefolder"):
            return post(c, h, dataset={"name": name, "root": r})

        msg = refused(
            root("/etc"), "spec.dataset.root", "outside the allowed", "DENSENAS_DATASET_ROOTS"
        )
        assert str(allowed) in msg and "passwd" not in msg and "hosts" not in msg
        refused(root(str(allowed / "imgs" / ".." / ".." / "..")), "spec.dataset.root", "'..'")
        refused(root(str(allowed / "escape")), "spec.dataset.root", "symbolic link")
        refused(root(str(allowed / "escape" / "ssl")), "spec.dataset.root", "outside")
        refused(root("datasets/imgs"), "spec.dataset.root", "absolute")
        refused(root("/etc", "cifar10"), "spec.dataset.root", "outside")  # every dataset
        assert root(str(allowed / "imgs")).status_code == 201
        assert root(str(allowed / "not-yet")).status_code == 201  # cifar10 downloads into it
        assert root(str(allowed)).status_code == 201


def test_default_dataset_roots(tmp_path, monkeypatch):
    s = Settings(database_url="sqlite://", data_dir=tmp_path)
    assert [str(p) for p in s.allowed_dataset_roots] == [
        str(tmp_path / "datasets"),
        "/usr/share/datasets",
    ]
    monkeypatch.setenv("DENSENAS_DATASET_ROOTS", f"/a{os.pathsep}/b")
    assert [str(p) for p in Settings().allowed_dataset_roots] == ["/a", "/b"]
    monkeypatch.setenv("DENSENAS_DATASET_ROOTS", '["/c"]')
    assert [str(p) for p in Settings().allowed_dataset_roots] == ["/c"]


def test_etc_as_imagefolder_root_is_refused_by_default(client, user):
    r = post(client, user, dataset={"name": "imagefolder", "root": "/etc"})
    msg = refused(r, "spec.dataset.root", "/usr/share/datasets")
    assert "passwd" not in r.text and "ssl" not in msg
