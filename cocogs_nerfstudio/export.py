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

import tyro
from nerfstudio.scripts.exporter import ExportGaussianSplat

from cocogs_nerfstudio.depth_of_field import depth_of_field_summary


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
