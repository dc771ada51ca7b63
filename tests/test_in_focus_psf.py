"""The learned in-focus PSF: its kernel by hand, that it learns a blur, and that the model applies
it to the training blend and to the sharp render alike."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cocogs_nerfstudio.in_focus_psf import InFocusPSF
from helpers import make_trainer, run_iteration


def test_kernel_by_hand() -> None:
    psf = InFocusPSF(3)
    assert torch.allclose(psf.kernel(), torch.tensor([[1e-3] * 3, [1e-3, 0.992, 1e-3], [1e-3] * 3]), atol=1e-7)
    with torch.no_grad():  # a cross: arms r = 0.2 → softplus(2)/10, corners r = −1 → softplus(−10)/10 ≈ 4.5e-6
        psf.spread.copy_(torch.tensor([-1.0, 0.2, -1.0, 0.2, 0.2, -1.0, 0.2, -1.0]))
    arm, corner = math.log1p(math.exp(2.0)) / 10, math.log1p(math.exp(-10.0)) / 10
    image = torch.zeros(5, 5, 1)
    image[2, 2] = 1.0
    out = psf(image)[..., 0].detach()
    assert out[2, 2].item() == pytest.approx(1 - 4 * arm - 4 * corner, abs=1e-6)
    assert [out[1, 2].item(), out[2, 1].item(), out[2, 3].item(), out[3, 2].item()] == pytest.approx([arm] * 4, abs=1e-6)
    assert float(out.sum()) == pytest.approx(1.0) and out[1, 1].item() == pytest.approx(corner, abs=1e-7)
    with torch.no_grad():
        psf.spread.fill_(1.0)  # Σa = 8, capped at 0.9
    assert psf.kernel().sum().item() == pytest.approx(1.0) and psf.kernel()[1, 1].item() == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError, match="odd size"):
        InFocusPSF(4)


@pytest.mark.parametrize("start", [None, -1.0])
def test_it_learns_a_blur(start) -> None:
    """From near the identity (or from weights pushed down to ~5e-6, as an early Adam step may
    push them) to a 3×3 box blur of a random image, by gradient descent."""
    torch.manual_seed(0)
    image = torch.rand(12, 10, 3)
    padded = F.pad(image.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")
    target = F.avg_pool2d(padded, 3, stride=1)[0].permute(1, 2, 0)
    psf = InFocusPSF(3)
    if start is not None:
        with torch.no_grad():
            psf.spread.fill_(start)
    optimizer = torch.optim.Adam(psf.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        loss = ((psf(image) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-4
    off_centre = torch.cat([psf.kernel().flatten()[:4], psf.kernel().flatten()[5:]])
    assert torch.allclose(off_centre, torch.full((8,), 0.1125), atol=0.01)  # 0.9 spread over 8 (the cap)


def test_the_model_applies_it_to_the_blend_and_the_sharp_render(demo_scene: Path, tmp_path: Path) -> None:
    trainer = make_trainer(demo_scene, tmp_path, steps=5, name="psf", coc_start_step=0, in_focus_psf=3)
    model = trainer.pipeline.model
    assert any(p is model.in_focus_psf.spread for p in model.get_param_groups()["blend_cnn"])
    with torch.no_grad():
        model.in_focus_psf.spread.fill_(0.05)  # ~5% of the light to each neighbour
    run_iteration(trainer, 0)
    assert model.in_focus_psf.spread.grad is not None and model.in_focus_psf.spread.grad.abs().sum() > 0
    model.eval()
    camera, _ = trainer.pipeline.datamanager.next_eval_image(0)
    outputs = model.get_outputs_for_camera(camera)
    raw = model.in_focus_psf
    model.in_focus_psf = None  # the base render alone
    try:
        base = model.get_outputs_for_camera(camera)["rgb"]
        preview_base = model.render_defocused(camera, float(model.focus_distance(0)), 2.0)
    finally:
        model.in_focus_psf = raw
    assert torch.allclose(outputs["rgb"], raw(base), atol=1e-6) and not torch.allclose(outputs["rgb"], base)
    preview = model.render_defocused(camera, float(model.focus_distance(0)), 2.0)
    assert torch.allclose(preview["rgb"], raw(preview_base["rgb"]), atol=1e-6)
    assert torch.allclose(preview["rgb_sharp"], outputs["rgb"], atol=1e-6)
