"""Dataparser for the defocus benchmarks' LLFF layout (Deblur-NeRF, DoF-NeRF, NeRF-LLFF).

Layout: ``poses_bounds.npy`` (N×17: a 3×5 ``[R | t | hwf]`` in LLFF axes [down, right, back],
then near/far), images sorted by name in ``images/`` or downscaled ``images_K/`` (hwf is for the
full-size images: intrinsics are scaled to the actual image size), COLMAP ``sparse/0`` with the
SfM points in the same world frame, and a file named ``hold=N``: image i (after sorting) is a
test image when i % N == 0.

A folder without ``poses_bounds.npy`` but with ``transforms.json`` is read as nerfstudio data
(its ``ply_file_path`` points loaded with plyfile), so ``ns-train cocogaussian --data DIR`` works for
both layouts. Scene orientation, centring and scaling follow nerfstudio's own dataparsers, and the
SfM points are transformed with the poses.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from cocogs_nerfstudio.background_points import background_points
from cocogs_nerfstudio.errors import DataInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".exr"}
DEFAULT_HOLD = 8


def find_hold(data: Path) -> Optional[int]:
    """N from a file named ``hold=N`` in ``data``, if there is one."""
    for f in sorted(data.glob("hold=*")):
        try:
            return int(f.name.split("=", 1)[1])
        except ValueError as err:
            raise DataInputError(f"{f}: expected a file named hold=N with an integer N") from err
    return None


def split_indices(num_images: int, hold: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: test when index % hold == 0."""
    idx = np.arange(num_images)
    return idx[idx % hold != 0], idx[idx % hold == 0]


def image_folder(data: Path, downscale_factor: Optional[int]) -> Path:
    """``images_K`` for a downscale factor K (``images`` or ``images_1`` for 1); with None, the
    full-size ``images`` if present, else the least downscaled ``images_K``."""
    candidates = sorted(
        (int(p.name.split("_")[1]), p)
        for p in data.glob("images_*")
        if p.is_dir() and p.name.split("_")[1].isdigit()
    )
    available = ", ".join(p.name for p in [data / "images"] + [p for _, p in candidates] if p.is_dir()) or "none"
    if downscale_factor is None:
        if (data / "images").is_dir():
            return data / "images"
        if candidates:
            return candidates[0][1]
        raise DataInputError(f"{data}: no image folder (images/ or images_K/) found")
    names = ["images", "images_1"] if downscale_factor == 1 else [f"images_{downscale_factor}"]
    for name in names:
        if (data / name).is_dir():
            return data / name
    raise DataInputError(f"{data / names[-1]}: image folder not found (available: {available})")


def downscaled_copy(image: Path, factor: int, cache: Path, folder: Optional[str] = None) -> Path:
    """``image`` shrunk by ``factor`` (area filter) into ``cache/folder`` (default: the image's
    folder name), written once, through a file of this process's own that is then renamed, so that
    runs sharing the cache never read a half-written image."""
    out = cache / (folder or image.parent.name) / image.name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.stem}.{os.getpid()}.part{out.suffix}")
        with Image.open(image) as im:
            w, h = im.size
            im.convert("RGB").resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.BOX).save(part)
        os.replace(part, out)
    return out


def cache_folder(data: Path, factor: int) -> Path:
    """Where images of ``data`` shrunk by ``factor`` are kept (``$COCOGS_CACHE``, default ~/.cache/cocogs)."""
    root = Path(os.environ.get("COCOGS_CACHE", Path.home() / ".cache" / "cocogs"))
    tag = hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:8]
    return root / f"{data.resolve().name}-{tag}" / f"x{factor}"


def shrink_source(data: Path, factor: int) -> Optional[Tuple[Path, int]]:
    """(folder, shrink) to make ``images_factor`` from: the least shrinking of ``images/`` (×1)
    and the ``images_J`` with J dividing ``factor``; None when there is none."""
    sources = [(1, data / "images")] + [(j, data / f"images_{j}") for j in range(2, factor) if factor % j == 0]
    sources = [(j, p) for j, p in sources if p.is_dir()]
    if not sources:
        return None
    j, folder = max(sources)
    return folder, factor // j


