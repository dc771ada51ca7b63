"""Bad input to the command-line tools ends in one line naming the file, with a non-zero status
(the table in docs/troubleshooting.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import console_script, make_trainer


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([console_script(cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=600)


def _last_line(res: subprocess.CompletedProcess) -> str:
    return res.stderr.strip().splitlines()[-1]


def test_refocus_names_a_missing_config_or_camera_path(tmp_path: Path) -> None:
    res = _run("cocogs-refocus", "--load-config", str(tmp_path / "nope.yml"), "--output-dir", str(tmp_path / "r"))
    assert res.returncode != 0 and res.stderr.strip() == f"error: {tmp_path / 'nope.yml'}: no such config file " \
        "(the config.yml of a run under outputs/)"
    config = tmp_path / "config.yml"
    config.write_text("{}")
    (tmp_path / "path.json").write_text('{"camera_path": [')
    res = _run("cocogs-refocus", "--load-config", str(config), "--output-dir", str(tmp_path / "r"),
               "--camera-path", str(tmp_path / "path.json"))  # fmt: skip
    assert res.returncode != 0 and _last_line(res).startswith(f"error: {tmp_path / 'path.json'}: not a readable camera path")
    assert not (tmp_path / "r").exists()


def test_ns_eval_names_a_truncated_checkpoint(demo_scene: Path, tmp_path: Path) -> None:
    trainer = make_trainer(demo_scene, tmp_path, steps=2, name="cut", coc_start_step=0)
    trainer.train()
    ckpt = next(trainer.checkpoint_dir.glob("*.ckpt"))
    ckpt.write_bytes(ckpt.read_bytes()[:4096])  # what a kill during the save would have left
    config = trainer.config.get_base_dir() / "config.yml"
    res = _run("ns-eval", "--load-config", str(config), "--output-path", str(tmp_path / "eval.json"))
    assert res.returncode != 0
    assert _last_line(res).startswith(f"error: {ckpt}: unreadable checkpoint ("), res.stderr[-2000:]
    assert "Traceback" not in res.stderr
