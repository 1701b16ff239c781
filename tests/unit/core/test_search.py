"""The search loop on a tiny space and synthetic data: learning, events, resume, stop."""

from __future__ import annotations

import json

import pytest
import torch

from densenas_core.arch import Architecture, build_network, space_mismatches
from densenas_core.data import load_search_data
from densenas_core.reporting import ListReporter, Stopped
from densenas_core.search import SearchConfig, run_search
from densenas_core.spaces import space_from_dict
from densenas_core.supernet import SuperNet

TINY = {
    "name": "tiny",
    "family": "mbv2",
    "input_size": 8,
    "stem": {"channels": 8, "stride": 1, "fixed_op": "mb_k3_e1"},
    "stages": [
        {"stride": 2, "widths": [8, 12], "num_layers": 1},
        {"stride": 2, "widths": [16, 16], "num_layers": 1},
    ],
    "tail_channels": 24,
    "align_ops": ["mb_k3_e1", "mb_k5_e2"],
    "layer_ops": ["mb_k3_e1", "skip"],
    "max_connections": 3,
}
DATA = {"name": "synthetic", "limit_train": 80, "input_size": 8, "num_classes": 4}

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**kw):
    base = {
        "space": TINY,
        "dataset": DATA,
        "epochs": 3,
        "warmup_epochs": 1,
        "batch_size": 16,
        "a_lr": 0.05,
        "w_lr": 0.05,
        "seed": 3,
    }
    return {**base, **kw}


@pytest.fixture(scope="module")
def data():
    return load_search_data(DATA, seed=3)


def test_config_uses_the_design_field_names():
    c = SearchConfig()
    assert (c.space, c.epochs, c.warmup_epochs, c.batch_size, c.seed) == ("mbv2-small", 4, 1, 64, 0)
    # lrs and weight sharing come from the schedule unless given (resolve_schedule)
    assert (c.schedule, c.w_lr, c.w_lr_min, c.w_momentum, c.w_wd) == (
        "scaled",
        None,
        1e-4,
        0.9,
        4e-5,
    )
    assert (c.a_lr, c.a_betas, c.a_wd, c.val_fraction) == (None, (0.5, 0.999), 1e-3, 0.2)
    assert (c.weight_sharing, c.lr_warmup_steps, c.bn_calibration) == (None, None, 512)
    assert c.cost.to_dict() == {
        "metric": "flops",
        "mode": "log",
        "lam": 0.15,
        "tau": None,
        "target": None,
        "estimator": "chained",
    }
    c = SearchConfig.from_dict({**_config(), "cost": {"lam": 0.3}})
    assert c.cost.lam == 0.3 and c.cost.metric == "flops"
    again = SearchConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    with pytest.raises(ValueError, match="epoch"):
        SearchConfig.from_dict({"epoch": 3})
    # where and how a job runs is the workers' part of its spec (workers.payload), not the core's
    for key in ("num_workers", "use_gpu", "checkpoint_every"):
        with pytest.raises(ValueError, match=f"{key}: unknown search field"):
            SearchConfig.from_dict({key: 1})
    with pytest.raises(ValueError, match="cost.target"):
        SearchConfig.from_dict({"cost": {"mode": "target"}})
    with pytest.raises(ValueError, match="warmup_epochs"):
        SearchConfig.from_dict({"epochs": 2, "warmup_epochs": 3})


def test_search_changes_arch_params_and_derives_a_buildable_network(data):
    train, arch_split, info = data
    rep = ListReporter()
    res = run_search(_config(), train, arch_split, rep, data_info=info, log_every=3)
    with torch.random.fork_rng():  # the run seeds its supernet the same way
        torch.manual_seed(3)
        init = SuperNet(space_from_dict(TINY), 4, 8, 3)
    assert res.arch_params["alpha"] != init.alpha_lists()
    assert res.arch_params["beta"] != init.beta_lists()
    arch = Architecture.from_dict(res.architecture)
    assert space_mismatches(arch, space_from_dict(TINY)) == []
    model = build_network(arch)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    m = res.metrics
    assert m["mult_adds"] > 0 and m["params"] > 0 and m["global_steps"] == 3 * 4 + 2 * 1
    assert m["cost_metric"] == "flops" and m["expected_cost"] > 0
    json.dumps(res.to_dict())
    # events: a step every 3 global steps, one epoch + one arch event per epoch
    epochs = rep.of_type("epoch")
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert epochs[0]["arch_loss"] is None and epochs[1]["arch_loss"] is not None
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "expected_cost", "lr"):
        assert all(e[key] is not None for e in epochs)
    steps = rep.of_type("step")
    assert [s["global_step"] for s in steps] == [3, 6, 9, 12]
    assert {s["phase"] for s in steps} <= {"weights", "arch"}
    arch_events = rep.of_type("arch")
    assert len(arch_events) == 3 and "alpha" in arch_events[0]["probs"]
    seqs = [d["seq"] for _, d in rep.events]
    assert len(seqs) == len(set(seqs))
    assert len(res.history) == 3


