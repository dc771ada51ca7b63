"""The training pipeline: nerfstudio's, plus the per-image focus initialisation of CoCoGaussian."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

NETWORK_GROUPS = ("coc_mlp", "blend_cnn", "focus")
"""Optimizer groups of h_θ, the blend CNN and d_F (they train from ``coc_start_step``)."""


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
        self._focus_from_gaussians = False
        if getattr(self.model, "initialize_focus", None) is None or not self.model.config.coc_enabled:
            return
        self._initialize_focus()
        # after the photos are loaded (undistortion may change the intrinsics)
        self.model.training_focal = float(self.datamanager.train_dataset.cameras.fx.median())  # type: ignore[union-attr]
        outputs = getattr(self.datamanager, "train_dataparser_outputs", None)
        if outputs is not None:  # the viewer speaks the input poses' units too
            self.model.depth_of_field.input_scale = float(outputs.dataparser_scale)

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
        """nerfstudio's callbacks, d_F set again when CoC starts (without SfM points); says so when
        the networks' learning-rate decay does not start with CoC modelling (``--pipeline.model.coc-start-step``
        changed alone)."""
        self._check_network_schedules(training_callback_attributes.optimizers)
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

    def _check_network_schedules(self, optimizers) -> None:
        cfg = self.model.config
        if not getattr(cfg, "coc_enabled", False) or optimizers is None:
            return
        start = cfg.coc_start_step
        schedulers = [(group, optimizers.config.get(group, {}).get("scheduler")) for group in NETWORK_GROUPS]
        late = [group for group, sched in schedulers if sched is not None and sched.warmup_steps != start]
        if late:
            CONSOLE.print(
                f"[yellow]The learning rates of {', '.join(late)} start decaying at another step than CoC modelling "
                f"({start}): set --optimizers.<group>.scheduler.warmup-steps {start} too.",
                soft_wrap=True,
            )
