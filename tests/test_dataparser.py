"""The Deblur-NeRF / LLFF dataparser on the real and rendered scenes, and its errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cocogs_nerfstudio.dataparser import DataInputError, DeblurNerfDataParserConfig, downscaled_copy


def _parse(data: Path, split: str = "train", **kw):
    return DeblurNerfDataParserConfig(data=data, **kw).setup().get_dataparser_outputs(split)


def test_fern_split_intrinsics_cameras_points(shared_data: Path) -> None:
    fern = shared_data / "llff_fern"
    train, test = _parse(fern, "train"), _parse(fern, "test")
    assert len(train.image_filenames) == 17 and len(test.image_filenames) == 3
    names = sorted(p.name for p in (fern / "images_8").iterdir())
    assert [p.name for p in test.image_filenames] == [names[0], names[8], names[16]]
    cams = train.cameras
    assert int(cams.width[0]) == 504 and int(cams.height[0]) == 378
    raw = np.load(fern / "poses_bounds.npy")
    h, w, f = raw[0, :15].reshape(3, 5)[:, 4]
    assert float(cams.fx[0]) == pytest.approx(f * 504 / w, rel=1e-5)
    assert float(cams.fy[0]) == pytest.approx(f * 378 / h, rel=1e-5)
    # camera centres: the dataparser's transform applied to poses_bounds' translations
    centres = torch.from_numpy(raw[:, :15].reshape(-1, 3, 5)[:, :, 3]).float()
    homog = torch.cat([centres, torch.ones(len(centres), 1)], 1) @ train.dataparser_transform.T
    all_idx = [i for i in range(20) if i % 8 != 0]
    assert torch.allclose(cams.camera_to_worlds[:, :3, 3], homog[all_idx] * train.dataparser_scale, atol=1e-5)
    # SfM points project inside the images (most of them, in front of the camera)
    pts = train.metadata["points3D_xyz"]
    assert pts.shape[0] > 1000 and train.metadata["points3D_rgb"].dtype == torch.uint8
    c2w = cams.camera_to_worlds[0]
    local = (pts - c2w[:3, 3]) @ c2w[:3, :3]  # OpenGL camera axes: looking down -z
    z = -local[:, 2]
    u = float(cams.fx[0]) * local[:, 0] / z + float(cams.cx[0])
    v = -float(cams.fy[0]) * local[:, 1] / z + float(cams.cy[0])
    inside = (z > 0) & (u >= 0) & (u < 504) & (v >= 0) & (v < 378)
    assert inside.float().mean() > 0.8


def test_drinks_images_4(shared_data: Path) -> None:
    drinks = shared_data / "real_defocus_drinks"
    train = _parse(drinks, "train", downscale_factor=4, background_points=0)
    test = _parse(drinks, "test", downscale_factor=4)
    assert len(train.image_filenames) + len(test.image_filenames) == 32
    assert int(train.cameras.width[0]) == 1560 and int(train.cameras.height[0]) == 1040
    assert train.metadata["points3D_xyz"].shape == (3002, 3)


def test_rendered_scene_reads_the_same_through_both_routes(shared_data: Path, tmp_path: Path) -> None:
    scene = shared_data / "synthetic_defocus_dev"
    llff_train, llff_test = _parse(scene, "train"), _parse(scene, "test")
    # the same folder without poses_bounds.npy is read as nerfstudio data (transforms.json)
    ns_scene = tmp_path / "ns"
    ns_scene.mkdir()
    for p in scene.iterdir():
        if p.name != "poses_bounds.npy":
            (ns_scene / p.name).symlink_to(p)
    ns_train, ns_test = _parse(ns_scene, "train"), _parse(ns_scene, "test")
    assert [p.name for p in llff_train.image_filenames] == [p.name for p in ns_train.image_filenames]
    assert [p.name for p in llff_test.image_filenames] == ["000.png", "008.png", "016.png"]
    assert [p.name for p in ns_test.image_filenames] == ["000.png", "008.png", "016.png"]
    for a, b in ((llff_train.cameras, ns_train.cameras),):
        assert torch.allclose(a.fx, b.fx, rtol=1e-4) and torch.equal(a.width, b.width)
        # same camera rig up to a rigid motion and scale: compare normalised pairwise distances
        da = torch.cdist(a.camera_to_worlds[:, :3, 3], a.camera_to_worlds[:, :3, 3])
        db = torch.cdist(b.camera_to_worlds[:, :3, 3], b.camera_to_worlds[:, :3, 3])
        assert torch.allclose(da / da.max(), db / db.max(), atol=1e-4)
    assert llff_train.metadata["points3D_xyz"].shape[0] > 0 and ns_train.metadata["points3D_xyz"].shape[0] > 0


def _copy_fern(shared_data: Path, dst: Path) -> Path:
    shutil.copytree(shared_data / "llff_fern", dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    dst.chmod(0o755)
    return dst


def test_missing_poses_bounds(shared_data: Path, tmp_path: Path) -> None:
    scene = _copy_fern(shared_data, tmp_path / "fern")
    (scene / "poses_bounds.npy").unlink()
    with pytest.raises(DataInputError, match=r"poses_bounds\.npy: missing"):
        _parse(scene)


def test_image_count_not_matching_poses(shared_data: Path, tmp_path: Path) -> None:
    scene = _copy_fern(shared_data, tmp_path / "fern")
    sorted((scene / "images_8").iterdir())[-1].unlink()
    with pytest.raises(DataInputError, match=r"poses_bounds\.npy: 20 poses but 19 images in .*images_8"):
        _parse(scene)


def test_missing_image_folder(shared_data: Path, tmp_path: Path) -> None:
    scene = _copy_fern(shared_data, tmp_path / "fern")
    with pytest.raises(DataInputError, match=r"images_4: image folder not found \(available: images_8\)"):
        _parse(scene, downscale_factor=4)


def test_unreadable_image(shared_data: Path, tmp_path: Path) -> None:
    scene = _copy_fern(shared_data, tmp_path / "fern")
    bad = sorted((scene / "images_8").iterdir())[3]
    bad.write_bytes(b"not a png")
    with pytest.raises(DataInputError, match=rf"{bad.name}: unreadable image"):
        _parse(scene)


def test_error_is_one_line_on_the_command_line(shared_data: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    scene = _copy_fern(shared_data, tmp_path / "fern")
    (scene / "poses_bounds.npy").unlink()
    code = (
        "from pathlib import Path; from cocogs_nerfstudio.dataparser import DeblurNerfDataParserConfig as C; "
        f"C(data=Path({str(scene)!r})).setup().get_dataparser_outputs('train')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warnings.warn" not in ln]
    assert lines == [f"error: {scene / 'poses_bounds.npy'}: missing (the LLFF layout needs poses_bounds.npy)"]


@pytest.mark.slow
def test_fern_low_resolution_baseline_training_is_sane(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain 3DGS (CoC off) on fern at 126×94 (images_8 shrunk ×4 into the cache by
    ``--make-downscaled``) through ``deblur-nerf-data`` reaches a sane PSNR."""
    from helpers import trainer_config

    monkeypatch.setenv("COCOGS_CACHE", str(tmp_path / "cache"))
    cfg = trainer_config(shared_data / "llff_fern", tmp_path / "out", steps=300, name="fern", coc_enabled=False)
    cfg.pipeline.datamanager.dataparser.downscale_factor = 32
    cfg.pipeline.datamanager.dataparser.make_downscaled = True
    torch.manual_seed(0)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    cams = trainer.pipeline.datamanager.train_dataset.cameras
    assert (int(cams.width[0]), int(cams.height[0])) == (126, 94)
    assert all(p.is_relative_to(tmp_path / "cache") for p in trainer.pipeline.datamanager.train_dataset.image_filenames)
    trainer.train()
    trainer.pipeline.eval()
    metrics = trainer.pipeline.get_average_eval_image_metrics()
    assert len(trainer.pipeline.datamanager.eval_dataset) == 3
    assert metrics["psnr"] > 17.0, metrics  # plain 3DGS at this size and step count: ~20 dB


