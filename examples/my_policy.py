"""A policy of your own, trained and deployed by roboloop's stock loop: a temporal-convolution chunk decoder.

    PYTHONPATH=examples roboloop train -d aloha -s v1 --policy my_policy:ConvChunkPolicy
    roboloop eval --policy RUN_ID -d aloha --grid 'region=near,far' -n 20

Where `mlp` maps its inputs straight to the flat chunk (K x 14 numbers), this policy maps them to
a short sequence of latent vectors, one per chunk step, and decodes the chunk with 1-D
convolutions along time: neighbouring steps of the chunk share weights, so chunks come out
smooth. Everything else comes from `roboloop.train.BCPolicy`: the features (the state inputs,
the phase, the action target; `--state` / `--action` work unchanged), the normalizer, the L1
loss over valid chunk steps, `act`, and saving as a state dict + config dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from roboloop.config import Config, check
from roboloop.train import BCPolicy


@dataclass(frozen=True)
class ConvChunkConfig(Config):
    """Temporal-convolution chunk decoder: state + phase -> MLP -> latent per chunk step -> Conv1d over time."""

    hidden: int = 256
    """Width of the MLP trunk."""
    channels: int = 64
    """Latent channels per chunk step (the convolutions' width)."""
    kernel: int = 3
    """Temporal kernel size of the decoder convolutions (odd)."""
    conv_layers: int = 2
    """Number of temporal convolutions before the output projection."""
    joint_noise: float = 0.01
    """Std of Gaussian noise added to the first state input while training (as mlp does)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hidden >= 1 and self.channels >= 1 and self.conv_layers >= 1, "hidden, channels and conv_layers must be >= 1")
        check(self.kernel >= 1 and self.kernel % 2 == 1, f"kernel must be odd, got {self.kernel}")
        check(self.joint_noise >= 0, f"joint_noise must be >= 0, got {self.joint_noise}")


class ConvChunkPolicy(BCPolicy):
    """State inputs + phase -> [chunk, channels] latents -> temporal Conv1d stack -> [chunk, action width]."""

    Config = ConvChunkConfig

    def __init__(self, config: ConvChunkConfig, specs, chunk: int) -> None:
        super().__init__(config, specs, chunk)  # sets self.inputs, self.action_dim, self.normalizer
        c, k = config.channels, config.kernel
        self.trunk = nn.Sequential(nn.Linear(self.input_width(), config.hidden), nn.GELU(), nn.Linear(config.hidden, c * chunk))
        convs: list[nn.Module] = []
        for _ in range(config.conv_layers):
            convs += [nn.GELU(), nn.Conv1d(c, c, k, padding=k // 2)]
        self.decoder = nn.Sequential(*convs, nn.GELU(), nn.Conv1d(c, self.action_dim, 1))

    def network(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalized inputs -> normalized chunk [B, chunk, action width]."""
        h = self.trunk(torch.cat([x[name] for name in self.inputs], dim=-1))
        h = h.reshape(-1, self.model_cfg.channels, self.chunk)  # [B, C, time]
        return self.decoder(h).transpose(1, 2)
