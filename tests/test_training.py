"""End to end on CPU: registration, a short training run, ns-eval's metrics, offline LPIPS."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
from pathlib import Path

import pytest
import torch

from helpers import console_script, make_trainer


def test_methods_and_dataparser_are_registered() -> None:
    from nerfstudio.configs.method_configs import all_descriptions, all_methods
    from nerfstudio.configs.dataparser_configs import all_dataparsers

    assert "cocogaussian" in all_methods and "cocogaussian-small" in all_methods
    assert "CoCoGaussian" in all_descriptions["cocogaussian"]
    cfg = all_methods["cocogaussian"]
    assert cfg.method_name == "cocogaussian"
    assert cfg.pipeline.model.coc_enabled and cfg.pipeline.model.num_coc_sets == 4
    assert cfg.pipeline.model.ssim_lambda == 0.3
    assert {"coc_mlp", "blend_cnn", "focus"} <= set(cfg.optimizers)
    assert "deblur-nerf-data" in all_dataparsers
    if not torch.cuda.is_available():
        assert cfg.machine.device_type == "cpu"


def test_ns_train_help_shows_the_method_options() -> None:
    """``ns-train cocogaussian --help`` finds the method through its entry point (the method list
    itself: test_methods_and_dataparser_are_registered; one command start-up is ~20 s)."""
    env = {**os.environ, "COLUMNS": "200"}
    command = [console_script("ns-train"), "cocogaussian", "--help"]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "coc-start-step" in out.stdout and "aperture-prior-weight" in out.stdout


def test_short_training_lowers_the_loss_and_ns_eval_writes_metrics(demo_scene: Path, tmp_path: Path) -> None:
    trainer = make_trainer(demo_scene, tmp_path, steps=60, name="short", coc_start_step=20)
    model = trainer.pipeline.model
    model.train()
    losses = []
    original = trainer.pipeline.get_train_loss_dict

    def record(step: int):
        out = original(step=step)
        losses.append(float(out[1]["main_loss"]))  # the photometric loss; the sharp-render loss joins at the CoC start
        return out

    trainer.pipeline.get_train_loss_dict = record  # type: ignore[method-assign]
    trainer.train()
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)

    config = tmp_path / "test" / "cocogaussian-small" / "short" / "config.yml"
    assert config.exists() and any((config.parent / "nerfstudio_models").glob("step-*.ckpt"))
    out_json = tmp_path / "eval.json"
    res = subprocess.run(
        [console_script("ns-eval"), "--load-config", str(config), "--output-path", str(out_json)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TORCHDYNAMO_DISABLE": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out_json.read_text())["results"]
    assert {"psnr", "ssim", "lpips"} <= set(results)
    assert 10 < results["psnr"] < 60 and 0 < results["ssim"] <= 1 and 0 <= results["lpips"] < 1

    # ns-eval of the checkpoint gives the numbers of the model at the end of training
    trainer.pipeline.eval()
    in_process = trainer.pipeline.get_average_eval_image_metrics()
    assert results["psnr"] == pytest.approx(in_process["psnr"], abs=1e-3)
    assert results["lpips"] == pytest.approx(in_process["lpips"], abs=1e-4)


def test_lpips_without_weights_or_network_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from cocogs_nerfstudio import lpips_offline

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    lpips = lpips_offline.make_lpips()
    assert not lpips.available and torch.isnan(lpips(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)))
    out = capsys.readouterr().out.strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1
    assert "alexnet-owt-7be5be79.pth" in out and "TORCH_HOME" in out


def test_lpips_with_offline_weights() -> None:
    from cocogs_nerfstudio.lpips_offline import alexnet_weights_path, make_lpips

    if not alexnet_weights_path().exists():
        pytest.skip("TORCH_HOME has no AlexNet weights")
    lpips = make_lpips()
    assert lpips.available
    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    assert float(lpips(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(lpips(a, b)) > 0.05


def test_demo_scene_geometry_and_ground_truth(demo_scene: Path) -> None:
    meta = json.loads((demo_scene / "transforms.json").read_text())
    frames = meta["frames"]
    assert len(frames) == 25 and len(meta["test_filenames"]) == 4
    test = [f for f in frames if f["is_test"]]
    assert [f["file_path"] for f in test] == [f"images/{i:03d}.png" for i in (0, 8, 16, 24)]
    train = [f for f in frames if not f["is_test"]]
    assert {f["focus_distance"] for f in train} == {2.0, 3.5, 6.0}
    assert all(f["aperture_diameter"] > 0 and (demo_scene / f["sharp_file_path"]).exists() for f in train)
    assert (demo_scene / "sparse_pc.ply").exists()


def test_demo_scene_thin_lens_blur_matches_the_formula() -> None:
    """A sharp edge seen through the thin lens spreads over f·D·|1/z − 1/d_F| pixels."""
    import numpy as np

    from cocogs_nerfstudio.demo_scene import Plane, render_thin_lens

    # one black/white half-plane edge at x = 0, depth 4; focus at 2: blur diameter f·D·|1/4 − 1/2|
    edge = Plane(-4.0, (50.0, 0.0), (50.0, 50.0), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1e3, 1e9, 0.0)
    f, d = 100.0, 0.16
    img = render_thin_lens(np.zeros(3), 64, 8, f, d, 2.0, 512, seed=0, planes=(edge,))[4, :, 0]
    img = img / img.max()  # the texture's flat value is not 1
    expected = f * d * abs(1 / 4 - 1 / 2)  # 4 px
    ramp = np.nonzero((img > 0.02) & (img < 0.98))[0]
    assert abs(len(ramp) - expected) <= 1.5, (img.round(2), expected)
    assert img[32 - 4] < 0.02 and img[32 + 4] > 0.98


def test_floor_layout_depth_and_focus_pattern(tmp_path: Path) -> None:
    """The second demo layout: a receding floor (depth continuous down the image) and a focus per photo."""
    import numpy as np

    from cocogs_nerfstudio.demo_scene import FLOOR_FOCUS_RANGE, FLOOR_PLANES, make_demo_scene, trace

    # rays from a camera at the origin, straight ahead and tilted down by a: the floor (y = -0.55)
    # is met at depth 0.55 / a, nearer for steeper rays; straight ahead, the wall at 9
    dirs = np.array([[0.0, -a, -1.0] for a in (0.1, 0.2, 0.4)] + [[0.0, 0.0, -1.0]])
    _, t = trace(np.zeros_like(dirs), dirs, FLOOR_PLANES)
    assert np.allclose(t, [5.5, 2.75, 1.375, 9.0])

    meta = json.loads((make_demo_scene(tmp_path, 24, 18, 0.15, 4, layout="floor")).read_text())
    train = [f for f in meta["frames"] if not f["is_test"]]
    focus = [f["focus_distance"] for f in train]
    assert len(train) == 21 and len(set(focus)) == 21  # no cycle: every photo its own focus
    assert min(focus) >= FLOOR_FOCUS_RANGE[0] and max(focus) <= FLOOR_FOCUS_RANGE[1]
    assert max(focus) / min(focus) > 3  # near and far photos
    assert all(f["aperture_diameter"] == 0.15 for f in train) and meta["layout"] == "floor"
