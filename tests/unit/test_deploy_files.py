"""Static checks of the deployment files (no Docker engine or Kubernetes here).

The compose file, the Kubernetes manifests and the Dockerfile all lean on deploy/entrypoint.sh;
these tests keep them in step with it: every role a file asks for is a branch of its `case`,
every file a Dockerfile COPYs exists, and every manifest has the shape its kind needs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
COMPOSE = ROOT / "docker-compose.yml"
K8S = sorted((DEPLOY / "kuberay").glob("*.yaml"))
ALL_YAML = [COMPOSE, *K8S]


def entrypoint_subcommands() -> set[str]:
    """The literal branches of the entrypoint's top-level `case "$cmd" in ... esac`."""
    text = ENTRYPOINT.read_text()
    m = re.search(r'case\s+"\$cmd"\s+in\n(.*?)\nesac', text, re.S)
    assert m, 'entrypoint.sh has no `case "$cmd" in` dispatch'
    labels = re.findall(r"^\s*([A-Za-z0-9_|-]+)\)\s*$", m.group(1), re.M)
    return {name for label in labels for name in label.split("|")}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in K8S for d in yaml.safe_load_all(p.read_text()) if d is not None]


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def test_entrypoint_is_valid_bash_with_the_roles() -> None:
    bash = shutil.which("bash")
    assert bash
    subprocess.run([bash, "-n", str(ENTRYPOINT)], check=True)
    assert {"api", "migrate", "ray-head", "ray-worker"} <= entrypoint_subcommands()


CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _sets_cluster_mode_off(text: str) -> bool:
    """`KEY=0`, `KEY: "0"` or `- name: KEY\n value: "0"` anywhere outside comments."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return bool(
        re.search(rf"{CLUSTER_SWITCH}\s*(=|:)\s*[\"']?0\b", code)
        or re.search(rf"name:\s*{CLUSTER_SWITCH}\s*\n\s*value:\s*[\"']?0\b", code)
    )


@pytest.mark.parametrize(
    "path",
    [DEPLOY / "Dockerfile", ENTRYPOINT, COMPOSE, *K8S],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_real_cluster_roles_keep_ray_cluster_mode_on(path: Path) -> None:
    """On Linux RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 turns multi-node off (`ray start --address`
    exits 1, the head listens on loopback only): no deploy file may set it."""
    assert not _sets_cluster_mode_off(path.read_text()), f"{path.name} sets {CLUSTER_SWITCH}=0"


def test_cluster_switch_detector_sees_every_spelling() -> None:
    assert _sets_cluster_mode_off(f"export {CLUSTER_SWITCH}=0")
    assert _sets_cluster_mode_off(f'  {CLUSTER_SWITCH}: "0"')
    assert _sets_cluster_mode_off(f'- name: {CLUSTER_SWITCH}\n  value: "0"')
    assert not _sets_cluster_mode_off(f"# never set {CLUSTER_SWITCH}=0 here")
    assert not _sets_cluster_mode_off(f'{CLUSTER_SWITCH}: "1"')


def test_entrypoint_api_migrates_then_serves_on_all_interfaces() -> None:
    text = ENTRYPOINT.read_text()
    api_branch = re.search(r"^\s*api\)\n(.*?);;", text, re.S | re.M).group(1)
    assert "wait_and_migrate" in api_branch
    assert re.search(r"densenas serve --host 0\.0\.0\.0", api_branch)
    for role in ("ray-head", "ray-worker"):
        branch = re.search(rf"^\s*{role}\)\n(.*?);;", text, re.S | re.M).group(1)
        assert "ray start" in branch and "--block" in branch


def test_compose_services_and_roles() -> None:
    doc = compose()
    services = doc["services"]
    assert {"postgres", "ray-head", "ray-worker", "api"} <= set(services)
    roles = entrypoint_subcommands()
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if name == "postgres":
            continue
        assert "build" in svc, f"{name}: built from deploy/Dockerfile"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        cmd = svc["command"]
        first = cmd[0] if isinstance(cmd, list) else shlex.split(cmd)[0]
        assert first in roles, f"{name}: command {first!r} is not an entrypoint subcommand"
        mounts = [v.split(":")[1] for v in svc["volumes"]]
        assert "/data/checkpoints" in mounts, f"{name}: shares the checkpoint volume"
    assert set(doc["volumes"]) >= {"checkpoints", "pgdata"}


def test_compose_health_and_ordering() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "healthcheck" in services["ray-head"]
    deps = services["api"]["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["ray-head"]["condition"] == "service_healthy"
    env = services["api"]["environment"]
    assert env["DENSENAS_DATABASE_URL"].startswith("postgresql")
    assert services["ray-worker"]["deploy"]["replicas"] >= 1
    for name in ("ray-head", "ray-worker", "api"):
        assert CLUSTER_SWITCH not in services[name]["environment"], name


def test_compose_api_is_a_ray_client_and_workers_join_the_gcs() -> None:
    """The API container runs no raylet: it needs the Ray Client (ray://head:10001), which the
    head serves; nodes join the head's GCS (head:6379)."""
    services = compose()["services"]
    head_env = services["ray-head"]["environment"]
    client_port = head_env.get("RAY_CLIENT_SERVER_PORT", "10001")
    assert services["api"]["environment"]["RAY_ADDRESS"] == f"ray://ray-head:{client_port}"
    assert services["ray-worker"]["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    head_branch = re.search(r"^\s*ray-head\)\n(.*?);;", ENTRYPOINT.read_text(), re.S | re.M).group(
        1
    )
    assert '--ray-client-server-port="${RAY_CLIENT_SERVER_PORT}"' in head_branch


