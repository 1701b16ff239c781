"""The resolved search schedule: lr scaled to the batch, arch lr to the arch steps."""

from __future__ import annotations

import math

import pytest
import torch

from densenas_core._loop import warmup_cosine_lr
from densenas_core.search import SearchConfig, SearchSession, resolve_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def test_scaled_schedule_follows_the_paper_at_its_own_scale_and_scales_elsewhere():
    c = SearchConfig()
    at_paper = resolve_schedule(c, 352, 10_000, 7000)
    assert (at_paper.w_lr, at_paper.a_lr) == (pytest.approx(0.2), pytest.approx(3e-4))
    small = resolve_schedule(c, 64, 222, 45)
    assert small.w_lr == pytest.approx(0.2 * math.sqrt(64 / 352))
    assert small.lr_warmup_steps == 11  # 5 % of 222
    assert small.a_lr == pytest.approx(2.1 / 45)  # the paper's reach: lr × steps = 2.1
    assert resolve_schedule(c, 64, 50, 10).a_lr == 0.05  # capped
    assert resolve_schedule(c, 64, 50, 0).a_lr == 3e-4
    assert small.weight_sharing == "entangled"


def test_paper_schedule_and_explicit_values_win():
    paper = resolve_schedule(SearchConfig(schedule="paper"), 64, 222, 45)
    assert (paper.w_lr, paper.a_lr, paper.lr_warmup_steps, paper.weight_sharing) == (
        0.2,
        3e-4,
        0,
        "separate",
    )
    mine = resolve_schedule(
        SearchConfig(w_lr=0.3, a_lr=1e-3, lr_warmup_steps=7, weight_sharing="separate"), 64, 222, 45
    )
    assert (mine.w_lr, mine.a_lr, mine.lr_warmup_steps, mine.weight_sharing) == (
        0.3,
        1e-3,
        7,
        "separate",
    )
    with pytest.raises(ValueError, match="schedule"):
        SearchConfig(schedule="fast")
    with pytest.raises(ValueError, match="weight_sharing"):
        SearchConfig(weight_sharing="tied")
    with pytest.raises(ValueError, match="bn_calibration"):
        SearchConfig(bn_calibration=True)


def test_lr_warms_up_linearly_then_follows_the_cosine():
    lrs = [warmup_cosine_lr(s, 20, 0.1, 0.0, 4) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_the_scaled_arch_lr_moves_alpha_visibly_within_the_runs_arch_steps():
    """N arch steps under the scaled schedule (lr 2.1/N) take some α row's top probability at
    least 0.05 above uniform — where the paper's 3e-4 leaves α at its init noise."""
    n = 20
    space = {
        "name": "t",
        "family": "mbv2",
        "input_size": 8,
        "stem": {"channels": 8, "stride": 1, "fixed_op": "mb_k3_e1"},
        "stages": [{"stride": 2, "widths": [8, 12], "num_layers": 2}],
        "tail_channels": 16,
        "align_ops": ["mb_k3_e3", "mb_k5_e3", "mb_k3_e6"],
        "layer_ops": ["mb_k3_e3", "mb_k5_e6", "skip"],
        "max_connections": 2,
    }

    def top_gap(config: SearchConfig) -> float:
        sched = resolve_schedule(config, 16, 100, n)
        run = SearchSession(
            config,
            {"num_classes": 4, "input_size": 8, "in_channels": 3},
            torch.device("cpu"),
            None,
            sched,
        )
        gen = torch.Generator().manual_seed(0)
        for _ in range(n):
            x, y = (
                torch.randn(16, 3, 8, 8, generator=gen),
                torch.randint(0, 4, (16,), generator=gen),
            )
            run.arch_step(x, y, gen, None)
        probs = torch.cat([p.detach() for p in run.net.probs()[:2]])
        return float((probs.max(1).values - 1 / probs.shape[1]).max())

    scaled = top_gap(SearchConfig(space=space, batch_size=16))
    paper = top_gap(SearchConfig(space=space, batch_size=16, schedule="paper"))
    assert scaled >= 0.05 > 0.01 > paper
