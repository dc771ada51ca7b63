"""A second Cycles-rendered defocus scene with sharp twins, unlike the dev scene (issue 12).

The dev scene (../shared/data/synthetic_defocus_dev) is a tabletop at 0.4–2.4 m seen at f/1.4
with a 35 mm lens, every photo focused alternately near or far. This one is a deeper outdoor-like
layout at 1.1–8 m: a monkey head on a post (near), a row of chequered columns receding from 2 to
6 m, a stack of noisy cubes, the word DEFOCUS standing at 3.6 m, a Voronoi sphere, a textured
ground and a stone wall; 50 mm lens at **f/1.8**, the photos focused in a **near / middle / far
cycle** on three objects, the cameras on a 6×4 grid all converging on one point. Procedural
materials only (no assets), sun and sky light.

It needs a Python with ``bpy`` (Blender as a module, from PyPI; not a dependency of the plugin)::

    python3 -m venv /tmp/bpyenv && /tmp/bpyenv/bin/pip install "bpy==4.5.*" pillow
    /tmp/bpyenv/bin/python benchmarks/cycles_scene.py /tmp/bench/cycles

and writes the layout of the dev scene (read by the plugin's dataparser and
``benchmarks/run.py``): ``images/NNN.png`` (training views defocused, every 8th view a sharp
test view), ``sharp_train/`` (all-in-focus twins of the training views: the upper bound),
``depth/NNN.npy`` (z-depth of every view, ray cast at pixel centres), ``poses_bounds.npy``,
``transforms.json`` (per frame ``focus_distance``, ``f_stop``, ``coc_px_per_inv_m``: blur
diameter in px = that × |1/focus − 1/z|), COLMAP ``sparse/0`` (text, exact poses) with points
back-projected from the sharp depth, ``sparse_pc.ply``, ``hold=8`` and ``scene.json``.
``benchmarks/triangulated_scene.py`` makes its variant with points triangulated from the
defocused photos.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np

HOLD = 8
LENS_MM = 50.0
SENSOR_MM = 36.0
F_STOP = 1.8
TARGET = (0.0, 3.5, 0.55)  # every camera looks at this point (Blender world, z up)
# what the training photos are focused on, cycling (world points: the z-depth of each is the focus)
FOCUS_POINTS = {"near": (-0.22, 1.25, 0.62), "middle": (-0.3, 3.6, 0.85), "far": (1.1, 4.9, 0.5)}
FOCUS_CYCLE = ("near", "middle", "far")


# ---------------------------------------------------------------- cameras and file formats (no bpy)
def camera_positions(cols: int = 6, rows: int = 4) -> np.ndarray:
    """Camera centres [cols·rows, 3] on a vertical grid 0.9 m wide and 0.3 m high at y = 0."""
    xs = np.linspace(-0.45, 0.45, cols)
    zs = 0.8 + np.linspace(0.15, -0.15, rows)
    return np.array([(x, 0.0, z) for z in zs for x in xs])


def look_at(eye: Sequence[float], target: Sequence[float] = TARGET) -> np.ndarray:
    """Camera-to-world 4×4 in OpenGL/Blender camera axes (x right, y up, looking down −z), world z up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
    return c2w


def z_depth(c2w: np.ndarray, point: Sequence[float]) -> float:
    """Distance of ``point`` in front of the camera along its optical axis (the focus distance)."""
    return float(np.dot(np.asarray(point, float) - c2w[:3, 3], -c2w[:3, 2]))


def llff_poses_bounds(c2ws: np.ndarray, hwf: Tuple[float, float, float], bounds: np.ndarray) -> np.ndarray:
    """N×17 ``poses_bounds.npy`` rows: [R|t|hwf] with LLFF columns [down, right, back], then near, far."""
    rows = []
    for c2w, (near, far) in zip(c2ws, bounds):
        mat = np.concatenate([-c2w[:3, 1:2], c2w[:3, 0:1], c2w[:3, 2:3], c2w[:3, 3:4], np.array(hwf)[:, None]], 1)
        rows.append(np.concatenate([mat.ravel(), [near, far]]))
    return np.array(rows)


