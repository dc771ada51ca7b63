"""Where the error lives: the sharp test views' PSNR split by how sharp each surface is in the
training photo that shows it sharpest (issue 45).

For every pixel of a test view, its surface point (the view's z-depth, ``depth/NNN.npy``) is
projected into every training photo; where the photo sees it (its own depth there agrees within
2%), the photo's true CoC at that point is ``coc_px_per_inv_m`` × |1/focus − 1/z| (full-size pixels,
here converted to the training photos' pixels). The smallest over the photos decides the pixel's
bin: < 1 px (some photo shows it sharp), 1–2, 2–4, > 4 px (every photo blurs it), or unseen. A
method that uses the blurred photos well gains in the upper bins; in the first, any 3DGS should do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from known_lens import photo_lenses
from torch import Tensor

from cocogs_nerfstudio.coc import thin_lens_blur_px

BINS: List[Tuple[str, float, float]] = [
    ("<1px", 0.0, 1.0), ("1-2px", 1.0, 2.0), ("2-4px", 2.0, 4.0), (">4px", 4.0, float("inf"))
]  # fmt: skip
VISIBLE_TOLERANCE = 0.02  # relative depth difference under which a training photo sees the point


def _depth_at(scene: Path, image: Path, width: int, height: int) -> Optional[Tensor]:
    """The z-depth map of ``image`` (scene units) sampled at the pixel centres of a width × height grid."""
    path = scene / "depth" / f"{image.stem}.npy"
    if not path.is_file():
        return None
    full = torch.from_numpy(np.load(path).astype(np.float32))
    rows = ((torch.arange(height) + 0.5) * full.shape[0] / height).long().clamp(max=full.shape[0] - 1)
    cols = ((torch.arange(width) + 0.5) * full.shape[1] / width).long().clamp(max=full.shape[1] - 1)
    return full[rows][:, cols]


def _camera_points(c2w: Tensor, fx: float, fy: float, cx: float, cy: float, depth: Tensor) -> Tensor:
    """World points [H, W, 3] of a pinhole camera (nerfstudio/OpenGL axes) at z-depths [H, W]."""
    h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    cam = torch.stack([(u - cx) / fx * depth, -(v - cy) / fy * depth, -depth], -1)  # looks down −z
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def best_coc_maps(scene: Path, train, test, scale: float) -> Optional[List[Tensor]]:
    """Per test view, the smallest true CoC [H, W] (training-photo pixels) over the training photos
    that see each pixel's surface (+inf: none does); None without depth maps or lens data.
    ``train``/``test``: nerfstudio datasets (their cameras are in the model frame: distances × ``scale``)."""
    lenses = photo_lenses(scene)
    tc = train.cameras
    W, H = int(tc.width[0]), int(tc.height[0])
    lens, depths = [], []
    for image in train.image_filenames:
        stem = Path(image).stem
        depth = _depth_at(scene, Path(image), W, H)
        if stem not in lenses or depth is None:
            return None
        full_w = np.load(scene / "depth" / f"{stem}.npy", mmap_mode="r").shape[1]
        lens.append((lenses[stem][0] * W / full_w, lenses[stem][1]))
        depths.append(depth * scale)
    maps = []
    for i, image in enumerate(test.image_filenames):
        cam = test.cameras[i]
        depth = _depth_at(scene, Path(image), int(cam.width), int(cam.height))
        if depth is None:
            return None
        fx, fy, cx, cy = (float(v) for v in (cam.fx, cam.fy, cam.cx, cam.cy))
        points = _camera_points(cam.camera_to_worlds, fx, fy, cx, cy, depth * scale)
        best = torch.full(depth.shape, float("inf"))
        for j, (k, focus) in enumerate(lens):
            c2w = tc.camera_to_worlds[j]
            local = (points - c2w[:3, 3]) @ c2w[:3, :3]  # camera axes: x right, y up, z back
            z = -local[..., 2]
            u = local[..., 0] / z.clamp_min(1e-9) * float(tc.fx[j]) + float(tc.cx[j])
            v = -local[..., 1] / z.clamp_min(1e-9) * float(tc.fy[j]) + float(tc.cy[j])
            inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            seen_depth = depths[j][v.long().clamp(0, H - 1), u.long().clamp(0, W - 1)]
            visible = inside & ((seen_depth - z).abs() < VISIBLE_TOLERANCE * z)
            coc = thin_lens_blur_px(k, 1.0, (z / scale).clamp_min(1e-6), focus)
            best = torch.where(visible, torch.minimum(best, coc), best)
        maps.append(best)
    return maps


def psnr_by_blur(pipeline, scene: Path) -> Optional[Dict[str, Dict[str, float]]]:
    """PSNR of the sharp test renders per bin of :func:`best_coc_maps`, and each bin's pixel share."""
    dm = pipeline.datamanager
    scale = float(dm.train_dataparser_outputs.dataparser_scale)
    maps = best_coc_maps(scene, dm.train_dataset, dm.eval_dataset, scale)
    if maps is None:
        return None
    model, dataset = pipeline.model, dm.eval_dataset
    errors = {name: [0.0, 0] for name, _, _ in BINS + [("unseen", 0.0, 0.0)]}
    for i, best in enumerate(maps):
        gt = dataset.get_image_float32(i)[..., :3]
        with torch.no_grad():
            render = model.get_outputs_for_camera(dataset.cameras[i : i + 1].to(model.device))["rgb"].cpu().clamp(0, 1)
        sq = (render - gt).square().mean(-1)
        for name, lo, hi in BINS:
            mask = (best >= lo) & (best < hi)
            errors[name][0] += float(sq[mask].sum())
            errors[name][1] += int(mask.sum())
        unseen = torch.isinf(best)
        errors["unseen"][0] += float(sq[unseen].sum())
        errors["unseen"][1] += int(unseen.sum())
    total = sum(count for _, count in errors.values())
    return {
        name: {"psnr": float(-10 * np.log10(max(err / count, 1e-10))) if count else float("nan"),
               "share": count / total}
        for name, (err, count) in errors.items()
    }
