"""Helpers for the browser tests: a stand-in worker, search data shaped like densenas_core's,
and the login/screenshot steps every page test takes. The live server is
:class:`tests.support.live.LiveServer` (the ``server`` fixture)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.live import LiveServer

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"


# -- playing the worker ----------------------------------------------------------------------


@dataclass
class Worker:
    """Drives one job through the worker routes with its own per-job token."""

    server: LiveServer
    job_id: int
    token: str
    seq: int = 0
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = self.server.client(self.token)

    def events(self, *events: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        batch = []
        for type_, data in events:
            self.seq += 1
            batch.append({"seq": self.seq, "type": type_, "data": data})
        r = self.http.post(f"/v1/jobs/{self.job_id}/events", json={"events": batch})
        r.raise_for_status()
        return r.json()

    def complete(
        self,
        outcome: str = "succeeded",
        *,
        result: dict | None = None,
        error: str | None = None,
        traceback_tail: str | None = None,
    ) -> dict[str, Any]:
        r = self.http.post(
            f"/v1/jobs/{self.job_id}/complete",
            json={
                "outcome": outcome,
                "result": result,
                "error": error,
                "traceback_tail": traceback_tail,
            },
        )
        r.raise_for_status()
        return r.json()


def start_job(server: LiveServer, job_id: int) -> Worker:
    """Claim queued jobs as the dispatcher would, until ``job_id`` is running → its worker."""
    from service import jobs

    with server.session() as s:
        claimed = jobs.claim(s, "browser-tests", 100)
    tokens = {job.id: tok for job, tok in claimed}
    if job_id not in tokens:
        raise AssertionError(f"job {job_id} was not claimable (claimed {sorted(tokens)})")
    return Worker(server, job_id, tokens[job_id])


# -- search data shaped like densenas_core's -------------------------------------------------


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _entropy(p: list[float]) -> float:
    """Entropy / log k as densenas_core.search reports it: 1 = uniform, 0 = one-hot."""
    return -sum(v * math.log(v) for v in p if v > 0) / math.log(len(p)) if len(p) > 1 else 0.0


class FakeSearch:
    """α/β logits that sharpen epoch by epoch, exported in SuperNet.export_probs's shape, with
    the architecture the core derives from them (densenas_core.derive)."""

    def __init__(self, space: str | dict = "mbv2-small", seed: int = 0) -> None:
        from densenas_core._graph import space_graph
        from densenas_core.spaces import get_space

        self.space = get_space(space)
        self.g = space_graph(self.space)
        rnd = random.Random(seed)
        self.beta_dir = [
            [rnd.gauss(0, 1) for _ in self.space.out_paths[i]] for i in range(self.g.beta_rows)
        ]
        self.align_dir = [
            [rnd.gauss(0, 1) for _ in self.space.align_ops] for _ in self.g.align_paths
        ]
        self.layer_dir = [
            [rnd.gauss(0, 1) for _ in self.space.layer_ops] for _ in self.g.layer_block
        ]

    def logits(self, epoch: int) -> tuple[dict, list[list[float]]]:
        k = 0.6 * (epoch + 1)
        scale = lambda rows: [[k * v for v in r] for r in rows]  # noqa: E731
        return (
            {"align": scale(self.align_dir), "layers": scale(self.layer_dir)},
            scale(self.beta_dir),
        )

    def arch_params(self, epoch: int) -> dict[str, Any]:
        """SearchResult.arch_params: α as alignment rows then layer rows, β ragged (logits)."""
        alpha, beta = self.logits(epoch)
        return {"alpha": alpha["align"] + alpha["layers"], "beta": beta}

    def probs(self, epoch: int) -> dict[str, Any]:
        alpha, beta = self.logits(epoch)
        g, s = self.g, self.space
        return {
            "space": s.name,
            "temperature": 1.0,
            "alpha": {
                "align": [
                    {
                        "src": g.path_src[k],
                        "dst": g.path_dst[k],
                        "ops": list(s.align_ops),
                        "probs": _softmax(alpha["align"][r]),
                    }
                    for r, k in enumerate(g.align_paths)
                ],
                "layers": [
                    {
                        "block": b,
                        "layer": i,
                        "ops": list(s.layer_ops),
                        "probs": _softmax(alpha["layers"][r]),
                    }
                    for r, (b, i) in enumerate(zip(g.layer_block, g.layer_pos))
                ],
            },
            "beta": [
                {"block": i, "dst": [p.dst for p in s.out_paths[i]], "probs": _softmax(beta[i])}
                for i in range(g.beta_rows)
            ],
        }

    def architecture(self, epoch: int) -> dict[str, Any]:
        from densenas_core.derive import derive_architecture

        alpha, beta = self.logits(epoch)
        return derive_architecture(
            self.space,
            alpha,
            beta,
            input_size=32,
            num_classes=10,
            in_channels=1,
            name=f"fake-e{epoch}",
        )

    def arch_event(self, epoch: int) -> tuple[str, dict[str, Any]]:
        """With the per-row entropies of densenas_core.search.arch_progress: α rows in
        probs.alpha.align then probs.alpha.layers order, β rows with ≥ 2 out-paths."""
        probs = self.probs(epoch)
        alpha = probs["alpha"]["align"] + probs["alpha"]["layers"]
        return (
            "arch",
            {
                "epoch": epoch,
                "probs": probs,
                "architecture": self.architecture(epoch),
                "alpha_entropy_rows": [round(_entropy(r["probs"]), 6) for r in alpha],
                "beta_entropy_rows": [
                    round(_entropy(r["probs"]), 6) for r in probs["beta"] if len(r["probs"]) > 1
                ],
            },
        )


def step_event(global_step: int, epoch: int, phase: str = "weights") -> tuple[str, dict]:
    loss = 2.3 * math.exp(-global_step / 40) + 0.2
    return (
        "step",
        {
            "phase": phase,
            "epoch": epoch,
            "step": global_step % 10,
            "loss": loss,
            "acc": 1 - loss / 2.6,
            "lr": 0.1,
            "expected_cost": 5e6 - 1e4 * global_step,
            "global_step": global_step,
        },
    )


def epoch_event(epoch: int) -> tuple[str, dict]:
    """An epoch of a search, with the supernet's accuracy and the α/β progress figures."""
    return (
        "epoch",
        {
            "epoch": epoch,
            "phase": "search" if epoch else "warmup",
            "train_loss": 2.0 / (epoch + 1),
            "train_acc": 0.5 + 0.1 * epoch,
            "val_loss": 2.2 / (epoch + 1),
            "val_acc": 0.45 + 0.1 * epoch,
            "derived_val_loss": 2.3 / (epoch + 1),
            "derived_val_acc": 0.42 + 0.09 * epoch,
            "val_eval": "argmax sub-network, BN recalibrated on 512 train images; "
            "derived_val_acc: the derived single-path network",
            "supernet_val_loss": 2.4 / (epoch + 1),
            "supernet_val_acc": 0.40 + 0.08 * epoch,
            "alpha_entropy": 0.98 - 0.2 * epoch,
            "beta_entropy": 0.95 - 0.15 * epoch,
            "alpha_top_gap": 0.02 + 0.11 * epoch,
            "argmax_changes": None if epoch == 0 else 6 - 2 * epoch,
            "expected_cost": 5e6 - 2e5 * epoch,
            "derived_cost": 4.8e6 - 2e5 * epoch,
            "cost_unit": "mult-adds",
            "steps": 10,
            "lr": 0.1,
        },
    )


