"""benchmarks/run.py end to end on the demo scene with a handful of steps: results, table, targets
and figure (the GPU mode runs on the CPU in test_gpu_check.py, through benchmarks/gpu_check.sh)."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run as bench  # noqa: E402


@pytest.mark.slow
def test_benchmark_command_writes_results_table_and_figure(demo_scene: Path, tmp_path: Path) -> None:
    size = "cpu"
    out = tmp_path / size
    bench.main([str(demo_scene), "--size", size, "--steps", "20", "--out", str(out)])
    saved = json.loads((out / "results.json").read_text())
    results = {r["variant"]: r for r in saved["results"]}
    assert list(results) == ["baseline", "cocogaussian", "upper_bound", "known_lens"]  # the demo has depth/: the true CoC
    assert saved["meta"]["steps"] == 20 and saved["meta"]["size"] == size
    machine = saved["meta"]["machine"]  # the machine's speed beside its s/step
    assert saved["meta"]["cpu_matmul_gflops"] > 0 and f"{saved['meta']['cpu_matmul_gflops']:.0f} GFLOP/s" in machine
    for r in results.values():
        assert 5 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 and r["fps_sharp"] > 0
        assert 0 < r["s_per_step_steady"] and r["s_per_step"] > 0
        assert r["sharpness_background"] > 0
        # the demo's test photos are sharp everywhere: (almost) no pixel stands out from the median
        assert 0 <= r["photo_in_focus_share"] < 0.05
        assert ("psnr_photo_in_focus" in r) == (r["photo_in_focus_share"] > 0)
    coc = results["cocogaussian"]
    assert coc["fps_defocus_preview"] > 0
    # the breakdown: the CoC parts cost something for CoCoGaussian and nothing for the baseline
    parts = coc["step_breakdown"]
    assert parts["h_theta"] > 0 and parts["blend_cnn"] > 0 and parts["rasterization"] > 0 and parts["backward"] > 0
    assert results["baseline"]["step_breakdown"]["h_theta"] == 0 == results["baseline"]["step_breakdown"]["blend_cnn"]
    assert parts["rasterization"] > 2 * results["baseline"]["step_breakdown"]["rasterization"]  # M+1 = 5 renders
    assert len(coc["initial_focus"]) == len(coc["learned_focus"]) == len(coc["true_focus"]) == 21
    # h_θ's relative K per training view (a collapsed aperture shows as ~0); none without CoC
    assert len(coc["aperture_relative_per_view"]) == 21 and coc["aperture_relative_median"] > 0
    assert "aperture_relative_median" not in results["baseline"]
    table = (out / "results.md").read_text()
    assert "| cocogaussian |" in table and "PSNR gain over the baseline ≥ +3 dB" in table
    assert "defocus preview ≥ 30 fps" not in table  # a GPU target
    assert "PSNR ≥ the known-lens reference − 0.2 dB" in table and "| known_lens |" in table
    # where the error lives: every demo plane has training photos focused on it, so most test pixels
    # are a surface some photo shows within 1 px; the bins cover every pixel once
    bins = coc["psnr_by_best_coc"]
    assert sum(b["share"] for b in bins.values()) == pytest.approx(1.0) and bins["<1px"]["share"] > 0.5
    assert "Where the error lives" in table
    # three rows: test view (GT + 4 variants), training view (photo + 4 + twin), focus sweep (5
    # frames), 96×72 tiles enlarged 3× (to at least 150 px high)
    fig = Image.open(out / "figure.png")
    assert fig.size == (3 * 6 * 96, 3 * 3 * 72)


def _quarter_sharp_photo(scene: Path) -> Path:
    """scene/images/a.png, 80×60: a 1-px checkerboard (in focus: gradient energy 2 per pixel) in the
    top-left 40×30 quarter, elsewhere a smooth ramp (blurred: energy ~(0.4 / 80)² per pixel)."""
    import numpy as np

    photo = np.tile(np.linspace(0.3, 0.7, 80, dtype=np.float32), (60, 1))
    yy, xx = np.mgrid[:30, :40]
    photo[:30, :40] = ((yy + xx) % 2).astype(np.float32)
    (scene / "images").mkdir(parents=True)
    Image.fromarray((photo * 255).round().astype(np.uint8)).save(scene / "images" / "a.png")
    return scene / "images" / "a.png"


def test_photo_detail_mask_finds_the_in_focus_part_of_a_photo(tmp_path: Path) -> None:
    # the quarter-sharp photo read at 20×15 (4×4 pixels per cell)
    import numpy as np

    _quarter_sharp_photo(tmp_path)
    (tmp_path / "images_4").mkdir()
    Image.fromarray(np.zeros((15, 20), np.uint8)).save(tmp_path / "images_4" / "a.png")
    assert bench.largest_photo(tmp_path, "a.png") == tmp_path / "images" / "a.png"  # the full-size one
    assert bench.largest_photo(tmp_path, "b.png") is None
    mask = bench.photo_detail_mask(tmp_path / "images" / "a.png", (15, 20))
    assert mask.shape == (15, 20)
    assert mask[:7, :10].all() and not mask[8:].any() and not mask[:, 11:].any()


def test_psnr_where_the_photo_is_in_focus_counts_only_those_pixels(tmp_path: Path) -> None:
    # the quarter-sharp photo read at 15×20; the render is off by 0.1 on the in-focus quarter and the
    # row and column of pixels whose footprints straddle its edge (PSNR 20 dB there), by 1.0
    # elsewhere (whole image: ~2 dB)
    from types import SimpleNamespace

    import torch

    photo = _quarter_sharp_photo(tmp_path)
    gt = torch.zeros(15, 20, 3)
    render = torch.ones(15, 20, 3)
    render[:9, :11] = 0.1

    class Cameras:
        def __getitem__(self, index: slice) -> "Cameras":
            return self

        def to(self, device: torch.device) -> "Cameras":
            return self

    class Dataset:  # one test view; its image is a downscaled copy elsewhere, as in the cache
        image_filenames = [tmp_path / "cache" / "a.png"]
        cameras = Cameras()

        def __len__(self) -> int:
            return 1

        def get_image_float32(self, index: int) -> torch.Tensor:
            return gt

    model = SimpleNamespace(device=torch.device("cpu"), get_outputs_for_camera=lambda camera: {"rgb": render})
    pipeline = SimpleNamespace(model=model, datamanager=SimpleNamespace(eval_dataset=Dataset()))
    result = bench.psnr_where_photo_in_focus(pipeline, tmp_path)
    assert result is not None
    mask = bench.photo_detail_mask(photo, (15, 20))
    assert mask[:7, :10].all() and not mask[9:].any() and not mask[:, 11:].any()
    assert result["photo_in_focus_share"] == pytest.approx(float(mask.float().mean()))
    assert result["psnr_photo_in_focus"] == pytest.approx(20.0, abs=1e-4)
    assert bench.psnr_where_photo_in_focus(pipeline, tmp_path / "elsewhere") is None  # no photo: no number


def test_gpu_mode_schedule(tmp_path: Path) -> None:
    """--size gpu: full resolution from the first step (Splatfacto's schedule would train a
    3000-step run at 1/4 resolution throughout), CoC from steps/20 with the networks' decay from
    there, densification until half-way."""
    cfg = bench.trainer_config("cocogaussian", tmp_path, tmp_path, "gpu", 3000, None, 42)
    model = cfg.pipeline.model
    assert model.num_downscales == 0 and model.coc_start_step == 150 and model.stop_split_at == 1500
    assert all(cfg.optimizers[g]["scheduler"].warmup_steps == 150 for g in ("coc_mlp", "blend_cnn", "focus"))
    assert cfg.max_num_iterations == 3000 and cfg.pipeline.datamanager.dataparser.data == tmp_path
    # --set coc_start_step moves the networks' schedules with it, in both sizes; other variants keep theirs
    for size in ("gpu", "cpu"):
        moved = bench.trainer_config("cocogaussian", tmp_path, tmp_path, size, 3000, None, 42, {"coc_start_step": 300})
        assert moved.pipeline.model.coc_start_step == 300 and moved.optimizers["focus"]["scheduler"].warmup_steps == 300
    base = bench.trainer_config("baseline", tmp_path, tmp_path, "cpu", 600, None, 42, {"coc_start_step": 300})
    assert base.pipeline.model.coc_start_step == 0 and not base.pipeline.model.coc_enabled


def test_several_seeds_are_summarised_by_mean_and_spread() -> None:
    def run(variant: str, seed: int, psnr: float) -> dict:
        return {"variant": variant, "seed": seed, "psnr": psnr, "ssim": 0.9, "s_per_step": 0.2, "s_per_step_steady": 0.1,
                "gaussians": 1000, "fps_sharp": 10.0}  # fmt: skip

    results = [run("baseline", 1, 20.0), run("cocogaussian", 1, 24.0), run("baseline", 2, 22.0), run("cocogaussian", 2, 25.0)]
    summary = bench.by_variant(results)
    assert summary["cocogaussian"]["psnr"] == 24.5 and summary["cocogaussian"]["psnr_std"] == 0.5
    assert summary["baseline"]["psnr_min"] == 20.0 and summary["baseline"]["seeds"] == [1, 2]
    meta = {"scene": "s", "size": "cpu", "steps": 10, "date": "d", "machine": "m", "commit": "c", "settings": {"sharp_loss_weight": 1.0}}
    table = bench.markdown(results, meta)
    assert "seeds 1, 2" in table and "sharp_loss_weight=1.0" in table
    assert "| cocogaussian | 24.50 ± 0.50 (24.00–25.00) |" in table
    assert "| PSNR not below the baseline | +3.50 dB | yes |" in table  # targets on the means


def test_model_settings_from_the_command_line() -> None:
    assert bench.parse_settings(["coc_start_step=20", "opacity-reset=True", "coc_form=sensor"]) == {
        "coc_start_step": 20, "opacity_reset": True, "coc_form": "sensor"}  # fmt: skip
    with pytest.raises(SystemExit, match="no_such_setting"):
        bench.parse_settings(["no_such_setting=1"])


def test_steady_step_time_is_the_median_of_the_last_quarter() -> None:
    """The median step of the last quarter: the slow first steps (5 s) do not count."""
    durations = [5.0] * 21 + [1.0, 0.2, 1.0, 0.2, 1.0, 0.2, 1.0]  # 28 steps: the last quarter is the last 7
    ends = list(itertools.accumulate(durations))
    assert bench.steady_step_time(ends, 0.0) == pytest.approx(1.0)
    assert bench.steady_step_time(ends[:-1], 0.0) == pytest.approx(0.6)  # 27 steps: the last 6, median (1 + 0.2) / 2
