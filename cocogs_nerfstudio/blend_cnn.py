"""The shallow CNN that blends the M+1 rendered images into one defocused image (Eq. 13)."""

from __future__ import annotations

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

    def __init__(self, width: int = 64) -> None:
        super().__init__()
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