def list_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def image_size(path: Path) -> Tuple[int, int]:
    """(height, width) of an image, or a DataInputError naming it."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.verify()
    except Exception as err:  # noqa: BLE001
        raise DataInputError(f"{path}: unreadable image ({type(err).__name__}: {err})") from err
    return h, w


def sharp_twin(data: Path, image: Path) -> Path:
    """The all-in-focus twin ``sharp_train/<name>`` of a training image."""
    twin = data / "sharp_train" / image.name
    if not twin.is_file():
        raise DataInputError(f"{twin}: missing (sharp_train_images needs an all-in-focus twin per training image)")
    return twin


def load_poses_bounds(path: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(camera-to-world [N, 3, 4] in nerfstudio/OpenGL axes, hwf [N, 3], bounds [N, 2])."""
    if not path.is_file():
        raise DataInputError(f"{path}: missing (the LLFF layout needs poses_bounds.npy)")
    try:
        arr = np.load(path)
    except Exception as err:  # noqa: BLE001
        raise DataInputError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise DataInputError(f"{path}: expected an N×17 array, got shape {arr.shape}")
    bad = np.nonzero(~np.isfinite(arr).all(axis=1))[0]
    if len(bad):
        row = int(bad[0])
        raise DataInputError(f"{path}: row {row} (pose and bounds of image {row}) is not finite: {arr[row].tolist()}")
    mats = arr[:, :15].reshape(-1, 3, 5).astype(np.float64)
    # LLFF columns [down, right, back] -> OpenGL [right, up, back]
    c2w = np.concatenate([mats[:, :, 1:2], -mats[:, :, 0:1], mats[:, :, 2:3], mats[:, :, 3:4]], axis=2)
    return c2w, mats[:, :, 4], arr[:, 15:17]


