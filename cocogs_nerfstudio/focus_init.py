"""Initial focus distances d_F from the photos themselves (an addition to the paper, Sec. 4.2).

The paper initialises every d_F to the mean distance from the camera to the SfM points. When
the photos focus at different depths (near/far focus stacks, the Deblur-NeRF scenes), that puts
every d_F in the middle and training has to move it a long way, further than it gets on the
rendered near/far scenes (docs/experiments.md). Here each image's d_F starts where its photo is sharpest instead:

1. local sharpness s_ip of image i at the projection of SfM point p (box-filtered squared
   gradient of the luminance);
2. relative sharpness r_ip = s_ip / mean_j s_jp over the images j that see p: texture cancels
   out, only how much image i blurs the point remains;
3. d_F(i) = median camera distance of the points whose relative sharpness in image i is in the
   top ``top_fraction``.

All-in-focus photos give r ≈ 1 everywhere and d_F ≈ the median distance, close to the paper's
mean. Optionally (``occlusion=True``) a photo only counts the points that no other point hides
(:func:`visible_points`): behind an occluder a point projects onto the occluder's texture, and
in a photo focused on the occluder it looks sharp there. Plain tensor functions, no nerfstudio
imports.
"""

from __future__ import annotations

import math
from typing import List, Literal, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def local_sharpness(image: Tensor, window: int = 5) -> Tensor:
    """Box-filtered squared luminance gradient (central differences) of an [H, W, C] image → [H, W]."""
    g = image.float().mean(-1)
    gx = torch.zeros_like(g)
    gy = torch.zeros_like(g)
    gx[:, 1:-1] = 0.5 * (g[:, 2:] - g[:, :-2])
    gy[1:-1, :] = 0.5 * (g[2:, :] - g[:-2, :])
    energy = (gx**2 + gy**2)[None, None]
    return F.avg_pool2d(energy, window, stride=1, padding=window // 2, count_include_pad=False)[0, 0]


def project_points(
    points: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel coordinates [P, 2], distances from the camera centre [P] and in-view mask [P] of world points.

    ``viewmat`` is world→camera in OpenCV axes (z forward), ``K`` the 3×3 intrinsics.
    """
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = (cam[:, :2] / z.clamp_min(1e-9)[:, None]) * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
    inside = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return uv, cam.norm(dim=-1), inside


def visible_points(
    uv: Tensor, distance: Tensor, inside: Tensor, width: int, cells_across: int = 100, tolerance: float = 0.3
) -> Tensor:
    """Mask [P] of the points in view that no other point hides: a z-buffer over the points.

    The image is cut into cells ``width / cells_across`` pixels wide (at least 1 px); a point is
    hidden when a point in its cell or the 8 around it is more than ``tolerance`` (relative) nearer:
    a depth discontinuity, not the slope of one surface seen at a grazing angle (docs/experiments.md,
    "Cycles scene"). Cells scale with the image, so the test means the same at every resolution.
    """
    ids = torch.nonzero(inside).squeeze(1)
    if ids.numel() == 0:
        return inside.clone()
    ij = (uv[ids] / max(1.0, width / cells_across)).long()
    cols, rows = int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1
    zbuf = torch.full((rows * cols,), float("inf"), device=uv.device)
    zbuf.scatter_reduce_(0, ij[:, 1] * cols + ij[:, 0], distance[ids], reduce="amin")
    nearest = -F.max_pool2d(-zbuf.view(1, 1, rows, cols), 3, stride=1, padding=1)[0, 0]
    visible = torch.zeros_like(inside)
    visible[ids] = distance[ids] <= nearest[ij[:, 1], ij[:, 0]] * (1 + tolerance)
    return visible


def focus_from_sharpness(
    images: Sequence[Tensor],
    viewmats: Tensor,
    Ks: Tensor,
    points: Tensor,
    top_fraction: float = 0.1,
    min_points: int = 10,
    occlusion: Union[bool, Literal["auto"]] = False,
    switch: float = 0.3,
) -> Tensor:
    """d_F per image [N]: median distance of the points it shows relatively sharpest (see module doc).

    Args:
        images: N photos [H_i, W_i, C] (any dtype and device; only relative values matter).
        viewmats: world→camera (OpenCV axes) [N, 4, 4]; Ks: intrinsics [N, 3, 3] for those sizes.
        points: SfM points [P, 3] in the same world frame; the work happens on their device.
    Images that see fewer than ``min_points`` points get the median distance of what they see
    (or of all points, when they see none). ``occlusion``: each image counts only the points
    :func:`visible_points` keeps; "auto": an image takes that estimate only where it differs from
    the plain one by more than ``switch`` (relative), i.e. where hidden points decided it.

    Memory grows with the (image, point) pairs actually seen, never with images × points: one
    image is projected at a time and only the points it sees are kept.
    """
    device = points.device
    viewmats, Ks = viewmats.to(device), Ks.to(device)
    # the point sets each image counts: all it sees (plain), those no point hides (checked), or both
    masks = {"auto": ("plain", "checked"), True: ("checked",)}.get(occlusion, ("plain",))
    samples: dict[str, List[tuple[Tensor, Tensor, Tensor]]] = {m: [] for m in masks}  # per image: ids, s, d
    fallback: List[Tensor] = []  # median distance of every point, for images that see none
    for i, image in enumerate(images):  # each image projected and its sharpness measured once
        h, w = image.shape[:2]
        uv, d, inside = project_points(points, viewmats[i].float(), Ks[i].float(), w, h)
        sharp = local_sharpness(image.to(device))
        for mask in masks:
            ids = torch.nonzero(inside if mask == "plain" else visible_points(uv, d, inside, w)).squeeze(1)
            px = uv[ids].long()
            samples[mask].append((ids, sharp[px[:, 1], px[:, 0]], d[ids]))
        fallback.append(d.median())
    focus = {m: _focus_from_samples(samples[m], fallback, points.shape[0], top_fraction, min_points) for m in masks}
    if occlusion != "auto":
        return focus[masks[0]]
    plain, checked = focus["plain"], focus["checked"]
    return torch.where((checked / plain).log().abs() > math.log1p(switch), checked, plain)


def _focus_from_samples(
    per_image: List[tuple[Tensor, Tensor, Tensor]], fallback: List[Tensor], num_points: int, top_fraction: float,
    min_points: int,
) -> Tensor:
    """Steps 2-3 of the module doc from each image's (point ids, sharpness, distance) samples."""
    device = fallback[0].device
    sharp_sum = torch.zeros(num_points, device=device)
    seen_count = torch.zeros(num_points, device=device)
    for ids, s, _ in per_image:
        sharp_sum.index_add_(0, ids, s)
        seen_count.index_add_(0, ids, torch.ones_like(s))
    seen_any = seen_count > 0
    mean_sharp = sharp_sum / seen_count.clamp_min(1)
    floor = 0.1 * mean_sharp[seen_any].median() if bool(seen_any.any()) else mean_sharp.new_zeros(())
    focus: List[Tensor] = []
    for (ids, s, d), d_all in zip(per_image, fallback, strict=True):
        if d.numel() < min_points:
            focus.append(d.median() if d.numel() else d_all)
            continue
        relative = s / (mean_sharp[ids] + floor).clamp_min(1e-12)  # the floor mutes textureless points
        k = max(1, int(round(top_fraction * d.numel())))
        focus.append(d[torch.topk(relative, k).indices].median())
    return torch.stack(focus)
