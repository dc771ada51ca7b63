"""The shallow CNN that blends the M+1 rendered images into one defocused image (Eq. 13)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BlendCNN(nn.Module):
    """F in ``W = softmax(F(I))``: per-pixel weights over the M+1 renders (paper Eq. 13).

    Each render is one item of a batch (weights shared across renders):
    conv 3→w k5, ReLU, InstanceNorm; conv w→w k3, ReLU, InstanceNorm; conv w→1 k3 (no bias),
    as in the official code. The logits of the M+1 renders are soft-maxed per pixel.
    """

    def __init__(self, width: int = 64, num_renders: int = 5, sharp_weight: float = 0.0) -> None:
        """``sharp_weight`` > 0 (not in the paper): a learnable logit offset per render, set so that
        the base (sharp, last) render starts with this blend weight on a uniform CNN output, the
        CoC renders sharing the rest; the model then starts as plain 3DGS and blends the blurred
        renders in where the photos ask for it. 0: no offsets (paper)."""
        super().__init__()
        self.offsets = None
        if sharp_weight > 0:
            if not 0 < sharp_weight < 1:
                raise ValueError(f"sharp_weight {sharp_weight}: expected 0 (off) or a weight in (0, 1)")
            others = (1.0 - sharp_weight) / (num_renders - 1)
            init = torch.zeros(num_renders)
            init[-1] = math.log(sharp_weight / others)
            self.offsets = nn.Parameter(init)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 5, padding=2),
            nn.ReLU(),
            nn.InstanceNorm2d(width),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.InstanceNorm2d(width),
            nn.Conv2d(width, 1, 3, padding=1, bias=False),
        )

    def weights(self, images: Tensor) -> Tensor:
        """Blend weights [M+1, H, W, 1] (sum to 1 per pixel) for images [M+1, H, W, 3]."""
        logits = self.net(images.permute(0, 3, 1, 2))  # [M+1, 1, H, W]
        if self.offsets is not None:
            logits = logits + self.offsets[:, None, None, None]
        return torch.softmax(logits, dim=0).permute(0, 2, 3, 1)

    def forward(self, images: Tensor, cnn_size: Optional[Tuple[int, int]] = None) -> Tuple[Tensor, Tensor]:
        """``I_blur = Σ_m W_m I_m`` (Eq. 13); the CNN sees the renders detached.

        ``cnn_size`` (height, width): the CNN sees the renders shrunk to this size (area average)
        and its weights are upsampled (bilinear) to blend the renders at their own size; None: the
        CNN at the renders' size. Returns the blended image [H, W, 3] and the weights [M+1, H, W, 1].
        """
        detached = images.detach()
        if cnn_size is None or tuple(cnn_size) == tuple(images.shape[1:3]):
            w = self.weights(detached)
        else:
            small = F.interpolate(detached.permute(0, 3, 1, 2), size=tuple(cnn_size), mode="area")
            w = self.weights(small.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            w = F.interpolate(w, size=tuple(images.shape[1:3]), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        return (w * images).sum(dim=0), w
