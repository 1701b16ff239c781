"""Deploy rehearsal: the roles of docker-compose.yml, run by deploy/entrypoint.sh as separate
processes on this machine — a Ray head, two Ray worker nodes and the API on PostgreSQL — with
the environment and command compose gives each service. Through the REST API a 2-worker
search and a 2-node retrain run to success, and their Ray Train workers ran on both nodes.

What differs from `docker compose up` is only what one machine forces:
- hostnames → loopback addresses and ports → free ports (each node its own --temp-dir; ports
  Ray would otherwise fix per host: dashboard, dashboard agent);
- the Ray nodes' IP is 127.0.0.2: with cluster mode on (as in the deploy files) Ray rewrites
  127.0.0.1 to the machine's network address, and this test talks over loopback only;
- the database is a fresh one on the test PostgreSQL (its URL, its well-known test password, so
  DENSENAS_ENV=dev instead of prod, which refuses such a password);
- per-node resources for a shared 2-core machine: 1 CPU per worker, 100 MB object stores.
Nothing else is set: in particular no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (its =0 would make
`ray start --address` exit 1), and the API reaches the cluster the way compose says, as a Ray
Client (ray://<head>:<client port>).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.net import free_ports
from tests.support.ray_procs import Procs, clean_env, raylet_node_id, wait_until

yaml = pytest.importorskip("yaml")

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.timeout(900),
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
COMPOSE = ROOT / "docker-compose.yml"
NODE_IP = "127.0.0.2"  # loopback, but not the address Ray swaps for eth0 in cluster mode
MB = 1024**2
JOB_TIMEOUT = 420

TINY_SPACE = {
    "name": "tiny",
    "family": "mbv2",
    "input_size": 16,
    "stem": {"channels": 4, "stride": 1},
    "stages": [
        {"stride": 2, "widths": [8], "num_layers": 1},
        {"stride": 1, "widths": [8, 12], "num_layers": 1},
    ],
    "tail_channels": 16,
    "align_ops": ["mb_k3_e3", "mb_k5_e3"],
    "layer_ops": ["mb_k3_e3", "skip"],
}
DATA = {
    "name": "synthetic",
    "limit_train": 200,
    "limit_val": 64,
    "num_classes": 4,
    "input_size": 16,
}
SEARCH = {
    "space": TINY_SPACE,
    "dataset": DATA,
    "epochs": 1,
    "warmup_epochs": 0,
    "batch_size": 16,
    "seed": 0,
    "bn_calibration": 0,
    "num_workers": 2,
}


def idle(cluster: dict[str, Any]) -> bool:
    """No CPU reserved, no placement group or job actor of the service left."""
    return (
        cluster["available"].get("CPU") == cluster["total"].get("CPU")
        and not cluster["placement_groups"]
        and not cluster["job_actors"]
    )


# -- docker-compose.yml as data ----------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` against ``variables``."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in variables and (variables[name] or not (op or "").startswith(":")):
            return variables[name]
        if op in ("-", ":-"):
            return arg
        raise AssertionError(f"compose needs {name}: {arg}")

    return _INTERPOLATION.sub(sub, value)


def relocate(value: str, hosts: dict[str, str], ports: dict[int, int]) -> str:
    """Every `host:port` whose host is a compose service → this machine's address and port."""

    def sub(m: re.Match[str]) -> str:
        host, port = m.group(1), int(m.group(2))
        if host not in hosts:
            return m.group(0)
        return f"{hosts[host]}:{ports.get(port, port)}"

    return re.sub(r"(?<![\w.-])([A-Za-z][\w.-]*):(\d+)\b", sub, value)


class ComposeRole:
    def __init__(self, doc: dict[str, Any], service: str, variables: dict[str, str]) -> None:
        svc = doc["services"][service]
        self.service = service
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        self.environment = {k: interpolate(str(v), variables) for k, v in env.items()}
        cmd = svc["command"]
        self.command = list(cmd) if isinstance(cmd, list) else cmd.split()

    def env(self, hosts: dict[str, str], ports: dict[int, int], **overrides: str) -> dict[str, str]:
        env = {k: relocate(v, hosts, ports) for k, v in self.environment.items()}
        env.update(overrides)
        return clean_env(**env)


# -- helpers -----------------------------------------------------------------------------------