def test_k8s_manifests_have_the_required_fields() -> None:
    docs = k8s_docs()
    assert docs
    for path, d in docs:
        for key in ("apiVersion", "kind", "metadata", "spec"):
            assert key in d, f"{path.name} {d.get('kind')}: missing {key}"
        assert d["metadata"].get("name"), f"{path.name}: unnamed {d['kind']}"
    kinds = {d["kind"] for _, d in docs}
    assert {"RayCluster", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_raycluster_has_head_and_gpu_worker_group_on_shared_checkpoints() -> None:
    (rc,) = [d for _, d in k8s_docs() if d["kind"] == "RayCluster"]
    assert rc["apiVersion"].startswith("ray.io/")
    spec = rc["spec"]
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head and _containers(head["template"])
    groups = spec["workerGroupSpecs"]
    assert groups and all("groupName" in g and "template" in g for g in groups)
    gpu_groups = [
        g
        for g in groups
        if any(
            "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            for c in _containers(g["template"])
        )
    ]
    assert gpu_groups, "a worker group requests nvidia.com/gpu"
    pvcs = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"}
    for tmpl in [head["template"], *(g["template"] for g in groups)]:
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in tmpl["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims & pvcs, "every Ray pod mounts the shared checkpoint PVC"
        for c in _containers(tmpl):
            assert CLUSTER_SWITCH not in {e["name"] for e in c.get("env", [])}
    assert head["rayStartParams"]["ray-client-server-port"] == "10001"


def test_api_deployment_points_at_the_ray_head_and_secret() -> None:
    docs = [d for _, d in k8s_docs()]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (rc,) = [d for d in docs if d["kind"] == "RayCluster"]
    roles = entrypoint_subcommands()
    containers = _containers(dep["spec"]["template"])
    for c in containers:
        assert c["args"][0] in roles
    env = {e["name"]: e for e in containers[-1]["env"]}
    assert env["DENSENAS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    # KubeRay names the head service <cluster>-head-svc; the API pod has no raylet, so it is a
    # Ray Client of the head's client server
    assert env["RAY_ADDRESS"]["value"] == f"ray://{rc['metadata']['name']}-head-svc:10001"
    for c in containers:
        assert CLUSTER_SWITCH not in {e["name"] for e in c.get("env", [])}
    services = [d for d in docs if d["kind"] == "Service"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert any(s["spec"]["selector"].items() <= labels.items() for s in services)


def _dockerfile_copy_sources(path: Path) -> list[str]:
    sources = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.upper().startswith("COPY "):
            continue
        args = [a for a in shlex.split(line[5:]) if not a.startswith("--")]
        sources.extend(args[:-1])
    return sources


def test_dockerfile_copy_sources_exist_and_entrypoint_is_wired() -> None:
    dockerfile = DEPLOY / "Dockerfile"
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    sources = _dockerfile_copy_sources(dockerfile)
    assert "deploy/entrypoint.sh" in sources
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"COPY sources missing from the build context: {missing}"
    assert "densenas-entrypoint" in text and "ENTRYPOINT" in text


# -- the entrypoint itself, run the way the containers run it ---------------------------------


def _entrypoint_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("DENSENAS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DENSENAS_DATABASE_URL=f"sqlite:///{tmp_path / 'deploy.db'}",
        DENSENAS_DATA_DIR=str(tmp_path / "data"),
        DENSENAS_MIGRATE_RETRIES="2",
        DENSENAS_JEMALLOC="0",
    )
    env.update(extra)
    return env


def test_entrypoint_migrate_creates_the_schema(tmp_path: Path) -> None:
    import sqlite3

    proc = subprocess.run(
        ["bash", str(ENTRYPOINT), "migrate"],
        env=_entrypoint_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(tmp_path / "deploy.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "tokens", "alembic_version"} <= tables


@pytest.mark.slow
def test_entrypoint_migrate_gives_up_on_a_bad_database(tmp_path: Path) -> None:
    env = _entrypoint_env(tmp_path, DENSENAS_DATABASE_URL="postgresql+psycopg://u:p@127.0.0.1:9/x")
    proc = subprocess.run(
        ["bash", str(ENTRYPOINT), "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "not ready after 2 attempts" in proc.stderr


@pytest.mark.slow
def test_entrypoint_api_migrates_and_serves_healthz(tmp_path: Path) -> None:
    import time

    import httpx

    from tests.support.net import free_port

    port = free_port()
    env = _entrypoint_env(tmp_path, DENSENAS_EXECUTOR="none", DENSENAS_PORT=str(port))
    # the image binds 0.0.0.0; the test talks to it over loopback
    proc = subprocess.Popen(
        ["bash", str(ENTRYPOINT), "api"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "api did not become healthy"
            time.sleep(0.5)
        assert r.json()["status"] == "ok"
        assert (tmp_path / "data" / "admin_token").is_file()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_entrypoint_runs_other_commands_as_given(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ENTRYPOINT), "densenas", "--help"],
        env=_entrypoint_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "submit" in proc.stdout and "demo" in proc.stdout


@pytest.mark.slow  # two `ray` CLI start-ups: 3.5-4.5 s alone, 7 s in the unit run
def test_ray_flags_used_by_the_entrypoint_exist() -> None:
    """`ray start` rejects unknown flags only when a container starts; check them here."""
    import sys

    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("ray CLI not installed")
    text = ENTRYPOINT.read_text()
    used = set(re.findall(r"(--[a-z][a-z-]+)=", text)) | {
        "--head",
        "--block",
        "--disable-usage-stats",
    }
    help_text = subprocess.run(
        [str(ray), "start", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    missing = sorted(f for f in used if f not in help_text)
    assert not missing, f"not `ray start` options: {missing}"
    health = subprocess.run(
        [str(ray), "health-check", "--help"], capture_output=True, text=True, timeout=120
    )
    assert health.returncode == 0 and "--address" in health.stdout