def fake_latency_table(space: str = "mbv2-small", device_name: str = "test-cpu") -> dict:
    """A LatencyTable document covering every op of ``space`` at 32 px, 1 channel in, 10
    classes, with made-up but shape-dependent timings (no profiling in a browser test)."""
    from densenas_core.latency import LatencyStat, LatencyTable, OpKey, space_op_signatures
    from densenas_core.spaces import get_space

    entries = {}
    for sig in space_op_signatures(get_space(space), 32, in_channels=1, num_classes=10):
        k = int(sig.op.split("_")[1][1:]) if sig.op.startswith("mb_") else 3
        ms = 0.02 + 2e-8 * sig.c_in * sig.c_out * sig.h * sig.w * k * k / sig.stride**2
        entries[OpKey(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h, sig.w)] = (
            LatencyStat.from_samples([ms * 0.95, ms, ms * 1.1])
        )
    return LatencyTable(
        device_name=device_name,
        device_kind="cpu",
        batch=1,
        input_size=32,
        spaces=[space],
        entries=entries,
    ).to_dict()


# -- page steps -----------------------------------------------------------------------------


def login(page, server: LiveServer, token: str, path: str = "/") -> None:
    page.goto(f"{server.url}/login?next={path}")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}{path}")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    out = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=True)
    return out