def test_grad_sync_sees_every_backward(data):
    train, arch_split, info = data
    calls = []

    def sync(grads):
        assert all(isinstance(g, torch.Tensor) for g in grads)
        calls.append(len(grads))

    res = run_search(_config(epochs=2), train, arch_split, grad_sync=sync)
    assert len(calls) == res.metrics["global_steps"] == 2 * 4 + 1
    assert 3 in calls  # the arch step syncs α_align, α_layer, β


def test_resume_mid_epoch_is_bit_identical(data):
    train, arch_split, info = data
    states = []
    rep_full = ListReporter()
    full = run_search(
        _config(),
        train,
        arch_split,
        rep_full,
        checkpoint_fn=states.append,
        checkpoint_every=3,
        log_every=1,
    )
    # the state after global step 6: mid-epoch 1 (1 arch step + 4 weight steps per epoch)
    mid = next(s for s in states if s["global_step"] == 6)
    assert 0 < mid["step_in_epoch"] and mid["epoch"] == 1
    last_full = states[-1]
    rep_resumed = ListReporter()
    resumed_states = []
    res = run_search(
        _config(),
        train,
        arch_split,
        rep_resumed,
        resume_state=mid,
        checkpoint_fn=resumed_states.append,
        checkpoint_every=3,
        log_every=1,
    )
    last = resumed_states[-1]
    for k, v in last_full["model"].items():
        assert torch.equal(v, last["model"][k]), k
    assert res.arch_params == full.arch_params
    assert res.architecture == full.architecture

    # the events after the checkpoint are re-emitted with the same seq and values
    def tail(rep):
        out = {}
        for _, d in rep.events:
            if d["global_step"] > 6:
                out[d["seq"]] = {k: v for k, v in d.items() if "seconds" not in k}
        return out

    assert tail(rep_resumed) == tail(rep_full)
    # optimizer states too
    for k in ("w_opt", "a_opt"):
        a, b = last_full[k]["state"], last[k]["state"]
        assert a.keys() == b.keys()
        for i in a:
            for name, t in a[i].items():
                assert torch.equal(t, b[i][name]) if torch.is_tensor(t) else t == b[i][name]


def test_stop_request_raises_stopped(data):
    train, arch_split, _ = data
    rep = ListReporter(stop_after=3)
    with pytest.raises(Stopped):
        run_search(_config(), train, arch_split, rep, log_every=1)
    assert len(rep.of_type("epoch")) == 0


def test_target_budget_mode_and_latency_needs_a_table(data):
    train, arch_split, _ = data
    res = run_search(
        _config(epochs=2, cost={"mode": "target", "target": 0.01, "lam": 1.0}), train, arch_split
    )
    assert res.metrics["cost_mode"] == "target" and res.metrics["target"] == 0.01
    with pytest.raises(ValueError, match="latency"):
        run_search(_config(cost={"metric": "latency"}), train, arch_split)


def test_latency_table_object_is_accepted(data):
    train, arch_split, _ = data

    class Table:
        def get(self, op, c_in, c_out, stride, h, w):
            return 0.01 * c_out * h * w / 64

    res = run_search(
        _config(epochs=1, warmup_epochs=0, cost={"metric": "latency", "tau": 2.0}),
        train,
        arch_split,
        cost_table=Table(),
    )
    assert res.metrics["cost_metric"] == "latency" and res.metrics["cost_unit"] == "ms"


