"""``cocogs-process``: poses and points from real defocused photos (drinks), then training,
evaluation and the export with its depth-of-field JSON."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import console_script, similarity_residuals, trainer_config

pycolmap = pytest.importorskip("pycolmap")

from cocogs_nerfstudio.dataparser import load_poses_bounds  # noqa: E402
from cocogs_nerfstudio.process import ProcessError, process  # noqa: E402

SHRINK = 4  # drinks images_4 (1560×1040) → 390×260


@pytest.fixture(scope="module")
def drinks_photos(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = shared_data / "real_defocus_drinks" / "images_4"
    out = tmp_path_factory.mktemp("drinks_photos")
    for p in sorted(src.glob("*.png")):
        with Image.open(p) as im:
            im.reduce(SHRINK).convert("RGB").save(out / (p.stem + ".jpg"), quality=95)
    return out


@pytest.fixture(scope="module")
def processed(drinks_photos: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("drinks_scene")
    report = process(drinks_photos, out, max_image_size=400, threads=2, log=lambda *_: None)
    return out, report


@pytest.mark.slow
def test_drinks_photos_register_close_to_the_shipped_poses(processed, shared_data: Path) -> None:
    out, report = processed
    assert report.photos == 32 and report.registered >= 28, report.unregistered
    assert report.points > 500 and report.mean_reprojection_error_px < 1.5
    assert report.camera["cameras"] == 1 and report.camera["model"] == "PINHOLE"
    near, far = report.depth_range
    assert 0 < near < far
    transforms = json.loads((out / "transforms.json").read_text())
    assert len(transforms["frames"]) == report.registered
    assert all(0 < f["depth_near"] < f["depth_far"] for f in transforms["frames"])
    for sub in ("images", "images_2", "images_4", "images_8"):
        assert len(list((out / sub).iterdir())) == report.registered, sub

    # recovered camera centres against poses_bounds.npy after a similarity alignment
    c2w, _, _ = load_poses_bounds(shared_data / "real_defocus_drinks" / "poses_bounds.npy")
    names = sorted(p.name for p in (shared_data / "real_defocus_drinks" / "images_4").glob("*.png"))
    shipped = {Path(n).stem: c2w[i, :, 3] for i, n in enumerate(names)}
    ours = {Path(f["file_path"]).stem: np.array(f["transform_matrix"])[:3, 3] for f in transforms["frames"]}
    keys = sorted(ours)
    residual, _ = similarity_residuals([ours[k] for k in keys], [shipped[k] for k in keys])
    target = np.array([shipped[k] for k in keys])
    spread = np.sqrt(((target - target.mean(0)) ** 2).sum(1).mean())
    rms = np.sqrt((residual**2).sum(1).mean()) / spread
    print(f"camera centres: RMS error {rms:.1%} of the camera spread after a similarity alignment")
    assert rms < 0.15


@pytest.mark.slow
def test_processed_scene_trains_evaluates_and_exports(processed, tmp_path: Path) -> None:
    from cocogs_nerfstudio.runs import seeded_trainer

    out, report = processed
    cfg = trainer_config(out, tmp_path, steps=30, name="drinks", coc_start_step=10)
    # train on images_4 (97×65), which cocogs-process wrote: the road is what is tested, not the
    # quality, and at full size (390×260) the 30 steps took ~5 of the test command's minutes
    cfg.pipeline.datamanager.dataparser.downscale_factor = 4
    trainer = seeded_trainer(cfg)
    trainer.train()
    model = trainer.pipeline.model
    parsed = trainer.pipeline.datamanager.train_dataparser_outputs  # what the trainer read: images_4
    assert parsed.image_filenames[0].parent.name == "images_4"
    assert int(parsed.cameras.width[0]) == report.camera["width"] // 4
    with Image.open(parsed.image_filenames[0]) as im:  # nerfstudio refuses a size that differs
        assert im.size == (int(parsed.cameras.width[0]), int(parsed.cameras.height[0]))
    for f in (2, 4, 8):
        with Image.open(out / f"images_{f}" / parsed.image_filenames[0].name) as im:
            assert im.size == (report.camera["width"] // f, report.camera["height"] // f)
    scale = parsed.dataparser_scale
    assert parsed.metadata["depth_range"] == pytest.approx([v * scale for v in report.depth_range])
    assert model.num_points >= report.points  # every SfM point became a Gaussian (then densified)
    assert len(parsed.metadata["points3D_xyz"]) > report.points  # and background points were added
    config = tmp_path / "test" / "cocogaussian-small" / "drinks" / "config.yml"
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1"}
    res = subprocess.run([console_script("ns-eval"), "--load-config", str(config), "--output-path", str(tmp_path / "eval.json")],
                         capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())["results"]["psnr"] > 10

    export = tmp_path / "export"
    res = subprocess.run([console_script("cocogs-export"), "--load-config", str(config), "--output-dir", str(export)],
                         capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    header = (export / "splat.ply").read_bytes()[:400].decode("latin-1")
    assert f"element vertex {model.num_points}" in header
    dof = json.loads((export / "depth_of_field.json").read_text())
    assert dof["coc_form"] == "world" and dof["ply"] == "splat.ply"
    train_names = [p.name for p in trainer.pipeline.datamanager.train_dataset.image_filenames]
    assert [p["image"] for p in dof["photos"]] == train_names
    focus = [float(model.lens.focus_distance(i)) for i in range(len(train_names))]
    assert [p["focus_distance"] for p in dof["photos"]] == pytest.approx(focus, rel=1e-5)
    assert all(p["aperture_K_p10_p90"][0] <= p["aperture_K_median"] <= p["aperture_K_p10_p90"][1] for p in dof["photos"])
    scale = dof["dataparser_scale"]
    assert dof["photos"][0]["focus_distance_input_units"] == pytest.approx(focus[0] / scale, rel=1e-5)


def test_too_few_photos_and_unreadable_photo_are_named(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 48), (i * 100, 0, 0)).save(photos / f"p{i}.jpg")
    with pytest.raises(ProcessError, match=r"photos.*2 photos.*at least 3"):
        process(photos, tmp_path / "out")
    (photos / "p2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ProcessError, match=r"p2\.jpg: not a readable image"):
        process(photos, tmp_path / "out")


def _photos(folder: Path, sizes=((64, 48),) * 3) -> dict:
    """Small photos in ``folder``; their bytes by name."""
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i * 60, 20, 0)).save(folder / f"p{i}.jpg")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_photos_inside_the_output_folder_are_refused_and_untouched(tmp_path: Path) -> None:
    """``cocogs-process scene/images scene``: the output's images/ would replace the photos."""
    scene = tmp_path / "scene"
    before = _photos(scene / "images")
    for photos, out in ((scene / "images", scene), (scene, scene), (scene / "images", scene / "images" / "out")):
        with pytest.raises(ProcessError, match="inside|output folder"):
            process(photos, out)
    assert _tree(scene) == {f"images/{name}": data for name, data in before.items()}


