"""The depth of field a trained model learned, per training photo, as plain numbers (``cocogs-export``
writes it beside the PLY as ``depth_of_field.json``; benchmarks read it). No exporter imports: it
needs neither open3d nor its system libraries."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch


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
        k = model.lens.aperture(model.coc_mlp(centre, model.means, scales, quats))
        q = torch.quantile(k.float(), torch.tensor([0.1, 0.5, 0.9], device=k.device)).tolist()
        focus = float(model.lens.focus_distance(i))
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