def test_make_downscaled_shrinks_into_a_cache(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCOGS_CACHE", str(tmp_path / "cache"))
    scene = shared_data / "synthetic_defocus_dev"
    with pytest.raises(DataInputError, match="images_4: image folder not found"):
        _parse(scene, downscale_factor=4)
    train = _parse(scene, downscale_factor=4, make_downscaled=True)
    upper = _parse(scene, downscale_factor=4, make_downscaled=True, sharp_train_images=True)
    assert int(train.cameras.width[0]) == 100 and int(train.cameras.height[0]) == 75
    assert float(train.cameras.fx[0]) == pytest.approx(388.8889 / 4, rel=1e-4)
    assert all(p.is_relative_to(tmp_path / "cache") for p in train.image_filenames + upper.image_filenames)
    assert [p.parent.name for p in upper.image_filenames[:1]] == ["sharp_train"]
    from PIL import Image

    assert Image.open(upper.image_filenames[0]).size == (100, 75)


def test_downscaled_copy_appears_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs sharing the cache (benchmarks side by side) must never read a half-written image:
    the copy is written under another name and renamed into place, leaving no partial file."""
    from PIL import Image

    src = tmp_path / "images" / "000.png"
    src.parent.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(src)
    out = tmp_path / "cache" / "images" / "000.png"
    written: list = []
    save = Image.Image.save

    def spy(self, fp, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        written.append((Path(fp), out.exists()))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", spy)
    assert downscaled_copy(src, 4, tmp_path / "cache") == out
    assert [(p.parent, p.suffix, p != out, seen) for p, seen in written] == [(out.parent, ".png", True, False)]
    assert sorted(p.name for p in out.parent.iterdir()) == ["000.png"]
    with Image.open(out) as im:
        assert im.size == (10, 8) and im.getpixel((5, 4)) == (200, 10, 10)
    assert downscaled_copy(src, 4, tmp_path / "cache") == out and len(written) == 1  # written once


def test_background_points_where_drinks_has_no_sfm_points(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drinks: all SfM points lie on the cans, half of every photo is without any; the option seeds
    points there, behind the cans, and leaves the SfM points and a run without it unchanged."""
    from cocogs_nerfstudio.background_points import empty_cells

    monkeypatch.setenv("COCOGS_CACHE", str(tmp_path / "cache"))
    drinks = shared_data / "real_defocus_drinks"
    plain = _parse(drinks, downscale_factor=48, make_downscaled=True, background_points=0)
    seeded = _parse(drinks, downscale_factor=48, make_downscaled=True)  # the default: 4000
    sfm, both = plain.metadata["points3D_xyz"], seeded.metadata["points3D_xyz"]
    assert len(sfm) == 3002 and torch.equal(both[:3002], sfm)
    added = both[3002:]
    assert 1000 < len(added) < 4000  # 4000 × the empty share of the photos' cells
    cams = plain.cameras
    w, h = int(cams.width[0]), int(cams.height[0])

    def empty_share(points: torch.Tensor) -> float:
        shares = [
            empty_cells(points, cams.camera_to_worlds[i], float(cams.fx[i]), float(cams.fy[i]), float(cams.cx[i]),
                        float(cams.cy[i]), w, h, max(w, h) / 16)[0].float().mean()
            for i in range(len(cams))
        ]
        return float(torch.stack(shares).mean())

    assert empty_share(sfm) > 0.4 and empty_share(both) < 0.1
    dist = lambda p: (p[None] - cams.camera_to_worlds[:, :3, 3][:, None]).norm(dim=-1)  # noqa: E731
    assert dist(added).median() > 1.5 * dist(sfm).max()  # behind the cans
    rgb = seeded.metadata["points3D_rgb"]
    assert rgb.shape == (len(both), 3) and rgb.dtype == torch.uint8 and rgb[3002:].float().std() > 5


def test_photos_covered_by_sfm_points_get_no_background_points(shared_data: Path) -> None:
    """Fern's SfM points cover its photos (8% of the cells empty, frame edges): the default adds none."""
    fern = shared_data / "llff_fern"
    default = _parse(fern)
    plain = _parse(fern, background_points=0)
    assert torch.equal(default.metadata["points3D_xyz"], plain.metadata["points3D_xyz"])
    assert len(_parse(fern, background_min_empty=0.0).metadata["points3D_xyz"]) > len(plain.metadata["points3D_xyz"])


def test_a_pose_that_is_not_finite_is_named(shared_data: Path, tmp_path: Path) -> None:
    scene = _copy_fern(shared_data, tmp_path / "fern")
    arr = np.load(scene / "poses_bounds.npy")
    arr[5, 3] = np.nan
    np.save(scene / "poses_bounds.npy", arr)
    with pytest.raises(DataInputError, match=r"poses_bounds\.npy: row 5 \(pose and bounds of image 5\) is not finite"):
        _parse(scene)


def _copy_demo(demo_scene: Path, dst: Path) -> Path:
    shutil.copytree(demo_scene, dst)
    return dst


def _edit_transforms(scene: Path, edit) -> None:  # noqa: ANN001
    import json

    meta = json.loads((scene / "transforms.json").read_text())
    edit(meta)
    (scene / "transforms.json").write_text(json.dumps(meta))


def test_bad_transforms_json_is_named_with_what_is_wrong(demo_scene: Path, tmp_path: Path) -> None:
    """The nerfstudio layout gets the LLFF layout's checks: readable JSON, finite poses, every image
    there and readable, each the size its camera says."""
    scene = _copy_demo(demo_scene, tmp_path / "scene")
    path = scene / "transforms.json"
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    with pytest.raises(DataInputError, match=rf"{path}: not valid JSON \(.*, line \d+ column \d+\)"):
        _parse(scene)
    path.write_text(good)
    _edit_transforms(scene, lambda m: m["frames"][3]["transform_matrix"][0].__setitem__(3, float("nan")))
    with pytest.raises(DataInputError, match=r"frame 3 \(images/003\.png\): transform_matrix must be a finite 4×4"):
        _parse(scene)
    path.write_text(good)
    (scene / "images" / "004.png").unlink()
    with pytest.raises(DataInputError, match=rf"{scene / 'images' / '004.png'}: missing \(frame 4 of {path}\)"):
        _parse(scene)
    shutil.copy(demo_scene / "images" / "004.png", scene / "images" / "004.png")
    (scene / "images" / "005.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataInputError, match=r"005\.png: unreadable image"):
        _parse(scene)
    shutil.copy(demo_scene / "images" / "005.png", scene / "images" / "005.png")
    from PIL import Image

    with Image.open(scene / "images" / "006.png") as im:
        im.resize((48, 36)).save(scene / "images" / "006.png")
    with pytest.raises(DataInputError, match=rf"006\.png: 48×36 pixels, but {path} gives its camera 96×72"):
        _parse(scene)


def test_make_downscaled_works_for_the_nerfstudio_layout(demo_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transforms.json and images/ only: images_2 is made in the cache, the cameras follow."""
    monkeypatch.setenv("COCOGS_CACHE", str(tmp_path / "cache"))
    full = _parse(demo_scene)
    half = _parse(demo_scene, downscale_factor=2, make_downscaled=True)
    assert all(p.is_relative_to(tmp_path / "cache") and p.parent.name == "images" for p in half.image_filenames)
    from PIL import Image

    with Image.open(half.image_filenames[0]) as im:
        assert im.size == (48, 36)
    assert int(half.cameras.width[0]) == 48 and int(half.cameras.height[0]) == 36
    assert torch.allclose(half.cameras.fx, full.cameras.fx / 2) and torch.allclose(half.cameras.cy, full.cameras.cy / 2)
    assert not (demo_scene / "images_2").exists()  # the scene folder is not written
    with pytest.raises(DataInputError, match="images_2"):  # without make_downscaled: images_2 is named missing
        _parse(demo_scene, downscale_factor=2)
