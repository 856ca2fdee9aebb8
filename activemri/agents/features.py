"""SB3 feature extractor for the env's Dict observation: image CNN plus mask MLP.

SB3's default ``CombinedExtractor`` flattens float image maps of shape ``(1, h, w)`` into one
huge linear layer (its NatureCNN path expects uint8 images). This extractor instead runs a
small strided CNN over ``reconstruction`` (and ``uncertainty`` when present, as a second
channel) that ends in adaptive average pooling, so the same architecture serves the built-in
128x128 images and 320x320 knee crops with a fixed parameter count; the mask (which lines
are acquired, hence also how many) goes through an MLP, and both are fused into
``features_dim`` features, together with the budget entries ``budget_used`` /
``budget_left`` when the observation has them (episodes of varying budget).

Usage::

    from activemri.agents.features import ActiveMRIExtractor
    model = MaskablePPO("MultiInputPolicy", venv,
                        policy_kwargs={"features_extractor_class": ActiveMRIExtractor})
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from activemri.envs.sb3 import BUDGET_LEFT, BUDGET_USED

__all__ = ["ActiveMRIExtractor"]

IMAGE_KEYS = ("reconstruction", "uncertainty")


class ActiveMRIExtractor(BaseFeaturesExtractor):
    """CNN over the image maps + MLP over the mask, fused into ``features_dim`` features.

    Args:
        observation_space: The env's Dict observation space (``reconstruction`` and ``mask``
            required; ``uncertainty`` used when present, and ``budget_used`` /
            ``budget_left`` fed next to the mask features when present; other keys ignored).
        features_dim: Output features.
        channels: Widths of the four stride-2 convolutions.
        pooled: Side of the adaptive average pooling after the convolutions.
        mask_dim: Width of the mask MLP.

    Raises:
        ValueError: If the space lacks ``reconstruction`` or ``mask``, or the image maps
            differ in shape.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 256,
        channels: tuple[int, int, int, int] = (16, 32, 64, 64),
        pooled: int = 4,
        mask_dim: int = 128,
    ) -> None:
        super().__init__(observation_space, features_dim)
        keys = [k for k in IMAGE_KEYS if k in observation_space.spaces]
        if "reconstruction" not in keys or "mask" not in observation_space.spaces:
            raise ValueError("the observation space needs 'reconstruction' and 'mask'")
        shapes = {tuple(observation_space.spaces[k].shape or ()) for k in keys}
        if len(shapes) != 1:
            raise ValueError(f"image maps must share one shape, got {sorted(shapes)}")
        self.image_keys = keys
        layers: list[nn.Module] = []
        width = len(keys)
        for out in channels:
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        layers += [nn.AdaptiveAvgPool2d(pooled), nn.Flatten()]
        self.cnn = nn.Sequential(*layers)
        num_lines = int(spaces.flatdim(observation_space.spaces["mask"]))
        self.mask_mlp = nn.Sequential(nn.Linear(num_lines, mask_dim), nn.ReLU())
        self.budget_keys = [k for k in (BUDGET_USED, BUDGET_LEFT) if k in observation_space.spaces]
        fused = width * pooled * pooled + mask_dim + len(self.budget_keys)
        self.fuse = nn.Sequential(nn.Linear(fused, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features ``(B, features_dim)`` of a batch of observations."""
        images = torch.cat([observations[k].float() for k in self.image_keys], dim=1)
        mask = observations["mask"].float()
        parts = [self.cnn(images), self.mask_mlp(mask)]
        for key in self.budget_keys:
            parts.append(observations[key].float().reshape(-1, 1))
        features: torch.Tensor = self.fuse(torch.cat(parts, dim=1))
        return features
