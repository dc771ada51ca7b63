"""The in-focus point-spread function: the softness every photo has at its focus plane (lens,
sensor, demosaicing, downscaling), which the circle of confusion is zero at (not in the paper).

Without it, CoCoGaussian explains that softness with the CoC blur of its training renders (the
CoC is small but not zero around the focus plane), and the sharp render, the base Gaussians
alone, comes out sharper than any photo: on the all-in-focus fern, the blend of a test view is
1–2 dB closer to the photo than the sharp render (docs/results.md). Here one small kernel, the same for
every photo, is applied to every output image, the training blend and the sharp render alike, so
that the sharp render keeps the softness the photos have and the CoC models defocus only.
Plain tensor code, no nerfstudio imports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InFocusPSF(nn.Module):
    """A normalised non-negative ``size``×``size`` kernel: weights ``a`` > 0 around the centre and
    ``1 − Σa`` at the centre, Σa at most ``max_spread``. ``a = softplus(10·r)/10`` of a learned
    ``r``, starting at ``init`` (0.8% of the light off the centre for 3×3, near the identity):
    never exactly 0, so a weight pushed down early can come back (a weight clamped at 0 gets no
    gradient again, and Adam's first steps of ~lr each took a 1e-3 start there on the demo), and
    under Adam it grows by ~5% a step in its tail and by ~lr a step above ~0.1."""

    SHARPNESS = 10.0

    def __init__(self, size: int = 3, max_spread: float = 0.9, init: float = 1e-3) -> None:
        super().__init__()
        if size < 3 or size % 2 == 0:
            raise ValueError(f"in-focus PSF size {size}: expected an odd size ≥ 3")
        self.size, self.max_spread = size, max_spread
        raw = math.log(math.expm1(init * self.SHARPNESS)) / self.SHARPNESS  # softplus⁻¹
        self.spread = nn.Parameter(torch.full((size * size - 1,), raw))  # the weights off the centre

    def weights(self) -> Tensor:
        """The off-centre weights ``a`` (after the cap on their sum)."""
        a = F.softplus(self.spread * self.SHARPNESS) / self.SHARPNESS
        return a / (a.sum() / self.max_spread).clamp_min(1.0)

    def kernel(self) -> Tensor:
        """The [size, size] kernel (sums to 1)."""
        a = self.weights()
        centre = (self.size * self.size) // 2
        weights = torch.cat([a[:centre], (1.0 - a.sum()).reshape(1), a[centre:]])
        return weights.reshape(self.size, self.size)

    def forward(self, image: Tensor) -> Tensor:
        """``image`` [H, W, C] convolved with the kernel (edges replicated)."""
        channels, pad = image.shape[-1], self.size // 2
        x = F.pad(image.permute(2, 0, 1)[None], (pad, pad, pad, pad), mode="replicate")
        weight = self.kernel().to(image.dtype)[None, None].expand(channels, 1, -1, -1)
        return F.conv2d(x, weight, groups=channels)[0].permute(1, 2, 0)
