"""The known-lens reference of the benchmarks (benchmarks/known_lens.py): the true CoC and the blur."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from known_lens import disc_kernel, true_coc, variable_disc_blur  # noqa: E402


def test_disc_blur_spreads_a_point_over_its_disc_and_keeps_its_light() -> None:
    point = torch.zeros(21, 21, 3)
    point[10, 10] = 1.0
    for diameter in (0.0, 2.0, 4.0, 6.0):
        out = variable_disc_blur(point, torch.full((21, 21), diameter))
        assert out.sum(dim=(0, 1)).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
        k = disc_kernel(diameter / 2)
        h = k.shape[0] // 2  # a gather of a symmetric kernel: the point spread is the kernel itself
        assert torch.allclose(out[10 - h : 11 + h, 10 - h : 11 + h, 0], k, atol=1e-6)
    assert torch.equal(variable_disc_blur(point, torch.zeros(21, 21)), point)  # in focus: untouched
    # between two radii: the pixel's value interpolates the two blurs linearly
    half = variable_disc_blur(point, torch.full((21, 21), 2.25))
    a, b = variable_disc_blur(point, torch.full((21, 21), 2.0)), variable_disc_blur(point, torch.full((21, 21), 2.5))
    assert torch.allclose(half, 0.5 * (a + b), atol=1e-6)


def test_true_coc_from_the_scene_by_hand(tmp_path: Path) -> None:
    """CoC diameter = coc_px_per_inv_m × |1/focus − 1/z| in full-size pixels, then per pixel of the
    training size: depth 2 (left half) and 4 (right), focus 4, 100 px per 1/m → 25 and 0 px at 40 px
    wide; at 10 px wide a quarter of that. A frame without the lens gives None."""
    (tmp_path / "depth").mkdir()
    depth = np.full((8, 40), 4.0, dtype=np.float32)
    depth[:, :20] = 2.0
    np.save(tmp_path / "depth" / "001.npy", depth)
    frames = [{"file_path": "images/001.png", "focus_distance": 4.0, "coc_px_per_inv_m": 100.0},
              {"file_path": "images/002.png", "focus_distance": None}]  # fmt: skip
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))
    coc = true_coc(tmp_path, Path("cache/images/001.png"), 10, 2)
    assert coc.shape == (2, 10)
    assert torch.allclose(coc[:, :5], torch.full((2, 5), 6.25)) and coc[:, 5:].abs().max() < 1e-6
    assert true_coc(tmp_path, Path("images/002.png"), 10, 2) is None
