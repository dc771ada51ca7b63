"""The CPU rasterizer against hand-computed values, and against gsplat on CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from cocogs_nerfstudio.rasterize import rasterize, rasterize_sets, select_backend, viewmats_from_camera_to_worlds
from cocogs_nerfstudio.torch_rasterizer import eval_sh_colors, project_gaussians

FX = 100.0
SIZE = 21  # odd: the principal point (10.5) is the centre of pixel (10, 10)


def _camera(n: int = 1):
    viewmats = torch.eye(4).expand(n, 4, 4).clone()
    Ks = torch.tensor([[FX, 0.0, SIZE / 2], [0.0, FX, SIZE / 2], [0.0, 0.0, 1.0]]).expand(n, 3, 3).clone()
    return viewmats, Ks


def _isotropic_scale_for(sigma_px: float, depth: float, eps2d: float = 0.3) -> float:
    """World scale whose 2D std, after the eps2d low-pass, is ``sigma_px`` pixels."""
    return math.sqrt(sigma_px**2 - eps2d) * depth / FX


def test_single_gaussian_centre_and_one_sigma() -> None:
    depth, opacity = 2.0, 0.8
    means = torch.tensor([[0.0, 0.0, depth]])
    scales = torch.full((1, 3), _isotropic_scale_for(2.0, depth))
    viewmats, Ks = _camera()
    render, alpha, info = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]]), scales, torch.tensor([opacity]),
        torch.tensor([[1.0, 0.5, 0.0]]), viewmats, Ks, SIZE, SIZE, render_mode="RGB+ED",
    )  # fmt: skip
    assert render.shape == (1, SIZE, SIZE, 4) and alpha.shape == (1, SIZE, SIZE, 1)
    # centre pixel: alpha = opacity, colour = colour · opacity, expected depth = depth
    assert alpha[0, 10, 10, 0].item() == pytest.approx(opacity, abs=1e-6)
    assert render[0, 10, 10, :3].tolist() == pytest.approx([0.8, 0.4, 0.0], abs=1e-6)
    assert render[0, 10, 10, 3].item() == pytest.approx(depth, abs=1e-5)
    # two pixels right = one standard deviation (σ = 2 px): alpha = opacity · e^{-1/2}
    expected = opacity * math.exp(-0.5)
    assert alpha[0, 10, 12, 0].item() == pytest.approx(expected, abs=1e-5)
    assert alpha[0, 12, 10, 0].item() == pytest.approx(expected, abs=1e-5)
    assert render[0, 10, 12, 0].item() == pytest.approx(expected, abs=1e-5)
    # radius = ceil(3·sqrt(λ_max + 0.1)): gsplat floors the eigenvalue gap at sqrt(0.01) -> 7
    assert int(info["radii"][0, 0]) == math.ceil(3 * math.sqrt(4.0 + 0.1)) == 7
    assert alpha[0, 0, 0, 0].item() == 0.0
    assert info["means2d"][0, 0].tolist() == pytest.approx([10.5, 10.5])


def test_two_gaussians_depth_order_transmittance_background() -> None:
    # given back-to-front on purpose: the rasterizer must sort by depth
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]])
    colors = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # back green, front red
    opacities = torch.tensor([0.6, 0.5])
    background = torch.tensor([[0.0, 0.0, 1.0]])
    viewmats, Ks = _camera()
    render, alpha, _ = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.05), opacities, colors,
        viewmats, Ks, SIZE, SIZE, backgrounds=background, render_mode="RGB+ED",
    )  # fmt: skip
    # front: 0.5 · red; back: T=0.5 · 0.6 · green; background: T = 0.5 · 0.4 = 0.2
    assert render[0, 10, 10, :3].tolist() == pytest.approx([0.5, 0.3, 0.2], abs=1e-6)
    assert alpha[0, 10, 10, 0].item() == pytest.approx(0.8, abs=1e-6)
    # expected depth = Σ w_i z_i / Σ w_i, the background adds no depth
    assert render[0, 10, 10, 3].item() == pytest.approx((0.5 * 2 + 0.3 * 3) / 0.8, abs=1e-5)
    # a pixel no Gaussian reaches shows the background
    assert render[0, 0, 0, :3].tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_saturated_pixel_stops_compositing() -> None:
    # three opaque Gaussians: after two at alpha 0.999, T = 1e-6 < 1e-4 -> the second is excluded
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.5], [0.0, 0.0, 3.0]])
    colors = torch.eye(3)
    viewmats, Ks = _camera()
    render, alpha, _ = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]] * 3), torch.full((3, 3), 0.05), torch.ones(3), colors,
        viewmats, Ks, SIZE, SIZE,
    )  # fmt: skip
    # first Gaussian: alpha clamped to 0.999; the next would bring T to 1e-6 -> pixel done
    assert render[0, 10, 10].tolist() == pytest.approx([0.999, 0.0, 0.0], abs=1e-6)
    assert alpha[0, 10, 10, 0].item() == pytest.approx(0.999, abs=1e-6)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    n = 20
    means = (torch.randn(n, 3) * 0.2 + torch.tensor([0.0, 0.0, 2.5])).requires_grad_()
    quats = torch.randn(n, 4).requires_grad_()
    scales = (torch.rand(n, 3) * 0.05 + 0.02).requires_grad_()
    opacities = (torch.rand(n) * 0.5 + 0.2).requires_grad_()
    sh = (torch.randn(n, 4, 3) * 0.3).requires_grad_()
    viewmats, Ks = _camera()
    render, alpha, info = rasterize(
        means, quats, scales, opacities, sh, viewmats, Ks, SIZE, SIZE, sh_degree=1, absgrad=True,
        backgrounds=torch.rand(1, 3), render_mode="RGB+ED",
    )  # fmt: skip
    info["means2d"].retain_grad()
    (render[..., :3] * torch.rand_like(render[..., :3])).sum().backward()
    for name, t in dict(means=means, quats=quats, scales=scales, opacities=opacities, sh=sh).items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name
    g2d = info["means2d"].grad
    assert g2d.shape == (1, n, 2) and g2d.abs().sum() > 0
    # absgrad sums |per-pixel gradient|: never smaller than |sum of per-pixel gradients|
    assert (info["means2d"].absgrad >= g2d.abs() - 1e-6).all()
    assert info["means2d"].absgrad.sum() > g2d.abs().sum()


def test_gaussians_behind_camera_are_culled_without_nan() -> None:
    means = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], requires_grad=True)
    viewmats, Ks = _camera()
    render, _, info = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]] * 3), torch.full((3, 3), 0.05), torch.full((3,), 0.5),
        torch.ones(3, 3), viewmats, Ks, SIZE, SIZE,
    )  # fmt: skip
    render.sum().backward()
    assert info["radii"][0].tolist()[:2] == [0, 0] and info["radii"][0, 2] > 0
    assert torch.isfinite(means.grad).all()


def test_bands_give_the_same_image_as_one_pass() -> None:
    from cocogs_nerfstudio.torch_rasterizer import rasterize_torch

    torch.manual_seed(1)
    n = 200
    means = torch.randn(n, 3) * 0.3 + torch.tensor([0.0, 0.0, 2.5])
    args = (means, torch.randn(n, 4), torch.rand(n, 3) * 0.05, torch.rand(n), torch.rand(n, 3), *_camera(), SIZE, SIZE)
    one, a1, _ = rasterize_torch(*args)
    banded, a2, _ = rasterize_torch(*args, max_pairs=500)
    assert torch.allclose(one, banded, atol=1e-6) and torch.allclose(a1, a2, atol=1e-6)


def test_sh_degree_zero_is_constant_colour() -> None:
    coeffs = torch.zeros(1, 1, 3)
    coeffs[0, 0] = torch.tensor([1.0, -1.0, 0.0])
    rgb = eval_sh_colors(0, torch.tensor([[0.3, -0.2, 1.0]]), coeffs)
    c0 = 0.28209479177387814
    assert rgb[0].tolist() == pytest.approx([0.5 + c0, max(0.0, 0.5 - c0), 0.5])


def test_viewmat_matches_opengl_to_opencv_convention() -> None:
    # nerfstudio camera at (1, 2, 3) looking down -z (identity rotation, OpenGL axes)
    c2w = torch.tensor([[[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]]])
    view = viewmats_from_camera_to_worlds(c2w)
    point = torch.tensor([1.0, 2.0, 1.0, 1.0])  # 2 units in front of the camera
    assert (view[0] @ point).tolist() == pytest.approx([0.0, 0.0, 2.0, 1.0])


def test_projection_matches_ewa_by_hand() -> None:
    # anisotropic Gaussian off-axis: Σ₂D = J Σ Jᵀ + 0.3 I with J of the perspective map
    means = torch.tensor([[0.2, -0.1, 2.0]])
    scales = torch.tensor([[0.05, 0.02, 0.03]])
    viewmats, Ks = _camera()
    radii, means2d, depths, conics, _ = project_gaussians(means, torch.tensor([[1.0, 0, 0, 0]]), scales, viewmats, Ks, SIZE, SIZE)
    x, y, z = 0.2, -0.1, 2.0
    J = torch.tensor([[FX / z, 0, -FX * x / z**2], [0, FX / z, -FX * y / z**2]])
    cov2d = J @ torch.diag(scales[0] ** 2) @ J.T + 0.3 * torch.eye(2)
    inv = torch.linalg.inv(cov2d)
    assert conics[0, 0].tolist() == pytest.approx([inv[0, 0].item(), inv[0, 1].item(), inv[1, 1].item()], rel=1e-5)
    assert means2d[0, 0].tolist() == pytest.approx([FX * x / z + SIZE / 2, FX * y / z + SIZE / 2])
    assert depths[0, 0].item() == pytest.approx(2.0)


def test_cpu_tensors_select_the_torch_backend() -> None:
    assert select_backend(torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError):
        select_backend(torch.device("cpu"), "gsplat")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat's kernels")
def test_parity_with_gsplat_on_cuda() -> None:
    """The PyTorch twin and gsplat's kernels: same radii, images, alphas and depths (up to the 3σ
    box against gsplat's 16-px tiles), the same gradients for every parameter and for the
    screen-space means (densification reads their .grad and .absgrad)."""
    torch.manual_seed(0)
    n, w, h = 2000, 128, 96
    means = torch.randn(n, 3) * torch.tensor([1.0, 0.8, 0.5]) + torch.tensor([0.0, 0.0, 4.0])
    quats, scales = torch.randn(n, 4), torch.rand(n, 3) * 0.05 + 0.01
    opacities, sh = torch.rand(n) * 0.9, torch.randn(n, 16, 3) * 0.3
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[120.0, 0, w / 2], [0, 120.0, h / 2], [0, 0, 1]]])
    bg = torch.tensor([[0.1, 0.2, 0.3]])
    weights = torch.rand(h, w, 4)  # a loss that reaches colour and depth
    outs = {}
    for dev in ("cpu", "cuda"):
        args = [t.detach().clone().to(dev).requires_grad_() for t in (means, quats, scales, opacities, sh)]
        render, alpha, info = rasterize(
            *args, viewmats.to(dev), Ks.to(dev), w, h, sh_degree=3, backgrounds=bg.to(dev),
            render_mode="RGB+ED", absgrad=True,
        )  # fmt: skip
        info["means2d"].retain_grad()
        (render[0] * weights.to(dev)).sum().backward()
        outs[dev] = {
            "render": render.detach().cpu(), "alpha": alpha.detach().cpu(), "radii": info["radii"].cpu(),
            **{f"grad_{k}": a.grad.cpu() for k, a in zip(("means", "quats", "scales", "opacities", "sh"), args)},
            "grad_means2d": info["means2d"].grad.cpu(), "absgrad_means2d": info["means2d"].absgrad.cpu(),
        }  # fmt: skip
    cpu, gpu = outs["cpu"], outs["cuda"]

    def rel(name: str) -> float:  # max difference relative to the largest magnitude
        return float((cpu[name] - gpu[name]).abs().max() / gpu[name].abs().max().clamp_min(1e-12))

    report = {name: round(rel(name), 5) for name in cpu}
    print("parity, max difference / max magnitude:", report)
    assert (cpu["radii"] == gpu["radii"]).all(), report
    assert (cpu["render"][..., :3] - gpu["render"][..., :3]).abs().max() < 2e-2, report
    assert (cpu["alpha"] - gpu["alpha"]).abs().max() < 2e-2, report
    valid = gpu["alpha"][0, ..., 0] > 0.5  # expected depth where the pixel is covered
    depth_diff = (cpu["render"][0, ..., 3] - gpu["render"][0, ..., 3])[valid].abs().max()
    assert depth_diff < 2e-2 * gpu["render"][0, ..., 3][valid].max(), report
    for name in ("grad_means", "grad_quats", "grad_scales", "grad_opacities", "grad_sh", "grad_means2d", "absgrad_means2d"):
        assert rel(name) < 5e-2, (name, report)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat's kernels")
def test_batched_coc_sets_match_the_torch_twin_on_cuda() -> None:
    """The CoC sets in one batched gsplat call (:func:`rasterize_sets`) against the PyTorch twin
    set by set: images, alphas, the merged densification statistics and every gradient."""
    from cocogs_nerfstudio.densification import merge_render_infos

    torch.manual_seed(1)
    s, n, w, h = 3, 1500, 96, 64
    means = torch.randn(n, 3) * torch.tensor([1.0, 0.8, 0.5]) + torch.tensor([0.0, 0.0, 4.0])
    means = means + 0.05 * torch.randn(s, 1, 3)  # the sets: moved, rescaled, rotated copies
    quats, scales = torch.randn(s, n, 4), torch.rand(s, n, 3) * 0.05 + 0.01
    opacities, sh = torch.rand(n) * 0.9, torch.randn(n, 16, 3) * 0.3
    angle = torch.tensor(0.3)  # a camera off the origin: SH view directions from its centre
    viewmat = torch.eye(4)
    viewmat[0, 0], viewmat[0, 2], viewmat[2, 0], viewmat[2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    viewmat[:3, 3] = torch.tensor([0.3, -0.2, 0.5])
    Ks = torch.tensor([[[90.0, 0, w / 2], [0, 90.0, h / 2], [0, 0, 1]]])
    weights = torch.rand(s, h, w, 3)
    outs = {}
    for dev in ("cpu", "cuda"):
        args = [t.detach().clone().to(dev).requires_grad_() for t in (means, quats, scales, opacities, sh)]
        renders, alphas, infos = rasterize_sets(
            *args, viewmat[None].to(dev), Ks.to(dev), w, h, sh_degree=3, absgrad=True
        )
        for info in infos:
            info["means2d"].retain_grad()
        (renders * weights.to(dev)).sum().backward()
        merged = merge_render_infos(infos)
        outs[dev] = {
            "renders": renders.detach().cpu(), "alphas": alphas.detach().cpu(), "radii": merged["radii"].cpu(),
            "grad2d": merged["means2d"].grad.cpu(), "absgrad2d": merged["means2d"].absgrad.cpu(),
            **{f"grad_{k}": a.grad.cpu() for k, a in zip(("means", "quats", "scales", "opacities", "sh"), args)},
        }  # fmt: skip
        outs[dev]["infos"] = len(infos)
    cpu, gpu = outs["cpu"], outs["cuda"]
    assert (cpu["infos"], gpu["infos"]) == (1, 1)  # one batch of the sets on both backends
    report = {k: round(float((cpu[k] - gpu[k]).abs().max() / gpu[k].abs().max().clamp_min(1e-12)), 5) for k in cpu if k != "infos"}
    print("batched sets, max difference / max magnitude:", report)
    assert torch.equal(cpu["radii"], gpu["radii"]), report
    assert (cpu["renders"] - gpu["renders"]).abs().max() < 2e-2 and (cpu["alphas"] - gpu["alphas"]).abs().max() < 2e-2, report
    for name in ("grad2d", "absgrad2d", "grad_means", "grad_quats", "grad_scales", "grad_opacities", "grad_sh"):
        assert report[name] < 5e-2, (name, report)


def test_compositing_backward_matches_finite_differences() -> None:
    """The hand-written backward of the compositing against numerical derivatives (float64).

    Six overlapping splats whose boxes cover a 5×4 image, in three row bands; one opacity near 1
    so that some pixels saturate and stop early.
    """
    from cocogs_nerfstudio.torch_rasterizer import _Boxes, _CompositeCamera

    torch.manual_seed(0)
    n, w, h = 6, 5, 4
    means2d = (torch.rand(n, 2, dtype=torch.double) * torch.tensor([w, h])).requires_grad_()
    conics = torch.tensor([0.3, 0.05, 0.4], dtype=torch.double).repeat(n, 1).requires_grad_()
    colors = torch.rand(n, 3, dtype=torch.double).requires_grad_()
    opacities = torch.tensor([0.99, 0.5, 0.7, 0.3, 0.9, 0.6], dtype=torch.double).requires_grad_()
    zeros = torch.zeros(n, dtype=torch.long)
    boxes = _Boxes(torch.randperm(n), zeros, zeros + w, zeros, zeros + h, w, h, max_pairs=n * w * h // 3)
    assert boxes.band_h < h

    def composite(*inputs: torch.Tensor):
        return _CompositeCamera.apply(*inputs, boxes, None)

    assert torch.autograd.gradcheck(composite, (means2d, conics, colors, opacities))


def test_batched_coc_sets_on_the_cpu_match_the_sets_one_by_one() -> None:
    """The torch backend's batched CoC sets (one projection and shading of all sets) against the
    sets rendered one by one: images, alphas, every gradient and the merged densification
    statistics (screen-space gradient, its absolute version, radii)."""
    from cocogs_nerfstudio.densification import merge_render_infos

    torch.manual_seed(2)
    s, n, w, h = 3, 300, 40, 30
    means = torch.randn(n, 3) * torch.tensor([0.6, 0.5, 0.3]) + torch.tensor([0.0, 0.0, 3.0])
    means = means + 0.05 * torch.randn(s, 1, 3)
    quats, scales = torch.randn(s, n, 4), torch.rand(s, n, 3) * 0.05 + 0.01
    opacities, sh = torch.rand(n) * 0.9, torch.randn(n, 16, 3) * 0.3
    viewmat = torch.eye(4)
    viewmat[:3, 3] = torch.tensor([0.2, -0.1, 0.4])
    Ks = torch.tensor([[[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]])
    weights = torch.rand(s, h, w, 3)
    outs = {}
    for batch in (True, False):
        args = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, sh)]
        if batch:
            renders, alphas, infos = rasterize_sets(*args, viewmat[None], Ks, w, h, sh_degree=3, absgrad=True)
        else:  # each set its own rasterize call
            m, q, sc, o, c = args
            one_by_one = [rasterize(m[i], q[i], sc[i], o, c, viewmat[None], Ks, w, h, sh_degree=3, absgrad=True) for i in range(s)]
            renders, alphas = torch.cat([r for r, _, _ in one_by_one]), torch.cat([a for _, a, _ in one_by_one])
            infos = [info for _, _, info in one_by_one]
        for info in infos:
            info["means2d"].retain_grad()
        (renders * weights).sum().backward()
        merged = merge_render_infos(infos)
        outs[batch] = {
            "renders": renders.detach(), "alphas": alphas.detach(), "radii": merged["radii"], "grad2d": merged["means2d"].grad,
            "absgrad2d": merged["means2d"].absgrad, "infos": len(infos),
            **{f"grad_{k}": a.grad for k, a in zip(("means", "quats", "scales", "opacities", "sh"), args)},
        }  # fmt: skip
    batched, single = outs[True], outs[False]
    assert (batched.pop("infos"), single.pop("infos")) == (1, s)
    assert single["alphas"].amax() > 0.5 and single["grad_means"].abs().sum() > 0  # something was rendered
    for name, ref in single.items():
        assert torch.allclose(batched[name].float(), ref.float(), rtol=1e-4, atol=1e-5 * float(ref.abs().max())), name
