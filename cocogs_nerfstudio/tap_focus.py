"""Tap to focus: the distance of the surface a ray hits, for the viewer's clicks and ``cocogs-refocus
--focus-at X Y``.

A tiny camera at the ray's origin looking along it renders the sharp Gaussians; the expected depth
at its centre pixel is the distance along the ray, the distance d of the world CoC form (Eq. 7:
the distance from the camera centre). Its pixels are the training photos' (their focal length):
magnified beyond that, a surface learned from those photos shows the gaps between its Gaussians.
Where the Gaussians cover less than half of that pixel (accumulation < 0.5) there is no surface.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

PROBE_SIZE = 5  # pixels across the probe camera
PROBE_FOCAL = 1000.0  # its focal length in pixels when the training photos' is not known

MIN_ACCUMULATION = 0.5


def ray_camera(origin: Sequence[float], direction: Sequence[float], focal: float = PROBE_FOCAL) -> Cameras:
    """A PROBE_SIZE² pinhole camera at ``origin`` whose optical axis is ``direction`` (nerfstudio axes)."""
    forward = torch.nn.functional.normalize(torch.as_tensor(direction, dtype=torch.float32), dim=0)
    helper = torch.tensor([0.0, 0.0, 1.0]) if forward[2].abs() < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, helper), dim=0)
    up = torch.linalg.cross(right, forward)
    c2w = torch.stack([right, up, -forward, torch.as_tensor(origin, dtype=torch.float32)], dim=1)  # looks down −z
    return Cameras(
        camera_to_worlds=c2w[None], fx=focal, fy=focal, cx=PROBE_SIZE / 2, cy=PROBE_SIZE / 2,
        width=PROBE_SIZE, height=PROBE_SIZE, camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip


@torch.no_grad()
def surface_distance(model, origin: Sequence[float], direction: Sequence[float]) -> Optional[float]:
    """Distance from ``origin`` along ``direction`` to the sharp Gaussians' surface (model world
    units), or None where the ray meets no surface."""
    focal = model.training_focal or PROBE_FOCAL
    probe = ray_camera(origin, direction, focal).to(model.device)
    outputs = model.render_defocused(probe, focus=1.0, aperture_scale=0.0)  # aperture 0: the sharp render
    centre = PROBE_SIZE // 2
    if float(outputs["accumulation"][centre, centre]) < MIN_ACCUMULATION:
        return None
    return float(outputs["depth"][centre, centre])


def pixel_ray(camera: Cameras, x: float, y: float) -> tuple[Tensor, Tensor]:
    """(origin, unit direction) of the ray through pixel (x, y) (column, row; pixel centres at +0.5)
    of a one-image camera."""
    c2w = camera.camera_to_worlds.reshape(3, 4)
    u, v = (x + 0.5 - float(camera.cx)) / float(camera.fx), (y + 0.5 - float(camera.cy)) / float(camera.fy)
    local = torch.tensor([u, -v, -1.0])
    return c2w[:, 3], torch.nn.functional.normalize(c2w[:, :3] @ local, dim=0)
