"""Re-balancing keeps un-sampled op probabilities fixed through real optimizer steps."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densenas_core._archopt import sampled_mask
from densenas_core.search import MaskedAdamW, rebalance


def _unsampled_probs(alpha, mask):
    return alpha.softmax(-1)[~mask]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8), st.integers(1, 6))
def test_rebalance_preserves_unsampled_probabilities(seed, n_ops, rows):
    gen = torch.Generator().manual_seed(seed)
    old = torch.randn(rows, n_ops, generator=gen, dtype=torch.float64)
    k = min(2, n_ops)
    idx = torch.stack([torch.randperm(n_ops, generator=gen)[:k] for _ in range(rows)])
    new = old.clone()
    new.scatter_(
        1, idx, old.gather(1, idx) + torch.randn(rows, k, generator=gen, dtype=torch.float64)
    )
    out = rebalance(old, new, idx)
    mask = sampled_mask(old.shape, idx)
    torch.testing.assert_close(
        _unsampled_probs(out, mask), _unsampled_probs(old, mask), rtol=0, atol=1e-12
    )
    # the sampled entries keep their new relative preference
    torch.testing.assert_close((out.gather(1, idx)).softmax(-1), new.gather(1, idx).softmax(-1))
    assert torch.equal(new, new)  # inputs untouched (pure)


def _arch_steps(opt_factory, steps=25, masked=True, seed=0):
    """Run arch-like steps on α with 2 sampled ops per row; return max drift of un-sampled p."""
    gen = torch.Generator().manual_seed(seed)
    alpha = torch.nn.Parameter(1e-3 * torch.randn(6, 7, generator=gen))
    opt = opt_factory([alpha])
    target = torch.randn(6, 7, generator=gen)
    worst = 0.0
    for _ in range(steps):
        idx = torch.multinomial(alpha.detach().softmax(-1), 2, generator=gen)
        mask = sampled_mask(alpha.shape, idx)
        before = alpha.detach().clone()
        # a loss through the sampled entries only, plus a cost-like term on all of α
        w = alpha.gather(1, idx).softmax(-1)
        loss = (w * target.gather(1, idx)).sum() + (alpha.softmax(-1) * target).sum()
        opt.zero_grad()
        loss.backward()
        opt.step([mask]) if masked else opt.step()
        with torch.no_grad():
            alpha.copy_(rebalance(before, alpha, idx))
        drift = (
            (_unsampled_probs(alpha.detach(), mask) - _unsampled_probs(before, mask)).abs().max()
        )
        worst = max(worst, float(drift))
    return worst, alpha


def test_masked_adamw_with_rebalance_keeps_the_invariant():
    worst, alpha = _arch_steps(
        lambda ps: MaskedAdamW(ps, lr=0.05, betas=(0.5, 0.999), weight_decay=1e-1)
    )
    assert worst < 1e-6
    assert alpha.detach().std() > 1e-2  # it did learn something


def test_reference_adam_with_coupled_decay_breaks_the_invariant():
    """The reference defect: Adam(weight_decay) moves un-sampled α via decay and moments."""
    worst, _ = _arch_steps(
        lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.5, 0.999), weight_decay=1e-1),
        masked=False,
    )
    assert worst > 1e-4


def test_masked_adamw_leaves_masked_out_entries_bit_identical():
    p = torch.nn.Parameter(torch.randn(3, 4))
    opt = MaskedAdamW([p], lr=0.1, weight_decay=0.5)
    mask = torch.tensor([[True, False, False, True]] * 3)
    for _ in range(3):
        before = p.detach().clone()
        p.grad = torch.randn(3, 4)
        opt.step([mask])
        assert torch.equal(p.detach()[~mask], before[~mask])
        assert not torch.equal(p.detach()[mask], before[mask])
    st_ = opt.state[p]
    assert (st_["count"][mask] == 3).all() and (st_["count"][~mask] == 0).all()
    assert (st_["exp_avg"][~mask] == 0).all()


def test_masked_adamw_matches_adamw_when_everything_is_sampled():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    oa = MaskedAdamW([a], lr=0.01, betas=(0.5, 0.999), weight_decay=1e-2)
    ob = torch.optim.AdamW([b], lr=0.01, betas=(0.5, 0.999), weight_decay=1e-2)
    for _ in range(5):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
