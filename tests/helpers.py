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


def similarity_residuals(source, target):
    """Residuals [N, 3] of ``target`` points after the least-squares similarity (scale, rotation,
    translation) that maps ``source`` [N, 3] onto them (Umeyama 1991), and that scale."""
    import numpy as np

    src, dst = np.asarray(source, float), np.asarray(target, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (a**2).sum(1).mean()
    return dst - (scale * a @ rot.T + mu_d), scale
