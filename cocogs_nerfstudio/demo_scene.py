"""A small defocused test scene in nerfstudio format, rendered with an exact thin-lens camera.

Three textured, fronto-parallel rectangles at depths 2, 3.5 and 6 are seen by cameras on a 5×5
grid, all looking down -z. Each training view is ray traced through a thin lens of aperture
diameter ``D`` focused at its own focus distance (cycling near / middle / far plane): a scene
point at depth z is blurred into a disc of diameter ``fx·D·|1/z − 1/d_F|`` pixels. Every 8th
view (index % 8 == 0) is an all-in-focus test view. ``transforms.json`` stores, per frame, the
ground truth ``focus_distance``, ``aperture_diameter`` and ``coc_px_per_inv_m`` (blur diameter in
px = that × |1/focus − 1/z|), the same keys as the Blender scenes in ../shared/data.
``sharp_train/`` holds all-in-focus twins of the training views (the upper bound of the
benchmarks), ``depth/NNN.npy`` each view's z-depth (the known-lens reference) and ``sparse_pc.ply`` an SfM-like point cloud sampled on the visible surfaces.

``--layout floor`` makes a second scene with other geometry, aperture and focus pattern (a floor
whose depth varies continuously, cards at three depths, a far wall; aperture 0.15; every photo
focused at its own distance): a check that nothing is tuned to the planes.

Usage: ``cocogs-demo-scene OUT [--layout planes|floor --width 96 --height 72 --lens-samples 256]``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Plane:
    """A textured rectangle centred at (``center``, ``z``) (world units, in front of the cameras).

    Its sides run along ``axis_u`` and ``axis_v`` (orthonormal); the default is fronto-parallel
    (x and y), ``axis_v = (0, 0, -1)`` makes a floor or ceiling that recedes from the cameras.
    """

    z: float
    center: Tuple[float, float]
    half_size: Tuple[float, float]
    color_a: Tuple[float, float, float]
    color_b: Tuple[float, float, float]
    cell: float  # checker cell size
    stripe_period: float
    stripe_angle: float
    axis_u: Tuple[float, float, float] = (1.0, 0.0, 0.0)
    axis_v: Tuple[float, float, float] = (0.0, 1.0, 0.0)

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.center[0], self.center[1], self.z])

    def point(self, local: np.ndarray) -> np.ndarray:
        """World points [n, 3] at local coordinates ``local`` [n, 2]."""
        return self.origin + local[:, :1] * np.asarray(self.axis_u) + local[:, 1:] * np.asarray(self.axis_v)

    def texture(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """RGB in [0, 1] at local coordinates (x, y) [...]: a checker modulated by stripes."""
        checker = (np.floor(x / self.cell) + np.floor(y / self.cell)) % 2
        phase = (x * math.cos(self.stripe_angle) + y * math.sin(self.stripe_angle)) / self.stripe_period
        stripes = 0.5 + 0.5 * np.sin(2 * math.pi * phase)
        a, b = np.asarray(self.color_a), np.asarray(self.color_b)
        col = checker[..., None] * a + (1 - checker[..., None]) * b
        return np.clip(col * (0.65 + 0.35 * stripes[..., None]), 0.0, 1.0)


PLANES: Tuple[Plane, ...] = (
    Plane(-2.0, (0.35, -0.2), (0.45, 0.35), (0.95, 0.35, 0.2), (0.98, 0.9, 0.75), 0.1, 0.07, 0.6),
    Plane(-3.5, (-0.55, 0.25), (0.9, 0.7), (0.2, 0.45, 0.95), (0.85, 0.95, 0.9), 0.2, 0.12, -0.9),
    Plane(-6.0, (0.0, 0.0), (6.0, 5.0), (0.15, 0.6, 0.25), (0.9, 0.85, 0.3), 0.35, 0.2, 0.3),
)
FOCUS_CYCLE = (2.0, 3.5, 6.0)

# A second layout with other geometry, aperture and focus pattern: a floor receding from 0.3 to 9
# (depth varies continuously down the image), three cards at 1.8, 3 and 5, a wall at 9; every
# training photo focused at its own distance, log-uniform in [FLOOR_FOCUS_RANGE].
FLOOR_PLANES: Tuple[Plane, ...] = (
    Plane(-4.65, (0.0, -0.55), (3.5, 4.35), (0.55, 0.35, 0.2), (0.9, 0.8, 0.65), 0.5, 0.3, 0.3,
          axis_v=(0.0, 0.0, -1.0)),
    Plane(-9.0, (0.0, 1.0), (6.0, 4.5), (0.3, 0.3, 0.55), (0.85, 0.75, 0.9), 0.4, 0.15, -0.5),
    Plane(-1.8, (-0.45, -0.1), (0.22, 0.28), (0.95, 0.2, 0.3), (0.95, 0.95, 0.95), 0.06, 0.05, 1.1),
    Plane(-3.0, (0.5, 0.1), (0.35, 0.4), (0.1, 0.5, 0.45), (0.95, 0.9, 0.5), 0.12, 0.08, -0.3),
    Plane(-5.0, (-0.6, 0.55), (0.5, 0.45), (0.2, 0.2, 0.2), (0.95, 0.6, 0.15), 0.2, 0.11, 0.8),
)
FLOOR_FOCUS_RANGE = (1.6, 9.0)
LAYOUTS = {"planes": 0.2, "floor": 0.15}  # layout → default aperture diameter (world units)


def camera_centres(grid: int = 5, spacing: Tuple[float, float] = (0.2, 0.15)) -> np.ndarray:
    """Camera centres [grid², 3] on a grid in the z = 0 plane, row by row."""
    xs = (np.arange(grid) - (grid - 1) / 2) * spacing[0]
    ys = (np.arange(grid) - (grid - 1) / 2) * spacing[1]
    return np.array([[x, -y, 0.0] for y in ys for x in xs])


def _lens_samples(n: int, radius: float) -> np.ndarray:
    """n points [n, 2] evenly covering a disc (Vogel spiral)."""
    i = np.arange(n) + 0.5
    r = radius * np.sqrt(i / n)
    theta = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)


def trace(origins: np.ndarray, dirs: np.ndarray, planes: Sequence[Plane]) -> Tuple[np.ndarray, np.ndarray]:
    """Colour [..., 3] and depth [...] of the nearest plane hit by each ray (+inf when none)."""
    best_t = np.full(origins.shape[:-1], np.inf)
    col = np.zeros(origins.shape[:-1] + (3,))
    for p in planes:
        u, v = np.asarray(p.axis_u), np.asarray(p.axis_v)
        normal = np.cross(u, v)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((p.origin - origins) @ normal) / (dirs @ normal)
        rel = origins + t[..., None] * dirs - p.origin
        hx, hy = rel @ u, rel @ v
        hit = np.isfinite(t) & (t > 0) & (np.abs(hx) <= p.half_size[0]) & (np.abs(hy) <= p.half_size[1]) & (t < best_t)
        best_t = np.where(hit, t, best_t)
        col[hit] = p.texture(hx[hit], hy[hit])
    return col, best_t


def render_thin_lens(
    centre: np.ndarray,
    width: int,
    height: int,
    fx: float,
    aperture: float,
    focus: float,
    samples: int,
    seed: int,
    planes: Sequence[Plane] = PLANES,
) -> np.ndarray:
    """Thin-lens render [H, W, 3] of a camera at ``centre`` looking down -z.

    Each pixel averages ``samples`` rays: a jittered sub-pixel position fixes the point on the
    focus plane (depth ``focus``), a point on the lens disc of diameter ``aperture`` the origin.
    """
    rng = np.random.default_rng(seed)
    cx, cy = width / 2, height / 2
    vv, uu = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    lens = _lens_samples(samples, aperture / 2)
    acc = np.zeros((height, width, 3))
    for s in range(samples):
        jit = rng.random((2, height, width))
        d = np.stack([(uu + jit[0] - cx) / fx, -(vv + jit[1] - cy) / fx, -np.ones_like(uu, float)], -1)
        focus_pt = centre + d * focus
        origin = np.broadcast_to(centre + np.array([lens[s, 0], lens[s, 1], 0.0]), d.shape)
        col, _ = trace(origin, focus_pt - origin, planes)
        acc += col
    return acc / samples


def render_depth(centre: np.ndarray, width: int, height: int, fx: float, planes: Sequence[Plane] = PLANES) -> np.ndarray:
    """z-depth [H, W] of the surface at each pixel centre of a camera at ``centre`` looking down -z
    (+inf where no plane is hit): what the blur of the thin-lens renders depends on."""
    vv, uu = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    d = np.stack([(uu - width / 2) / fx, -(vv - height / 2) / fx, -np.ones_like(uu)], -1)
    _, t = trace(np.broadcast_to(centre, d.shape), d, planes)  # |d_z| = 1: t is the z-depth
    return t


def sample_points(n_per_plane: int, seed: int, planes: Sequence[Plane] = PLANES) -> Tuple[np.ndarray, np.ndarray]:
    """SfM-like points: uniform samples on the parts of the planes a centre camera can see."""
    rng = np.random.default_rng(seed)
    pts, cols = [], []
    for p in planes:
        half = np.minimum(np.asarray(p.half_size), 0.75 * abs(p.z) + 0.5)
        local = (rng.random((n_per_plane, 2)) * 2 - 1) * half
        xyz = p.point(local)
        # occluded by a nearer plane as seen from the origin?
        _, depth = trace(np.zeros_like(xyz), xyz, planes)
        visible = depth >= 1.0 - 1e-6
        pts.append(xyz[visible] + rng.normal(0, 0.005, xyz[visible].shape))
        cols.append(p.texture(local[visible, 0], local[visible, 1]))
    return np.concatenate(pts), np.concatenate(cols)


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """ASCII PLY with float xyz and uchar rgb (what nerfstudio's ``ply_file_path`` reads)."""
    rgb8 = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    header = (
        f"ply\nformat ascii 1.0\nelement vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    lines = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(xyz, rgb8, strict=True)]
    path.write_text(header + "\n".join(lines) + "\n")


def _save_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8)).save(path)


