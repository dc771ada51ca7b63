"""Shared test setup: offline LPIPS weights, no torch.compile, a demo scene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TORCH_HOME", str(SHARED / "torch_home"))
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402

# torch's default (one thread per core) unless COCOGS_TEST_THREADS says otherwise
if "COCOGS_TEST_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["COCOGS_TEST_THREADS"]))


@pytest.fixture(scope="session")
def demo_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo scene, rendered once per session (a few seconds)."""
    from cocogs_nerfstudio.demo_scene import make_demo_scene

    out = tmp_path_factory.mktemp("demo_scene")
    make_demo_scene(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present")
    return path


TRAINED_STEPS = 600  # the small preset's schedule; 300 steps end mid-densification


@pytest.fixture(scope="session")
def trained(demo_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """CoCoGaussian and the CoC-off baseline, trained on the demo scene with the same steps and seed."""
    from helpers import make_trainer

    out = tmp_path_factory.mktemp("quality")
    runs = {}
    for name, coc in (("cocogaussian", True), ("baseline", False)):
        trainer = make_trainer(demo_scene, out, steps=TRAINED_STEPS, name=name, seed=42, coc_enabled=coc)
        trainer.train()
        trainer.pipeline.eval()
        metrics = trainer.pipeline.get_average_eval_image_metrics()
        trainer.pipeline.eval()  # nerfstudio leaves the pipeline in train mode after evaluating
        config = out / "test" / "cocogaussian-small" / name / "config.yml"
        runs[name] = {"trainer": trainer, "metrics": metrics, "config": config}
    return runs
