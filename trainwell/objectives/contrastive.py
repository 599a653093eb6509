"""SimCLR's contrastive objective (Chen et al. 2020, "A Simple Framework for Contrastive Learning
of Visual Representations", eq. 1): the NT-Xent loss over two augmented views of each sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy. z1, z2: (B, D), row i of each is a view of sample i.

    Each of the 2B views must pick its partner among the other 2B - 1 views by cosine similarity / t:
    loss = mean over the 2B anchors of -log softmax(sim(anchor, .) / t)[partner], self excluded.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D) on the unit sphere
    sim = z @ z.T / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # i <-> i + B
    return F.cross_entropy(sim, partner)


def simclr_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, temperature: float) -> LossOutput:
    """batch: "view1", "view2" (B, C, H, W), two augmentations of the same B samples; no labels."""
    z1, z2 = model(batch["view1"]), model(batch["view2"])  # (B, D) projections
    loss = nt_xent(z1, z2, temperature)
    with torch.no_grad():  # how often a view's nearest other view is its partner (top-1 "pair accuracy")
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        sim = (z @ z.T).fill_diagonal_(float("-inf"))
        n = z1.shape[0]
        partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        acc = (sim.argmax(dim=1) == partner).float().mean()
    return LossOutput(loss=loss, units=n, metrics={"pair_accuracy": acc})
