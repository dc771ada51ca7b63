"""benchmarks/gpu_check.sh, the one command of a GPU session, run on the CPU with small settings
(its parity stage skips without CUDA): every stage runs, and what comes back is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_stage_on_the_cpu(demo_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "SCENE": str(demo_scene), "STEPS": "20",
        "CLI_STEPS": "6", "CLI_COC_START": "2", "PYTHON": sys.executable, "TORCHDYNAMO_DISABLE": "1",
    }  # fmt: skip
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "gpu_check: all stages passed" in res.stdout
    # at most 8 plain files come back from the device machine
    names = {"gpu.txt", "parity.log", "cli.log", "cli_check.json", "bench.log", "results.json", "results.md", "figure.png"}
    assert {p.name for p in out.iterdir()} == names
    cli = json.loads((out / "cli_check.json").read_text())
    assert [c["command"] for c in cli] == ["ns-train", "ns-eval", "cocogs-export", "refocus", "resume"]
    assert all(c["ok"] for c in cli), cli
    assert "Gaussians moved" in cli[-1]["checked"]  # the resumed run trained its Gaussians
    results = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert list(results) == ["baseline", "cocogaussian", "upper_bound", "known_lens"]
    coc = results["cocogaussian"]
    assert coc["wide_size"] == [144, 108] and coc["fps_defocus_preview_wide"] > 0 and coc["s_per_step_steady"] > 0
    assert results["baseline"]["fps_sharp_wide"] > 0
    table = (out / "results.md").read_text()
    assert "defocus preview ≥ 30 fps (144×108)" in table and "training step ≤ 2× the baseline's" in table
    assert coc["fps_defocus_preview_wide_render_scale"] > 0  # the other blend scale, for comparison
    profile = (out / "bench.log").read_text()
    assert "=== training step:" in profile and "=== defocus preview 144×108:" in profile
