"""Thin-lens / CoC math (paper Eqs. 7-11) and the two small networks."""

from __future__ import annotations

import math

import pytest
import torch

from cocogs_nerfstudio.blend_cnn import BlendCNN
from cocogs_nerfstudio.coc import (
    coc_diameter,
    coc_means,
    coc_pixels,
    coc_quats,
    coc_scales,
    fixed_directions,
    floored_aperture,
    frequency_encode,
    thin_lens_blur_px,
)
from cocogs_nerfstudio.coc_mlp import CocMLP
from cocogs_nerfstudio.losses import in_focus_weights


def test_coc_diameter_by_hand() -> None:
    d = torch.tensor([1.0, 2.0, 4.0])
    # sensor form (Eq. 7): K |1/d - 1/dF| with K = 3, dF = 2 -> 3·[0.5, 0, 0.25]
    assert coc_diameter(d, 2.0, 3.0, "sensor").tolist() == pytest.approx([1.5, 0.0, 0.75])
    # world form: K d |1/d - 1/dF| = K |1 - d/dF| -> 3·[0.5, 0, 1]
    assert coc_diameter(d, 2.0, 3.0, "world").tolist() == pytest.approx([1.5, 0.0, 3.0])


@pytest.mark.parametrize("form", ["world", "sensor"])
def test_coc_zero_on_focus_plane_and_proportional(form: str) -> None:
    torch.manual_seed(0)
    d = torch.rand(50) * 5 + 0.5
    focus = torch.rand(50) * 5 + 0.5
    assert coc_diameter(focus, focus, 2.0, form).abs().max() < 1e-6
    k1 = coc_diameter(d, focus, 1.0, form)
    assert torch.allclose(coc_diameter(d, focus, 2.5, form), 2.5 * k1)  # ∝ K
    defocus = (1 / d - 1 / focus).abs()
    ratio = k1 / defocus if form == "sensor" else k1 / (d * defocus)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)  # ∝ |1/d - 1/dF|


def test_world_form_matches_exact_thin_lens_in_pixels() -> None:
    # A point at depth z seen through a thin lens of aperture D focused at dF is a disc of
    # f·D·|1/z - 1/dF| pixels; the world-form CoC at z, projected by f/z, is the same disc.
    z, focus, aperture, f = torch.tensor([1.5, 3.0, 7.0]), 2.0, 0.2, 90.0
    projected = f * coc_diameter(z, focus, aperture, "world") / z
    assert torch.allclose(projected, thin_lens_blur_px(f, aperture, z, focus))


def test_coc_gaussian_sets_equations() -> None:
    means = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    diameter = torch.tensor([0.4, 1.0])
    beta = torch.tensor([[1.0, 0.5], [0.25, 1.0]])
    dirs = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [-1.0, 0, 0]]])
    mu = coc_means(means, diameter, beta, dirs)  # µ_B + σ/2 β d
    assert mu.shape == (2, 2, 3)
    assert mu[0, 0].tolist() == pytest.approx([0.2, 0.0, 2.0])
    assert mu[0, 1].tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert mu[1, 0].tolist() == pytest.approx([0.0, 0.0, 2.05])
    assert mu[1, 1].tolist() == pytest.approx([0.5, 0.0, 0.0])
    s = coc_scales(torch.tensor([[1.0, 2.0, 3.0]]), torch.full((2, 1, 3), 1.1))
    assert s[1, 0].tolist() == pytest.approx([1.1, 2.2, 3.3])
    q = coc_quats(torch.tensor([[1.0, 0, 0, 0]]), torch.full((2, 1, 4), 1.05))
    assert q[0, 0].tolist() == pytest.approx([1.05, 0, 0, 0])


def test_fixed_directions_are_unit_perpendicular_and_even() -> None:
    torch.manual_seed(0)
    means = torch.randn(30, 3) + torch.tensor([0.0, 0.0, 3.0])
    centre = torch.tensor([0.1, -0.2, 0.0])
    d = fixed_directions(means, centre, 4)
    ray = torch.nn.functional.normalize(means - centre, dim=-1)
    assert torch.allclose(d.norm(dim=-1), torch.ones(4, 30), atol=1e-5)
    assert (d * ray[None]).sum(-1).abs().max() < 1e-5
    assert torch.allclose(d.sum(0), torch.zeros(30, 3), atol=1e-5)  # evenly spaced on the circle
    assert (d[0] * d[1]).sum(-1).abs().max() < 1e-5  # 90° apart for M = 4


def test_frequency_encoding_shape_and_values() -> None:
    x = torch.tensor([[0.5, -1.0, 2.0]])
    enc = frequency_encode(x, 2)
    assert enc.shape == (1, 3 * (1 + 2 * 2))
    assert enc[0, 3].item() == pytest.approx(math.sin(0.5))
    assert enc[0, 3 + 6 + 3 + 2].item() == pytest.approx(math.cos(4.0))  # x, sin(k=0,1), cos(k=0), cos(k=1)[z]