def wait_job(client: httpx.Client, job_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {job}"
        time.sleep(2)


def assert_ran_on_both_workers(
    job: dict[str, Any], worker_nodes: set[str], head_node: str
) -> set[str]:
    assert job["status"] == "succeeded", job.get("error")
    workers = job["result"]["workers"]
    assert sorted(w["rank"] for w in workers) == [0, 1]
    assert all(w["world_size"] == 2 for w in workers)
    nodes = {w["node_id"] for w in workers}
    assert len(nodes) == 2, f"both ranks on one node: {workers}"
    assert nodes == worker_nodes and head_node not in nodes
    return nodes


# -- the rehearsal -----------------------------------------------------------------------------


def test_compose_roles_run_a_search_and_a_multi_node_retrain(pg_db: str, tmp_path: Path):
    assert shutil.which("ray", path=clean_env()["PATH"]), "ray CLI not installed"
    doc = yaml.safe_load(COMPOSE.read_text())
    variables = {"RAY_AUTH_TOKEN": secrets.token_hex(32), "POSTGRES_PASSWORD": "unused"}
    head, worker, api = (ComposeRole(doc, s, variables) for s in ("ray-head", "ray-worker", "api"))
    for role in (head, worker, api):
        assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in role.environment

    gcs, client, dash, agent0, agent1, agent2, api_port = free_ports(7)
    hosts = {"ray-head": NODE_IP, "api": "127.0.0.1", "postgres": "127.0.0.1"}
    ports = {6379: gcs, 10001: client, 8000: api_port}
    node_res = {"RAY_OBJECT_STORE_MEMORY": str(100 * MB)}
    api_data = tmp_path / "api-data"
    entry = ["bash", str(ENTRYPOINT)]
    timings: dict[str, float] = {}

    with Procs() as procs:
        dirs = {n: procs.temp_dir(f"dn-{n}-") for n in ("head", "w1", "w2")}
        t0 = time.monotonic()
        # ray-head: GCS and client ports moved through the variables the entrypoint reads
        head_proc = procs.start(
            "ray-head",
            entry
            + head.command
            + [
                f"--node-ip-address={NODE_IP}",
                f"--temp-dir={dirs['head']}",
                f"--dashboard-port={dash}",
                f"--dashboard-agent-listen-port={agent0}",
            ],
            head.env(
                hosts, ports, RAY_PORT=str(gcs), RAY_CLIENT_SERVER_PORT=str(client), **node_res
            ),
            tmp_path,
            owned_dirs=[dirs["head"]],
        )
        head_proc.wait_for_log("Ray runtime started", 120)
        timings["head"] = time.monotonic() - t0
        worker_env = worker.env(hosts, ports, RAY_PORT=str(gcs), RAY_NUM_CPUS="1", **node_res)
        assert worker_env["RAY_ADDRESS"] == f"{NODE_IP}:{gcs}"
        workers = [
            procs.start(
                f"ray-worker-{i}",
                entry
                + worker.command
                + [
                    f"--node-ip-address={NODE_IP}",
                    f"--temp-dir={dirs[f'w{i}']}",
                    f"--dashboard-agent-listen-port={agent}",
                ],
                worker_env,
                tmp_path,
                owned_dirs=[dirs[f"w{i}"]],
                stop_timeout=45,
            )
            for i, agent in ((1, agent1), (2, agent2))
        ]
        for w in workers:
            w.wait_for_log("Ray runtime started", 120)
        timings["workers"] = time.monotonic() - t0
        head_node = raylet_node_id(head_proc)
        worker_nodes = {raylet_node_id(w) for w in workers}
        assert len(worker_nodes) == 2

        api_env = api.env(
            hosts,
            ports,
            DENSENAS_DATABASE_URL=pg_db,
            DENSENAS_ENV="dev",
            DENSENAS_DATA_DIR=str(api_data),
            DENSENAS_PORT=str(api_port),
        )
        # what compose gives the API, relocated: a Ray Client of the head, callbacks to itself
        assert api_env["RAY_ADDRESS"] == f"ray://{NODE_IP}:{client}"
        assert api_env["DENSENAS_PUBLIC_URL"] == f"http://127.0.0.1:{api_port}"
        assert api_env["DENSENAS_EXECUTOR"] == "ray"
        api_proc = procs.start("api", entry + api.command, api_env, tmp_path)
        base = f"http://127.0.0.1:{api_port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, "the API's /healthz", api_proc)
        timings["api"] = time.monotonic() - t0
        # the compose file's way to a token: `docker compose exec api densenas token create`
        minted = subprocess.run(
            entry + ["densenas", "token", "create", "--name", "rehearsal", "--admin"],
            env=api_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip().splitlines()[-1]

        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as c:
            t1 = time.monotonic()
            r = c.post("/v1/jobs", json={"kind": "search", "spec": SEARCH})
            assert r.status_code == 201, r.text
            search = wait_job(c, r.json()["id"], JOB_TIMEOUT)
            timings["search"] = time.monotonic() - t1
            used = assert_ran_on_both_workers(search, worker_nodes, head_node)
            (arch_id,) = search["produced"]["architectures"]
            events = c.get(f"/v1/jobs/{search['id']}/events", params={"format": "json"}).json()
            assert {e["type"] for e in events["data"]} & {"step", "epoch"}, "no events arrived"

            t1 = time.monotonic()
            r = c.post(
                "/v1/jobs",
                json={
                    "kind": "retrain",
                    "spec": {
                        "architecture_id": arch_id,
                        "dataset": DATA,
                        "epochs": 1,
                        "batch_size": 16,
                        "num_nodes": 2,
                        "workers_per_node": 1,
                        "seed": 0,
                    },
                },
            )
            assert r.status_code == 201, r.text
            retrain = wait_job(c, r.json()["id"], JOB_TIMEOUT)
            timings["retrain"] = time.monotonic() - t1
            assert_ran_on_both_workers(retrain, worker_nodes, head_node)
            m = retrain["result"]["metrics"]
            assert m["world_size"] == 2 and 0.0 <= m["top1"] <= m["top5"] <= 1.0
            assert c.get(f"/v1/architectures/{arch_id}").json()["accuracy_top1"] == m["top1"]
            # nothing of either job stays reserved on the cluster (seen through the API)
            wait_until(lambda: idle(c.get("/v1/cluster").json()), 60, "0 CPUs reserved", api_proc)
            cluster = c.get("/v1/cluster").json()
            assert cluster["executor"] == "ray" and cluster["total"]["CPU"] == 2.0

        t1 = time.monotonic()
    timings["teardown"] = time.monotonic() - t1
    print(
        f"\n[timing] {', '.join(f'{k} {v:.1f}s' for k, v in timings.items())}; "
        f"head node {head_node[:12]}, train ranks on {sorted(n[:12] for n in used)}"
    )
