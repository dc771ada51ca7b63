"""``cocogs-export``: the sharp Gaussians as a 3DGS PLY, plus the learned depth of field.

``splat.ply`` has the vertex layout of nerfstudio's ``ns-export gaussian-splat`` (and of the
original 3DGS code, which viewers read): x, y, z, nx, ny, nz, f_dc_*, f_rest_* (or red, green,
blue), opacity (logit), scale_* (log), rot_* (w, x, y, z); Gaussians with non-finite values or an
opacity under 1/255 are left out, as nerfstudio does. It is written here, without nerfstudio's
exporter module, which imports open3d (and with it a system library, libusb, that a fresh machine
may lack). Beside it, ``depth_of_field.json`` (:mod:`depth_of_field`) records what the model
learned about the lens, so that other tools can refocus.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

import numpy as np
import torch
import tyro

from cocogs_nerfstudio.depth_of_field import depth_of_field_summary

LOW_OPACITY_LOGIT = -5.5373  # logit(1/255): rasterizers skip such Gaussians


def gaussian_properties(model, color_mode: Literal["sh_coeffs", "rgb"] = "sh_coeffs") -> Dict[str, np.ndarray]:
    """The PLY's vertex properties, in file order, as [N] arrays (float32, or uint8 for rgb)."""
    with torch.no_grad():
        means = model.means.detach().cpu().numpy()
        n = means.shape[0]
        props: Dict[str, np.ndarray] = {axis: means[:, i] for i, axis in enumerate("xyz")}
        props.update({name: np.zeros(n, np.float32) for name in ("nx", "ny", "nz")})
        if color_mode == "rgb":
            rgb = (model.colors.detach().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
            props.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
        else:
            dc = model.shs_0.detach().cpu().numpy()
            props.update({f"f_dc_{i}": dc[:, i] for i in range(dc.shape[1])})
            if model.config.sh_degree > 0:  # per colour channel, then per coefficient (the 3DGS order)
                rest = model.shs_rest.detach().transpose(1, 2).reshape(n, -1).cpu().numpy()
                props.update({f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])})
        props["opacity"] = model.opacities.detach().reshape(n).cpu().numpy()
        scales, quats = model.scales.detach().cpu().numpy(), model.quats.detach().cpu().numpy()
        props.update({f"scale_{i}": scales[:, i] for i in range(3)})
        props.update({f"rot_{i}": quats[:, i] for i in range(4)})
    return {k: v if v.dtype == np.uint8 else v.astype(np.float32) for k, v in props.items()}


def keep_mask(props: Dict[str, np.ndarray]) -> np.ndarray:
    """Gaussians with every value finite and an opacity of at least 1/255."""
    keep = np.ones(len(props["x"]), dtype=bool)
    for values in props.values():
        if values.dtype != np.uint8:
            keep &= np.isfinite(values)
    return keep & (props["opacity"] >= LOW_OPACITY_LOGIT)


def write_gaussian_ply(path: Path, props: Dict[str, np.ndarray], comment: str = "cocogs-export") -> int:
    """Binary little-endian PLY of one ``vertex`` element with ``props`` in order; returns the count."""
    count = len(next(iter(props.values())))
    dtype = [(name, "<f4" if values.dtype != np.uint8 else "u1") for name, values in props.items()]
    vertices = np.empty(count, dtype=dtype)
    for name, values in props.items():
        vertices[name] = values
    header = ["ply", "format binary_little_endian 1.0", f"comment {comment}", "comment Vertical Axis: z",
              f"element vertex {count}"]  # fmt: skip
    header += [f"property {'uchar' if values.dtype == np.uint8 else 'float'} {name}" for name, values in props.items()]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\nend_header\n").encode())
        f.write(vertices.tobytes())
    return count


@dataclass
class ExportWithDepthOfField:
    """Export the sharp Gaussians to a PLY, and the learned depth of field to a JSON beside it."""

    load_config: Path
    """config.yml of the trained run."""
    output_dir: Path
    """Folder to write into (made if missing)."""
    output_filename: str = "splat.ply"
    """Name of the PLY."""
    dof_filename: str = "depth_of_field.json"
    """Name of the depth-of-field file written beside the PLY."""
    ply_color_mode: Literal["sh_coeffs", "rgb"] = "sh_coeffs"
    """'sh_coeffs': spherical-harmonic coefficients (3DGS viewers); 'rgb': the base colour as bytes."""
    obb_center: Optional[Tuple[float, float, float]] = None
    """Centre of an oriented box to crop to (with ``obb_rotation`` and ``obb_scale``)."""
    obb_rotation: Optional[Tuple[float, float, float]] = None
    """Rotation of the box, roll-pitch-yaw in radians."""
    obb_scale: Optional[Tuple[float, float, float]] = None
    """Size of the box along its axes."""
    overwrite: bool = False
    """Replace a PLY or depth-of-field file already in ``output_dir``."""

    def main(self) -> None:
        if not self.load_config.is_file():
            sys.exit(f"error: {self.load_config}: no such config file (the config.yml of a run under outputs/)")
        ply, dof = self.output_dir / self.output_filename, self.output_dir / self.dof_filename
        existing = [str(p) for p in (ply, dof) if p.exists()]
        if existing and not self.overwrite:
            sys.exit(f"error: already there: {', '.join(existing)}; choose another --output-dir or pass --overwrite")
        from nerfstudio.utils.eval_utils import eval_setup

        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="inference")
        model = pipeline.model
        props = gaussian_properties(model, self.ply_color_mode)
        keep = keep_mask(props)
        if self.obb_center is not None and self.obb_rotation is not None and self.obb_scale is not None:
            from nerfstudio.data.scene_box import OrientedBox

            box = OrientedBox.from_params(self.obb_center, self.obb_rotation, self.obb_scale)
            keep &= box.within(model.means.detach().cpu()).numpy()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        count = write_gaussian_ply(ply, {k: v[keep] for k, v in props.items()})
        print(f"wrote {ply}: {count} of {len(keep)} Gaussians")
        if not getattr(model.config, "coc_enabled", False):
            print(f"{self.load_config}: trained with CoC off; no depth of field to write")
            return
        dataset = pipeline.datamanager.train_dataset
        outputs = dataset._dataparser_outputs
        summary = depth_of_field_summary(model, dataset.cameras, outputs.image_filenames, float(outputs.dataparser_scale))
        summary["ply"] = self.output_filename
        summary["dataparser_transform"] = outputs.dataparser_transform.tolist()
        dof.write_text(json.dumps(summary, indent=1))
        print(f"wrote {dof}")


def main() -> None:
    tyro.cli(ExportWithDepthOfField).main()


if __name__ == "__main__":
    main()
