"""benchmarks/cycles_scene.py's cameras and files (the Blender part needs bpy, not installed here):
the poses it writes must mean the same camera in poses_bounds.npy, COLMAP's sparse/0 and the
back-projected points, or the scene's benchmarks measure a pose error instead of defocus."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cycles_scene  # noqa: E402

W, H = 400, 300
FX = W * cycles_scene.LENS_MM / cycles_scene.SENSOR_MM


def _cameras() -> np.ndarray:
    return np.array([cycles_scene.look_at(p) for p in cycles_scene.camera_positions()])


def test_cameras_look_at_the_target_with_level_horizons() -> None:
    c2ws = _cameras()
    assert c2ws.shape == (24, 4, 4)
    target = np.array(cycles_scene.TARGET)
    for c2w in c2ws:
        np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
        assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)
        view = (target - c2w[:3, 3]) / np.linalg.norm(target - c2w[:3, 3])
        np.testing.assert_allclose(-c2w[:3, 2], view, atol=1e-12)  # looking down −z at the target
        assert c2w[2, 0] == pytest.approx(0.0, abs=1e-12)  # x axis horizontal (world z up)
        assert c2w[2, 1] > 0.9  # y axis up
    # the focus distance is the target's depth along the optical axis: its distance here
    c2w = c2ws[0]
    assert cycles_scene.z_depth(c2w, target) == pytest.approx(np.linalg.norm(target - c2w[:3, 3]))


def test_poses_bounds_read_back_as_the_same_cameras(tmp_path: Path) -> None:
    from cocogs_nerfstudio.dataparser import load_poses_bounds

    c2ws = _cameras()
    bounds = np.tile([1.0, 9.0], (len(c2ws), 1))
    np.save(tmp_path / "poses_bounds.npy", cycles_scene.llff_poses_bounds(c2ws, (H, W, FX), bounds))
    c2w, hwf, read_bounds = load_poses_bounds(tmp_path / "poses_bounds.npy")
    np.testing.assert_allclose(c2w, c2ws[:, :3, :4], atol=1e-12)
    np.testing.assert_allclose(hwf, np.tile([H, W, FX], (len(c2ws), 1)))
    np.testing.assert_allclose(read_bounds, bounds)


def test_colmap_model_projects_the_target_to_the_image_centre_and_points_back_to_their_pixels(tmp_path: Path) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    c2ws = _cameras()[:3]
    # points back-projected from a fronto-parallel depth of 2.5 m at three pixels of view 1
    pixels = np.array([[0, 0], [123, 45], [399, 299]])
    xyz = cycles_scene.back_project(np.full((H, W), 2.5), c2ws[1], FX, pixels)
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    cycles_scene.write_colmap_text(tmp_path, c2ws, ["000.png", "001.png", "002.png"], (W, H), FX, xyz, rgb)
    model = pycolmap.Reconstruction(tmp_path)
    assert model.num_reg_images() == 3 and model.num_points3D() == 3
    fx, fy, cx, cy = model.cameras[1].params
    assert (fx, fy, cx, cy) == pytest.approx((FX, FX, 200.0, 150.0))

    def project(image, points: np.ndarray) -> np.ndarray:
        T = image.cam_from_world().matrix()
        cam = points @ T[:, :3].T + T[:, 3]
        return np.stack([cam[:, 0] / cam[:, 2] * fx + cx, cam[:, 1] / cam[:, 2] * fy + cy, cam[:, 2]], 1)

    by_name = {im.name: im for im in model.images.values()}
    for i, name in enumerate(["000.png", "001.png", "002.png"]):
        uvz = project(by_name[name], np.array([cycles_scene.TARGET]))[0]
        assert uvz[:2] == pytest.approx((200.0, 150.0), abs=1e-6)  # every camera looks at the target
        assert uvz[2] == pytest.approx(cycles_scene.z_depth(c2ws[i], cycles_scene.TARGET))
        np.testing.assert_allclose(by_name[name].projection_center(), c2ws[i][:3, 3], atol=1e-9)
    points = [model.points3D[i] for i in sorted(model.points3D)]  # ids 1, 2, 3 in the order written
    uvz = project(by_name["001.png"], np.array([p.xyz for p in points]))
    np.testing.assert_allclose(uvz[:, :2], pixels + 0.5, atol=1e-3)  # pixel centres (µm-rounded points)
    np.testing.assert_allclose(uvz[:, 2], 2.5, atol=1e-5)
    np.testing.assert_array_equal(np.array([p.color for p in points]), rgb)


def test_ply_points_read_back(tmp_path: Path) -> None:
    from cocogs_nerfstudio.dataparser import read_ply_points

    rng = np.random.default_rng(0)
    xyz, rgb = rng.normal(size=(50, 3)).astype(np.float32), rng.integers(0, 256, (50, 3)).astype(np.uint8)
    cycles_scene.write_ply(tmp_path / "p.ply", xyz, rgb)
    xyz2, rgb2 = read_ply_points(tmp_path / "p.ply")
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)
