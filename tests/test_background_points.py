"""Seed points where the SfM points leave the photos empty (background_points.py)."""

from __future__ import annotations

import torch

from cocogs_nerfstudio.background_points import background_points, empty_cells

W, H, F, CX, CY = 16, 12, 10.0, 8.0, 6.0


def _pixel_points(us, vs, depth: float) -> torch.Tensor:
    """World points seen at pixels (u, v) at z-depth ``depth`` by a camera at the origin looking down -z."""
    pts = [[(u - CX) / F * depth, -(v - CY) / F * depth, -depth] for u in us for v in vs]
    return torch.tensor(pts)


def _camera(n: int = 1):
    c2w = torch.eye(4)[:3].expand(n, 3, 4).clone()
    k = torch.full((n,), F)
    return c2w, k, k, torch.full((n,), CX), torch.full((n,), CY)


def test_points_fill_only_the_empty_cells_behind_the_sfm_points() -> None:
    # SfM points at depth 2 in the left half of the photo: cells 4 px wide, columns 0 and 1 of 4
    sfm = _pixel_points([2, 6], [2, 6, 10], 2.0)
    image = torch.zeros(H, W, 3)
    image[:, :8, 0] = 1.0  # left half red
    image[:, 8:, 1] = 1.0  # right half green
    c2w, fx, fy, cx, cy = _camera()
    empty, _ = empty_cells(sfm, c2w[0], F, F, CX, CY, W, H, cell=4)
    assert empty.tolist() == [[False, False, True, True]] * 3

    xyz, rgb = background_points(c2w, fx, fy, cx, cy, W, H, sfm, 120, [image], cells_across=4, depth_scale=(1.5, 6.0))
    # 6 of 12 cells are empty: 120 × 6/12 points, 10 in each
    assert len(xyz) == 60
    z = -xyz[:, 2]
    u = F * xyz[:, 0] / z + CX
    v = -F * xyz[:, 1] / z + CY
    assert (u >= 8).all() and (u < W).all() and (v >= 0).all() and (v < H).all()
    counts = torch.histc(((v // 4) * 4 + u // 4), bins=12, min=0, max=12)
    assert counts.reshape(3, 4)[:, 2:].eq(10).all()
    assert (z >= 1.5 * 2.0 - 1e-4).all() and (z <= 6.0 * 2.0 + 1e-4).all()  # behind the far SfM depth
    assert (rgb == torch.tensor([0, 255, 0], dtype=torch.uint8)).all()  # the photo's colour there


def test_photos_covered_by_sfm_points_get_none() -> None:
    sfm = _pixel_points([2, 6, 10, 14], [2, 6, 10], 3.0)
    c2w, fx, fy, cx, cy = _camera(2)
    xyz, rgb = background_points(c2w, fx, fy, cx, cy, W, H, sfm, 1000, None, cells_across=4)
    assert xyz.shape == (0, 3) and rgb.shape == (0, 3)


def test_a_moved_camera_sees_its_own_empty_cells() -> None:
    """Camera 2 is shifted right: the SfM points fall in its left columns only, camera 1 is covered."""
    sfm = _pixel_points([2, 6, 10, 14], [2, 6, 10], 2.0)
    c2w, fx, fy, cx, cy = _camera(2)
    c2w[1, 0, 3] = 1.6  # 8 px at depth 2: the points move 8 px to the left
    xyz, _ = background_points(c2w, fx, fy, cx, cy, W, H, sfm, 240, None, cells_across=4)
    assert len(xyz) == 240 * 6 / 24
    rel = xyz - c2w[1, :, 3]
    u = F * rel[:, 0] / -rel[:, 2] + CX
    assert (u >= 8).all()


def test_none_below_the_empty_share() -> None:
    """Half the cells are empty: points with min_empty_share 0.4, none with 0.6."""
    sfm = _pixel_points([2, 6], [2, 6, 10], 2.0)
    c2w, fx, fy, cx, cy = _camera()
    few, _ = background_points(c2w, fx, fy, cx, cy, W, H, sfm, 120, None, cells_across=4, min_empty_share=0.4)
    none, _ = background_points(c2w, fx, fy, cx, cy, W, H, sfm, 120, None, cells_across=4, min_empty_share=0.6)
    assert len(few) == 60 and len(none) == 0


def test_photos_are_read_only_when_they_get_points() -> None:
    """Camera 0 is covered, camera 1 is not: only photo 1 is read (a callable loads photos lazily)."""
    sfm = _pixel_points([2, 6, 10, 14], [2, 6, 10], 2.0)
    c2w, fx, fy, cx, cy = _camera(2)
    c2w[1, 0, 3] = 1.6
    read = []

    def load(i: int) -> torch.Tensor:
        read.append(i)
        return torch.ones(H, W, 3)

    xyz, rgb = background_points(c2w, fx, fy, cx, cy, W, H, sfm, 240, load, cells_across=4)
    assert read == [1] and len(xyz) == 60 and (rgb == 255).all()
    read.clear()
    background_points(c2w, fx, fy, cx, cy, W, H, sfm, 240, load, cells_across=4, min_empty_share=0.5)
    assert read == []  # 25% of the cells are empty: below the share, no photo is read
