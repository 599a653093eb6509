"""RealNVP (Dinh et al. 2017) for small images as flat vectors: exact log-likelihood.

    x in [0, levels)^D  --logit preprocessing-->  z0  --K affine couplings-->  z ~ N(0, I)

``log p(x) = log N(f(x); 0, I) + log|det df/dx|``, where the log-determinant includes the fixed
preprocessing (scale to (0, 1), squeeze into [alpha, 1 - alpha], logit, standardize): without
it the number would be a density of the logits, not of the pixels.

Each coupling keeps the pixels where its mask is 1 and transforms the others elementwise,
``z_b <- z_b * exp(s(z_a)) + t(z_a)``, so its Jacobian is triangular with log-det ``sum(s)``.
Masks alternate a checkerboard and its complement, then top/bottom halves and left/right
halves, so every pixel is transformed conditioned on every region.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from trainwell.config.schema import RealNVPConfig


def image_masks(height: int, width: int, count: int) -> torch.Tensor:
    """(count, H*W) binary masks: checkerboard, its complement, top half, bottom half, left, right, ..."""
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    base = [(i + j) % 2 == 0, i < height // 2, j < width // 2]
    cycle = [m for b in base for m in (b, ~b)]
    return torch.stack([cycle[k % len(cycle)].reshape(-1) for k in range(count)]).float()


class Coupling(nn.Module):
    """Affine coupling: the masked-in part conditions a scale and shift of the masked-out part."""

    def __init__(self, mask: torch.Tensor, hidden: int, depth: int, dropout: float):
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask)
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        last = nn.Linear(width, 2 * dim)
        nn.init.zeros_(last.weight)  # start as the identity map
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.scale = nn.Parameter(torch.ones(dim))  # s = scale * tanh(raw): bounded, stable early on

    def _s_t(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.net(z * self.mask).chunk(2, dim=-1)  # (B, D) each
        keep = 1.0 - self.mask  # only the masked-out part is transformed
        return self.scale * torch.tanh(raw_s) * keep, t * keep

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._s_t(z)
        return z * torch.exp(s) + t, s.sum(dim=-1)  # (B, D), log-det (B,)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        s, t = self._s_t(z)  # depends only on the unchanged (masked-in) part
        return (z - t) * torch.exp(-s)


class RealNVP(nn.Module):
    """Density on ``[0, levels)^D`` (dequantized pixels in their original scale)."""

    def __init__(self, shape: tuple[int, ...], levels: float, couplings: int, hidden: int, depth: int,
                 dropout: float, alpha: float):
        super().__init__()
        channels, height, width = shape
        self.shape, self.dim, self.levels, self.alpha = tuple(shape), math.prod(shape), float(levels), alpha
        # flat (C*H*W) vectors: every channel of a pixel shares that pixel's mask
        masks = image_masks(height, width, couplings).repeat(1, channels)
        self.layers = nn.ModuleList(Coupling(m, hidden, depth, dropout) for m in masks)
        # standardization of the logits, set from training data by ``fit_preprocessing`` (buffers,
        # so they are in the checkpoint); identity until then
        self.register_buffer("logit_mean", torch.zeros(self.dim))
        self.register_buffer("logit_std", torch.ones(self.dim))

    # ---- fixed preprocessing x -> z0 and its log-det
    def _logit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.alpha + (1 - 2 * self.alpha) * x / self.levels  # (B, D) in [alpha, 1 - alpha)
        z = (torch.log(y) - torch.log1p(-y) - self.logit_mean) / self.logit_std
        # d z / d x = (1 - 2 alpha) / levels * 1 / (y (1 - y)) / std, per dimension
        logdet = (math.log((1 - 2 * self.alpha) / self.levels) - torch.log(y) - torch.log1p(-y)
                  - torch.log(self.logit_std)).sum(dim=-1)
        return z, logdet

    @torch.no_grad()
    def fit_preprocessing(self, x: torch.Tensor) -> None:
        """Set the logit standardization from training samples ``x`` (N, *shape) in [0, levels)."""
        self.logit_mean.zero_(), self.logit_std.fill_(1.0)
        z, _ = self._logit(x.reshape(len(x), -1).double())
        self.logit_mean.copy_(z.mean(0).float())
        self.logit_std.copy_(z.std(0).clamp_min(1e-3).float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, *shape) -> latent z (B, D) and log|det dz/dx| (B,)."""
        z, logdet = self._logit(x.reshape(len(x), -1))
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of x (B, *shape), in nats, (B,)."""
        z, logdet = self(x)
        base = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(dim=-1)  # log N(z; 0, I)
        return base + logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Latent z (B, D) -> x (B, *shape) in [0, levels)."""
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        y = torch.sigmoid(z * self.logit_std + self.logit_mean)
        return ((y - self.alpha) / (1 - 2 * self.alpha) * self.levels).reshape(len(z), *self.shape)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        device = self.logit_mean.device
        z = torch.randn(n, self.dim, generator=generator).to(device) * temperature
        return self.inverse(z)


def build_realnvp(cfg: RealNVPConfig, *, feature_shape: tuple[int, ...], levels: float = 17.0,
                  **_: object) -> RealNVP:
    if len(feature_shape) != 3:
        from trainwell.errors import ConfigError

        raise ConfigError(f"model.name = 'realnvp' needs images (channels, height, width), but the data has "
                          f"samples of shape {feature_shape}.")
    return RealNVP(feature_shape, levels, cfg.couplings, cfg.hidden, cfg.depth, cfg.dropout, cfg.alpha)
