"""Shared test setup: offline LPIPS weights, no torch.compile, a demo scene."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("TORCH_HOME", str(SHARED / "torch_home"))
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402

MAX_WORKERS = 4  # pytest-xdist workers for `-n auto` (pyproject's addopts): at most one per core


def _threads_per_worker() -> int:
    """Torch threads for this test process: COCOGS_TEST_THREADS, else the cores shared out among
    the xdist workers (one each on 2 cores), else torch's default (one per core)."""
    if "COCOGS_TEST_THREADS" in os.environ:
        return int(os.environ["COCOGS_TEST_THREADS"])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else torch.get_num_threads()


torch.set_num_threads(_threads_per_worker())
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # the commands tests start share the worker's cores
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when it is there
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, at most MAX_WORKERS (each holds nerfstudio, ~1 GB)."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


TRAINED_FILES = ("tests/test_quality.py", "tests/test_viewer_browser.py")
"""The test files that use the ``trained`` fixture (minutes of training): one xdist worker runs
them all, first, so that the fixture is built once and the longest work is never left for last."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n`` with the default ``--dist load``: xdist's scope scheduler with TRAINED_FILES as one
    scope, then every other test on its own (scopes go out largest first)."""
    if config.getvalue("dist") != "load":
        return None  # an explicit --dist is the user's choice
    from xdist.scheduler import LoadScopeScheduling

    class TrainedFilesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "trained" if nodeid.startswith(TRAINED_FILES) else nodeid

    return TrainedFilesTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses ``trained`` outside TRAINED_FILES would train it again on another worker."""
    uses = [i.nodeid for i in items if "trained" in getattr(i, "fixturenames", ())]
    stray = [nodeid for nodeid in uses if not nodeid.startswith(TRAINED_FILES)]
    if stray:
        raise pytest.UsageError(f"tests using the `trained` fixture must be in {TRAINED_FILES}: {stray}")


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


TRAINED_STEPS = 400  # the small preset's schedule shortened (600 steps: 1.5× the test time) ...
TRAINED_STOP_SPLIT = 300  # ... with densification ending at the same share of it (preset: 450 of 600)


@pytest.fixture(scope="session")
def trained(demo_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """CoCoGaussian and the CoC-off baseline, trained on the demo scene with the same steps and seed."""
    from helpers import make_trainer

    out = tmp_path_factory.mktemp("quality")
    runs = {}
    for name, coc in (("cocogaussian", True), ("baseline", False)):
        trainer = make_trainer(
            demo_scene, out, steps=TRAINED_STEPS, name=name, seed=42, coc_enabled=coc, stop_split_at=TRAINED_STOP_SPLIT
        )
        trainer.train()
        trainer.pipeline.eval()
        metrics = trainer.pipeline.get_average_eval_image_metrics()
        trainer.pipeline.eval()  # nerfstudio leaves the pipeline in train mode after evaluating
        config = out / "test" / "cocogaussian-small" / name / "config.yml"
        runs[name] = {"trainer": trainer, "metrics": metrics, "config": config}
    return runs
