"""The known-lens reference of the benchmarks: plain 3DGS whose training render is blurred, before the
loss, by each photo's *true* circle of confusion (issue 45).

The true CoC comes from the rendered scene: each training frame of ``transforms.json`` carries
``focus_distance`` and ``coc_px_per_inv_m`` (blur diameter in full-size pixels = that ×
|1/focus − 1/z|), and ``depth/NNN.npy`` holds the photo's z-depth. The blur is a gather: the
render convolved with discs of radius 0, 0.25, 0.5 … px, and each pixel interpolated between the
two radii around its own CoC. It ignores occlusion (a blurred near edge does not spread over the
far surface beside it, nor does the far surface show through it) and the CoC's change across a
disc. It is not an upper bound: it tells whether the *learned* lens is what limits CoCoGaussian.
Evaluation renders the Gaussians sharp, as for every variant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cocogs_nerfstudio.coc import thin_lens_blur_px
from cocogs_nerfstudio.cocogaussian import CoCoGaussianModel, CoCoGaussianModelConfig

RADIUS_STEP = 0.25  # px between the blur radii the gather interpolates


def disc_kernel(radius: float) -> Tensor:
    """A normalised disc of ``radius`` px, its edge anti-aliased over one pixel; radius 0: a delta."""
    half = math.ceil(radius + 0.5)
    y, x = torch.meshgrid(torch.arange(-half, half + 1.0), torch.arange(-half, half + 1.0), indexing="ij")
    weight = (radius + 0.5 - (x**2 + y**2).sqrt()).clamp(0.0, 1.0)
    return weight / weight.sum()


def variable_disc_blur(image: Tensor, coc_px: Tensor) -> Tensor:
    """``image`` [H, W, C] blurred per pixel by a disc of diameter ``coc_px`` [H, W] (the gather above)."""
    radii = torch.arange(0.0, float(coc_px.max()) / 2 + RADIUS_STEP, RADIUS_STEP)
    x = image.permute(2, 0, 1)[None]  # [1, C, H, W]
    stack = []
    for r in radii.tolist():
        k = disc_kernel(r).to(image)
        pad = k.shape[0] // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        stack.append(F.conv2d(padded, k.expand(x.shape[1], 1, -1, -1), groups=x.shape[1])[0])
    blurred = torch.stack(stack)  # [R, C, H, W]
    pos = (coc_px / 2 / RADIUS_STEP).clamp(0, len(radii) - 1)
    lo = pos.floor().long().clamp(max=len(radii) - 1)
    hi = (lo + 1).clamp(max=len(radii) - 1)
    t = (pos - lo).to(image)[None]
    out = blurred.gather(0, lo[None, None].expand(1, x.shape[1], -1, -1))[0] * (1 - t)
    out = out + blurred.gather(0, hi[None, None].expand(1, x.shape[1], -1, -1))[0] * t
    return out.permute(1, 2, 0)


def photo_lenses(scene: Path) -> Dict[str, Tuple[float, float]]:
    """(coc_px_per_inv_m, focus_distance) of every frame of ``transforms.json`` that has both, by
    file stem: blur diameter in full-size pixels = the first × |1/focus − 1/z|."""
    frames = json.loads((scene / "transforms.json").read_text())["frames"]
    return {Path(f["file_path"]).stem: (f["coc_px_per_inv_m"], f["focus_distance"])
            for f in frames if f.get("coc_px_per_inv_m") and f.get("focus_distance")}  # fmt: skip


def true_coc(scene: Path, image: Path, width: int, height: int) -> Optional[Tensor]:
    """The true CoC diameter [height, width] in pixels of training photo ``image`` at that size, or
    None when the scene does not say (no depth map, or the frame has no ``coc_px_per_inv_m``)."""
    lens = photo_lenses(scene).get(image.stem)
    depth_file = scene / "depth" / f"{image.stem}.npy"
    if lens is None or not depth_file.is_file():
        return None
    depth = torch.from_numpy(np.load(depth_file).astype(np.float32))
    full_w = depth.shape[1]
    coc = thin_lens_blur_px(lens[0], 1.0, depth.clamp_min(1e-6), lens[1])  # no surface (z = +inf): the blur of infinity
    coc = F.adaptive_avg_pool2d(coc[None, None], (height, width))[0, 0]
    return coc * (width / full_w)


def true_cocs(scene: Path, images: Sequence[Path], width: int, height: int) -> Optional[List[Tensor]]:
    """:func:`true_coc` of every training photo, or None when any is unknown."""
    maps = [true_coc(scene, p, width, height) for p in images]
    return None if any(m is None for m in maps) else maps  # type: ignore[return-value]


@dataclass
class KnownLensModelConfig(CoCoGaussianModelConfig):
    """Plain 3DGS (CoC off) trained through each photo's true CoC."""

    _target: Type = field(default_factory=lambda: KnownLensModel)
    coc_enabled: bool = False


class KnownLensModel(CoCoGaussianModel):
    """3DGS whose training render is blurred by the photo's true CoC before Splatfacto's loss."""

    config: KnownLensModelConfig
    true_coc: Dict[int, Tensor]  # training photo index → its CoC diameter map [H, W]; set by the benchmark

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        if self.training:
            coc = self.true_coc[int(batch["image_idx"])].to(outputs["rgb"])
            h, w = outputs["rgb"].shape[:2]
            if coc.shape != (h, w):  # Splatfacto's resolution schedule: the map follows the render
                coc = F.interpolate(coc[None, None], size=(h, w), mode="area")[0, 0] * (w / coc.shape[1])
            outputs = {**outputs, "rgb": variable_disc_blur(outputs["rgb"], coc)}
        return super().get_loss_dict(outputs, batch, metrics_dict)
