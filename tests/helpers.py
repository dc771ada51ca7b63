"""Build and run CoCoGaussian trainers in-process (no ns-train start-up cost)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nerfstudio.engine.trainer import Trainer, TrainerConfig

from cocogs_nerfstudio.method_config import small_trainer_config
from cocogs_nerfstudio.runs import scripted, seeded_trainer


def trainer_config(scene: Path, out: Path, steps: int, name: str = "run", seed: int = 42, **model: Any) -> TrainerConfig:
    return scripted(small_trainer_config(max_steps=steps, **model), scene, out, "test", name, seed)


def make_trainer(scene: Path, out: Path, steps: int, name: str = "run", seed: int = 42, **model: Any) -> Trainer:
    """A set-up trainer on the small preset, seeded as ``ns-train`` seeds it."""
    return seeded_trainer(trainer_config(scene, out, steps, name, seed=seed, **model))


def run_iteration(trainer: Trainer, step: int) -> None:
    """One training iteration with its callbacks, as ``Trainer.train`` runs it."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    for cb in trainer.callbacks:
        cb.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(step)
    for cb in trainer.callbacks:
        cb.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)


def console_script(name: str) -> str:
    """A console script (``ns-train``, ``ns-eval``, ...) of this Python environment, activated or not."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name
