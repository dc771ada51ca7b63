"""Tap to focus: the distance of the surface under a click, on Gaussians placed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from nerfstudio.viewer.viewer_elements import ViewerClick

from helpers import make_trainer

from cocogs_nerfstudio.tap_focus import pixel_ray, ray_camera, surface_distance


@pytest.fixture()
def two_planes(demo_scene: Path, tmp_path: Path):
    """A model whose Gaussians are two planes seen from the origin down −z: x < 0 at z = −2, x > 0
    at z = −6 (small, opaque, 0.04 apart); nothing towards +z."""
    model = make_trainer(demo_scene, tmp_path, steps=2, name="planes", coc_start_step=0).pipeline.model
    g = torch.arange(-60, 61) * 0.04
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    near = torch.stack([xx.flatten() * 0.5 - 1.25, yy.flatten(), torch.full_like(xx.flatten(), -2.0)], -1)
    far = torch.stack([xx.flatten() * 1.5 + 3.7, yy.flatten() * 3, torch.full_like(xx.flatten(), -6.0)], -1)
    means = torch.cat([near[near[:, 0] < -0.05], far[far[:, 0] > 0.05]])
    n = len(means)
    params = model.gauss_params
    with torch.no_grad():
        params["means"].data = means
        params["scales"].data = torch.full((n, 3), math.log(0.05))
        params["quats"].data = torch.tensor([1.0, 0, 0, 0]).repeat(n, 1)
        params["opacities"].data = torch.full((n, 1), 6.0)
        params["features_dc"].data = torch.rand(n, 3)
        params["features_rest"].data = torch.zeros(n, params["features_rest"].shape[1], 3)
    model.eval()
    return model


def test_a_ray_through_each_plane_gives_its_distance(two_planes) -> None:
    origin = (0.0, 0.0, 0.0)
    for target in ((-0.5, 0.3, -2.0), (1.5, -0.4, -6.0)):
        distance = surface_distance(two_planes, origin, target)
        assert distance == pytest.approx(math.dist(origin, target), rel=0.02), target
    assert surface_distance(two_planes, origin, (0.0, 0.0, 1.0)) is None  # nothing behind the camera
    camera = ray_camera((0.0, 0.0, 0.0), (0.0, 0.0, -1.0))
    assert torch.allclose(camera.camera_to_worlds[0, :, 2], torch.tensor([0.0, 0.0, 1.0]))  # looks down −z
    # a pixel's ray: through pixel (x, y) of a camera at the origin looking down −z
    o, d = pixel_ray(ray_camera((0.0, 0.0, 0.0), (0.0, 0.0, -1.0)), 4.5, 2.0)
    assert torch.allclose(o, torch.zeros(3)) and d[0] > 0 and d[2] < 0 and abs(float(d.norm()) - 1) < 1e-6


def test_a_click_moves_the_focus_slider_to_the_surface_and_background_leaves_it(two_planes) -> None:
    controls = two_planes.depth_of_field
    controls.input_scale = 0.5  # the model's units are half the poses' units
    target = (1.5, -0.4, -6.0)
    controls.focus_at_click(ViewerClick((0.0, 0.0, 0.0), target, (0.7, 0.5)))
    expected = math.dist((0, 0, 0), target)
    assert controls.focus.value == pytest.approx(expected, rel=0.02)
    assert controls.focus.min <= controls.focus.value <= controls.focus.max
    assert f"= {controls.focus.value / 0.5:.4g} in your poses' units" in controls.focus_status.value
    controls.focus_at_click(ViewerClick((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.1)))
    assert controls.focus.value == pytest.approx(expected, rel=0.02)  # unchanged
    assert controls.focus_status.value == "no surface under the click: focus unchanged"
