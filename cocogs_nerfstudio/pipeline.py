"""The training pipeline: nerfstudio's, plus the per-image focus initialisation of CoCoGaussian."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig


@dataclass
class CoCoGaussianPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: CoCoGaussianPipeline)


class CoCoGaussianPipeline(VanillaPipeline):
    """Initialises each training image's focus distance d_F from its camera, the SfM points and
    (``focus_init='sharpness'``) its photo.

    The model never sees the training cameras at setup; the pipeline has both. Without SfM
    points, the model initialises d_F lazily at each image's first training visit instead.
    """

    def __init__(self, config: CoCoGaussianPipelineConfig, device: str, *args, **kwargs) -> None:
        super().__init__(config, device, *args, **kwargs)
        outputs = getattr(self.datamanager, "train_dataparser_outputs", None)
        points = None if outputs is None else outputs.metadata.get("points3D_xyz")
        init = getattr(self.model, "initialize_focus", None)
        if points is not None and len(points) > 0 and init is not None:
            images = None
            # photos only for a run that trains: ns-eval / ns-viewer ("test", "inference") restore
            # d_F from the checkpoint, and need not load and undistort every training image first
            if self.test_mode == "val" and getattr(self.model.config, "focus_init", "mean") == "sharpness":
                # loaded before reading the cameras: undistortion may change their intrinsics
                images = [data["image"] for data in self.datamanager.cached_train]  # type: ignore[attr-defined]
            cameras = self.datamanager.train_dataset.cameras  # type: ignore[union-attr]
            init(cameras.camera_to_worlds, points.to(self.model.device).float(), images, cameras.get_intrinsics_matrices())
