"""The plugin's Trainer: resumes count to --max-num-iterations, skip a checkpoint cut short, and
Ctrl-C keeps the work; an unreadable checkpoint is one line naming it."""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import torch

from helpers import make_trainer, trainer_config

from cocogs_nerfstudio.errors import DataInputError, one_line_excepthook


def _resumed(scene: Path, tmp_path: Path, load_dir: Path, steps: int, name: str):
    cfg = trainer_config(scene, tmp_path, steps=steps, name=name, coc_start_step=0)
    cfg.load_dir = load_dir
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def test_resume_skips_a_checkpoint_cut_short_and_counts_to_the_total(demo_scene: Path, tmp_path: Path, capsys) -> None:
    first = make_trainer(demo_scene, tmp_path, steps=6, name="a", coc_start_step=0)
    first.config.save_only_latest_checkpoint = False
    first.config.steps_per_save = 3
    first.train()
    ckpts = first.checkpoint_dir
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["step-000000003.ckpt", "step-000000005.ckpt"]
    assert not list(ckpts.parent.glob(".*.part"))  # written through a temporary file, renamed into place
    newest = ckpts / "step-000000005.ckpt"
    newest.write_bytes(newest.read_bytes()[:5000])  # a kill during its save
    resumed = _resumed(demo_scene, tmp_path, ckpts, 6, "b")
    assert resumed._start_step == 4 and resumed.pipeline.model.step == 4  # from step 3, the one before
    assert f"{newest}: unreadable checkpoint" in capsys.readouterr().out
    resumed.train()  # the total is 6 steps: steps 4 and 5
    assert int(resumed.pipeline.model.trained_steps) == 6
    done = _resumed(demo_scene, tmp_path, resumed.checkpoint_dir, 6, "c")
    done.train()  # already there: trains nothing, writes nothing
    assert "Already trained 6 of 6 steps" in capsys.readouterr().out and not done.checkpoint_dir.exists()
    for path in ckpts.glob("*.ckpt"):  # every checkpoint unreadable: one error naming the last tried
        path.write_bytes(b"junk")
    with pytest.raises(DataInputError, match=r"step-000000003\.ckpt: unreadable checkpoint"):
        _resumed(demo_scene, tmp_path, ckpts, 6, "d")


def test_ctrl_c_saves_the_last_finished_step_and_exits_130(demo_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    trainer = make_trainer(demo_scene, tmp_path, steps=10, name="ctrl-c", coc_start_step=0)

    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], interrupt))
    with pytest.raises(SystemExit) as stop:
        trainer.train()
    assert stop.value.code == 130
    assert [p.name for p in trainer.checkpoint_dir.glob("*.ckpt")] == ["step-000000002.ckpt"]
    assert torch.load(trainer.checkpoint_dir / "step-000000002.ckpt", map_location="cpu")["step"] == 2


def test_an_unreadable_checkpoint_is_one_line_naming_it(tmp_path: Path) -> None:
    """What ns-eval reports for a truncated checkpoint (nerfstudio's own torch.load call)."""
    path = tmp_path / "step-000000029.ckpt"
    torch.save({"step": 29, "x": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    try:
        torch.load(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            one_line_excepthook(type(err), err, err.__traceback__)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: unreadable checkpoint (")