def test_a_folder_that_is_not_empty_is_refused_unless_overwrite(tmp_path: Path) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    _photos(photos)
    (out / "images").mkdir(parents=True)
    (out / "images" / "my_important_photo.jpg").write_bytes(b"precious")
    (out / "transforms.json").write_text("{}")
    before = _tree(out)
    with pytest.raises(ProcessError, match=r"out: not empty; .*--overwrite"):
        process(photos, out)
    assert _tree(out) == before


def test_a_failed_run_leaves_the_output_folder_as_it_was(tmp_path: Path) -> None:
    """Photos of two sizes fail after they were copied: nothing of the run is left, beside OUT either."""
    photos = tmp_path / "photos"
    _photos(photos, ((64, 48), (64, 48), (48, 64)))
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with pytest.raises(ProcessError, match="different sizes"):
            process(photos, out, log=lambda *_: None)
        assert (out.name == "empty") == out.exists() and (not out.exists() or not any(out.iterdir()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "photos"]


def test_a_truncated_photo_is_named_unreadable(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _photos(photos, ((160, 120),) * 3)
    data = (photos / "p1.jpg").read_bytes()
    (photos / "p1.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProcessError, match=r"p1\.jpg: not a readable image"):
        process(photos, tmp_path / "out")


@pytest.mark.slow
def test_overwrite_replaces_what_the_command_wrote_and_nothing_else(processed, drinks_photos: Path, tmp_path: Path) -> None:
    out, _ = processed
    copy = tmp_path / "scene"
    import shutil

    shutil.copytree(out, copy)
    (copy / "notes.txt").write_text("mine")
    (copy / "images_8" / "stale.jpg").write_bytes(b"from an earlier run")
    report = process(drinks_photos, copy, max_image_size=400, threads=2, log=lambda *_: None, overwrite=True)
    assert (copy / "notes.txt").read_text() == "mine"
    assert not (copy / "images_8" / "stale.jpg").exists()
    assert len(list((copy / "images_8").iterdir())) == report.registered
    assert json.loads((copy / "process_report.json").read_text())["registered"] == report.registered
    assert not list(tmp_path.glob(".scene.cocogs-process-*"))


def test_photos_that_do_not_register_give_a_clear_error(tmp_path: Path) -> None:
    photos = tmp_path / "noise"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photos / f"n{i}.png")
    with pytest.raises(ProcessError, match=r"(no two photos could be matched|registered)"):
        process(photos, tmp_path / "out", log=lambda *_: None)


def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([console_script("cocogs-process"), str(tmp_path / "missing"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: not a folder of photos"]


def test_photos_are_copied_upright_and_untouched_when_already_upright(tmp_path: Path) -> None:
    from cocogs_nerfstudio.process import ORIENTATION_TAG, copy_photos

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (60, 40), (200, 10, 10)).save(src / "upright.jpg", quality=80)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # the camera was held rotated: show it turned 90° clockwise
    Image.new("RGB", (60, 40), (10, 200, 10)).save(src / "rotated.jpg", exif=exif)
    sizes = copy_photos(sorted(src.iterdir()), tmp_path / "out")
    assert (tmp_path / "out" / "upright.jpg").read_bytes() == (src / "upright.jpg").read_bytes()
    assert sizes == {"rotated.jpg": (40, 60), "upright.jpg": (60, 40)}
    with Image.open(tmp_path / "out" / "rotated.jpg") as im:
        assert im.size == (40, 60)
