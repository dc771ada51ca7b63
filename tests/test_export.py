"""``cocogs-export``: the 3DGS PLY written without nerfstudio's exporter (no open3d), checked by
hand, without open3d importable, and against ``ns-export gaussian-splat`` where open3d works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import console_script, make_trainer

from cocogs_nerfstudio.export import gaussian_properties, keep_mask, write_gaussian_ply


def _trained(demo_scene: Path, tmp_path: Path):
    trainer = make_trainer(demo_scene, tmp_path, steps=3, name="export", coc_start_step=0)
    trainer.train()
    return trainer.pipeline.model, next(tmp_path.rglob("config.yml"))


def _read_ply(path: Path) -> dict:
    from plyfile import PlyData

    vertex = PlyData.read(str(path))["vertex"]
    return {name: np.asarray(vertex[name]) for name in vertex.data.dtype.names}


def test_ply_holds_the_gaussians_as_3dgs_viewers_read_them(demo_scene: Path, tmp_path: Path) -> None:
    """Means, logit opacity, log scales, raw quaternions and SH coefficients (the rest per colour
    channel), float32; non-finite and < 1/255 opaque Gaussians left out; then the command itself
    with open3d made unimportable (a machine without libusb) writes it and the depth of field."""
    model, config = _trained(demo_scene, tmp_path)
    with torch.no_grad():
        model.opacities[0] = -10.0  # under 1/255: rasterizers skip it
        model.means[1, 0] = float("nan")
    props = gaussian_properties(model)
    n, rest = model.num_points, model.features_rest.shape[1]
    assert list(props)[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert list(props)[9:] == [f"f_rest_{i}" for i in range(3 * rest)] + ["opacity"] + [
        f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]  # fmt: skip
    keep = keep_mask(props)
    assert not keep[0] and not keep[1] and keep[2:].all()
    count = write_gaussian_ply(tmp_path / "splat.ply", {k: v[keep] for k, v in props.items()})
    ply = _read_ply(tmp_path / "splat.ply")
    assert count == n - 2 and all(v.dtype == np.float32 and v.shape == (n - 2,) for v in ply.values())
    g = 5  # a Gaussian kept, at row g - 2 of the file
    assert ply["x"][g - 2] == pytest.approx(float(model.means[g, 0]))
    assert ply["opacity"][g - 2] == pytest.approx(float(model.opacities[g, 0]))
    assert ply["scale_2"][g - 2] == pytest.approx(float(model.scales[g, 2]))
    assert ply["rot_0"][g - 2] == pytest.approx(float(model.quats[g, 0]))
    assert ply["f_rest_1"][g - 2] == pytest.approx(float(model.features_rest[g, 1, 0]))  # red, coefficient 2
    assert ply["f_rest_" + str(rest)][g - 2] == pytest.approx(float(model.features_rest[g, 0, 1]))  # green, first

    hidden = tmp_path / "no_open3d"
    (hidden / "open3d").mkdir(parents=True)
    (hidden / "open3d" / "__init__.py").write_text("raise ImportError('libusb-1.0.so.0: cannot open shared object file')\n")
    env = {**os.environ, "PYTHONPATH": f"{hidden}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "export"
    cmd = [console_script("cocogs-export"), "--load-config", str(config), "--output-dir", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(_read_ply(out / "splat.ply")["x"]) == model.num_points  # this checkpoint: all finite, opaque
    dof = json.loads((out / "depth_of_field.json").read_text())
    assert len(dof["photos"]) == model.lens.focus_log.shape[0]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)  # never silently replaced
    assert again.returncode != 0 and again.stderr.strip().splitlines()[-1].startswith("error: already there:")
    missing = subprocess.run([cmd[0], "--load-config", str(tmp_path / "nope.yml"), "--output-dir", str(out)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode != 0 and missing.stderr.strip() == f"error: {tmp_path / 'nope.yml'}: no such config file " \
        "(the config.yml of a run under outputs/)"


def test_ply_matches_nerfstudios_gaussian_splat_export(demo_scene: Path, tmp_path: Path) -> None:
    """Where open3d imports (Debian's libusb installed), ``ns-export gaussian-splat`` and
    ``cocogs-export`` write the same properties, in the same order, with the same values."""
    probe = subprocess.run([sys.executable, "-c", "import open3d"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("open3d does not import here (libusb-1.0-0 missing): nerfstudio's exporter cannot run")
    _, config = _trained(demo_scene, tmp_path)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for cmd, out in (([console_script("cocogs-export")], ours), ([console_script("ns-export"), "gaussian-splat"], theirs)):
        res = subprocess.run([*cmd, "--load-config", str(config), "--output-dir", str(out)], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
    a, b = _read_ply(ours / "splat.ply"), _read_ply(theirs / "splat.ply")
    assert list(a) == list(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
