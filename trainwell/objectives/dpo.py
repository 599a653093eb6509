"""Direct preference optimisation (Rafailov et al. 2023, eq. 7) and two variants on the same
implicit reward h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]:

    sigmoid  -log sigmoid(beta h)  (with label smoothing e: -(1-e) log sigmoid(beta h) - e log sigmoid(-beta h))
    ipo      (h - 1 / (2 beta))^2  on length-averaged log-probs (Azar et al. 2023, eq. 17; as TRL)
    hinge    max(0, 1 - beta h)    (SLiC-HF, Zhao et al. 2023)

The reference log-probs come in the batch (precomputed once) or from ``reference(batch)`` (a
frozen model, or the same model with its LoRA adapters off). The two sides of a pair share one
forward of their prompt (trainwell/objectives/packing.py). Online DPO's batches (pairs the policy
sampled itself, trainwell/paradigms/preferences.py) also carry ``pair_weight`` (0 for a pair the judge
could not order) and log ``kl``: both sides are samples of the policy, so the mean of
log pi - log pi_ref over them estimates KL(pi || pi_ref) per completion.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput
from trainwell.objectives.packing import pair_logps
from trainwell.objectives.sequence import shifted


def dpo_losses(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, *, beta: float, loss_type: str = "sigmoid",
               label_smoothing: float = 0.0) -> torch.Tensor:
    """(B,) sequence log-probs of each side under the policy and the reference -> (B,) losses."""
    h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1 - beta * h)
    raise ValueError(f"unknown DPO loss_type {loss_type!r}")


def dpo_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, beta: float, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0,
             reference: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None) -> LossOutput:
    """``batch``: ids/mask (2B, T), the B chosen rows then the B rejected rows, and ``ref_logp`` (2B,)
    unless ``reference`` computes it."""
    logp = pair_logps(model, batch)  # (2B,), both sides of a pair in one row where the model allows
    if "ref_logp" in batch:
        ref = batch["ref_logp"]
    else:
        with torch.no_grad():
            ref = reference(batch)  # type: ignore[misc]
    kl = (logp.detach() - ref.float()).mean() if "pair_weight" in batch else None  # before IPO's averaging
    if loss_type == "ipo":  # IPO on length-averaged log-probs
        count = shifted(batch["ids"], batch["mask"])[2].sum(-1).clamp_min(1)
        logp, ref = logp / count, ref / count
    pi_c, pi_r = logp.chunk(2)
    ref_c, ref_r = ref.float().chunk(2)
    w = batch["pair_weight"].float() if "pair_weight" in batch else torch.ones_like(pi_c)
    total = w.sum().clamp_min(1.0)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * w).sum() / total

    loss = mean(dpo_losses(pi_c, pi_r, ref_c, ref_r, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing))
    with torch.no_grad():
        r_c, r_r = beta * (pi_c - ref_c), beta * (pi_r - ref_r)  # the implicit rewards
        metrics = {"rewards/chosen": mean(r_c), "rewards/rejected": mean(r_r),
                   "rewards/accuracies": mean((r_c > r_r).float()), "rewards/margins": mean(r_c - r_r),
                   "logps/chosen": mean(pi_c), "logps/rejected": mean(pi_r)}
        if kl is not None:
            metrics["kl"] = kl
    return LossOutput(loss=loss, units=len(pi_c), metrics=metrics, processed=int(batch["ids"].numel()))
