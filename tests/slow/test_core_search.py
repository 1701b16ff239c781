"""A short real search on Fashion-MNIST whose derived architecture builds and trains."""

from __future__ import annotations

import time

import pytest
import torch
from torch.nn import functional as F

from densenas_core.arch import Architecture, build_network, space_mismatches
from densenas_core.data import fetch_batch, load_search_data
from densenas_core.reporting import ListReporter
from densenas_core.search import run_search
from densenas_core.spaces import get_space


@pytest.mark.slow
def test_short_fashion_mnist_search_derives_a_trainable_network():
    config = {
        "space": "mbv2-small",
        "dataset": {"name": "fashion-mnist", "limit_train": 1000, "limit_val": 200},
        "epochs": 2,
        "warmup_epochs": 1,
        "batch_size": 64,
        "seed": 0,
    }
    train, arch_split, info = load_search_data(config["dataset"] | {"input_size": 32}, seed=0)
    # per-class 80/20 of a 1000-image pool (rounded per class), arch split capped at 200
    assert 790 <= len(train) <= 810 and len(arch_split) == 200 and info["in_channels"] == 1
    rep = ListReporter()
    t0 = time.perf_counter()
    res = run_search(config, train, arch_split, rep, data_info=info)
    seconds = time.perf_counter() - t0
    print(f"search: {seconds:.1f} s, metrics {res.metrics}")

    epochs = rep.of_type("epoch")
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[1]["arch_loss"] is not None and len(rep.of_type("arch")) == 2
    m = res.metrics
    assert m["global_steps"] == 2 * 12 + 3
    assert all(v == v for v in (m["train_loss"], m["val_loss"]))  # no NaN
    assert m["train_loss"] < 10

    arch = Architecture.from_dict(res.architecture)
    assert (arch.in_channels, arch.num_classes, arch.input_size) == (1, 10, 32)
    assert space_mismatches(arch, get_space("mbv2-small")) == []
    model = build_network(arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = fetch_batch(train, torch.arange(32))
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert model(x).shape == (32, 10)