def rotmat_to_quat(rot: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternion of a rotation matrix, w ≥ 0."""
    m = rot
    w = math.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def write_colmap_text(
    folder: Path, c2ws: np.ndarray, names: Sequence[str], size: Tuple[int, int], fx: float,
    xyz: np.ndarray, rgb: np.ndarray,
) -> None:
    """COLMAP text model (one PINHOLE camera, exact world-to-camera poses in OpenCV axes, points)."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    (folder / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"1 PINHOLE {w} {h} {fx:.10f} {fx:.10f} {w / 2:.10f} {h / 2:.10f}\n"
    )
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, (c2w, name) in enumerate(zip(c2ws, names)):
        c2w_cv = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
        w2c = np.linalg.inv(c2w_cv)
        q, t = rotmat_to_quat(w2c[:3, :3]), w2c[:3, 3]
        lines += [f"{i + 1} " + " ".join(f"{v:.12f}" for v in (*q, *t)) + f" 1 {name}", ""]
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    pts = ["# 3D point list with one line of data per point:",
           "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    pts += [f"{i + 1} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {c[0]} {c[1]} {c[2]} 0.0" for i, (p, c) in enumerate(zip(xyz, rgb))]
    (folder / "points3D.txt").write_text("\n".join(pts) + "\n")


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY of coloured points (x y z float, red green blue uchar)."""
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    rec = np.zeros(len(xyz), dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    rec["p"], rec["c"] = xyz, rgb
    path.write_bytes(header.encode() + rec.tobytes())


def back_project(depth: np.ndarray, c2w: np.ndarray, fx: float, pixels: np.ndarray) -> np.ndarray:
    """World points [P, 3] of pixel centres ``pixels`` [P, 2] (u, v) with z-depth ``depth`` [H, W]."""
    h, w = depth.shape
    u, v = pixels[:, 0] + 0.5, pixels[:, 1] + 0.5
    z = depth[pixels[:, 1], pixels[:, 0]]
    cam = np.stack([(u - w / 2) / fx * z, -(v - h / 2) / fx * z, -z], 1)  # OpenGL camera axes
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


# ---------------------------------------------------------------- the Blender scene
def _material(name: str, build) -> "object":
    import bpy

    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.6
    coords = nodes.new("ShaderNodeTexCoord")
    build(nodes, links, coords.outputs["Object"], bsdf.inputs["Base Color"])
    return mat


def _ramp(nodes, links, fac, colors: Sequence[Tuple[float, float, float]], out, span=(0.0, 1.0)) -> None:
    ramp = nodes.new("ShaderNodeValToRGB")
    for i, c in enumerate(colors):
        pos = span[0] + (span[1] - span[0]) * i / (len(colors) - 1)
        el = ramp.color_ramp.elements[i] if i < 2 else ramp.color_ramp.elements.new(pos)
        el.position = pos
        el.color = (*c, 1.0)
    links.new(fac, ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], out)


def _checker(scale: float, a, b):
    def build(nodes, links, vec, out):
        tex = nodes.new("ShaderNodeTexChecker")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Color1"].default_value = (*a, 1.0)
        tex.inputs["Color2"].default_value = (*b, 1.0)
        links.new(vec, tex.inputs["Vector"])
        links.new(tex.outputs["Color"], out)
    return build


def _noise(scale: float, detail: float, colors, span=(0.3, 0.7)):
    def build(nodes, links, vec, out):
        tex = nodes.new("ShaderNodeTexNoise")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Detail"].default_value = detail
        links.new(vec, tex.inputs["Vector"])
        _ramp(nodes, links, tex.outputs["Fac"], colors, out, span)
    return build


def _voronoi(scale: float, colors, span=(0.0, 0.8)):
    def build(nodes, links, vec, out):
        tex = nodes.new("ShaderNodeTexVoronoi")
        tex.inputs["Scale"].default_value = scale
        links.new(vec, tex.inputs["Vector"])
        _ramp(nodes, links, tex.outputs["Distance"], colors, out, span)
    return build


def _wave(scale: float, colors):
    def build(nodes, links, vec, out):
        tex = nodes.new("ShaderNodeTexWave")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Distortion"].default_value = 2.0
        links.new(vec, tex.inputs["Vector"])
        _ramp(nodes, links, tex.outputs["Fac"], colors, out)
    return build


def build_scene() -> None:
    """Replace Blender's default scene with this one."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    ops = bpy.ops.mesh

    def add(obj, mat):
        obj.data.materials.append(mat)
        return obj

    ops.primitive_plane_add(size=1, location=(0, 4.5, 0))
    ground = add(bpy.context.object, _material("ground", _noise(6.0, 8.0, [(0.08, 0.06, 0.04), (0.35, 0.28, 0.18), (0.1, 0.22, 0.06)])))
    ground.scale = (14, 14, 1)
    ops.primitive_plane_add(size=1, location=(0, 8.0, 2.0), rotation=(math.pi / 2, 0, 0))
    wall = add(bpy.context.object, _material("wall", _voronoi(2.0, [(0.04, 0.04, 0.05), (0.45, 0.35, 0.28), (0.65, 0.6, 0.55)])))
    wall.scale = (14, 4, 1)
    # near: a monkey head on a post
    ops.primitive_cylinder_add(radius=0.05, depth=0.5, location=(-0.22, 1.25, 0.25))
    add(bpy.context.object, _material("post", _checker(40.0, (0.9, 0.9, 0.85), (0.1, 0.1, 0.1))))
    ops.primitive_monkey_add(size=0.3, location=(-0.22, 1.25, 0.62), rotation=(0.2, 0, 0.35))
    monkey = add(bpy.context.object, _material("monkey", _wave(12.0, [(0.7, 0.2, 0.1), (0.95, 0.85, 0.6), (0.1, 0.3, 0.5)])))
    monkey.modifiers.new("smooth", "SUBSURF").levels = 1
    # a row of chequered columns receding from 2 to 6 m
    for k in range(5):
        t = k / 4
        ops.primitive_cylinder_add(radius=0.1, depth=1.6, location=(0.65 - 2.3 * t, 2.0 + 4.0 * t, 0.8))
        add(bpy.context.object, _material(f"column{k}", _checker(14.0, (0.85, 0.8, 0.2 + 0.15 * k), (0.15, 0.2, 0.45))))
    # a stack of noisy cubes
    for k, (x, z, s) in enumerate([(0.45, 0.15, 0.3), (0.5, 0.42, 0.24), (0.42, 0.63, 0.18)]):
        ops.primitive_cube_add(size=s, location=(x, 2.8, z), rotation=(0, 0, 0.4 * k))
        add(bpy.context.object, _material(f"cube{k}", _noise(18.0, 12.0, [(0.05, 0.35, 0.15), (0.9, 0.9, 0.8), (0.6, 0.1, 0.3)])))
    # the word DEFOCUS standing at 3.6 m
    bpy.ops.object.text_add(location=(-1.05, 3.6, 0.7), rotation=(math.pi / 2, 0, 0))
    text = bpy.context.object
    text.data.body = "DEFOCUS"
    text.data.size = 0.38
    text.data.extrude = 0.03
    text.data.materials.append(_material("text", _checker(60.0, (0.95, 0.75, 0.1), (0.8, 0.1, 0.05))))
    # a Voronoi sphere and a cone, far
    ops.primitive_uv_sphere_add(radius=0.5, location=(1.1, 4.9, 0.5), segments=64, ring_count=32)
    add(bpy.context.object, _material("sphere", _voronoi(8.0, [(0.9, 0.95, 1.0), (0.2, 0.4, 0.7), (0.05, 0.05, 0.1)])))
    bpy.ops.object.shade_smooth()
    ops.primitive_cone_add(radius1=0.4, depth=1.2, location=(-0.4, 5.8, 0.6))
    add(bpy.context.object, _material("cone", _wave(6.0, [(0.3, 0.6, 0.2), (0.9, 0.95, 0.5)])))
    # light: sun and a blue-grey sky
    bpy.ops.object.light_add(type="SUN", location=(2, -2, 6), rotation=(0.7, 0.2, 0.6))
    bpy.context.object.data.energy = 2.2
    bpy.context.object.data.angle = math.radians(8)
    world = bpy.data.worlds.new("sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.45, 0.55, 0.75, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.45
    scene.world = world


def setup_render(width: int, height: int, spp: int) -> None:
    import bpy

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = spp
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.adaptive_threshold = 0.01
    scene.cycles.seed = 0
    scene.cycles.max_bounces = 4
    scene.cycles.use_denoising = True
    scene.cycles.denoiser = "OPENIMAGEDENOISE"
    scene.cycles.denoising_prefilter = "ACCURATE"
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.image_settings.color_depth = "8"
    scene.render.dither_intensity = 0.0
    scene.view_settings.view_transform = "Standard"
    cam_data = bpy.data.cameras.new("camera")
    cam_data.lens = LENS_MM
    cam_data.sensor_width = SENSOR_MM
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.dof.aperture_fstop = F_STOP
    cam_data.dof.aperture_blades = 0
    cam = bpy.data.objects.new("camera", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam


def render(path: Path, c2w: np.ndarray, focus: float | None) -> None:
    import bpy
    from mathutils import Matrix

    scene = bpy.context.scene
    cam = scene.camera
    cam.matrix_world = Matrix(c2w.tolist())
    cam.data.dof.use_dof = focus is not None
    if focus is not None:
        cam.data.dof.focus_distance = focus
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def ray_depth(c2w: np.ndarray, width: int, height: int, fx: float, far: float = 100.0) -> np.ndarray:
    """z-depth [H, W] of the first surface hit through each pixel centre (``far`` where none)."""
    import bpy
    from mathutils import Vector

    scene = bpy.context.scene
    graph = bpy.context.evaluated_depsgraph_get()
    origin = Vector(c2w[:3, 3].tolist())
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    d_cam = np.stack([(u - width / 2) / fx, -(v - height / 2) / fx, -np.ones_like(u)], -1).reshape(-1, 3)
    norm = np.linalg.norm(d_cam, axis=1)
    dirs = (d_cam / norm[:, None]) @ c2w[:3, :3].T
    depth = np.full(len(dirs), far, np.float32)
    for j, d in enumerate(dirs.tolist()):
        hit, loc, *_ = scene.ray_cast(graph, origin, Vector(d))
        if hit:
            depth[j] = (loc - origin).length / norm[j]  # z-depth: the hit distance along the optical axis
    depth = depth.reshape(height, width)
    return depth


def make_scene(out: Path, width: int = 400, height: int = 300, spp: int = 32, points_per_view: int = 600) -> Dict:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    build_scene()
    setup_render(width, height, spp)
    fx = width * LENS_MM / SENSOR_MM
    aperture = LENS_MM / F_STOP / 1000.0  # m
    c2ws = np.array([look_at(p) for p in camera_positions()])
    names = [f"{i:03d}.png" for i in range(len(c2ws))]
    rng = np.random.default_rng(0)
    frames, xyz, rgb, bounds, k = [], [], [], [], 0
    t0 = time.time()
    for i, (c2w, name) in enumerate(zip(c2ws, names)):
        is_test = i % HOLD == 0
        sharp_path = out / ("images" if is_test else "sharp_train") / name
        render(sharp_path, c2w, None)
        depth = ray_depth(c2w, width, height, fx)
        (out / "depth").mkdir(exist_ok=True)
        np.save(out / "depth" / f"{i:03d}.npy", depth)
        sharp = np.asarray(Image.open(sharp_path).convert("RGB"))
        pix = np.stack([rng.integers(0, width, points_per_view), rng.integers(0, height, points_per_view)], 1)
        keep = depth[pix[:, 1], pix[:, 0]] < 50.0
        xyz.append(back_project(depth, c2w, fx, pix[keep]))
        rgb.append(sharp[pix[keep, 1], pix[keep, 0]])
        valid = depth[depth < 50.0]
        bounds.append((float(valid.min()) * 0.9, float(valid.max()) * 1.1))
        frame = {"file_path": f"images/{name}", "transform_matrix": c2w.tolist(), "is_test": is_test}
        if is_test:
            frame.update(focus_distance=None, f_stop=None, dof=False, focus_on=None, sharp_file_path=f"images/{name}")
        else:
            target = FOCUS_CYCLE[k % len(FOCUS_CYCLE)]
            k += 1
            focus = z_depth(c2w, FOCUS_POINTS[target])
            render(out / "images" / name, c2w, focus)
            frame.update(focus_distance=focus, f_stop=F_STOP, dof=True, focus_on=target,
                         sharp_file_path=f"sharp_train/{name}", coc_px_per_inv_m=fx * aperture)
        frames.append(frame)
        print(f"view {i:02d} {'test' if is_test else frame['focus_on']:6s} {time.time() - t0:6.0f} s", flush=True)
    xyz, rgb = np.concatenate(xyz).astype(np.float32), np.concatenate(rgb).astype(np.uint8)
    write_colmap_text(out / "sparse" / "0", c2ws, names, (width, height), fx, xyz, rgb)
    write_ply(out / "sparse_pc.ply", xyz, rgb)
    np.save(out / "poses_bounds.npy", llff_poses_bounds(c2ws, (height, width, fx), np.array(bounds)))
    (out / f"hold={HOLD}").touch()
    train = [f["file_path"] for f in frames if not f["is_test"]]
    test = [f["file_path"] for f in frames if f["is_test"]]
    (out / "train_filenames.txt").write_text("\n".join(train) + "\n")
    (out / "test_filenames.txt").write_text("\n".join(test) + "\n")
    meta = {"camera_model": "OPENCV", "fl_x": fx, "fl_y": fx, "cx": width / 2, "cy": height / 2, "w": width,
            "h": height, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "lens_mm": LENS_MM, "sensor_width_mm": SENSOR_MM,
            "ply_file_path": "sparse_pc.ply", "train_filenames": train, "val_filenames": test,
            "test_filenames": test, "frames": frames}
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    import bpy

    info = {
        "name": "cycles_deep",
        "renderer": f"Blender Cycles (bpy {bpy.app.version_string}, CPU), path tracing, thin-lens DoF (circular aperture)",
        "resolution": [width, height], "spp": spp, "adaptive_sampling": "on (threshold 0.01)",
        "denoiser": "OpenImageDenoise, prefilter ACCURATE, identical for sharp and defocused renders",
        "view_transform": "Standard (sRGB), 8-bit PNG, no dither", "lens_mm": LENS_MM, "sensor_width_mm": SENSOR_MM,
        "f_stop": F_STOP, "aperture_m": aperture, "coc_px_per_inv_m": fx * aperture,
        "coc_note": "blur diameter in px ≈ coc_px_per_inv_m × |1/focus − 1/z| (thin lens, focus ≫ focal length)",
        "focus_points_world": FOCUS_POINTS, "focus_cycle": list(FOCUS_CYCLE), "look_at": TARGET,
        "n_views": len(c2ws), "hold": HOLD, "points": len(xyz),
        "depth_range_m": [float(min(b[0] for b in bounds) / 0.9), float(max(b[1] for b in bounds) / 1.1)],
        "render_seconds": round(time.time() - t0),
    }
    (out / "scene.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=300)
    parser.add_argument("--spp", type=int, default=32)
    args = parser.parse_args(argv)
    print(json.dumps(make_scene(args.out, args.width, args.height, args.spp), indent=1))


if __name__ == "__main__":
    main()
