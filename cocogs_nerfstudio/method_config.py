"""Method registrations (``nerfstudio.method_configs`` entry points).

* ``cocogaussian``: the paper's method with the official schedule (30k steps, CoC from step
  1500). Runs on CUDA through gsplat; on a machine without CUDA it selects the CPU and the
  pure-PyTorch rasterizer (practical for small images only).
* ``cocogaussian-small``: the same model on a CPU-sized schedule (600 steps, CoC from the first
  step, no resolution warm-up) for small images such as the bundled demo scene.

The baseline of every comparison is either preset with ``--pipeline.model.coc-enabled False``.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from cocogs_nerfstudio.cocogaussian import CoCoGaussianModelConfig
from cocogs_nerfstudio.dataparser import DeblurNerfDataParserConfig
from cocogs_nerfstudio.pipeline import CoCoGaussianPipelineConfig
from cocogs_nerfstudio.trainer import CoCoGaussianTrainerConfig


def _adam(lr: float, lr_final: float | None, max_steps: int, start: int = 0) -> dict:
    """Adam; with ``lr_final``, ``lr`` until step ``start``, then exponential decay to ``lr_final``."""
    scheduler = None
    if lr_final is not None:
        scheduler = ExponentialDecaySchedulerConfig(
            lr_final=lr_final, max_steps=max_steps, warmup_steps=start, lr_pre_warmup=lr
        )
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": scheduler}


def make_trainer_config(
    method_name: str = "cocogaussian",
    max_steps: int = 30000,
    model: CoCoGaussianModelConfig | None = None,
    means_lr: float = 1.6e-4,
    network_lr: float = 1e-3,
    focus_lr: float = 1e-3,
    steps_per_eval_image: int = 100,
    steps_per_eval_all_images: int = 1000,
    steps_per_save: int = 2000,
    quit_on_train_completion: bool = False,
) -> CoCoGaussianTrainerConfig:
    """A CoCoGaussian TrainerConfig. The learning rates of the MLP, CNN and d_F decay ×0.01 from the
    step CoC modelling starts (the official code), before which they receive no gradient."""
    model = model or CoCoGaussianModelConfig()
    start = model.coc_start_step
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return CoCoGaussianTrainerConfig(
        method_name=method_name,
        steps_per_eval_image=steps_per_eval_image,
        steps_per_eval_batch=0,
        steps_per_save=steps_per_save,
        steps_per_eval_all_images=steps_per_eval_all_images,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=device),
        pipeline=CoCoGaussianPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=DeblurNerfDataParserConfig(),
                cache_images_type="uint8",
            ),
            model=model,
        ),
        optimizers={
            "means": _adam(means_lr, means_lr / 100, max_steps),
            "features_dc": _adam(0.0025, None, max_steps),
            "features_rest": _adam(0.0025 / 20, None, max_steps),
            "opacities": _adam(0.05, None, max_steps),
            "scales": _adam(0.005, None, max_steps),
            "quats": _adam(0.001, None, max_steps),
            "camera_opt": {
                "optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(
                    lr_final=5e-7, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
                ),
            },
            "coc_mlp": _adam(network_lr, network_lr / 100, max_steps, start),
            "blend_cnn": _adam(network_lr, network_lr / 100, max_steps, start),
            "focus": _adam(focus_lr, focus_lr / 100, max_steps, start),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15, quit_on_train_completion=quit_on_train_completion),
        vis="viewer",
    )


def small_model_config(**overrides) -> CoCoGaussianModelConfig:
    """Model settings for ~600-step CPU runs on small images (the demo scene, tests)."""
    settings = dict(
        coc_start_step=0,  # CoC from the first step (a short 3DGS warm-up did worse)
        num_downscales=0,
        warmup_length=100,
        refine_every=50,
        stop_split_at=450,
        stop_screen_size_at=0,  # small images: no split/cull by screen size
        densify_grad_thresh=0.002,  # ~10k Gaussians on the 96×72 demo instead of ~25k, same PSNR
        sh_degree_interval=200,
        reset_alpha_every=30,
        aperture_prior_start_step=300,  # half of the 600 steps, as the full schedule's 15000 of 30k
    )
    settings.update(overrides)
    return CoCoGaussianModelConfig(**settings)


def small_trainer_config(max_steps: int = 600, **model_overrides) -> CoCoGaussianTrainerConfig:
    return make_trainer_config(
        method_name="cocogaussian-small",
        max_steps=max_steps,
        model=small_model_config(**model_overrides),
        means_lr=1.6e-3,
        network_lr=5e-3,
        focus_lr=5e-2,
        steps_per_eval_image=200,
        steps_per_eval_all_images=10**9,
        steps_per_save=200,
        quit_on_train_completion=True,
    )


cocogaussian = MethodSpecification(
    config=make_trainer_config(),
    description="CoCoGaussian: circle-of-confusion-aware Gaussian splatting for defocused photos (CVPR 2025).",
)

cocogaussian_small = MethodSpecification(
    config=small_trainer_config(),
    description="CoCoGaussian on a CPU-sized schedule (600 steps) for small images such as the demo scene.",
)
