"""Initial focus distances from photo sharpness (focus_init.py): by hand, then on the demo scene."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cocogs_nerfstudio.focus_init import focus_from_sharpness, local_sharpness, project_points, visible_points


def test_local_sharpness_of_a_step_edge_by_hand() -> None:
    image = torch.zeros(9, 10, 3)
    image[:, 5:] = 1.0  # a vertical edge between columns 4 and 5
    raw = local_sharpness(image, window=1)
    # central differences: 0.5 at columns 4 and 5, so energy 0.25 there and 0 elsewhere
    expected = torch.zeros(9, 10)
    expected[:, 4:6] = 0.25
    assert torch.allclose(raw, expected)
    boxed = local_sharpness(image, window=5)
    # a 5×5 box around (4, 4) holds two columns of 0.25: 10 · 0.25 / 25 = 0.1
    assert boxed[4, 4].item() == pytest.approx(0.1)
    assert boxed[4, 0].item() == pytest.approx(0.0)
    # at the border the box is cut (count_include_pad=False): (0, 6) averages rows 0-2 × columns
    # 4-8, 15 cells of which 6 hold 0.25; (0, 9) sees columns 7-9 only
    assert boxed[0, 6].item() == pytest.approx(6 * 0.25 / 15)
    assert boxed[0, 9].item() == pytest.approx(0.0)


def test_project_points_by_hand() -> None:
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    viewmat = torch.eye(4)
    points = torch.tensor([[0.0, 0, 2], [1.0, 0.5, 2], [0, 0, -1], [10.0, 0, 2]])
    uv, dist, inside = project_points(points, viewmat, K, 100, 80)
    assert uv[0].tolist() == pytest.approx([50, 40])
    assert uv[1].tolist() == pytest.approx([100 * 0.5 + 50, 100 * 0.25 + 40])
    assert dist[1].item() == pytest.approx(float(np.sqrt(1 + 0.25 + 4)))
    assert inside.tolist() == [True, False, False, False]  # u = 100 is outside a 100-px row; behind; far right


def _left_right_photos() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two 80×40 photos of one random texture: photo 0 sharp on the left half and blurred (5×5
    box) on the right, photo 1 the other way round; and their intrinsics (f = 40 px)."""
    gen = torch.Generator().manual_seed(0)
    texture = torch.rand(40, 80, generator=gen)
    blurred = torch.nn.functional.avg_pool2d(texture[None, None], 5, stride=1, padding=2, count_include_pad=False)[0, 0]
    photo0 = torch.cat([texture[:, :40], blurred[:, 40:]], dim=1)[..., None].expand(-1, -1, 3)
    photo1 = torch.cat([blurred[:, :40], texture[:, 40:]], dim=1)[..., None].expand(-1, -1, 3)
    return photo0, photo1, torch.tensor([[40.0, 0, 40], [0, 40.0, 20], [0, 0, 1]])


def test_relative_sharpness_picks_the_plane_each_photo_shows_sharp() -> None:
    """Two photos of the same two point groups (near on the left, far on the right); photo 0
    shows the left half sharp, photo 1 the right half. Texture is the same in both, so only the
    blur decides."""
    photo0, photo1, K = _left_right_photos()
    # near points (z = 2) project to the left half, far ones (z = 8) to the right half
    u_left, u_right = torch.linspace(4, 36, 12), torch.linspace(44, 76, 12)
    v = torch.linspace(4, 36, 12)
    def lift(u: torch.Tensor, z: float) -> torch.Tensor:
        uu, vv = torch.meshgrid(u, v, indexing="xy")
        return torch.stack([(uu.flatten() - 40) / 40 * z, (vv.flatten() - 20) / 40 * z, torch.full((uu.numel(),), z)], -1)
    points = torch.cat([lift(u_left, 2.0), lift(u_right, 8.0)])
    viewmats = torch.eye(4).expand(2, 4, 4)
    focus = focus_from_sharpness([photo0, photo1], viewmats, K.expand(2, 3, 3), points, top_fraction=0.2)
    dist = points.norm(dim=-1)
    near, far = dist[:144], dist[144:]
    assert near.min() <= focus[0] <= near.max()
    assert far.min() <= focus[1] <= far.max()
    # the same all-in-focus photo twice: no preference, the median distance of everything
    same = focus_from_sharpness([photo0, photo0], viewmats, K.expand(2, 3, 3), points, top_fraction=1.0)
    assert torch.allclose(same, dist.median().expand(2))


