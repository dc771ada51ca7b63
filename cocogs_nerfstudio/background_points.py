"""Seed points where the SfM points leave the photos empty (an addition to the paper).

Structure from motion finds points where the photos are sharp and textured. In a shallow depth of
field photo that is the subject: the blurred background gets no points (real_defocus_drinks: all
3,002 lie on the cans), and Gaussians grown from the subject never reach it. Here every training
photo is cut into cells; a cell that no SfM point projects into gets points along rays through it,
at depths behind the SfM points (log-uniform in ``depth_scale`` × the far SfM depth: the part of a
defocused photo without points is usually the blurred far background), coloured by the photo.
A scene whose points cover its photos gets none. Plain tensor functions, no nerfstudio imports.
"""

from __future__ import annotations

from typing import Callable, Sequence, Tuple, Union

import torch
from torch import Tensor


def _to_camera(points: Tensor, c2w: Tensor) -> Tensor:
    """Points [P, 3] in the camera frame of ``c2w`` [3, 4] (OpenGL axes: x right, y up, z back)."""
    return (points - c2w[:3, 3]) @ c2w[:3, :3]


def empty_cells(
    points: Tensor, c2w: Tensor, fx: float, fy: float, cx: float, cy: float, width: int, height: int, cell: float
) -> Tuple[Tensor, Tensor]:
    """(empty mask [rows, cols], z-depths [Q] of the points in view) of one camera.

    A cell (``cell`` × ``cell`` pixels) is empty when no point in front of the camera projects into it.
    """
    cam = _to_camera(points, c2w)
    z = -cam[:, 2]
    front = z > 1e-6
    u = fx * cam[front, 0] / z[front] + cx
    v = -fy * cam[front, 1] / z[front] + cy
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    rows, cols = int(-(-height // cell)), int(-(-width // cell))
    empty = torch.ones(rows, cols, dtype=torch.bool)
    r = (v[inside] / cell).long().clamp_max(rows - 1)
    c = (u[inside] / cell).long().clamp_max(cols - 1)
    empty[r, c] = False
    return empty, z[front][inside]


def background_points(
    c2w: Tensor,
    fx: Tensor,
    fy: Tensor,
    cx: Tensor,
    cy: Tensor,
    width: int,
    height: int,
    points: Tensor,
    num_points: int,
    images: Union[Sequence[Tensor], Callable[[int], Tensor], None] = None,
    cells_across: int = 16,
    depth_scale: Tuple[float, float] = (1.5, 6.0),
    far_quantile: float = 0.98,
    min_empty_share: float = 0.0,
    seed: int = 0,
) -> Tuple[Tensor, Tensor]:
    """(xyz [Q, 3], rgb uint8 [Q, 3]): points in the cells of the photos
    (``cells_across`` along the longer side) that no SfM point of ``points`` [P, 3] projects into;
    about ``num_points`` × the fraction of all cells that are empty, spread evenly over the empty
    cells.

    ``c2w`` [N, 3, 4] camera-to-world (OpenGL axes), intrinsics per camera [N]; ``images`` [H, W, 3]
    floats in [0, 1] colour the points (grey without them); a callable ``i → image`` is called only
    for the photos that get points. The depths are log-uniform between
    ``depth_scale`` × the ``far_quantile`` of the SfM points' depths over all photos; ``seed``
    makes the sampling repeatable. Q = 0 when every cell of every photo has a point, or when
    fewer than ``min_empty_share`` of all cells are empty (the SfM points cover the photos).
    """
    gen = torch.Generator().manual_seed(seed)
    points = points.detach().float().cpu()
    c2w = c2w.detach().float().cpu()
    cell = max(width, height) / cells_across
    per_camera, depths, n_cells = [], [], 0
    for i in range(len(c2w)):
        empty, z = empty_cells(points, c2w[i], float(fx[i]), float(fy[i]), float(cx[i]), float(cy[i]), width, height, cell)
        per_camera.append(empty.nonzero())
        depths.append(z)
        n_cells += empty.numel()
    n_pairs = sum(len(e) for e in per_camera)
    all_z = torch.cat(depths) if depths else torch.zeros(0)
    if n_pairs == 0 or num_points <= 0 or len(all_z) == 0 or n_pairs < min_empty_share * n_cells:
        return torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.uint8)
    far = float(torch.quantile(all_z, far_quantile))
    log_lo, log_hi = torch.log(torch.tensor(depth_scale, dtype=torch.float32) * far)
    total = num_points * n_pairs / n_cells
    # whole points per empty cell, the remainder to randomly chosen cells
    per_pair = torch.full((n_pairs,), int(total // n_pairs), dtype=torch.long)
    extra = torch.randperm(n_pairs, generator=gen)[: round(total - float(per_pair.sum()))]
    per_pair[extra] += 1
    pairs = torch.cat([torch.cat([torch.full((len(e), 1), i), e], 1) for i, e in enumerate(per_camera)])
    pairs = pairs.repeat_interleave(per_pair, 0)
    xyz, rgb = [], []
    for i in range(len(c2w)):
        rc = pairs[pairs[:, 0] == i, 1:].float()
        k = len(rc)
        if k == 0:
            continue
        v = ((rc[:, 0] + torch.rand(k, generator=gen)) * cell).clamp_max(height - 1e-3)
        u = ((rc[:, 1] + torch.rand(k, generator=gen)) * cell).clamp_max(width - 1e-3)
        z = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(k, generator=gen))
        ray = torch.stack([(u - float(cx[i])) / float(fx[i]), -(v - float(cy[i])) / float(fy[i]), -torch.ones(k)], -1)
        xyz.append(c2w[i, :3, 3] + (z[:, None] * ray) @ c2w[i, :3, :3].T)
        if images is not None:
            img = (images(i) if callable(images) else images[i]).float().cpu()
            rows = (v * img.shape[0] / height).long().clamp(0, img.shape[0] - 1)
            cols = (u * img.shape[1] / width).long().clamp(0, img.shape[1] - 1)
            rgb.append((img[rows, cols, :3] * 255).round().clamp(0, 255).to(torch.uint8))
        else:
            rgb.append(torch.full((k, 3), 128, dtype=torch.uint8))
    return torch.cat(xyz), torch.cat(rgb)