def test_arch_step_keeps_unsampled_probabilities_and_moves_sampled_ones(data):
    """The loop's own arch step (CE + chained cost, masked AdamW, re-balancing)."""
    from densenas_core.search import SearchSession

    train, arch_split, _ = data
    space = {
        **TINY,
        "align_ops": ["mb_k3_e1", "mb_k5_e2", "mb_k3_e2"],
        "layer_ops": ["mb_k3_e1", "mb_k5_e1", "skip"],
    }
    config = SearchConfig.from_dict(_config(space=space, a_lr=0.1, a_wd=0.5))
    run = SearchSession(
        config, {"num_classes": 4, "input_size": 8, "in_channels": 3}, torch.device("cpu"), None
    )
    net = run.net
    x, y = arch_split.get_batch(torch.arange(16))
    for step in range(4):
        before = [net.alpha_align.detach().clone(), net.alpha_layer.detach().clone()]
        beta_before = net.beta.detach().clone()
        sample = net.sample(torch.Generator().manual_seed(100 + step), k=2, arch=True)
        run.arch_step(x, y, torch.Generator().manual_seed(100 + step), None)
        for old, new, idx in zip(
            before, (net.alpha_align, net.alpha_layer), (sample.align, sample.layers)
        ):
            mask = torch.zeros_like(old, dtype=torch.bool).scatter_(1, idx, True)
            p_old, p_new = old.softmax(-1), new.detach().softmax(-1)
            assert (p_new[~mask] - p_old[~mask]).abs().max() < 1e-6
            assert torch.equal(new.detach()[~mask], old[~mask])  # untouched, bit for bit
            assert (new.detach()[mask] != old[mask]).any()
        assert not torch.equal(net.beta.detach()[net.beta_mask], beta_before[net.beta_mask])
        assert torch.equal(net.beta.detach()[~net.beta_mask], beta_before[~net.beta_mask])


def test_weight_step_trains_a_given_sample_as_if_it_had_drawn_it(data):
    """``sample=``: the step a benchmark or a fixed-sub-network study runs is the search's own
    (same update as drawing that sample from the generator), and only that sample's weights
    move."""
    from densenas_core.search import SearchSession

    train, _, _ = data
    meta = {"num_classes": 4, "input_size": 8, "in_channels": 3}
    drawn, given = (SearchSession(_config(), meta) for _ in range(2))
    x, y = drawn.inputs(*train.get_batch(torch.arange(16)))
    for step in range(3):
        sample = given.net.sample(torch.Generator().manual_seed(step), k=1, uniform=True)
        before = {n: p.detach().clone() for n, p in given.net.named_parameters()}
        a = drawn.weight_step(x, y, torch.Generator().manual_seed(step), 0.05, True)
        b = given.weight_step(x, y, None, 0.05, sample=sample)
        assert a == b
        for (n, p), q in zip(drawn.net.named_parameters(), given.net.parameters()):
            assert torch.equal(p, q), n
        moved = {n for n, p in given.net.named_parameters() if not torch.equal(p, before[n])}
        assert moved and not any(n.startswith(("alpha", "beta")) for n in moved)


def test_the_local_cost_estimator_is_the_a5_baseline():
    from densenas_core.cost import chained_cost, local_cost
    from densenas_core.search import SearchSession

    meta = {"num_classes": 4, "input_size": 8, "in_channels": 3}
    runs = {
        e: SearchSession(
            SearchConfig.from_dict(_config(cost={"estimator": e})), meta, torch.device("cpu"), None
        )
        for e in ("chained", "local")
    }
    for est, fn in (("chained", chained_cost), ("local", local_cost)):
        run = runs[est]
        want = fn(run.net.graph, run.table64, *(p.detach().double() for p in run.net.probs()))
        assert run.expected_cost() == pytest.approx(float(want))
    assert runs["local"].expected_cost() > runs["chained"].expected_cost()
    with pytest.raises(ValueError, match="cost.estimator"):
        SearchConfig.from_dict(_config(cost={"estimator": "global"}))


def test_default_schedule_does_not_diverge_on_a_tiny_synthetic_task():
    """Defaults only (scaled schedule, entangled rows): the weight loss falls, nothing blows up."""
    dataset = {**DATA, "limit_train": 400}
    train, arch_split, info = load_search_data(dataset, seed=3)
    cfg = {
        "space": TINY,
        "dataset": dataset,
        "epochs": 3,
        "warmup_epochs": 1,
        "batch_size": 16,
        "seed": 3,
    }
    rep = ListReporter()
    res = run_search(cfg, train, arch_split, rep, data_info=info, log_every=1)
    losses = [d["loss"] for t, d in rep.events if t == "step" and d["phase"] == "weights"]
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, (first, last)
    assert res.history[-1]["train_acc"] > 0.6
