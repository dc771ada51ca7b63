"""Trainers built and run in-process, as ``ns-train`` would run them (tests, benchmarks)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig


def scripted(cfg: TrainerConfig, data: Path, output_dir: Path, experiment: str, name: str, seed: int) -> TrainerConfig:
    """``cfg`` for a run without a viewer or intermediate evaluations, saving only at the end."""
    cfg.pipeline.datamanager.data = data
    cfg.output_dir = output_dir
    cfg.experiment_name = experiment
    cfg.timestamp = name
    cfg.vis = "tensorboard"
    cfg.machine.seed = seed
    cfg.logging.local_writer.enable = False
    cfg.steps_per_eval_image = 10**9
    cfg.steps_per_eval_all_images = 10**9
    cfg.steps_per_save = cfg.max_num_iterations
    cfg.save_only_latest_checkpoint = True
    return cfg


def seeded_trainer(cfg: TrainerConfig) -> Trainer:
    """Save the config, seed as ``ns-train`` does (its Trainer does not) and set the trainer up."""
    cfg.save_config()
    random.seed(cfg.machine.seed)
    np.random.seed(cfg.machine.seed)
    torch.manual_seed(cfg.machine.seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer
