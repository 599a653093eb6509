"""Small feed-forward and convolutional networks for samples that fit in memory."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from trainwell.config.schema import CNNConfig, MLPConfig


class MLP(nn.Module):
    """Flatten -> [Linear -> GELU -> Dropout] * len(hidden) -> Linear."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, out)


class CNN(nn.Module):
    """[conv3x3-BN-ReLU x2 -> maxpool2] per block -> global average pool -> dropout -> linear."""

    def __init__(self, in_channels: int, channels: list[int], out_features: int, dropout: float):
        super().__init__()
        blocks: list[nn.Module] = []
        c = in_channels
        for width in channels:
            blocks += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, out)


def build_mlp(cfg: MLPConfig, *, feature_shape: tuple[int, ...], out_features: int, **_: object) -> MLP:
    return MLP(math.prod(feature_shape), cfg.hidden, out_features, cfg.dropout)


def build_cnn(cfg: CNNConfig, *, feature_shape: tuple[int, ...], out_features: int, **_: object) -> CNN:
    if len(feature_shape) != 3:
        from trainwell.errors import ConfigError

        raise ConfigError(f"model.name = 'cnn' needs images (channels, height, width), but the data has "
                          f"samples of shape {feature_shape}; use model.name = 'mlp' for tables.")
    return CNN(feature_shape[0], cfg.channels, out_features, cfg.dropout)
