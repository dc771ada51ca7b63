"""benchmarks/triangulated_scene.py: the Blender scene with points triangulated from its defocused
training photos and known poses (issue 12's realistic point cloud)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import triangulated_scene  # noqa: E402


def test_points_triangulated_from_the_defocused_photos_lie_on_the_scene(shared_data: Path, tmp_path: Path) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    from cocogs_nerfstudio.dataparser import DeblurNerfDataParserConfig

    scene, out = shared_data / "synthetic_defocus_dev", tmp_path / "dev_tri"
    triangulated_scene.main([str(scene), str(out), "--max-image-size", "400"])
    summary = json.loads((out / "triangulation.json").read_text())
    # sparser than the 14,400 points from sharp depth, and well triangulated
    assert summary["training_photos"] == 21 and 1000 < summary["points"] < 14400 == summary["shipped_points"]
    assert summary["mean_reprojection_error_px"] < 1.0
    model = pycolmap.Reconstruction(out / "sparse" / "0")
    assert model.num_points3D() == summary["points"] and model.num_reg_images() == 21
    assert "000.png" not in {image.name for image in model.images.values()}  # test views (hold=8) left out

    # on the surfaces: each point's depth in training view 001 against that view's sharp depth map
    image = next(im for im in model.images.values() if im.name == "001.png")
    fx, fy, cx, cy = model.cameras[image.camera_id].params
    xyz = np.array([p.xyz for p in model.points3D.values()])
    T = image.cam_from_world().matrix()
    cam = xyz @ T[:, :3].T + T[:, 3]
    u, v = cam[:, 0] / cam[:, 2] * fx + cx, cam[:, 1] / cam[:, 2] * fy + cy
    inside = (cam[:, 2] > 0) & (u >= 0) & (u < 400) & (v >= 0) & (v < 300)
    depth = np.load(scene / "depth" / "001.npy")[v[inside].astype(int), u[inside].astype(int)]
    error = np.abs(cam[inside, 2] - depth) / depth
    assert inside.sum() > 500 and np.median(error) < 0.02 and np.mean(error < 0.02) > 0.5  # the rest: occluded here

    # the dataparser reads the variant's points (sparse/0), not the shipped ones
    outputs = DeblurNerfDataParserConfig(data=out, downscale_factor=1).setup().get_dataparser_outputs("train")
    assert outputs.metadata["points3D_xyz"].shape[0] == summary["points"]
    assert (out / "sparse_pc.ply").is_file() and (out / "images").resolve() == (scene / "images").resolve()