def test_mlp_outputs_in_their_ranges() -> None:
    torch.manual_seed(0)
    mlp = CocMLP(num_sets=4, max_scale_factor=1.1, max_rot_factor=1.2)
    assert mlp.in_dim == 91  # as in the official code
    with torch.no_grad():  # push outputs to extremes
        for p in mlp.parameters():
            p.mul_(50)
    n = 500
    out = mlp(torch.randn(3), torch.randn(n, 3) * 3, torch.rand(n, 3), torch.randn(n, 4))
    assert out.aperture.shape == (n,) and (out.aperture > 0).all()
    assert out.beta.shape == (4, n) and (out.beta > 0).all() and (out.beta <= 1).all()
    assert torch.allclose(out.directions.norm(dim=-1), torch.ones(4, n), atol=1e-5)
    assert (out.scale_factors >= 1).all() and (out.scale_factors <= 1.1).all()
    assert (out.rot_factors >= 1).all() and (out.rot_factors <= 1.2).all()
    assert out.scale_factors.shape == (4, n, 3) and out.rot_factors.shape == (4, n, 4)


def test_blend_weights_sum_to_one_and_blend_is_convex() -> None:
    torch.manual_seed(0)
    cnn = BlendCNN(width=8)
    images = torch.rand(5, 12, 10, 3, requires_grad=True)
    blended, w = cnn(images)
    assert w.shape == (5, 12, 10, 1)
    assert torch.allclose(w.sum(0), torch.ones(12, 10, 1), atol=1e-6)
    assert (blended <= images.max(0).values + 1e-6).all() and (blended >= images.min(0).values - 1e-6).all()
    blended.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cnn.parameters())
    # the CNN sees the renders detached; the renders get gradient only through the weighted sum
    assert torch.allclose(images.grad, w.detach().expand(-1, -1, -1, 3))


def test_blend_at_a_smaller_size_uses_the_weights_of_the_shrunk_renders() -> None:
    """``cnn_size``: the CNN sees the renders shrunk (2×2 area means here) and its weights, upsampled,
    blend the renders at full size; at the renders' own size it is the plain blend."""
    torch.manual_seed(0)
    cnn = BlendCNN(width=8)
    images = torch.rand(5, 8, 12, 3)
    plain_blend, plain_w = cnn(images)
    same_blend, _ = cnn(images, (8, 12))
    assert torch.equal(same_blend, plain_blend)
    blended, w = cnn(images, (4, 6))
    assert w.shape == (5, 8, 12, 1) and torch.allclose(w.sum(0), torch.ones(8, 12, 1), atol=1e-6)
    small_w = cnn.weights(images.reshape(5, 4, 2, 6, 2, 3).mean(dim=(2, 4)))  # the shrunk renders, by hand
    # bilinear ×2 (pixel centres aligned): an interior full-size pixel (2i+1, 2j+1) is ¾·¼ of its
    # small pixel (i, j) and its neighbours (i+1, j), (i, j+1), (i+1, j+1)
    i, j = 1, 2
    by_hand = (9 * small_w[:, i, j] + 3 * small_w[:, i + 1, j] + 3 * small_w[:, i, j + 1] + small_w[:, i + 1, j + 1]) / 16
    assert torch.allclose(w[:, 2 * i + 1, 2 * j + 1], by_hand, atol=1e-6)
    assert torch.allclose(blended, (w * images).sum(0)) and not torch.allclose(w, plain_w)


def test_in_focus_weight_by_hand() -> None:
    """CoC in pixels = σ(z) · f / z; weight 1 up to the tolerance, (tolerance / CoC)² beyond."""
    depth = torch.tensor([4.0, 2.0, 3.6, 8.0])
    # world form, K = 0.1, f = 100 px, d_F = 4: CoC = 100 · 0.1 · |1/z − 1/4| = 0, 2.5, 0.28, 1.25 px
    coc = coc_pixels(depth, 4.0, 0.1, 100.0, "world")
    assert coc.tolist() == pytest.approx([0.0, 2.5, 10 * (1 / 3.6 - 0.25), 1.25])
    w = in_focus_weights(coc, 1.0)
    assert w.tolist() == pytest.approx([1.0, (1 / 2.5) ** 2, 1.0, (1 / 1.25) ** 2])
    assert in_focus_weights(coc, 0.0).item() == 1.0  # no tolerance: every pixel weighs 1
    # sensor form: σ = K|1/z − 1/d_F| in world units at z, so CoC = 100 · 0.1 · 0.25 / 2 = 1.25 px at z = 2
    w = in_focus_weights(coc_pixels(depth[1:2], 4.0, 0.1, 100.0, "sensor"), 0.5)
    assert w.tolist() == pytest.approx([(0.5 / 1.25) ** 2])


def test_floored_aperture_by_hand() -> None:
    """K + f·exp(−K/f): f at K = 0, K + f/e at K = f, within f·e^(−4) of K = 1 for f = ¼, never
    below f, and its slope 1 − exp(−K/f) reaches h_θ's K."""
    k = torch.tensor([0.0, 0.25, 1.0, 3.0], requires_grad=True)
    soft = floored_aperture(k, 0.25)
    e = math.exp(1.0)
    expected = torch.tensor([0.25, 0.25 + 0.25 / e, 1.0 + 0.25 * math.exp(-4.0), 3.0 + 0.25 * math.exp(-12.0)])
    assert torch.allclose(soft, expected)
    soft.sum().backward()
    assert torch.allclose(k.grad, torch.tensor([0.0, 1 - 1 / e, 1 - math.exp(-4.0), 1 - math.exp(-12.0)]))
    grid = torch.linspace(0, 2, 201)
    assert bool((floored_aperture(grid, 0.25) >= 0.25).all())
    assert bool((floored_aperture(grid, 0.25).diff() > 0).all())
    assert floored_aperture(k, 0.0) is k
