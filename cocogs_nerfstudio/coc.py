"""Thin-lens circle-of-confusion math as plain tensor functions (paper Sec. 4.2-4.3).

No nerfstudio imports: everything here is a pure function of tensors.

Two forms of the CoC diameter are offered (see ../shared/paper/NOTES.md, "Units of Eq. 7"):

* ``"sensor"`` — the paper's Eq. 7 literally: ``σ = K·|1/d − 1/d_F|``. It is the blur diameter
  on the image plane, so ``K`` carries units of length² once it is used to move Gaussians in
  world space.
* ``"world"`` — the same blur expressed as a disc in world space at the Gaussian's distance:
  ``σ = K·d·|1/d − 1/d_F| = K·|1 − d/d_F|``. For an exact thin lens this is the diameter of the
  cone of rays through the aperture at distance d, with ``K`` the aperture diameter (a length).
  Projected by a pinhole of focal length f it gives ``f·K·|1/d − 1/d_F|`` pixels, i.e. Eq. 7 with
  the aperture/focal-length constant made explicit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

CocForm = Literal["world", "sensor"]


def coc_diameter(
    distance: Tensor, focus: Tensor | float, aperture: Tensor | float, form: CocForm = "world"
) -> Tensor:
    """CoC diameter σ (Eq. 7): ``K·|1/d − 1/d_F|`` ("sensor") or ``K·d·|1/d − 1/d_F|`` ("world").

    Args:
        distance: camera-to-Gaussian distance d(µ) [...], positive.
        focus: focus distance d_F, broadcastable to ``distance``, positive.
        aperture: aperture parameter K ≥ 0, broadcastable to ``distance``.
    """
    defocus = torch.abs(1.0 / distance - 1.0 / focus)
    if form == "world":
        return aperture * distance * defocus
    if form == "sensor":
        return aperture * defocus
    raise ValueError(f"unknown CoC form {form!r}")


def coc_pixels(
    depth: Tensor, focus: Tensor | float, aperture: Tensor | float, focal_px: float | Tensor, form: CocForm = "world"
) -> Tensor:
    """The CoC (Eq. 7) at depth z [...] projected to pixels: ``σ · f / z`` (f: focal length in pixels)."""
    depth = depth.clamp_min(1e-6)
    return coc_diameter(depth, focus, aperture, form) * focal_px / depth


def floored_aperture(relative: Tensor, floor: float) -> Tensor:
    """Relative aperture K (h_θ's, ≥ 0) kept above ``floor`` (not in the paper): ``K + f·exp(−K/f)``.

    Monotone, f at K = 0 and within f·e^(−1/f) of K where K ≥ 1, so the floor only acts once K has
    fallen towards it: a collapsed aperture keeps a small blur, and with it a gradient. f ≤ 0: K.
    """
    if floor <= 0:
        return relative
    return relative + floor * torch.exp(-relative / floor)


def coc_means(means: Tensor, diameter: Tensor, beta: Tensor, directions: Tensor) -> Tensor:
    """Means of the M CoC Gaussian sets (Eq. 9): ``µ_m = µ_B + σ/2 · β_m · d_m``.

    Args:
        means: base means µ_B [N, 3]; diameter: σ [N]; beta: β [M, N]; directions: d [M, N, 3].
    Returns:
        [M, N, 3].
    """
    return means[None] + (0.5 * diameter)[None, :, None] * beta[..., None] * directions


def coc_scales(scales: Tensor, factors: Tensor) -> Tensor:
    """Scales of the CoC sets (Eq. 10): ``s_m = s_B × δs_m``; scales [N, 3], factors [M, N, 3]."""
    return scales[None] * factors


def coc_quats(quats: Tensor, factors: Tensor) -> Tensor:
    """Rotations of the CoC sets (Eq. 11): ``q_m = q_B × δq_m`` element-wise; [N, 4], [M, N, 4]."""
    return quats[None] * factors


@dataclass
class CocSets:
    """The M CoC Gaussian sets of one camera (Eqs. 9-11), opacities and colours shared with the base."""

    means: Tensor  # µ_m [M, N, 3] (Eq. 9)
    scales: Tensor  # s_m [M, N, 3], activated (Eq. 10)
    quats: Tensor  # q_m [M, N, 4] (Eq. 11)
    aperture: Tensor  # K [N] in world units (Eq. 7), × the caller's aperture multiplier


def bounded_factor(raw: Tensor, max_value: float) -> Tensor:
    """Map raw outputs to ``[1, max_value]`` (the range of δs and δq)."""
    return 1.0 + (max_value - 1.0) * torch.sigmoid(raw)


def coc_scale_beta(raw: Tensor, floor: float = 1e-4) -> Tensor:
    """CoC scaling β ∈ (0, 1] (Sec. 4.3) from raw outputs; ``floor`` keeps it > 0 in float32."""
    return floor + (1.0 - floor) * torch.sigmoid(raw)


def unit_directions(raw: Tensor, eps: float = 1e-6) -> Tensor:
    """Unit direction vectors d_m from raw 3-vectors [..., 3]."""
    return F.normalize(raw, dim=-1, eps=eps)


def fixed_directions(means: Tensor, camera_centre: Tensor, num_sets: int) -> Tensor:
    """M directions evenly spaced on the circle perpendicular to the viewing ray [M, N, 3].

    The ablation "w/o CoC direction vector" of the paper's Table 3.
    """
    ray = F.normalize(means - camera_centre[None], dim=-1)
    helper = torch.tensor([0.0, 1.0, 0.0], device=means.device, dtype=means.dtype).expand_as(ray)
    alt = torch.tensor([1.0, 0.0, 0.0], device=means.device, dtype=means.dtype).expand_as(ray)
    helper = torch.where((ray * helper).sum(-1, keepdim=True).abs() > 0.9, alt, helper)
    u = F.normalize(torch.cross(ray, helper, dim=-1), dim=-1)
    v = torch.cross(ray, u, dim=-1)
    angles = torch.arange(num_sets, device=means.device, dtype=means.dtype) * (2 * math.pi / num_sets)
    return torch.cos(angles)[:, None, None] * u[None] + torch.sin(angles)[:, None, None] * v[None]


def frequency_encode(x: Tensor, num_freqs: int) -> Tensor:
    """NeRF positional encoding ``[x, sin(2^k x), cos(2^k x)]_{k<L}``: [..., D] → [..., D(1+2L)]."""
    freqs = 2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype)
    angles = x[..., None, :] * freqs[:, None]  # [..., L, D]
    enc = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-2).flatten(-2)
    return torch.cat([x, enc], dim=-1)


def thin_lens_blur_px(
    focal_px: float | Tensor, aperture_diameter: float | Tensor, depth: Tensor, focus: float | Tensor
) -> Tensor:
    """Exact thin-lens blur diameter in pixels: ``f·D·|1/z − 1/d_F|`` (the demo scene's model)."""
    return focal_px * aperture_diameter * torch.abs(1.0 / depth - 1.0 / focus)