def test_visible_points_by_hand() -> None:
    """A z-buffer over the points with cells width/100 px wide: a point is hidden when a point in
    its cell or a neighbouring one is more than 30% nearer (a depth edge, not a sloping surface)."""
    uv = torch.tensor([[10.2, 10.7], [11.5, 10.1], [30.0, 30.0], [10.4, 10.9], [13.0, 10.0], [50.0, 50.0]])
    d = torch.tensor([2.0, 5.0, 5.0, 2.5, 5.0, 1.0])
    inside = torch.tensor([True, True, True, True, True, False])
    # 100 px wide: 1 px cells. The 2nd point is one cell from the 1st and 2.5× farther: hidden; the
    # 4th is 25% farther than it: kept; the 5th is 3 cells away: kept; the 6th is out of view
    assert visible_points(uv, d, inside, 100).tolist() == [True, False, True, True, True, False]
    # with a 5% tolerance the 4th is hidden too
    assert visible_points(uv, d, inside, 100, tolerance=0.05).tolist() == [True, False, True, False, True, False]
    # 400 px wide: 4 px cells, so the 5th point (cell 3 next to cell 2) is hidden too
    assert visible_points(uv, d, inside, 400).tolist() == [True, False, True, True, False, False]


def test_occlusion_keeps_hidden_points_from_looking_sharp() -> None:
    """Photo 0 is focused on a near occluder (left half, sharp); twice as many far points lie
    right behind it. Projected onto the occluder's sharp texture they look as sharp as it does,
    and without the occlusion test photo 0's d_F lands far."""
    photo0, photo1, K = _left_right_photos()

    def lift(u: torch.Tensor, v: torch.Tensor, z: float) -> torch.Tensor:
        uu, vv = torch.meshgrid(u, v, indexing="xy")
        return torch.stack([(uu.flatten() - 40) / 40 * z, (vv.flatten() - 20) / 40 * z, torch.full((uu.numel(),), z)], -1)

    v = torch.linspace(4, 36, 12)
    near = lift(torch.linspace(4, 36, 12), v, 2.0)
    hidden = torch.cat([lift(torch.linspace(4.3, 36.3, 12), v, 8.0), lift(torch.linspace(4.6, 36.6, 12), v + 0.4, 8.0)])
    far = lift(torch.linspace(44, 76, 12), v, 8.0)
    points = torch.cat([near, hidden, far])
    viewmats, Ks = torch.eye(4).expand(2, 4, 4), K.expand(2, 3, 3)
    dist = points.norm(dim=-1)
    naive = focus_from_sharpness([photo0, photo1], viewmats, Ks, points, top_fraction=0.2)
    assert naive[0] > dist[:144].max()  # pulled behind the occluder
    focus = focus_from_sharpness([photo0, photo1], viewmats, Ks, points, top_fraction=0.2, occlusion=True)
    assert dist[:144].min() <= focus[0] <= dist[:144].max()
    assert dist[432:].min() <= focus[1] <= dist[432:].max()
    # "auto" (the default): the occlusion-checked estimate where it moves a photo's by > 30% (photo 0,
    # pulled 4× too far by the hidden points), the plain one elsewhere (photo 1 sees nothing hidden)
    assert float(naive[1] / focus[1]) == pytest.approx(1.0, abs=0.3)
    auto = focus_from_sharpness([photo0, photo1], viewmats, Ks, points, top_fraction=0.2, occlusion="auto")
    assert auto[0] == focus[0] and auto[1] == naive[1]
    never = focus_from_sharpness(
        [photo0, photo1], viewmats, Ks, points, top_fraction=0.2, occlusion="auto", switch=10.0
    )
    assert torch.equal(never, naive)


def test_sharpness_init_finds_each_demo_photos_focus(demo_scene: Path) -> None:
    """The demo photos focus at 2, 3.5 or 6 (scene units); the initial d_F lands within 15% of
    each, where the paper's mean-distance init is one value for all."""
    from cocogs_nerfstudio.dataparser import DeblurNerfDataParserConfig
    from cocogs_nerfstudio.rasterize import viewmats_from_camera_to_worlds

    out = DeblurNerfDataParserConfig(data=demo_scene).setup().get_dataparser_outputs("train")
    images = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))) for p in out.image_filenames]
    cams = out.cameras
    points = out.metadata["points3D_xyz"].float()
    focus = focus_from_sharpness(images, viewmats_from_camera_to_worlds(cams.camera_to_worlds), cams.get_intrinsics_matrices(), points)
    frames = sorted(json.loads((demo_scene / "transforms.json").read_text())["frames"], key=lambda f: f["file_path"])
    truth = torch.tensor([f["focus_distance"] for f in frames if f["focus_distance"]]) * float(out.dataparser_scale)
    assert focus.shape == truth.shape
    assert torch.all((focus / truth - 1).abs() < 0.15), (focus, truth)
    mean_init = torch.cdist(cams.camera_to_worlds[:, :3, 3], points).mean(1)
    assert (mean_init / truth - 1).abs().max() > 0.4  # what the paper's init would start from