def make_demo_scene(
    out: Path,
    width: int = 96,
    height: int = 72,
    aperture: float = 0.2,
    lens_samples: int = 256,
    hold: int = 8,
    grid: int = 5,
    seed: int = 0,
    layout: str = "planes",
) -> Path:
    """Write the demo scene to ``out`` and return the path of its ``transforms.json``.

    ``layout``: 'planes' (the bundled demo: three fronto-parallel planes, focus cycling through
    them) or 'floor' (:data:`FLOOR_PLANES`, a continuous focus per photo).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: one of {sorted(LAYOUTS)}")
    planes = PLANES if layout == "planes" else FLOOR_PLANES
    focus_rng = np.random.default_rng(seed + 7)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fx = 0.9375 * width  # 54° horizontal field of view
    centres = camera_centres(grid)
    frames: List[dict] = []
    train, test = [], []
    k = 0
    for i, c in enumerate(centres):
        name = f"images/{i:03d}.png"
        is_test = i % hold == 0
        sharp = render_thin_lens(c, width, height, fx, 0.0, 1.0, 16, seed + 1000 + i, planes)
        c2w = np.eye(4)
        c2w[:3, 3] = c
        frame = {"file_path": name, "transform_matrix": c2w.tolist(), "is_test": is_test}
        if is_test:
            _save_png(out / name, sharp)
            frame.update(focus_distance=None, aperture_diameter=0.0, dof=False, sharp_file_path=name)
            test.append(name)
        else:
            if layout == "planes":
                focus = FOCUS_CYCLE[k % len(FOCUS_CYCLE)]
            else:
                lo, hi = np.log(FLOOR_FOCUS_RANGE)
                focus = round(float(np.exp(focus_rng.uniform(lo, hi))), 3)
            k += 1
            img = render_thin_lens(c, width, height, fx, aperture, focus, lens_samples, seed + i, planes)
            _save_png(out / name, img)
            _save_png(out / "sharp_train" / f"{i:03d}.png", sharp)
            frame.update(
                focus_distance=focus,
                aperture_diameter=aperture,
                dof=True,
                coc_px_per_inv_m=fx * aperture,
                sharp_file_path=f"sharp_train/{i:03d}.png",
            )
            train.append(name)
        frames.append(frame)
        (out / "depth").mkdir(exist_ok=True)
        np.save(out / "depth" / f"{i:03d}.npy", render_depth(c, width, height, fx, planes).astype(np.float32))
    xyz, rgb = sample_points(1500, seed, planes)
    write_ply(out / "sparse_pc.ply", xyz, rgb)
    meta = {
        "camera_model": "OPENCV",
        "fl_x": fx,
        "fl_y": fx,
        "cx": width / 2,
        "cy": height / 2,
        "w": width,
        "h": height,
        "ply_file_path": "sparse_pc.ply",
        "train_filenames": train,
        "val_filenames": test,
        "test_filenames": test,
        "layout": layout,
        "plane_depths": [-p.z for p in planes],
        "frames": frames,
    }
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    (out / f"hold={hold}").touch()
    return out / "transforms.json"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=72)
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="planes", help="scene geometry and focus pattern")
    parser.add_argument("--aperture", type=float, default=None, help="lens aperture diameter (world units); "
                        "default: 0.2 (planes), 0.15 (floor)")
    parser.add_argument("--lens-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    aperture = LAYOUTS[args.layout] if args.aperture is None else args.aperture
    path = make_demo_scene(
        args.out, args.width, args.height, aperture, args.lens_samples, seed=args.seed, layout=args.layout
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