def load_sfm_points(data: Path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(xyz [P, 3], rgb uint8 [P, 3]) from sparse/0/points3D.bin or .txt, if present."""
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    for name, reader in (("points3D.bin", colmap.read_points3D_binary), ("points3D.txt", colmap.read_points3D_text)):
        path = data / "sparse" / "0" / name
        if path.is_file():
            try:
                pts = reader(path)
            except Exception as err:  # noqa: BLE001
                raise DataInputError(f"{path}: unreadable COLMAP points ({type(err).__name__}: {err})") from err
            if not pts:
                return None
            xyz = np.stack([p.xyz for p in pts.values()]).astype(np.float32)
            rgb = np.stack([p.rgb for p in pts.values()]).astype(np.uint8)
            return xyz, rgb
    return None


def read_ply_points(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(xyz, rgb uint8) of a point-cloud PLY, read with plyfile (no open3d needed)."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as err:  # noqa: BLE001
        raise DataInputError(f"{path}: unreadable point cloud ({type(err).__name__}: {err})") from err
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], -1).astype(np.float32)
    names = vertex.data.dtype.names
    if all(c in names for c in ("red", "green", "blue")):
        rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], -1)
        rgb = rgb if rgb.dtype == np.uint8 else np.clip(rgb * (255 if rgb.max() <= 1 else 1), 0, 255)
    else:
        rgb = np.full_like(xyz, 128)
    return xyz, rgb.astype(np.uint8)


def check_transforms(data: Path, folder: Optional[str] = None) -> dict:
    """transforms.json of ``data``, checked before nerfstudio's parser reads it: valid JSON, a list of
    frames, each with a finite 4×4 (or 3×4) ``transform_matrix`` and a ``file_path`` to an image that
    is there (in ``folder`` instead, e.g. images_4, when given); a DataInputError names what is wrong."""
    path = data / "transforms.json"
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataInputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataInputError(f"{path}: unreadable ({err})") from err
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise DataInputError(f"{path}: no \"frames\" list")
    for i, frame in enumerate(frames):
        name = frame.get("file_path") if isinstance(frame, dict) else None
        if not isinstance(name, str):
            raise DataInputError(f"{path}: frame {i} has no file_path")
        try:
            matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise DataInputError(f"{path}: frame {i} ({name}): no numeric transform_matrix") from err
        if matrix.shape not in ((4, 4), (3, 4)) or not np.isfinite(matrix).all():
            raise DataInputError(
                f"{path}: frame {i} ({name}): transform_matrix must be a finite 4×4, got {matrix.tolist()}"
            )
        image = data / folder / Path(name).name if folder else data / name
        if not image.is_file():
            raise DataInputError(f"{image}: missing (frame {i} of {path})")
        if i == 0:  # nerfstudio's parser opens it; every image is read once after (check_image_sizes)
            image_size(image)
    return meta


def check_image_sizes(outputs: DataparserOutputs, source: Path) -> None:
    """Every image is readable and the size its camera says (``source``: the file that gave the cameras)."""
    cams = outputs.cameras
    for i, image in enumerate(outputs.image_filenames):
        h, w = image_size(image)
        cw, ch = int(cams.width[i]), int(cams.height[i])
        if (w, h) != (cw, ch):
            raise DataInputError(f"{image}: {w}×{h} pixels, but {source} gives its camera {cw}×{ch}")


def shrink_cameras(cameras: Cameras, width: int, height: int) -> None:
    """Cameras rescaled in place to images of ``width`` × ``height`` (intrinsics per axis)."""
    sx, sy = width / cameras.width.float(), height / cameras.height.float()
    cameras.fx, cameras.cx = cameras.fx * sx, cameras.cx * sx
    cameras.fy, cameras.cy = cameras.fy * sy, cameras.cy * sy
    cameras.width, cameras.height = torch.full_like(cameras.width, width), torch.full_like(cameras.height, height)


def transform_points(xyz: np.ndarray, transform: torch.Tensor, scale: float) -> torch.Tensor:
    """Apply the dataparser transform (3×4) and scale to world points, as to the poses."""
    pts = torch.from_numpy(xyz).float()
    pts = torch.cat([pts, torch.ones_like(pts[:, :1])], -1) @ transform.float().T
    return pts * scale


@dataclass
class DeblurNerfDataParserConfig(DataParserConfig):
    """Deblur-NeRF / DoF-NeRF / LLFF layout (or nerfstudio's transforms.json, detected)."""

    _target: Type = field(default_factory=lambda: DeblurNerfDataParser)
    data: Path = Path()
    downscale_factor: Optional[int] = None
    """Read images_K for K; None: images/ if present, else the least downscaled images_K/."""
    hold: Optional[int] = None
    """Every hold-th image (index % hold == 0 after sorting) is a test image. None: the N of a
    file named hold=N in the scene folder, else 8."""
    orientation_method: Literal["pca", "up", "vertical", "none"] = "up"
    center_method: Literal["poses", "focus", "none"] = "poses"
    auto_scale_poses: bool = True
    scale_factor: float = 1.0
    scene_scale: float = 1.0
    load_3D_points: bool = True
    sharp_train_images: bool = False
    """Train on the all-in-focus twins in sharp_train/ (same file names): the upper bound of the
    benchmarks. Only rendered scenes have them."""
    make_downscaled: bool = False
    """When images_K for --downscale-factor K is missing, make it in a cache folder
    (``$COCOGS_CACHE``, default ~/.cache/cocogs) instead of failing: images/ shrunk by K, or an
    images_J shrunk by K/J when J divides K (fern: images_8 → images_32). The scene folder is not written."""
    background_points: int = 4000
    """Extra seed points in the cells (1/16 of a photo's longer side) of the training photos that no
    SfM point projects into: this number × the share of such cells, behind the SfM points, coloured by
    the photo (background_points.py): Gaussians for the blurred background that SfM misses (drinks:
    half the cells, ~2,000 points). 0: off. Photos covered by SfM points get none (below)."""
    background_min_empty: float = 0.25
    """background_points only when at least this share of the photos' cells has no SfM point (drinks:
    0.51; fern, the Blender and floor scenes, the Blender scene with triangulated points: 0.05-0.11):
    photos the SfM points cover, frame edges aside, keep their points as they are."""


class DeblurNerfDataParser(DataParser):
    config: DeblurNerfDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        data = self.config.data
        if not data.is_dir():
            raise DataInputError(f"{data}: scene folder not found")
        if not (data / "poses_bounds.npy").exists() and (data / "transforms.json").exists():
            outputs = self._nerfstudio_outputs(split)
        else:
            outputs = self._llff_outputs(split)
        if self.config.sharp_train_images and split == "train":
            outputs.image_filenames = [sharp_twin(data, p) for p in outputs.image_filenames]
        if self._cache is not None:  # images were shrunk on the fly: shrink the twins the same way
            factor = int(self.config.downscale_factor or 1)
            outputs.image_filenames = [
                p if p.is_relative_to(self._cache) else downscaled_copy(p, factor, self._cache)
                for p in outputs.image_filenames
            ]
        if split == "train" and self.config.background_points > 0 and "points3D_xyz" in outputs.metadata:
            self._add_background_points(outputs)
        return outputs

    def _add_background_points(self, outputs: DataparserOutputs) -> None:
        cams = outputs.cameras

        def image(i: int) -> torch.Tensor:  # read only when photo i gets points
            return torch.from_numpy(np.asarray(Image.open(outputs.image_filenames[i]).convert("RGB"), dtype=np.float32) / 255)

        sfm = outputs.metadata["points3D_xyz"]
        xyz, rgb = background_points(
            cams.camera_to_worlds, cams.fx[:, 0], cams.fy[:, 0], cams.cx[:, 0], cams.cy[:, 0],
            int(cams.width[0, 0]), int(cams.height[0, 0]), sfm, self.config.background_points, image,
            min_empty_share=self.config.background_min_empty,
        )
        if len(xyz) == 0:  # the SfM points cover the photos
            return
        CONSOLE.log(f"{self.config.data}: {len(xyz)} background seed points where the {len(sfm)} SfM points "
                    "leave the training photos empty")
        outputs.metadata["points3D_xyz"] = torch.cat([sfm.float(), xyz.to(sfm.device)])
        outputs.metadata["points3D_rgb"] = torch.cat([outputs.metadata["points3D_rgb"].to(torch.uint8), rgb])

    _cache: Optional[Path] = None

    def _image_folder(self) -> Path:
        data, factor = self.config.data, self.config.downscale_factor
        try:
            return image_folder(data, factor)
        except DataInputError:
            source = shrink_source(data, factor) if self.config.make_downscaled and factor else None
            if source is None:
                raise
        folder, by = source
        self._cache = cache_folder(data, factor)
        CONSOLE.log(f"{data / f'images_{factor}'} missing: using {folder.name}/ shrunk by {by} in {self._cache}")
        for p in list_images(folder):
            downscaled_copy(p, by, self._cache, "images")
        return self._cache / "images"

    def _llff_outputs(self, split: str) -> DataparserOutputs:
        data = self.config.data
        c2w, hwf, _ = load_poses_bounds(data / "poses_bounds.npy")
        folder = self._image_folder()
        images = list_images(folder)
        if len(images) != len(c2w):
            raise DataInputError(
                f"{data / 'poses_bounds.npy'}: {len(c2w)} poses but {len(images)} images in {folder}"
            )
        sizes = {image_size(p) for p in images}
        if len(sizes) != 1:
            raise DataInputError(f"{folder}: images of different sizes {sorted(sizes)}")
        (height, width) = sizes.pop()

        hold = self.config.hold or find_hold(data) or DEFAULT_HOLD
        i_train, i_test = split_indices(len(images), hold)
        indices = i_train if split == "train" else i_test

        poses = torch.eye(4).repeat(len(c2w), 1, 1)
        poses[:, :3, :4] = torch.from_numpy(c2w).float()
        poses, transform = camera_utils.auto_orient_and_center_poses(
            poses, method=self.config.orientation_method, center_method=self.config.center_method
        )
        scale = self.config.scale_factor
        if self.config.auto_scale_poses:
            scale /= float(torch.max(torch.abs(poses[:, :3, 3])))
        poses[:, :3, 3] *= scale

        full_h, full_w, focal = (float(v) for v in hwf[0])
        fx, fy = focal * width / full_w, focal * height / full_h
        idx = torch.from_numpy(indices).long()
        cameras = Cameras(
            camera_to_worlds=poses[idx, :3, :4],
            fx=fx,
            fy=fy,
            cx=width / 2.0,
            cy=height / 2.0,
            width=width,
            height=height,
            camera_type=CameraType.PERSPECTIVE,
        )
        metadata = {}
        if self.config.load_3D_points:
            points = load_sfm_points(data)
            if points is None:
                CONSOLE.log(f"[yellow]{data}: no SfM points in sparse/0 (points3D.bin/.txt): random initialisation")
            else:
                metadata["points3D_xyz"] = transform_points(points[0], transform, scale)
                metadata["points3D_rgb"] = torch.from_numpy(points[1])
        s = self.config.scene_scale
        return DataparserOutputs(
            image_filenames=[images[i] for i in indices],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
            dataparser_scale=scale,
            dataparser_transform=transform,
            metadata=metadata,
        )

    def _nerfstudio_outputs(self, split: str) -> DataparserOutputs:
        data, factor = self.config.data, self.config.downscale_factor
        # images_K for K > 1 as cocogs-process writes them, or (make_downscaled) images/ shrunk into a cache
        wanted = bool(factor and factor > 1)
        shrink = wanted and not (data / f"images_{factor}").is_dir() and self.config.make_downscaled
        folder = f"images_{factor}" if wanted and not shrink else None
        meta = check_transforms(data, folder)
        cfg = NerfstudioDataParserConfig(
            data=data,
            load_3D_points=self.config.load_3D_points,
            orientation_method=self.config.orientation_method,
            center_method=self.config.center_method,
            auto_scale_poses=self.config.auto_scale_poses,
            scale_factor=self.config.scale_factor,
            scene_scale=self.config.scene_scale,
            eval_mode="interval",
            eval_interval=self.config.hold or find_hold(data) or DEFAULT_HOLD,
            downscale_factor=1 if shrink else factor,
        )
        outputs = _PlyfileNerfstudio(cfg)._generate_dataparser_outputs(split)
        check_image_sizes(outputs, data / "transforms.json")
        if shrink:
            self._cache = cache_folder(data, factor)
            CONSOLE.log(f"{data / f'images_{factor}'} missing: using images shrunk by {factor} in {self._cache}")
            outputs.image_filenames = [downscaled_copy(p, factor, self._cache) for p in outputs.image_filenames]
            h, w = image_size(outputs.image_filenames[0])
            shrink_cameras(outputs.cameras, w, h)
        if "depth_range" in meta:  # written by cocogs-process: SfM depths, in the model's world units
            outputs.metadata["depth_range"] = tuple(float(v) * outputs.dataparser_scale for v in meta["depth_range"])
        return outputs


class _PlyfileNerfstudio(Nerfstudio):
    """nerfstudio's transforms.json parser, reading ``ply_file_path`` with plyfile instead of open3d."""

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: torch.Tensor, scale_factor: float):  # type: ignore[override]
        xyz, rgb = read_ply_points(ply_file_path)
        return {
            "points3D_xyz": transform_points(xyz, transform_matrix, scale_factor),
            "points3D_rgb": torch.from_numpy(rgb),
        }
