"""Retraining a derived architecture: config, learning, metrics, resume, augmentation."""

from __future__ import annotations

import pytest
import torch

from densenas_core.arch import build_network
from densenas_core.data import load_eval_data
from densenas_core.reporting import ListReporter, Stopped
from densenas_core.retrain import RetrainConfig, _augment, run_retrain

ARCH = {
    "version": 1,
    "family": "mbv2",
    "input_size": 8,
    "in_channels": 3,
    "num_classes": 4,
    "stem": {"c_out": 8, "stride": 1, "act": "relu6"},
    "blocks": [
        {"c_in": 8, "c_out": 12, "stride": 2, "align_op": "mb_k3_e2", "layers": []},
        {"c_in": 12, "c_out": 16, "stride": 2, "align_op": "mb_k3_e2", "layers": ["mb_k3_e1"]},
    ],
    "tail": {"c_in": 16, "c_out": 32},
}
DATA = {"name": "synthetic", "limit_train": 128, "limit_val": 64, "num_classes": 4, "input_size": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed=0):
    torch.manual_seed(seed)
    return build_network(ARCH)


def test_config_fields_and_orchestration_keys():
    c = RetrainConfig.from_dict({"epochs": 3})
    assert (
        c.epochs,
        c.batch_size,
        c.lr,
        c.lr_min,
        c.momentum,
        c.wd,
        c.label_smoothing,
        c.seed,
    ) == (3, 128, 0.1, 1e-4, 0.9, 4e-5, 0.1, 0)
    assert RetrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="lr_max"):
        RetrainConfig.from_dict({"lr_max": 1})
    # the architecture and the placement are the control plane's and the workers' part
    for key in ("architecture_id", "num_nodes", "workers_per_node", "gpus_per_worker"):
        with pytest.raises(ValueError, match=f"{key}: unknown retrain field"):
            RetrainConfig.from_dict({key: 1})


def test_retrain_learns_and_reports():
    train, test = load_eval_data(DATA)
    rep = ListReporter()
    out = run_retrain(
        {"epochs": 4, "batch_size": 16, "lr": 0.05, "dataset": DATA},
        _model(),
        train,
        test,
        rep,
        log_every=4,
    )
    epochs = rep.of_type("epoch")
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "top1", "top5", "lr"} <= set(epochs[0])
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert out["top1"] > 0.5 and out["top5"] == 1.0  # 4 classes: top-5 is everything
    assert out["global_steps"] == 4 * 8
    seqs = [d["seq"] for _, d in rep.events]
    assert len(seqs) == len(set(seqs))


def test_retrain_resume_is_bit_identical():
    train, test = load_eval_data(DATA)
    cfg = {"epochs": 2, "batch_size": 16, "lr": 0.05, "dataset": DATA}
    states = []
    full_model = _model()
    full = run_retrain(
        cfg, full_model, train, test, checkpoint_fn=states.append, checkpoint_every=5
    )
    mid = next(s for s in states if s["global_step"] == 10)
    assert mid["epoch"] == 1 and mid["step_in_epoch"] == 2
    resumed_model = _model(seed=123)  # different init: everything comes from the state
    res = run_retrain(cfg, resumed_model, train, test, resume_state=mid)
    for (k, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    assert res["top1"] == full["top1"] and res["loss"] == full["loss"]


def test_retrain_stop():
    train, test = load_eval_data(DATA)
    with pytest.raises(Stopped):
        run_retrain(
            {"epochs": 2, "batch_size": 16},
            _model(),
            train,
            test,
            ListReporter(stop_after=1),
            log_every=1,
        )


def test_augment_crops_and_flips_per_sample():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    out = _augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    again = _augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, x)
    # only input values or the zero padding appear
    vals = set(x.flatten().tolist()) | {0.0}
    assert set(out.flatten().tolist()) <= vals


def test_precise_bn_leaves_the_statistics_of_the_chosen_training_images():
    """Before each evaluation BN statistics are re-estimated on ``precise_bn`` un-augmented
    training images (a seeded choice): the stem BN's mean is exactly theirs."""
    from densenas_core._loop import mix_seed
    from densenas_core.data import fetch_batch

    train, test = load_eval_data(DATA)
    model = _model()
    cfg = {"epochs": 1, "batch_size": 16, "lr": 0.05, "seed": 2, "precise_bn": 48, "dataset": DATA}
    run_retrain(cfg, model, train, test)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(mix_seed(2, 17)))[
        :48
    ]
    model.eval()
    with torch.no_grad():
        feats = [model.stem.conv(fetch_batch(train, order[i : i + 16])[0]) for i in (0, 16, 32)]
    want = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    torch.testing.assert_close(model.stem.bn.running_mean, want, rtol=1e-4, atol=1e-5)
    assert model.stem.bn.momentum == 0.1
    with pytest.raises(ValueError, match="precise_bn"):
        RetrainConfig.from_dict({"precise_bn": -1})
