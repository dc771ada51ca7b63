"""``cocogs-process PHOTOS_DIR OUT_DIR``: camera poses and SfM points from a folder of photos.

Structure from motion with pycolmap (COLMAP's Python bindings, ``pip install pycolmap``), set up
for defocused photos of one lens:

* SIFT on the photos shrunk to ``--max-image-size`` (1000 px): defocus removes the fine features a
  full-size extraction looks for, and at a reduced size the blur spans fewer pixels;
* one shared camera (``SIMPLE_RADIAL``) for all photos: one lens, one focal length to estimate
  from every photo instead of one per photo;
* exhaustive matching for up to 200 photos (a few dozen is the usual defocus capture), sequential
  matching beyond;
* incremental mapping; the largest model is kept, undistorted to a pinhole camera.

Every SfM point is kept (blurred backgrounds give few; none is filtered away). The output folder
is a nerfstudio scene (``transforms.json``, ``images/``, ``images_2/4/8``, ``sparse_pc.ply``,
``colmap/sparse/0``) that ``ns-train cocogaussian --data OUT_DIR`` reads directly; each frame also
records the depth range of the points its photo sees (``depth_near`` / ``depth_far``, in the
output's world units) and ``process_report.json`` what happened.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
DOWNSCALES = (2, 4, 8)
ORIENTATION_TAG = 0x0112  # EXIF orientation: 1 = upright  # the image folders nerfstudio picks from for large photos


class ProcessError(RuntimeError):
    """Input or reconstruction trouble; the message says what and where, for the user."""


@dataclass
class ProcessReport:
    """What the reconstruction found (written as ``process_report.json``)."""

    photos: int
    registered: int
    unregistered: List[str]
    points: int
    mean_reprojection_error_px: float
    mean_track_length: float
    camera: Dict[str, object]
    depth_range: Tuple[float, float]
    seconds: Dict[str, float] = field(default_factory=dict)
    settings: Dict[str, object] = field(default_factory=dict)


def list_photos(folder: Path) -> List[Path]:
    """Photos in ``folder`` (not its subfolders), sorted by name; each one is opened to check it."""
    if not folder.is_dir():
        raise ProcessError(f"{folder}: not a folder of photos")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if len(photos) < 3:
        raise ProcessError(
            f"{folder}: {len(photos)} photos ({', '.join(sorted(PHOTO_SUFFIXES))}); structure from motion needs at "
            "least 3, and a few dozen overlapping views of the scene work best"
        )
    for p in photos:
        try:
            with Image.open(p) as im:
                im.load()  # decodes every pixel: a truncated file fails here, not as "not registered"
        except (UnidentifiedImageError, OSError) as err:
            raise ProcessError(f"{p}: not a readable image ({err})") from err
    return photos


def copy_photos(photos: Sequence[Path], folder: Path) -> Dict[str, Tuple[int, int]]:
    """Copy the photos into ``folder`` upright (EXIF orientation applied); their (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for p in photos:
        with Image.open(p) as im:
            if im.getexif().get(ORIENTATION_TAG, 1) == 1:  # upright already: the file as it is, not re-encoded
                shutil.copy2(p, folder / p.name)
                sizes[p.name] = im.size
            else:
                upright = ImageOps.exif_transpose(im)
                upright.save(folder / p.name, quality=95)
                sizes[p.name] = upright.size
    return sizes


def _progress(stage: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(f"[bold]{stage}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), transient=False)  # fmt: skip


def extract_and_match(
    images: Path,
    work: Path,
    names: Sequence[str],
    max_image_size: int = 1000,
    shared_camera: bool = True,
    camera_model: str = "SIMPLE_RADIAL",
    camera_params: str = "",
    matching: str = "auto",
    threads: int = -1,
    log=print,
) -> Tuple[Path, Dict[str, float]]:
    """SIFT features of ``names`` in ``images`` and their matches, in ``work/database.db`` (made
    anew); ``camera_params`` (COLMAP's comma-separated list) fixes known intrinsics. Returns the
    database and the stage times."""
    import pycolmap

    work.mkdir(parents=True, exist_ok=True)
    database = work / "database.db"
    database.unlink(missing_ok=True)
    seconds: Dict[str, float] = {}

    t0 = time.perf_counter()
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max_image_size
    extraction.num_threads = threads
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    reader.camera_params = camera_params
    mode = pycolmap.CameraMode.SINGLE if shared_camera else pycolmap.CameraMode.PER_IMAGE
    log(f"features: SIFT on {len(names)} photos at ≤ {max_image_size} px ({'one shared' if shared_camera else 'one per photo'} {camera_model} camera)")
    pycolmap.extract_features(database, images, image_names=list(names), camera_mode=mode,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)  # fmt: skip
    seconds["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = threads
    if matching == "auto":
        matching = "exhaustive" if len(names) <= 200 else "sequential"
    log(f"matching: {matching}")
    if matching == "exhaustive":
        pycolmap.match_exhaustive(database, matching_options=options, device=pycolmap.Device.cpu)
    elif matching == "sequential":
        pycolmap.match_sequential(database, matching_options=options, device=pycolmap.Device.cpu)
    else:
        raise ProcessError(f"--matching {matching!r}: expected auto, exhaustive or sequential")
    seconds["matching"] = time.perf_counter() - t0
    return database, seconds


def run_sfm(
    images: Path,
    work: Path,
    names: Sequence[str],
    max_image_size: int = 1000,
    shared_camera: bool = True,
    camera_model: str = "SIMPLE_RADIAL",
    matching: str = "auto",
    threads: int = -1,
    seed: int = 0,
    log=print,
) -> Tuple[object, Dict[str, float]]:
    """Features, matches and incremental mapping; the largest reconstruction and stage times."""
    import pycolmap

    database, seconds = extract_and_match(
        images, work, names, max_image_size, shared_camera, camera_model, matching=matching, threads=threads, log=log
    )
    t0 = time.perf_counter()
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = threads
    mapping.random_seed = seed
    sparse = work / "sparse"
    shutil.rmtree(sparse, ignore_errors=True)
    sparse.mkdir(parents=True)
    with _progress("mapping: photos registered") as bar:
        task = bar.add_task("map", total=len(names))
        models = pycolmap.incremental_mapping(database, images, sparse, mapping,
                                              next_image_callback=lambda: bar.advance(task))  # fmt: skip
        bar.update(task, completed=max((m.num_reg_images() for m in models.values()), default=0))
    seconds["mapping"] = time.perf_counter() - t0
    if not models:
        raise ProcessError(
            f"{images}: no two photos could be matched into a model. Try more photos with more overlap, "
            "a larger --max-image-size if the photos are sharp enough, or --per-photo-camera if they come "
            "from different lenses or zoom settings"
        )
    best = max(models.values(), key=lambda m: m.num_reg_images())
    return best, seconds


def triangulate_with_poses(images: Path, work: Path, known, names: Sequence[str], max_image_size: int = 1000, log=print):
    """Points triangulated from the photos ``names`` in ``images`` with the poses and intrinsics of
    the COLMAP reconstruction ``known`` (one shared camera): SIFT features and exhaustive matches
    of those photos only, then COLMAP's triangulation with every pose held fixed. Returns the new
    reconstruction (``names`` registered, their points)."""
    import pycolmap

    by_name = {image.name: image for image in known.images.values()}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ProcessError(f"{', '.join(missing[:5])}: no pose in the known reconstruction")
    if len(known.cameras) != 1:
        raise ProcessError(f"known poses: expected one shared camera, found {len(known.cameras)}")
    camera = next(iter(known.cameras.values()))
    params = ",".join(repr(float(v)) for v in camera.params)
    database, _ = extract_and_match(
        images, work, names, max_image_size, True, camera.model.name, params, matching="exhaustive", log=log
    )
    with pycolmap.Database.open(database) as db:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        db_camera = db.read_all_cameras()[0]
    posed = pycolmap.Reconstruction()
    camera.camera_id = db_camera.camera_id
    posed.add_camera_with_trivial_rig(camera)
    for name in names:
        image = pycolmap.Image(name=name, camera_id=camera.camera_id, image_id=ids[name])
        posed.add_image_with_trivial_frame(image, by_name[name].cam_from_world())
    log(f"triangulating with {len(names)} known poses")
    return pycolmap.triangulate_points(posed, database, images, work / "triangulated")


def depth_ranges(reconstruction) -> Dict[str, Tuple[float, float]]:
    """Per registered photo: (2nd, 98th) percentile of the camera-space depth of the points it sees."""
    ranges = {}
    for image in reconstruction.images.values():
        ids = [p.point3D_id for p in image.points2D if p.has_point3D()]
        if not ids:
            continue
        xyz = np.array([reconstruction.points3D[i].xyz for i in ids])
        pose = image.cam_from_world()
        z = (xyz @ pose.rotation.matrix().T + pose.translation)[:, 2]
        z = z[z > 0]
        if len(z):
            ranges[image.name] = (float(np.percentile(z, 2)), float(np.percentile(z, 98)))
    return ranges


def _c2w_opengl(image) -> np.ndarray:
    """Camera-to-world 4×4 in nerfstudio's (OpenGL: x right, y up, z back) camera convention."""
    w2c = np.eye(4)
    w2c[:3, :4] = image.cam_from_world().matrix()
    c2w = np.linalg.inv(w2c)
    c2w[:3, 1:3] *= -1  # OpenCV → OpenGL camera axes
    return c2w


def write_scene(
    reconstruction, out: Path, ranges: Dict[str, Tuple[float, float]], depth_range: Tuple[float, float]
) -> None:
    """``transforms.json`` (pinhole camera, one frame per registered photo; ``ranges``: each
    photo's depth range, ``depth_range``: the scene's), ``sparse_pc.ply``."""
    cam = next(iter(reconstruction.cameras.values()))
    frames = []
    for image in sorted(reconstruction.images.values(), key=lambda im: im.name):
        c = reconstruction.cameras[image.camera_id]
        frame = {
            "file_path": f"images/{image.name}",
            "transform_matrix": _c2w_opengl(image).tolist(),
            "colmap_im_id": int(image.image_id),
        }
        if len(reconstruction.cameras) > 1:
            frame.update(_intrinsics(c))
        if image.name in ranges:
            frame["depth_near"], frame["depth_far"] = ranges[image.name]
        frames.append(frame)
    transforms: Dict[str, object] = {}
    if len(reconstruction.cameras) == 1:
        transforms.update(_intrinsics(cam))
    transforms.update(
        camera_model="OPENCV",
        frames=frames,
        ply_file_path="sparse_pc.ply",
        depth_range=list(depth_range),
        generator="cocogs-process",
    )
    (out / "transforms.json").write_text(json.dumps(transforms, indent=1))

    write_points_ply(reconstruction, out / "sparse_pc.ply")


def write_points_ply(reconstruction, path: Path) -> None:
    """Every point of a COLMAP reconstruction, with its colour, as a PLY (x, y, z, red, green, blue)."""
    from plyfile import PlyData, PlyElement

    pts = list(reconstruction.points3D.values())
    vertex = np.empty(len(pts), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    if pts:
        xyz = np.array([p.xyz for p in pts])
        rgb = np.array([p.color for p in pts])
        for k, name in enumerate("xyz"):
            vertex[name] = xyz[:, k]
        for k, name in enumerate(("red", "green", "blue")):
            vertex[name] = rgb[:, k]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def _intrinsics(camera) -> Dict[str, float]:
    return {
        "w": int(camera.width), "h": int(camera.height),
        "fl_x": float(camera.focal_length_x), "fl_y": float(camera.focal_length_y),
        "cx": float(camera.principal_point_x), "cy": float(camera.principal_point_y),
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
    }  # fmt: skip


def write_downscaled(images: Path, out: Path, factors: Sequence[int] = DOWNSCALES) -> None:
    """``images_K/`` beside ``images/`` (nerfstudio picks one for photos over 1600 px)."""
    for f in factors:
        folder = out / f"images_{f}"
        folder.mkdir(exist_ok=True)
        for p in sorted(images.iterdir()):
            with Image.open(p) as im:  # floor(size / f), as nerfstudio scales the cameras
                im.resize((im.width // f, im.height // f), Image.Resampling.BOX).save(folder / p.name, quality=95)


def process(
    photos_dir: Path,
    out: Path,
    max_image_size: int = 1000,
    shared_camera: bool = True,
    matching: str = "auto",
    min_registered: float = 0.5,
    threads: int = -1,
    seed: int = 0,
    log=print,
    overwrite: bool = False,
) -> ProcessReport:
    """Photos → nerfstudio scene in ``out`` (see the module docstring); returns the report.

    Never touches the photos, and never deletes or replaces anything it did not write: it refuses an
    ``out`` that holds the photos, or that is not empty unless ``overwrite``. The scene is built in
    a temporary folder beside ``out`` and moved into place at the end, so a failed run leaves
    ``out`` as it was.
    """
    check_output_folder(photos_dir, out, overwrite)
    photos = list_photos(photos_dir)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.cocogs-process-", dir=out.resolve().parent))
    try:
        report = _process_into(photos_dir, photos, staging, max_image_size, shared_camera, matching, min_registered,
                               threads, seed, log)  # fmt: skip
        move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


WRITTEN = ("transforms.json", "sparse_pc.ply", "process_report.json", "colmap", "images", *[f"images_{f}" for f in DOWNSCALES])
"""What ``cocogs-process`` writes into OUT; ``--overwrite`` replaces these and nothing else."""


def check_output_folder(photos_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse an OUT that holds the photos (they would be replaced by undistorted copies) or that is
    not empty, unless ``overwrite`` (then only the names in ``WRITTEN`` are replaced)."""
    photos, target = photos_dir.resolve(), out.resolve()
    if photos == target or photos.is_relative_to(target):
        raise ProcessError(
            f"{photos_dir}: the photos are inside the output folder {out}, whose images/ this command writes; "
            f"choose another output folder (e.g. {out.name}_scene) so that the photos stay as they are"
        )
    if target.is_relative_to(photos):
        raise ProcessError(f"{out}: the output folder is inside the photo folder {photos_dir}; choose one outside it")
    if target.exists() and not target.is_dir():
        raise ProcessError(f"{out}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ProcessError(
            f"{out}: not empty; use another folder, or --overwrite to replace what cocogs-process writes there "
            f"({', '.join(WRITTEN[:5])}, images_2/4/8; other files are left alone)"
        )


def move_into_place(staging: Path, out: Path) -> None:
    """Move what ``staging`` holds into ``out`` (made if missing), replacing those names only."""
    out.mkdir(parents=True, exist_ok=True)
    for item in sorted(staging.iterdir()):
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(str(item), target)


def _process_into(
    photos_dir: Path, photos: List[Path], out: Path, max_image_size: int, shared_camera: bool, matching: str,
    min_registered: float, threads: int, seed: int, log,
) -> ProcessReport:  # fmt: skip
    """:func:`process` into ``out``, a fresh folder of its own."""
    import pycolmap

    work = out / "colmap"
    raw = work / "images"
    t0 = time.perf_counter()
    sizes = copy_photos(photos, raw)
    if shared_camera and len(set(sizes.values())) > 1:
        raise ProcessError(
            f"{photos_dir}: photos of different sizes {sorted(set(sizes.values()))}; one shared camera needs one "
            "size. Use --per-photo-camera if they come from different cameras"
        )
    names = [p.name for p in photos]
    recon, seconds = run_sfm(raw, work, names, max_image_size, shared_camera, matching=matching,
                             threads=threads, seed=seed, log=log)  # fmt: skip
    seconds["copy"] = time.perf_counter() - t0 - sum(seconds.values())

    registered = {im.name for im in recon.images.values()}
    missing = [n for n in names if n not in registered]
    if len(registered) < max(3, min_registered * len(names)):
        raise ProcessError(
            f"{photos_dir}: only {len(registered)} of {len(names)} photos registered (need {min_registered:.0%}). "
            f"Not registered: {', '.join(missing[:20])}{' …' if len(missing) > 20 else ''}. Photos that are blurred "
            "everywhere or see little of the rest cannot be placed: try a smaller --max-image-size (e.g. 600) for "
            "strongly defocused photos, remove the photos named, or add photos between them"
        )

    t0 = time.perf_counter()
    undistorted = work / "undistorted"
    shutil.rmtree(undistorted, ignore_errors=True)
    log("undistorting to a pinhole camera")
    best = work / "sparse_best"
    shutil.rmtree(best, ignore_errors=True)
    best.mkdir()
    recon.write_binary(best)
    pycolmap.undistort_images(undistorted, best, raw, num_threads=threads)  # images/, sparse/ (PINHOLE)
    recon = pycolmap.Reconstruction(undistorted / "sparse")
    shutil.move(str(undistorted / "images"), out / "images")
    write_downscaled(out / "images", out)
    final = work / "sparse" / "0"
    shutil.rmtree(work / "sparse", ignore_errors=True)
    final.mkdir(parents=True)
    recon.write_binary(final)
    for tmp in (undistorted, raw, best):
        shutil.rmtree(tmp, ignore_errors=True)
    seconds["undistort"] = time.perf_counter() - t0

    ranges = depth_ranges(recon)
    near_far = np.array(list(ranges.values()) or [(0.0, 0.0)])
    cam = next(iter(recon.cameras.values()))
    report = ProcessReport(
        photos=len(names),
        registered=len(registered),
        unregistered=missing,
        points=int(recon.num_points3D()),
        mean_reprojection_error_px=float(recon.compute_mean_reprojection_error()),
        mean_track_length=float(recon.compute_mean_track_length()),
        camera={"model": cam.model_name, "width": int(cam.width), "height": int(cam.height),
                "params": [float(v) for v in cam.params], "cameras": int(recon.num_cameras())},  # fmt: skip
        depth_range=(float(near_far[:, 0].min()), float(near_far[:, 1].max())),
        seconds={k: round(v, 2) for k, v in seconds.items()},
        settings={"max_image_size": max_image_size, "shared_camera": shared_camera, "matching": matching,
                  "pycolmap": pycolmap.__version__},  # fmt: skip
    )
    write_scene(recon, out, ranges, report.depth_range)
    (out / "process_report.json").write_text(json.dumps(asdict(report), indent=1))
    return report


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip("`").split(": ", 1)[-1])
    parser.add_argument("photos", type=Path, help="folder of photos (JPEG/PNG/TIFF) of one scene")
    parser.add_argument("out", type=Path, help="scene folder to write (ns-train cocogaussian --data OUT)")
    parser.add_argument("--max-image-size", type=int, default=1000, help="SIFT on photos shrunk to this (px)")
    parser.add_argument("--per-photo-camera", action="store_true", help="one camera per photo instead of one shared")
    parser.add_argument("--matching", default="auto", choices=("auto", "exhaustive", "sequential"))
    parser.add_argument("--min-registered", type=float, default=0.5, help="fail below this fraction registered")
    parser.add_argument("--threads", type=int, default=-1, help="CPU threads (-1: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier run wrote in OUT (other files there are left alone)")
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    args = parser.parse_args(argv)
    try:
        import pycolmap
    except ImportError:
        sys.exit("error: cocogs-process needs pycolmap: pip install pycolmap")
    if not args.verbose:
        pycolmap.logging.minloglevel = pycolmap.logging.ERROR
    start = time.perf_counter()
    try:
        r = process(args.photos, args.out, args.max_image_size, not args.per_photo_camera, args.matching,
                    args.min_registered, args.threads, overwrite=args.overwrite)  # fmt: skip
    except ProcessError as err:
        sys.exit(f"error: {err}")
    print(
        f"registered {r.registered}/{r.photos} photos, {r.points} points, mean reprojection error "
        f"{r.mean_reprojection_error_px:.2f} px, depth {r.depth_range[0]:.3g}–{r.depth_range[1]:.3g} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    if r.unregistered:
        print(f"not registered (left out of the scene): {', '.join(r.unregistered)}")
    print(f"wrote {args.out}: ns-train cocogaussian --data {args.out}")


if __name__ == "__main__":
    main()
