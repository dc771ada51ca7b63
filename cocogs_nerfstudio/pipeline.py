"""The training pipeline: nerfstudio's, plus the per-image focus initialisation of CoCoGaussian and
an optional cap on the initial size of the background seed points."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig


@dataclass
class CoCoGaussianPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: CoCoGaussianPipeline)


class CoCoGaussianPipeline(VanillaPipeline):
    """Initialises each training image's focus distance d_F (and the viewer's focus range) at set-up,
    from its camera, the SfM points and (``focus_init='sharpness'``) its photo.

    The model never sees the training cameras; the pipeline has both. Without SfM points d_F starts
    from the initial Gaussians and is set again from the trained Gaussians when CoC modelling starts
    (the official code's initialisation, at its step 1500).
    """

    def __init__(self, config: CoCoGaussianPipelineConfig, device: str, *args, **kwargs) -> None:
        super().__init__(config, device, *args, **kwargs)
        self._size_background_points()
        self._focus_from_gaussians = False
        if getattr(self.model, "initialize_focus", None) is None or not self.model.config.coc_enabled:
            return
        self._initialize_focus()
        # after the photos are loaded (undistortion may change the intrinsics)
        self.model.set_training_focal(float(self.datamanager.train_dataset.cameras.fx.median()))  # type: ignore[union-attr]

    @torch.no_grad()
    def _size_background_points(self) -> None:
        """Background seed points (dataparser ``background_points``) start no larger than the
        dataparser's ``background_max_size`` asks (when set): splatfacto's scale from the three nearest
        points follows the depth spread of these scattered points."""
        outputs = getattr(self.datamanager, "train_dataparser_outputs", None)
        size = None if outputs is None else outputs.metadata.get("background_points_size")
        scales = getattr(self.model, "gauss_params", {}).get("scales")
        if size is None or len(size) == 0 or scales is None or getattr(self.model.config, "random_init", True):
            return
        if scales.shape[0] != len(outputs.metadata["points3D_xyz"]):
            return  # not the seed points (loaded elsewhere)
        tail = scales[-len(size):]
        tail.copy_(torch.minimum(tail, size.to(tail).log()[:, None]))

    def _initialize_focus(self) -> None:
        cameras = self.datamanager.train_dataset.cameras  # type: ignore[union-attr]
        outputs = getattr(self.datamanager, "train_dataparser_outputs", None)
        points = None if outputs is None else outputs.metadata.get("points3D_xyz")
        if points is None or len(points) == 0:
            self._focus_from_gaussians = True
            self.model.initialize_focus(cameras.camera_to_worlds, self.model.means.detach())
            return
        images = None
        # photos only for a run that trains: ns-eval / ns-viewer ("test", "inference") restore d_F
        # from the checkpoint, and need not load and undistort every training image first
        if self.test_mode == "val" and self.model.config.focus_init == "sharpness":
            # loaded before reading the cameras: undistortion may change their intrinsics
            images = [data["image"] for data in self.datamanager.cached_train]  # type: ignore[attr-defined]
        points = points.to(self.model.device).float()
        self.model.initialize_focus(cameras.camera_to_worlds, points, images, cameras.get_intrinsics_matrices())

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        if self._focus_from_gaussians:
            start = self.model.config.coc_start_step
            cameras = self.datamanager.train_dataset.cameras  # type: ignore[union-attr]

            def from_trained_gaussians(step: int) -> None:  # noqa: ARG001
                self.model.initialize_focus(cameras.camera_to_worlds, self.model.means.detach())

            callbacks.append(
                TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], from_trained_gaussians, iters=(start,))
            )
        return callbacks
