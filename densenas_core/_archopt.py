"""The architecture update of a dropping-path arch step: masked AdamW + re-balancing.

An arch step samples two ops per row; only their α entries may change, and after the update the
sampled entries are shifted by

    bias = ln(Σ_{o∈S} exp α_o^old / Σ_{o∈S} exp α_o^new)

so that Σ_{o∈S} exp α_o — hence every un-sampled op's probability — is unchanged
(docs/algorithm.md §Re-balancing).

The reference feeds all of α to ``torch.optim.Adam(weight_decay=1e-3)``: the coupled L2 term
and Adam's moment estimates from earlier steps keep moving entries that were *not* sampled, so
the re-balancing invariant does not hold. :class:`MaskedAdamW` instead updates only the masked
entries — moments, per-entry step counts (bias correction) and the decoupled weight decay
alike — and leaves every other entry bit-for-bit as it was (docs/algorithm.md §Masked AdamW).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.optim import Optimizer


def rebalance(alpha_old: torch.Tensor, alpha_new: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``alpha_new`` with its sampled entries (``idx`` [rows, k], per row) shifted by the bias.

    Pure: returns a new tensor. Entries outside ``idx`` are returned unchanged.
    """
    idx = idx.to(alpha_new.device)
    old_s = alpha_old.gather(1, idx)
    new_s = alpha_new.gather(1, idx)
    bias = old_s.logsumexp(1, keepdim=True) - new_s.logsumexp(1, keepdim=True)
    return alpha_new.scatter(1, idx, new_s + bias)


def sampled_mask(
    shape: Sequence[int], idx: torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean mask with the per-row entries ``idx`` set."""
    m = torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    if idx.numel():
        m.scatter_(1, idx.to(m.device), True)
    return m


class MaskedAdamW(Optimizer):
    """AdamW that touches only the entries selected by a per-parameter mask.

    ``step(masks)`` takes one boolean mask per parameter (in ``param_groups`` order, ``None``
    meaning all entries). Masked-out entries keep their value, first/second moments and step
    count exactly; decay is decoupled (``p ← p·(1 − lr·wd)``) and applied to masked entries only.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-3,
    ) -> None:
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        )

    @torch.no_grad()
    def step(  # type: ignore[override]  # masks, not a closure: the search passes them
        self, masks: Sequence[torch.Tensor | None] | None = None
    ) -> None:
        params = [p for group in self.param_groups for p in group["params"]]
        masks = list(masks) if masks is not None else [None] * len(params)
        if len(masks) != len(params):
            raise ValueError(f"MaskedAdamW.step: {len(masks)} masks for {len(params)} parameters")
        it = iter(masks)
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                mask = next(it)
                if p.grad is None:
                    continue
                if mask is None:
                    mask = torch.ones_like(p, dtype=torch.bool)
                mask = mask.to(p.device)
                st = self.state[p]
                if not st:
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                    st["count"] = torch.zeros_like(p)
                g = p.grad
                m = st["exp_avg"].mul(b1).add_(g, alpha=1 - b1)
                v = st["exp_avg_sq"].mul(b2).addcmul_(g, g, value=1 - b2)
                t = st["count"] + 1
                bc1 = 1 - torch.pow(b1, t)
                bc2 = 1 - torch.pow(b2, t)
                new = p * (1 - lr * wd) - lr * (m / bc1) / ((v / bc2).sqrt() + eps)
                p.copy_(torch.where(mask, new, p))
                st["exp_avg"].copy_(torch.where(mask, m, st["exp_avg"]))
                st["exp_avg_sq"].copy_(torch.where(mask, v, st["exp_avg_sq"]))
                st["count"].copy_(torch.where(mask, t, st["count"]))
