"""The real pipeline in one process: the control plane with the real ``InlineExecutor`` runs a
tiny DenseNAS search on synthetic data, stores the architecture, re-derives it under a smaller
budget, retrains it and records its accuracy — every step through REST and the worker protocol.
"""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.support.live import LiveServer
from tests.support.waiting import wait_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATASET = {
    "name": "synthetic",
    "limit_train": 48,
    "limit_val": 16,
    "num_classes": 4,
    "input_size": 16,
}


def test_search_derive_retrain_with_the_inline_executor(tmp_path):
    def settings(url: str) -> Settings:
        return Settings(
            database_url=f"sqlite:///{tmp_path / 'e2e.db'}",
            data_dir=tmp_path / "data",
            executor="inline",
            public_url=url,
            poll_interval_s=0.1,
        )

    with LiveServer(settings) as live:
        c = live.client(live.admin_token())
        r = c.post(
            "/v1/jobs",
            json={
                "kind": "search",
                "spec": {
                    "space": "mbv2-small",
                    "epochs": 1,
                    "warmup_epochs": 0,
                    "batch_size": 16,
                    "dataset": DATASET,
                },
            },
        )
        assert r.status_code == 201, r.text
        search = wait_status(c, r.json()["id"], {"succeeded", "failed"}, timeout=600)
        assert search["status"] == "succeeded", search["error"]
        types = {
            e["type"]
            for e in c.get(
                f"/v1/jobs/{search['id']}/events", params={"format": "json", "limit": 1000}
            ).json()["data"]
        }
        assert {"status", "epoch"} <= types
        assert search["progress"]["epoch"]
        arch = c.get(f"/v1/architectures/{search['result']['architecture_id']}").json()
        assert arch["mult_adds"] > 0 and arch["has_arch_params"] and arch["space"] == "mbv2-small"

        derived = c.post(
            f"/v1/jobs/{search['id']}/derive",
            json={"cost": {"max_mult_adds": arch["mult_adds"] - 1, "top_k": 256}},
        )
        assert derived.status_code in (201, 422), derived.text
        if derived.status_code == 201:
            assert derived.json()["mult_adds"] < arch["mult_adds"]

        r = c.post(
            "/v1/jobs",
            json={
                "kind": "retrain",
                "spec": {
                    "architecture_id": arch["id"],
                    "epochs": 1,
                    "batch_size": 16,
                    "dataset": DATASET,
                },
            },
        )
        retrain = wait_status(c, r.json()["id"], {"succeeded", "failed"}, timeout=600)
        assert retrain["status"] == "succeeded", retrain["error"]
        top1 = retrain["result"]["metrics"]["top1"]
        assert c.get(f"/v1/architectures/{arch['id']}").json()["accuracy_top1"] == top1
