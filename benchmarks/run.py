"""Quality and speed, side by side: plain 3DGS, CoCoGaussian, (when the scene has sharp_train/)
3DGS trained on the all-in-focus photos, the upper bound, and (when it has depth/ and each photo's
true lens) 3DGS trained through the true CoC, the known-lens reference (known_lens.py). Same steps
and seed for all.

    python benchmarks/run.py SCENE [--size cpu|gpu] [--steps N] [--downscale K] [--out DIR]

(CPU threads: all cores, or ``COCOGS_THREADS``.)

Writes DIR/results.json, DIR/results.md (a markdown table) and DIR/figure.png (one sharp test view:
ground truth, baseline, CoCoGaussian, upper bound; below it CoCoGaussian's focus sweep).
``--size cpu``: cocogaussian-small's schedule on downscaled images (minutes on 2 cores);
``--size gpu``: the full model and resolution on CUDA (reduced step count, stated in the table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from error_by_blur import psnr_by_blur
from known_lens import KnownLensModelConfig, true_cocs
from PIL import Image

from cocogs_nerfstudio.cocogaussian import CoCoGaussianModelConfig
from cocogs_nerfstudio.dataparser import DeblurNerfDataParserConfig
from cocogs_nerfstudio.densification import merge_render_infos
from cocogs_nerfstudio.depth_of_field import depth_of_field_summary
from cocogs_nerfstudio.method_config import make_trainer_config, small_trainer_config
from cocogs_nerfstudio.runs import scripted, seeded_trainer

VARIANTS = ("baseline", "cocogaussian", "upper_bound", "known_lens")


def gpu_model_config(steps: int, coc: bool) -> CoCoGaussianModelConfig:
    """The full model with the official 30k-step schedule compressed to ``steps``: densification
    until half-way (refinement every steps/30 steps, 10 to 100), SH degree raised every steps/30,
    CoC from steps/20 (official: 1500 of 30k), full resolution from the first step (Splatfacto's
    warm-up at 1/4 resolution lasts 6000 steps)."""
    return CoCoGaussianModelConfig(
        coc_enabled=coc,
        num_downscales=0,
        coc_start_step=steps // 20,
        warmup_length=max(1, steps // 60),
        refine_every=max(10, min(100, steps // 30)),  # a 20-step smoke run must not densify every step
        stop_split_at=steps // 2,
        stop_screen_size_at=steps // 8,
        sh_degree_interval=max(1, steps // 30),
        aperture_prior_start_step=steps // 2,
    )


def parse_settings(settings: List[str], defaults: Any = None, flag: str = "--set") -> Dict[str, Any]:
    """``KEY=VALUE`` settings of ``defaults`` (a config; CoCoGaussian's model config for ``--set``),
    each converted to the type of the field's default."""
    defaults = CoCoGaussianModelConfig() if defaults is None else defaults
    parsed: Dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        key = key.replace("-", "_")
        if not sep or not hasattr(defaults, key):
            raise SystemExit(f"{flag} {item}: expected KEY=VALUE with KEY a setting of {type(defaults).__name__}")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            if value not in ("True", "False", "true", "false", "1", "0"):
                raise SystemExit(f"{flag} {item}: {key} is True or False")
            parsed[key] = value in ("True", "true", "1")
        else:
            parsed[key] = type(default)(value) if default is not None else value
    return parsed


def parse_rates(items: List[str]) -> Dict[str, float]:
    """``GROUP=LR`` learning rates (``--lr``) of optimizer groups (focus, coc_mlp, blend_cnn, means…)."""
    rates: Dict[str, float] = {}
    for item in items:
        group, sep, value = item.partition("=")
        try:
            rates[group] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise SystemExit(f"--lr {item}: expected GROUP=LR, e.g. focus=5e-3")
    return rates


def trainer_config(
    variant: str, scene: Path, out: Path, size: str, steps: int, downscale: Optional[int], seed: int,
    settings: Optional[Dict[str, Any]] = None, rates: Optional[Dict[str, float]] = None,
    data_settings: Optional[Dict[str, Any]] = None,
):  # fmt: skip
    """One variant's trainer config; ``settings`` (``--set``) change CoCoGaussian's model only, and
    are applied before the trainer config is built (its network schedules follow coc_start_step);
    ``rates`` (``--lr``) scale CoCoGaussian's learning rate of a group, its schedule with it;
    ``data_settings`` (``--data-set``) change the dataparser of every variant."""
    coc = variant == "cocogaussian"
    settings = settings if coc and settings else {}
    if size == "cpu":
        cfg = small_trainer_config(max_steps=steps, coc_enabled=coc, **settings)
    else:
        model = gpu_model_config(steps, coc)
        for key, value in settings.items():
            setattr(model, key, value)
        cfg = make_trainer_config(max_steps=steps, model=model)
        if not torch.cuda.is_available():  # --allow-cpu: the GPU mode's code paths, on the CPU
            cfg.machine.device_type = "cpu"
    for group, lr in (rates or {}).items() if coc else ():
        if group not in cfg.optimizers:
            raise SystemExit(f"--lr {group}=…: no such optimizer group (one of {', '.join(cfg.optimizers)})")
        optimizer = cfg.optimizers[group]
        factor = lr / optimizer["optimizer"].lr
        optimizer["optimizer"].lr = lr
        schedule = optimizer.get("scheduler")
        if schedule is not None:
            schedule.lr_pre_warmup *= factor
            schedule.lr_final = None if schedule.lr_final is None else schedule.lr_final * factor
    if variant == "known_lens":  # plain 3DGS (CoC off) through the true CoC (known_lens.py)
        model = cfg.pipeline.model
        cfg.pipeline.model = KnownLensModelConfig(**{f.name: getattr(model, f.name) for f in fields(model) if f.init and f.name != "_target"})
    dp = cfg.pipeline.datamanager.dataparser
    dp.data = scene
    dp.downscale_factor = downscale
    dp.make_downscaled = True  # scenes without images_K (the Blender scene) are shrunk into a cache
    dp.sharp_train_images = variant == "upper_bound"
    for key, value in (data_settings or {}).items():
        setattr(dp, key, value)
    return scripted(cfg, scene, out / "runs", scene.name, f"{variant}-seed{seed}", seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(trainer) -> List[float]:
    """Wall-clock end time of every training step (device synchronised), appended as training runs."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    times: List[float] = []
    device = trainer.pipeline.model.device

    def record(step: int) -> None:  # noqa: ARG001
        _sync(device)
        times.append(time.perf_counter())

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], record))
    return times


def steady_step_time(times: List[float], start: float) -> float:
    """Median seconds per step over the last quarter of training: after densification and the
    CoC start, on warm kernels (gsplat's first call may build them: minutes)."""
    durations = np.diff([start] + times)[-max(1, len(times) // 4) :]
    return float(np.median(durations))


def matmul_gflops(seconds: float = 0.5, n: int = 512) -> float:
    """This machine's float32 matmul rate on the CPU, at the benchmark's thread count, as the run
    began: a reference that makes s/step comparable between machines (the same commit ran 2× slower
    on one 2-core machine than on another, 2026-11-28)."""
    a = torch.randn(n, n)
    a @ a  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def render_fps(model, camera, render, repeats: int) -> float:
    """Frames per second of ``render(camera)`` (after one warm-up frame)."""
    render(camera)
    _sync(model.device)
    start = time.perf_counter()
    for _ in range(repeats):
        render(camera)
    _sync(model.device)
    return repeats / (time.perf_counter() - start)


def to_png(img: torch.Tensor) -> np.ndarray:
    return (img.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


def gradient_energy(gray: torch.Tensor) -> torch.Tensor:
    """Squared forward-difference gradient of a [H, W] image → [H - 1, W - 1]."""
    return (gray[1:, :-1] - gray[:-1, :-1]) ** 2 + (gray[:-1, 1:] - gray[:-1, :-1]) ** 2


def sharpness(img: torch.Tensor, mask: Optional[torch.Tensor] = None) -> float:
    """Mean squared image gradient (gradient energy) of a [H, W, 3] image in [0, 1], over the
    pixels where ``mask`` [H, W] is true (all when None)."""
    energy = gradient_energy(img.detach().float().cpu().mean(-1))
    if mask is None:
        return float(energy.mean())
    return float(energy[mask[:-1, :-1].cpu()].mean())


PHOTO_DETAIL_CONTRAST = 10.0


def photo_detail_mask(photo: Path, size: Tuple[int, int], contrast: float = PHOTO_DETAIL_CONTRAST) -> torch.Tensor:
    """[H, W] bool at ``size`` (H, W): the pixels where ``photo`` shows detail at its own resolution,
    i.e. whose footprint's mean gradient energy is at least ``contrast`` × the photo's median one.
    On a defocused test photo these are where it is in focus (the blurred rest has little energy at
    full resolution), so where it is a fair target for a sharp render."""
    with Image.open(photo) as im:
        gray = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
    energy = F.adaptive_avg_pool2d(gradient_energy(gray)[None, None], size)[0, 0]
    return energy >= contrast * energy.median()


def largest_photo(scene: Path, name: str) -> Optional[Path]:
    """The largest stored version of the photo ``name``: ``images/`` first, then ``images_2``, ``_4``..."""
    folders = sorted(scene.glob("images_*"), key=lambda f: int(f.name[7:]) if f.name[7:].isdigit() else 10**9)
    for folder in [scene / "images", *folders]:
        if (folder / name).is_file():
            return folder / name
    return None


def psnr_where_photo_in_focus(pipeline, scene: Path) -> Optional[Dict[str, float]]:
    """PSNR of the sharp renders of all test views over the pixels where their photos show detail
    (:func:`photo_detail_mask`), and the share of such pixels. For scenes whose test photos are
    defocused (no sharp ground truth): PSNR against the whole photo also rewards reproducing its
    blur, this only where the photo is sharp. On sharp test photos few or no pixels stand out (share
    ~0, no PSNR). None when a photo is not found."""
    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    error, count, total = 0.0, 0, 0
    for i in range(len(dataset)):
        photo = largest_photo(scene, dataset.image_filenames[i].name)
        if photo is None:
            return None
        gt = dataset.get_image_float32(i)[..., :3]
        mask = photo_detail_mask(photo, tuple(gt.shape[:2]))
        with torch.no_grad():
            render = model.get_outputs_for_camera(dataset.cameras[i : i + 1].to(model.device))["rgb"]
        error += float((render.cpu().clamp(0, 1) - gt).square().mean(-1)[mask].sum())
        count, total = count + int(mask.sum()), total + mask.numel()
    if count == 0:  # sharp test photos: nothing stands out from the median
        return {"photo_in_focus_share": 0.0}
    return {"psnr_photo_in_focus": float(-10 * np.log10(max(error / count, 1e-10))), "photo_in_focus_share": count / total}


def learned_aperture(model, dataset, dataparser_scale: float) -> Dict[str, Any]:
    """K relative to its unit (``aperture_floor`` included) per training view: the median
    over the Gaussians of h_θ's output for that view's camera (``cocogs-export``'s summary), and
    the median over the views (a collapsed aperture, docs/experiments.md, Cycles scene, shows as ~0)."""
    if not model.config.coc_enabled:
        return {}
    summary = depth_of_field_summary(model, dataset.cameras, dataset.image_filenames, dataparser_scale)
    unit = float(model.lens.aperture_unit)
    per_view = [photo["aperture_K_median"] / unit for photo in summary["photos"]]
    return {"aperture_relative_median": round(float(np.median(per_view)), 4),
            "aperture_relative_per_view": [round(k, 4) for k in per_view]}


def run_variant(variant: str, args: argparse.Namespace, out: Path, seed: int, image_dir: Path) -> Dict[str, Any]:
    """Train, evaluate and time one variant with one seed; its images go to ``image_dir``."""
    cfg = trainer_config(variant, args.scene, out, args.size, args.steps, args.downscale, seed, args.settings, args.rates,
                         args.data_settings)
    trainer = seeded_trainer(cfg)
    model = trainer.pipeline.model
    if variant == "known_lens":
        dataset = trainer.pipeline.datamanager.train_dataset
        cams = dataset.cameras
        maps = true_cocs(args.scene, dataset.image_filenames, int(cams.width[0]), int(cams.height[0]))
        if maps is None:
            raise SystemExit(f"{args.scene}: known_lens needs depth/NNN.npy and coc_px_per_inv_m for every training photo")
        model.true_coc = dict(enumerate(maps))
    initial_focus = model.lens.focus_distance().detach().tolist() if model.config.coc_enabled else None
    step_ends = time_steps(trainer)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(model.device)
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    pipeline, model = trainer.pipeline, trainer.pipeline.model
    pipeline.eval()
    metrics = pipeline.get_average_eval_image_metrics()
    pipeline.eval()  # nerfstudio switches back to train mode after evaluating
    result: Dict[str, Any] = {
        "variant": variant,
        "seed": seed,
        "steps": args.steps,
        "train_s": round(train_s, 1),
        "s_per_step": round(train_s / args.steps, 4),
        "s_per_step_steady": round(steady_step_time(step_ends, start), 4),
        "gaussians": int(model.num_points),
        **{k: metrics[k] for k in ("psnr", "ssim", "lpips") if k in metrics},
        "config": str(out / "runs" / args.scene.name / cfg.method_name / cfg.timestamp / "config.yml"),
    }
    if model.device.type == "cuda":
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    scale = float(pipeline.datamanager.train_dataparser_outputs.dataparser_scale)
    if initial_focus is not None:
        result["initial_focus"] = [round(f, 3) for f in initial_focus]
        truth = focus_truth(args.scene, scale)
        if truth is not None:
            result["true_focus"] = truth
    result.update(psnr_where_photo_in_focus(pipeline, args.scene) or {})
    by_blur = psnr_by_blur(pipeline, args.scene)  # rendered scenes with depth maps: where the error lives
    if by_blur is not None:
        result["psnr_by_best_coc"] = by_blur
    result.update(learned_aperture(model, pipeline.datamanager.train_dataset, scale))
    result.update(views_and_speed(variant, pipeline, args, image_dir, measure_speed=True))
    result["step_breakdown"] = step_breakdown(trainer)  # its steps change the model
    if args.profile:
        profile(trainer, args, image_dir / f"profile_{variant}-seed{seed}.txt")
    return result


def profile(trainer, args: argparse.Namespace, path: Path, steps: int = 5, frames: int = 3) -> None:
    """torch.profiler tables of ``steps`` training steps and (CoC variants) ``frames`` defocus
    previews at --preview-width: the operators by self device time and by CPU time, and the device's
    busy share of the wall time (low: the step waits on Python and kernel launches, not the GPU)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    pipeline, model = trainer.pipeline, trainer.pipeline.model
    device = model.device
    if device.type != "cuda":  # the CPU run is a smoke run of this code: a CPU step is seconds, profiled ×5
        steps, frames = min(steps, 2), min(frames, 1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"

    def train_steps() -> None:
        pipeline.train()
        for _ in range(steps):
            trainer.optimizers.zero_grad_all()
            _, losses, _ = pipeline.get_train_loss_dict(step=model.step)
            sum(losses.values()).backward()
            trainer.optimizers.optimizer_step_all()
        pipeline.eval()

    jobs = [("training step", train_steps, steps)]
    if model.config.coc_enabled:
        camera = pipeline.datamanager.eval_dataset.cameras[0:1].to(device)
        camera.rescale_output_resolution(args.preview_width / float(camera.width))
        focus = float(model.lens.focus_distance().detach().median())

        def previews() -> None:
            for _ in range(frames):
                model.render_defocused(camera, focus, 1.0)

        jobs.append((f"defocus preview {int(camera.width)}×{int(camera.height)}", previews, frames))
    lines = []
    for name, job, count in jobs:
        job()  # warm-up
        _sync(device)
        start = time.perf_counter()
        with torch_profile(activities=activities) as prof:
            job()
            _sync(device)
        wall = (time.perf_counter() - start) / count
        table = prof.key_averages()
        kernels = [e for e in table if e.device_type == DeviceType.CUDA]
        busy = sum(e.self_device_time_total for e in kernels) / count / 1e6
        lines += [f"=== {name}: {wall * 1e3:.1f} ms wall each (profiled), device busy {busy * 1e3:.1f} ms",
                  table.table(sort_by=sort, row_limit=25, max_name_column_width=60),
                  table.table(sort_by="cpu_time_total", row_limit=15, max_name_column_width=60)]  # fmt: skip
    path.write_text("\n".join(lines))
    print("\n".join(line.splitlines()[0] for line in lines[::3]), flush=True)


BREAKDOWN = ("h_theta", "rasterization", "blend_cnn", "rest of forward", "backward", "optimizer", "densification statistics")


def step_breakdown(trainer, steps: int = 5) -> Dict[str, float]:
    """Seconds per training step by part, the mean of ``steps`` steps of the trained model (CoC on
    where the variant has it), each part timed between device synchronisations: h_θ, projection +
    rasterization (all M+1 renders), the blend CNN, the rest of the forward pass (camera, loss,
    metrics), backward, the optimizers, and the densification statistics (merge of the renders'
    screen-space gradients, gsplat's per-Gaussian accumulation)."""
    import cocogs_nerfstudio.cocogaussian as cocogaussian

    pipeline, model = trainer.pipeline, trainer.pipeline.model
    device = model.device
    totals = {name: 0.0 for name in BREAKDOWN + ("forward",)}

    def timed(name: str, fn):  # noqa: ANN001, ANN202
        def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            _sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(device)
            totals[name] += time.perf_counter() - start
            return out

        return run

    rasterize, rasterize_sets = cocogaussian.rasterize, cocogaussian.rasterize_sets
    cocogaussian.rasterize = timed("rasterization", rasterize)
    cocogaussian.rasterize_sets = timed("rasterization", rasterize_sets)
    if model.config.coc_enabled:
        model.coc_mlp.forward = timed("h_theta", model.coc_mlp.forward)
        model.blend_cnn.forward = timed("blend_cnn", model.blend_cnn.forward)
    try:
        pipeline.train()
        for _ in range(steps):
            trainer.optimizers.zero_grad_all()
            _, losses, _ = timed("forward", pipeline.get_train_loss_dict)(step=model.step)
            timed("backward", lambda: sum(losses.values()).backward())()
            timed("optimizer", trainer.optimizers.optimizer_step_all)()
            timed("densification statistics", lambda: model.strategy._update_state(
                model.gauss_params, model.strategy_state, merge_render_infos(model._infos, model.config.densify_grad_combine),
                packed=False))()  # fmt: skip
    finally:
        cocogaussian.rasterize, cocogaussian.rasterize_sets = rasterize, rasterize_sets
        for module in (getattr(model, "coc_mlp", None), getattr(model, "blend_cnn", None)):
            if module is not None:
                del module.forward  # back to the class's method
        pipeline.eval()
    forward = totals.pop("forward")
    totals["rest of forward"] = forward - totals["h_theta"] - totals["rasterization"] - totals["blend_cnn"]
    return {name: round(totals[name] / steps, 5) for name in BREAKDOWN}


def focus_truth(scene: Path, scale: float) -> Optional[List[float]]:
    """The training photos' true focus distances in model units, when transforms.json has them
    (rendered scenes: ``focus_distance`` per frame; test frames have none)."""
    path = scene / "transforms.json"
    if not path.exists():
        return None
    frames = sorted(json.loads(path.read_text())["frames"], key=lambda f: f["file_path"])
    values = [f.get("focus_distance") for f in frames]
    return [round(v * scale, 3) for v in values if v is not None] or None


def views_and_speed(variant: str, pipeline, args: argparse.Namespace, out: Path, measure_speed: bool) -> Dict[str, Any]:
    """Images for the figure (a sharp test view, the first training view, the focus sweep) and
    rendering speed of the sharp render and of the defocus preview."""
    model = pipeline.model
    model.eval()
    result: Dict[str, Any] = {}
    dm = pipeline.datamanager
    camera = dm.eval_dataset.cameras[0:1].to(model.device)  # the first sharp test view
    outputs = model.get_outputs_for_camera(camera)
    sharp = outputs["rgb"]
    # background = farther than the median depth of the baseline's render of this view; the same
    # pixels for every variant (the measure reported for scenes without sharp ground truth)
    mask_file = out / "background_mask.npy"
    if variant == "baseline":
        depth = outputs["depth"][..., 0].detach().cpu()
        np.save(mask_file, (depth > depth.median()).numpy())
    background = torch.from_numpy(np.load(mask_file)) if mask_file.exists() else None
    result["sharpness_test_view"] = sharpness(sharp)
    if background is not None and background.shape == sharp.shape[:2]:
        result["sharpness_background"] = sharpness(sharp, background)
    Image.fromarray(to_png(sharp)).save(out / f"{variant}_test0.png")
    if variant == "baseline":
        gt = dm.eval_dataset.get_image_float32(0)[..., :3]
        Image.fromarray(to_png(gt)).save(out / "gt_test0.png")
        result["sharpness_gt"] = sharpness(gt)
        if background is not None and background.shape == gt.shape[:2]:
            result["sharpness_gt_background"] = sharpness(gt, background)
    # the first training view: its defocused photo and each model's sharp render of it
    train_cam = dm.train_dataset.cameras[0:1].to(model.device)
    Image.fromarray(to_png(model.get_outputs_for_camera(train_cam)["rgb"])).save(out / f"{variant}_train0.png")
    if variant == "baseline":
        photo = dm.train_dataset.get_image_float32(0)[..., :3]
        Image.fromarray(to_png(photo)).save(out / "photo_train0.png")
        twin = args.scene / "sharp_train" / dm.train_dataset.image_filenames[0].name
        if twin.exists():
            Image.open(twin).convert("RGB").resize(photo.shape[1::-1]).save(out / "sharp_train0.png")
    repeats = 100 if model.device.type == "cuda" else 3  # a GPU frame is ~ms: 20 were noise
    if measure_speed:
        result["fps_sharp"] = round(render_fps(model, camera, model.get_outputs_for_camera, repeats), 2)
    if variant == "cocogaussian":
        focus = model.lens.focus_distance().detach()
        result["learned_focus"] = [round(float(f), 3) for f in focus]
        mid = float(focus.median())
        preview = lambda cam: model.render_defocused(cam, mid, 1.0)  # noqa: E731
        if measure_speed:
            result["fps_defocus_preview"] = round(render_fps(model, camera, preview, repeats), 2)
        sweep = torch.linspace(float(focus.min()) * 0.8, float(focus.max()) * 1.2, 5)
        frames = [to_png(model.render_defocused(camera, float(f), 1.0)["rgb"]) for f in sweep]
        Image.fromarray(np.concatenate(frames, axis=1)).save(out / "focus_sweep.png")
    if measure_speed and args.size == "gpu":  # the targets' resolution: 1920 px wide, the view's aspect
        camera.rescale_output_resolution(args.preview_width / float(camera.width))
        result["fps_sharp_wide"] = round(render_fps(model, camera, model.get_outputs_for_camera, repeats), 2)
        if variant == "cocogaussian":
            result["fps_defocus_preview_wide"] = round(render_fps(model, camera, preview, repeats), 2)
            chosen = model.config.preview_blend_scale  # the other blend scale, for comparison
            model.config.preview_blend_scale = "render" if chosen == "training" else "training"
            result[f"fps_defocus_preview_wide_{model.config.preview_blend_scale}_scale"] = round(
                render_fps(model, camera, preview, repeats), 2
            )
            model.config.preview_blend_scale = chosen
        result["wide_size"] = [int(camera.width), int(camera.height)]
    return result


def _row(paths: List[Path]) -> Optional[np.ndarray]:
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in paths if p.exists()]
    return np.concatenate(tiles, axis=1) if tiles else None


def figure(out: Path, variants: List[str]) -> None:
    """Rows: a sharp test view (ground truth, then each variant); the first training view (its
    defocused photo, each variant's sharp render, its all-in-focus twin); CoCoGaussian's focus sweep.
    Images under 150 px high are shown enlarged 2× or more (pixel replication)."""
    rows = [
        _row([out / "gt_test0.png"] + [out / f"{v}_test0.png" for v in variants]),
        _row([out / "photo_train0.png"] + [out / f"{v}_train0.png" for v in variants] + [out / "sharp_train0.png"]),
        _row([out / "focus_sweep.png"]),
    ]
    rows = [r for r in rows if r is not None]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, axis=0)
    tile = rows[0].shape[0]  # small CPU-mode images are enlarged (nearest) to at least 150 px high
    zoom = max(1, -(-150 // tile))
    Image.fromarray(grid.repeat(zoom, axis=0).repeat(zoom, axis=1)).save(out / "figure.png")


MEANS = ("psnr", "ssim", "lpips", "psnr_photo_in_focus", "s_per_step", "s_per_step_steady", "gaussians", "fps_sharp",
         "fps_defocus_preview", "fps_sharp_wide", "fps_defocus_preview_wide")  # fmt: skip


def by_variant(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per variant: the mean of each number over its seeds, ``<key>_std`` (population standard
    deviation), ``<key>_min``/``_max``, and ``seeds``; other fields from its first seed."""
    grouped: Dict[str, List[Dict[str, Any]]] = {}
    for r in results:
        grouped.setdefault(r["variant"], []).append(r)
    summary = {}
    for variant, runs in grouped.items():
        row = dict(runs[0], seeds=[r["seed"] for r in runs])
        for key in MEANS:
            values = [float(r[key]) for r in runs if key in r]
            if values:
                row[key] = float(np.mean(values))
                row[f"{key}_std"] = float(np.std(values))
                row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        summary[variant] = row
    return summary


def markdown(results: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    seeds = sorted({r["seed"] for r in results})
    settings = ", ".join(f"{k}={v}" for k, v in meta.get("settings", {}).items())
    lines = [
        f"Scene `{meta['scene']}`, {meta['size']} mode, {meta['steps']} steps, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}, {meta['date']}, {meta['machine']}, commit {meta['commit']}"
        + (f"; CoCoGaussian with {settings}" if settings else "") + ".",
        "",
    ]
    summary = by_variant(results)
    if len(seeds) > 1:
        lines += [
            f"Mean ± standard deviation over {len(seeds)} seeds (min–max):",
            "",
            "| variant | PSNR | SSIM | LPIPS | s/step (last quarter) | Gaussians |",
            "|---|---|---|---|---|---|",
        ]
        for v, r in summary.items():
            def cell(key: str, fmt: str) -> str:
                if key not in r:
                    return "-"
                return f"{r[key]:{fmt}} ± {r[key + '_std']:{fmt}} ({r[key + '_min']:{fmt}}–{r[key + '_max']:{fmt}})"

            lines.append(f"| {v} | {cell('psnr', '.2f')} | {cell('ssim', '.4f')} | {cell('lpips', '.4f')} | "
                         f"{cell('s_per_step_steady', '.3f')} | {r['gaussians']:.0f} |")  # fmt: skip
        lines += ["", "Each run:", ""]
    lines += [
        "| variant | seed | PSNR | SSIM | LPIPS | s/step (all) | s/step (last quarter) | Gaussians | sharp fps | defocus preview fps | peak GPU memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lpips = f"{r['lpips']:.4f}" if "lpips" in r else "-"
        memory = f"{r['peak_gpu_memory_gb']:.2f} GB" if "peak_gpu_memory_gb" in r else "-"
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {lpips} | {r['s_per_step']:.3f} | "
            f"{r['s_per_step_steady']:.3f} | {r['gaussians']} | {r['fps_sharp']:.1f} | "
            f"{r.get('fps_defocus_preview', '-')} | {memory} |"
        )
    if any("psnr_photo_in_focus" in r for r in results):
        cells = ", ".join(f"{r['variant']} {r['psnr_photo_in_focus']:.2f}" for r in results if "psnr_photo_in_focus" in r)
        share = next(r["photo_in_focus_share"] for r in results if "photo_in_focus_share" in r)
        lines += ["", f"PSNR where the test photos show detail at their full resolution ({share:.0%} of the pixels; "
                  f"for defocused test photos: where they are in focus): {cells}"]
    if any("psnr_by_best_coc" in r for r in results):
        bins = list(next(r["psnr_by_best_coc"] for r in results if "psnr_by_best_coc" in r))
        shares = next(r["psnr_by_best_coc"] for r in results if "psnr_by_best_coc" in r)
        lines += ["", "Where the error lives: PSNR of the sharp test views by the smallest true CoC (training-photo px) "
                  "any training photo has at the surface (share of the test pixels in brackets):", "",
                  "| variant | seed | " + " | ".join(f"{b} ({shares[b]['share']:.0%})" for b in bins) + " |",
                  "|---|---|" + "---|" * len(bins)]  # fmt: skip
        for r in results:
            if "psnr_by_best_coc" in r:
                lines.append(f"| {r['variant']} | {r['seed']} | "
                             + " | ".join(f"{r['psnr_by_best_coc'][b]['psnr']:.2f}" for b in bins) + " |")
    if any("sharpness_background" in r for r in results):
        gt = results[0].get("sharpness_gt_background")
        cells = ", ".join(f"{r['variant']} {r['sharpness_background']:.2e}" for r in results if "sharpness_background" in r)
        lines += ["", f"Background sharpness of test view 0 (gradient energy beyond the median depth): {cells}"
                  + (f"; the test photo itself {gt:.2e}." if gt is not None else ".")]
    first = [r for r in results if r["seed"] == seeds[0]]
    if all("step_breakdown" in r for r in first):
        lines += ["", f"Seconds per training step by part (mean of 5 steps of the trained model, seed {seeds[0]}):", "",
                  "| part | " + " | ".join(r["variant"] for r in first) + " |",
                  "|---|" + "---|" * len(first)]  # fmt: skip
        for part in BREAKDOWN:
            lines.append(f"| {part} | " + " | ".join(f"{r['step_breakdown'][part]:.4f}" for r in first) + " |")
    checks = targets(summary, meta["size"])
    if checks:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks]
    return "\n".join(lines) + "\n"


def targets(by: Dict[str, Dict[str, Any]], size: str) -> List[Tuple[str, str, bool]]:
    """The issues' targets, (what, measured, met), on the means over seeds (:func:`by_variant`):
    PSNR gain over the baseline (and the share of the way to the upper bound when there is one;
    else 'not below the baseline'); on the GPU, step time, sharp rendering speed and the preview's
    frame rate at 1920 px wide."""
    if "baseline" not in by or "cocogaussian" not in by:
        return []
    base, coc = by["baseline"], by["cocogaussian"]
    gain = coc["psnr"] - base["psnr"]
    checks: List[Tuple[str, str, bool]] = []
    if "upper_bound" in by:
        gap = by["upper_bound"]["psnr"] - base["psnr"]
        checks.append(("PSNR gain over the baseline ≥ +3 dB", f"{gain:+.2f} dB", gain >= 3.0))
        share = gain / gap if gap > 0 else float("nan")
        checks.append(("≥ 75% of the way to the upper bound", f"{100 * share:.0f}% (of {gap:+.2f} dB)", share >= 0.75))
    else:
        checks.append(("PSNR not below the baseline", f"{gain:+.2f} dB", gain >= 0.0))
    if "known_lens" in by:
        behind = coc["psnr"] - by["known_lens"]["psnr"]
        checks.append(("PSNR ≥ the known-lens reference − 0.2 dB", f"{behind:+.2f} dB", behind >= -0.2))
    if size == "gpu":
        ratio = coc["s_per_step_steady"] / base["s_per_step_steady"]
        checks.append(("training step ≤ 2× the baseline's (last quarter, warm kernels)", f"{ratio:.2f}×", ratio <= 2.0))
        if "fps_sharp_wide" in coc and "fps_sharp_wide" in base:
            w, h = coc["wide_size"]
            speed = coc["fps_sharp_wide"] / base["fps_sharp_wide"]
            checks.append((f"sharp rendering ≥ 0.95× the baseline's ({w}×{h})", f"{speed:.2f}×", speed >= 0.95))
            fps = coc["fps_defocus_preview_wide"]
            checks.append((f"defocus preview ≥ 30 fps ({w}×{h})", f"{fps:.1f} fps", fps >= 30.0))
    return checks


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--size", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="default: 600 (cpu), 3000 (gpu)")
    parser.add_argument("--downscale", type=int, default=None, help="image folder images_K (LLFF layout)")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds: every variant runs with each")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a CoCoGaussian model setting, e.g. --set sharp_loss_weight=1 (repeatable)")
    parser.add_argument("--lr", dest="rates", action="append", default=[], metavar="GROUP=LR",
                        help="CoCoGaussian's learning rate of an optimizer group, e.g. --lr focus=5e-3 (repeatable)")
    parser.add_argument("--data-set", dest="data_settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataparser setting for every variant, e.g. --data-set background_points=4000")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--figures-only", action="store_true", help="redraw images from the runs in --out")
    parser.add_argument("--preview-width", type=int, default=1920, help="gpu mode: width of the speed targets")
    parser.add_argument("--profile", action="store_true", help="torch.profiler tables: DIR/profile_VARIANT-seedN.txt")
    parser.add_argument("--allow-cpu", action="store_true", help="run --size gpu on the CPU (tests of its code)")
    args = parser.parse_args(argv)
    args.scene = args.scene.resolve()
    args.settings = parse_settings(args.settings)
    args.data_settings = parse_settings(args.data_settings, DeblurNerfDataParserConfig(), "--data-set")
    args.rates = parse_rates(args.rates)
    seeds = [int(x) for x in args.seeds.split(",") if x]
    args.steps = args.steps or (600 if args.size == "cpu" else 3000)
    if args.size == "gpu" and not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("--size gpu needs CUDA (--allow-cpu runs its code paths on the CPU, slowly)")
    out = (args.out or Path("benchmarks/results") / f"{args.scene.name}-{args.size}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    if "upper_bound" in variants and not (args.scene / "sharp_train").is_dir():
        variants.remove("upper_bound")
    if "known_lens" in variants and not (args.scene / "depth").is_dir():  # the true CoC needs the depth maps
        variants.remove("known_lens")
    if args.figures_only:
        from nerfstudio.utils.eval_utils import eval_setup

        saved = json.loads((out / "results.json").read_text())
        first = [r for r in saved["results"] if r["seed"] == saved["results"][0]["seed"]]
        for r in first:
            _, pipeline, _, _ = eval_setup(Path(r["config"]), test_mode="test")
            views_and_speed(r["variant"], pipeline, args, out, measure_speed=False)
        figure(out, [r["variant"] for r in first])
        return
    gflops = matmul_gflops()
    results = []
    for seed in seeds:  # the figure shows the first seed; the others' images go to seed<N>/
        image_dir = out if seed == seeds[0] else out / f"seed{seed}"
        image_dir.mkdir(exist_ok=True)
        for v in variants:
            print(f"=== {v}, seed {seed} ===", flush=True)
            results.append(run_variant(v, args, out, seed, image_dir))
            (out / "results.json").write_text(json.dumps(results, indent=1))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    meta = {
        "scene": args.scene.name,
        "size": args.size,
        "steps": args.steps,
        "seeds": seeds,
        "settings": {
            **args.settings,
            **{f"lr.{group}": lr for group, lr in args.rates.items()},
            **{f"data.{key}": value for key, value in args.data_settings.items()},
        },
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {device}, {torch.get_num_threads()} torch threads, "
        f"CPU matmul {gflops:.0f} GFLOP/s at the start, torch {torch.__version__}",
        "commit": commit or "unknown",
        "cpu_matmul_gflops": gflops,
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (out / "results.md").write_text(markdown(results, meta))
    figure(out, variants)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("COCOGS_THREADS", os.cpu_count() or 1)))
    main()
