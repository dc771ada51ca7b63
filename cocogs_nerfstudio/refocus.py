"""``cocogs-refocus``: change focus and aperture after capture, from a trained CoCoGaussian model.

    cocogs-refocus --load-config outputs/.../config.yml --output-dir refocus/
        [--camera-index 0 | --camera-path path.json] [--frames 24]
        [--focus F --aperture A]          # one image (or, with --camera-path, one video)
        [--focus-at X Y [--aperture A]]   # focus on the surface at pixel (X, Y): one image, or an aperture sweep

Without ``--focus``/``--aperture`` it renders, from training camera ``--camera-index`` (or the
first camera of a nerfstudio camera path), a focus sweep (near → far bound of the scene, learned
aperture) and an aperture sweep (0 → 3× learned, focused at that training image's learned focus):
PNG frames in ``focus_sweep/`` and ``aperture_sweep/``, plus ``.mp4`` videos when a video writer is
available. Focus distances are in the model's world units (the viewer's focus slider shows them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress


def _write_video(frames: List[np.ndarray], path: Path, fps: int) -> bool:
    try:
        import mediapy

        mediapy.write_video(str(path), frames, fps=fps)
        return True
    except Exception as err:  # noqa: BLE001 (no ffmpeg, codec missing, …)
        print(f"no video written ({type(err).__name__}: {err}); the PNG frames are in {path.with_suffix('')}")
        return False


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


def render_frames(model, cameras, settings: Iterable[tuple], label: str) -> List[np.ndarray]:
    """Render (camera index, focus, aperture multiplier) settings with a progress bar."""
    settings = list(settings)
    frames = []
    with Progress() as progress:
        task = progress.add_task(label, total=len(settings))
        for cam_i, focus, aperture in settings:
            camera = cameras[cam_i : cam_i + 1].to(model.device)
            frames.append(_to_uint8(model.render_defocused(camera, focus, aperture)["rgb"]))  # aperture 0: sharp
            progress.advance(task)
    return frames


def save_sequence(frames: List[np.ndarray], folder: Path, fps: int, video: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.png")
    if video:
        _write_video(frames, folder.with_suffix(".mp4"), fps)


def load_model(config: Path):
    """The trained pipeline's model and its training cameras (inference mode, no images loaded)."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="inference")
    model = pipeline.model
    if not getattr(model.config, "coc_enabled", False):
        raise SystemExit(f"error: {config}: the model was trained with CoC off; it has no aperture or focus to change")
    model.eval()
    return model, pipeline.datamanager.train_dataset.cameras


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--camera-index", type=int, default=0, help="training camera to render from")
    parser.add_argument("--camera-path", type=Path, default=None, help="nerfstudio camera path JSON")
    parser.add_argument("--frames", type=int, default=24, help="frames per sweep")
    parser.add_argument("--focus", type=float, default=None, help="focus distance (model world units)")
    parser.add_argument("--aperture", type=float, default=None, help="multiplier of the learned aperture K")
    parser.add_argument("--focus-at", type=float, nargs=2, default=None, metavar=("X", "Y"),
                        help="focus on the surface at pixel (X, Y) of the rendered view (column, row)")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--no-video", action="store_true")
    args = parser.parse_args(argv)
    if not args.load_config.is_file():
        raise SystemExit(f"error: {args.load_config}: no such config file (the config.yml of a run under outputs/)")
    path = None
    if args.camera_path is not None:
        try:
            path = json.loads(args.camera_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"error: {args.camera_path}: not a readable camera path JSON ({err})") from None

    model, cameras = load_model(args.load_config)
    if path is not None:
        from nerfstudio.cameras.camera_paths import get_path_from_json

        cameras = get_path_from_json(path)
        index = 0
    else:
        if not 0 <= args.camera_index < len(cameras):
            raise SystemExit(f"error: --camera-index {args.camera_index}: the model has {len(cameras)} training cameras")
        index = args.camera_index
    controls = model.depth_of_field
    learned = float(model.lens.focus_distance(index)) if args.camera_path is None else float(controls.focus.value)
    out = args.output_dir
    if args.focus_at is not None:  # tap to focus, from the command line
        from cocogs_nerfstudio.tap_focus import pixel_ray, surface_distance

        x, y = args.focus_at
        camera = cameras[index : index + 1]
        if not (0 <= x < int(camera.width) and 0 <= y < int(camera.height)):
            raise SystemExit(f"error: --focus-at {x:g} {y:g}: outside the {int(camera.width)}×{int(camera.height)} view")
        focus = surface_distance(model, *pixel_ray(camera, x, y))
        if focus is None:
            raise SystemExit(f"error: --focus-at {x:g} {y:g}: no surface at that pixel (background); focus elsewhere")
        print(f"focus at pixel ({x:g}, {y:g}): {controls.describe(focus)}")
        if args.aperture is None:  # an aperture sweep at that focus
            apertures = np.linspace(0.0, 3.0, args.frames)
            out.mkdir(parents=True, exist_ok=True)
            save_sequence(render_frames(model, cameras, [(index, focus, float(a)) for a in apertures], "aperture sweep"),
                          out / "aperture_sweep", args.fps, not args.no_video)  # fmt: skip
            (out / "sweeps.json").write_text(json.dumps({"focus": focus, "aperture": apertures.tolist(), "camera": index}))
            print(f"wrote {out}")
            return
        args.focus = focus
    out.mkdir(parents=True, exist_ok=True)

    if args.focus is not None or args.aperture is not None:
        focus = args.focus if args.focus is not None else learned
        aperture = args.aperture if args.aperture is not None else 1.0
        if args.camera_path is not None:
            frames = render_frames(model, cameras, [(i, focus, aperture) for i in range(len(cameras))], "camera path")
            save_sequence(frames, out / "camera_path", args.fps, not args.no_video)
        else:
            frame = render_frames(model, cameras, [(index, focus, aperture)], "image")[0]
            Image.fromarray(frame).save(out / f"refocus_f{focus:.3f}_a{aperture:.2f}.png")
        print(f"wrote {out}")
        return

    near, far = float(controls.focus.min), float(controls.focus.max)
    focus_values = np.geomspace(near, far, args.frames)
    apertures = np.linspace(0.0, 3.0, args.frames)
    save_sequence(
        render_frames(model, cameras, [(index, float(f), 1.0) for f in focus_values], "focus sweep"),
        out / "focus_sweep", args.fps, not args.no_video,
    )  # fmt: skip
    save_sequence(
        render_frames(model, cameras, [(index, learned, float(a)) for a in apertures], "aperture sweep"),
        out / "aperture_sweep", args.fps, not args.no_video,
    )  # fmt: skip
    meta = {"focus": focus_values.tolist(), "aperture": apertures.tolist(), "learned_focus": learned, "camera": index}
    (out / "sweeps.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
