"""An image encoder with a projection head, for self-supervised (contrastive) representation learning."""

from __future__ import annotations

import torch
import torch.nn as nn

from trainwell.config.schema import EmbedCNNConfig


class EmbedCNN(nn.Module):
    """[conv3x3-BN-ReLU x2 -> maxpool2] per block -> flatten -> linear (the representation h)
    -> BN-ReLU-linear projection head (z, what the contrastive loss sees; SimCLR's g(h)).

    Unlike the classifier CNN it flattens instead of average-pooling: on 8x8 digits *where* a
    stroke is matters.
    """

    def __init__(self, feature_shape: tuple[int, int, int], channels: list[int], embed_dim: int, proj_dim: int):
        super().__init__()
        c, h, w = feature_shape
        blocks: list[nn.Module] = []
        for width in channels:
            blocks += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c, h, w = width, -(-h // 2), -(-w // 2)
        self.encoder = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c * h * w, embed_dim))
        self.head = nn.Sequential(nn.BatchNorm1d(embed_dim), nn.ReLU(), nn.Linear(embed_dim, proj_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, C, H, W) -> (B, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (B, proj_dim)


def build_embed_cnn(cfg: EmbedCNNConfig, *, feature_shape: tuple[int, ...], **_: object) -> EmbedCNN:
    if len(feature_shape) != 3:
        from trainwell.errors import ConfigError

        raise ConfigError(f"model.name = 'embed_cnn' needs images (channels, height, width), but the data has "
                          f"samples of shape {feature_shape}.")
    return EmbedCNN(tuple(feature_shape), cfg.channels, cfg.embed_dim, cfg.proj_dim)  # type: ignore[arg-type]
