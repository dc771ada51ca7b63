"""``cocogs-export``: nerfstudio's ``gaussian-splat`` export plus the learned depth of field.

The PLY holds the sharp base Gaussians (nerfstudio's exporter, unchanged). Beside it,
``depth_of_field.json`` records what the model learned about the lens, so that other tools can
refocus: each training photo's focus distance d_F, the aperture K that h_θ predicts for that
photo's camera (median and spread over the Gaussians), the CoC form (Eq. 7) and the frame of the
numbers (the exported PLY's world units, and the scale to the input poses' units).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import torch
import tyro
from nerfstudio.scripts.exporter import ExportGaussianSplat


def _coc_formula(form: str) -> str:
    if form == "world":
        return "CoC diameter (world units) = K * d * |1/d - 1/d_F|; in pixels ~ f_px * K * |1/d - 1/d_F|"
    return "CoC diameter (world units) = K * |1/d - 1/d_F|"


@torch.no_grad()
def depth_of_field_summary(model, cameras, image_filenames: List[Path], dataparser_scale: float) -> Dict:
    """The learned focus and aperture of every training photo (world units of the model / PLY)."""
    cfg = model.config
    scales, quats = torch.exp(model.scales), model.quats
    photos = []
    for i in range(len(cameras)):
        centre = cameras.camera_to_worlds[i, :3, 3].to(model.device)
        k = model.aperture_of(model.coc_mlp(centre, model.means, scales, quats))
        q = torch.quantile(k.float(), torch.tensor([0.1, 0.5, 0.9], device=k.device)).tolist()
        focus = float(model.focus_distance(i))
        entry = {
            "image": Path(image_filenames[i]).name,
            "focus_distance": focus,
            "focus_distance_input_units": focus / dataparser_scale,
            "aperture_K_median": q[1],
            "aperture_K_p10_p90": [q[0], q[2]],
            "camera_position": centre.flatten().tolist(),
        }
        if cfg.coc_form == "world":
            entry["coc_px_per_inv_distance"] = float(cameras.fx[i]) * q[1]  # blur px = this * |1/d - 1/d_F|
        photos.append(entry)
    k_all = torch.tensor([p["aperture_K_median"] for p in photos])
    return {
        "coc_form": cfg.coc_form,
        "formula": _coc_formula(cfg.coc_form),
        "units": "world units of the exported PLY (nerfstudio's dataparser frame)",
        "dataparser_scale": dataparser_scale,
        "num_coc_sets": cfg.num_coc_sets,
        "aperture_K_median_over_photos": float(k_all.median()) if len(k_all) else None,
        "focus_range": [float(model.depth_of_field.focus.min), float(model.depth_of_field.focus.max)],
        "photos": photos,
    }


@dataclass
class ExportWithDepthOfField(ExportGaussianSplat):
    """Export the sharp Gaussians to a PLY, and the learned depth of field to a JSON beside it."""

    dof_filename: str = "depth_of_field.json"
    """Name of the depth-of-field file written beside the PLY."""

    def main(self) -> None:
        super().main()
        from nerfstudio.utils.eval_utils import eval_setup

        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="inference")
        model = pipeline.model
        if not getattr(model.config, "coc_enabled", False):
            print(f"{self.load_config}: trained with CoC off; no depth of field to write")
            return
        dataset = pipeline.datamanager.train_dataset
        outputs = dataset._dataparser_outputs
        summary = depth_of_field_summary(model, dataset.cameras, outputs.image_filenames, float(outputs.dataparser_scale))
        summary["ply"] = self.output_filename
        summary["dataparser_transform"] = outputs.dataparser_transform.tolist()
        path = self.output_dir / self.dof_filename
        path.write_text(json.dumps(summary, indent=1))
        print(f"wrote {path}")


def main() -> None:
    tyro.cli(ExportWithDepthOfField).main()


if __name__ == "__main__":
    main()
