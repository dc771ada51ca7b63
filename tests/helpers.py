"""Build and run CoCoGaussian trainers in-process (no ns-train start-up cost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerfstudio.engine.trainer import Trainer, TrainerConfig

from cocogs_nerfstudio.method_config import small_trainer_config


def trainer_config(scene: Path, out: Path, steps: int, name: str = "run", seed: int = 42, **model: Any) -> TrainerConfig:
    cfg = small_trainer_config(max_steps=steps, **model)
    cfg.pipeline.datamanager.data = scene
    cfg.output_dir = out
    cfg.experiment_name = "test"
    cfg.timestamp = name
    cfg.vis = "tensorboard"
    cfg.machine.seed = seed
    cfg.logging.local_writer.enable = False
    cfg.steps_per_eval_image = 10**9
    cfg.steps_per_save = steps
    cfg.save_only_latest_checkpoint = True
    return cfg


def make_trainer(scene: Path, out: Path, steps: int, name: str = "run", seed: int = 42, **model: Any) -> Trainer:
    """A set-up trainer, seeded as ``ns-train`` seeds it (the Trainer itself does not)."""
    import random

    import numpy as np
    import torch

    cfg = trainer_config(scene, out, steps, name, seed=seed, **model)
    cfg.save_config()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def run_iteration(trainer: Trainer, step: int) -> None:
    """One training iteration with its callbacks, as ``Trainer.train`` runs it."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    for cb in trainer.callbacks:
        cb.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(step)
    for cb in trainer.callbacks:
        cb.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
