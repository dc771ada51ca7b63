"""nerfstudio's Trainer with resumes that keep the user's work: what ``ns-train cocogaussian`` runs.

Three things differ from nerfstudio 1.1.5's Trainer:

* ``--max-num-iterations`` is the total step count, for a resumed run too (nerfstudio trains that
  many *more* steps and shows "180 (180.00%)"); a run already there trains nothing and says so.
* ``--load-dir`` takes the newest checkpoint that reads; a newest one cut short (a kill during its
  save) is skipped for the one before, saying so. A checkpoint is written to a temporary file and
  renamed into place, so a kill leaves the previous one whole.
* Ctrl-C saves a checkpoint of the last finished step, says where, and exits with status 130.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple, Type

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from cocogs_nerfstudio.errors import DataInputError, unreadable_checkpoint_message


@dataclass
class CoCoGaussianTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig; ``max_num_iterations`` is the total step count, also when resuming."""

    _target: Type = field(default_factory=lambda: CoCoGaussianTrainer)


def checkpoints(folder: Path) -> List[Path]:
    """``step-N.ckpt`` files of ``folder``, newest (largest N) first."""
    found = [(int(p.stem.split("-")[1]), p) for p in folder.glob("step-*.ckpt") if p.stem.split("-")[1].isdigit()]
    return [p for _, p in sorted(found, reverse=True)]


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, or a DataInputError naming the file when it does not read."""
    if not path.is_file():
        raise DataInputError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 (torch.load of a truncated file raises many kinds)
        raise DataInputError(unreadable_checkpoint_message(path, err)) from err


class CoCoGaussianTrainer(Trainer):
    config: CoCoGaussianTrainerConfig

    def _checkpoint_to_load(self) -> Tuple[Path, dict] | None:
        cfg = self.config
        if cfg.load_checkpoint is not None:
            return cfg.load_checkpoint, read_checkpoint(cfg.load_checkpoint)
        if cfg.load_dir is None:
            return None
        if cfg.load_step is not None:
            path = cfg.load_dir / f"step-{cfg.load_step:09d}.ckpt"
            return path, read_checkpoint(path)
        found = checkpoints(cfg.load_dir) if cfg.load_dir.is_dir() else []
        if not found:
            raise DataInputError(f"{cfg.load_dir}: no step-*.ckpt checkpoint to resume from")
        for path in found:
            try:
                return path, read_checkpoint(path)
            except DataInputError as err:
                if path == found[-1]:
                    raise
                CONSOLE.print(f"[yellow]{err}; trying the one before", soft_wrap=True)
        return None  # not reached: the last one returns or raises

    def _load_checkpoint(self) -> None:
        """nerfstudio's resume (pipeline, optimizers, schedulers, scaler), from the newest readable checkpoint."""
        found = self._checkpoint_to_load()
        if found is None:
            CONSOLE.print("No checkpoint to load: training from scratch.")
            return
        path, state = found
        self._start_step = state["step"] + 1
        self.pipeline.load_pipeline(state["pipeline"], state["step"])
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        CONSOLE.print(f"Resuming from {path} (step {state['step']}) up to step {self.config.max_num_iterations}",
                      soft_wrap=True)

    def train(self) -> None:
        """Steps ``_start_step`` … ``max_num_iterations`` − 1; on Ctrl-C, a checkpoint and status 130."""
        total = self.config.max_num_iterations
        if self._start_step >= total:
            CONSOLE.print(f"Already trained {self._start_step} of {total} steps: nothing to do (raise --max-num-iterations)",
                          soft_wrap=True)
            return
        self.config.max_num_iterations = total - self._start_step  # what nerfstudio's loop counts
        try:
            super().train()
        except KeyboardInterrupt:
            if self.training_state == "completed":  # Ctrl-C closes the viewer after training: nothing lost
                return
            step = self.step - 1  # the last step that finished
            if step >= self._start_step:
                self.save_checkpoint(step)
                CONSOLE.print(f"Interrupted: saved step {step} in {self.checkpoint_dir}; resume with "
                              f"--load-dir {self.checkpoint_dir}", soft_wrap=True)  # fmt: skip
            raise SystemExit(130) from None
        finally:
            self.config.max_num_iterations = total

    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, written to a temporary file beside the checkpoint folder and renamed
        into place, so that a kill during the save never leaves a truncated newest checkpoint."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        part = self.checkpoint_dir.parent / f".{path.name}.{os.getpid()}.part"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        torch.save(state, part)
        os.replace(part, path)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("*.ckpt"):
                if old != path:
                    old.unlink()
