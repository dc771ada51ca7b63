"""The CoCoGaussian model inside nerfstudio: CoC training step, densification, sharp render, resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from helpers import make_trainer, run_iteration

from cocogs_nerfstudio.coc import coc_pixels, floored_aperture
from cocogs_nerfstudio.cocogaussian import CoCoGaussianModelConfig


@pytest.fixture()
def coc_trainer(demo_scene: Path, tmp_path: Path):
    # CoC on from step 0 so that one iteration exercises the whole model
    return make_trainer(demo_scene, tmp_path, steps=10, name="coc", coc_start_step=0)


def _grads_after_one_step(trainer) -> dict:
    model = trainer.pipeline.model
    model.train()
    captured = {}
    original = trainer.optimizers.optimizer_step_all

    def capture() -> None:
        captured.update(
            K_mlp=model.coc_mlp.head.weight.grad[0].abs().sum().item(),
            focus=model.lens.focus_log.grad.abs().sum().item() if model.lens.focus_log.grad is not None else 0.0,
            cnn=sum(p.grad.abs().sum().item() for p in model.blend_cnn.parameters()),
            means=model.means.grad.abs().sum().item(),
            opacities=model.opacities.grad.abs().sum().item(),
            features_dc=model.features_dc.grad.abs().sum().item(),
        )
        original()

    trainer.optimizers.optimizer_step_all = capture
    run_iteration(trainer, 0)
    return captured


def test_one_step_reaches_aperture_mlp_focus_cnn_and_gaussians(coc_trainer) -> None:
    grads = _grads_after_one_step(coc_trainer)
    for name, value in grads.items():
        assert value > 0, f"no gradient reached {name}"


def test_focus_initialised_from_sfm_points(coc_trainer, demo_scene: Path, tmp_path: Path) -> None:
    """'sharpness' (default) equals focus_from_sharpness on the cached photos; 'mean' (paper) the
    mean camera-to-point distance. Either way every d_F is set before the first step."""
    from cocogs_nerfstudio.focus_init import focus_from_sharpness
    from cocogs_nerfstudio.rasterize import viewmats_from_camera_to_worlds

    model = coc_trainer.pipeline.model
    dm = coc_trainer.pipeline.datamanager
    cams = dm.train_dataset.cameras
    pts = dm.train_dataparser_outputs.metadata["points3D_xyz"].float()
    images = [d["image"] for d in dm.cached_train]
    expected = focus_from_sharpness(images, viewmats_from_camera_to_worlds(cams.camera_to_worlds), cams.get_intrinsics_matrices(), pts)
    assert bool(model.lens.focus_initialized.all())
    assert torch.allclose(model.lens.focus_distance().detach(), expected, rtol=1e-4)

    paper = make_trainer(demo_scene, tmp_path / "mean", steps=10, name="mean", focus_init="mean").pipeline.model
    mean = torch.cdist(cams.camera_to_worlds[:, :3, 3], pts).mean(1)
    assert torch.allclose(paper.lens.focus_distance().detach(), mean, rtol=1e-4)


def test_sharp_render_is_the_base_gaussians_alone(coc_trainer) -> None:
    model = coc_trainer.pipeline.model
    dm = coc_trainer.pipeline.datamanager
    camera, _ = dm.next_train(0)
    model.train()
    model.step = 5
    out = model.get_outputs(camera)
    # every output is an [H, W, C] image (the viewer offers each one as a choice), but for the
    # aperture prior's training-only scalar
    images = {k: v for k, v in out.items() if k not in ("aperture_relative", "background")}
    assert set(images) == {"rgb", "rgb_sharp", "in_focus_weight", "depth", "accumulation", "coc_px"}
    assert all(v.shape[:2] == out["rgb"].shape[:2] for v in images.values())
    assert out["aperture_relative"].shape == () and out["aperture_relative"].requires_grad
    weight = out["in_focus_weight"]
    assert weight.shape[-1] == 1 and bool((weight > 0).all()) and bool((weight < 1).all())
    model.eval()
    with torch.no_grad():
        sharp = model.get_outputs(camera)["rgb"]
    # the training render's base image used the random background; compare with a plain
    # rasterization of the base Gaussians under the eval background
    from cocogs_nerfstudio.rasterize import rasterize, viewmats_from_camera_to_worlds

    with torch.no_grad():
        colors = torch.cat([model.features_dc[:, None], model.features_rest], 1)
        render, alpha, _ = rasterize(
            model.means, model.quats, torch.exp(model.scales), torch.sigmoid(model.opacities).squeeze(-1),
            colors, viewmats_from_camera_to_worlds(camera.camera_to_worlds), camera.get_intrinsics_matrices(),
            int(camera.width), int(camera.height), sh_degree=min(model.step // model.config.sh_degree_interval, 3),
        )  # fmt: skip
        expected = torch.clamp(render[0] + (1 - alpha[0]) * model.background_color, 0, 1)
    assert torch.allclose(sharp, expected, atol=1e-6)
    assert not torch.allclose(out["rgb"].detach(), out["rgb_sharp"].detach())  # the blend is not the sharp image


def test_eval_and_novel_cameras_never_use_a_training_focus(coc_trainer) -> None:
    model = coc_trainer.pipeline.model
    camera, _ = coc_trainer.pipeline.datamanager.next_eval_image(0)
    # even a camera that carries an index (into the eval set, or from a camera path) is sharp
    camera.metadata = {"cam_idx": 0}
    model.eval()
    with torch.no_grad():
        out = model.get_outputs(camera)
    assert "rgb_sharp" not in out and "in_focus_weight" not in out


def test_densification_counts_the_coc_renders(demo_scene: Path, tmp_path: Path) -> None:
    stats, infos = {}, {}
    for m in (4, 0):
        trainer = make_trainer(demo_scene, tmp_path / str(m), steps=5, name=f"m{m}", coc_start_step=0, num_coc_sets=m)
        torch.manual_seed(0)
        run_iteration(trainer, 0)
        model = trainer.pipeline.model
        stats[m] = (model.strategy_state["grad2d"].clone(), model.strategy_state["count"].clone())
        infos[m] = model._infos
    # the base render's info, then the four CoC sets' (one batched info of [4, N])
    assert [i["radii"].shape[0] for i in infos[4]] == [1, 4] and len(infos[0]) == 1
    # what gsplat's strategy must have seen: the absgrads of all five renders, summed per Gaussian
    total = sum(i["means2d"].absgrad.sum(0) for i in infos[4])
    w, h = infos[4][0]["width"], infos[4][0]["height"]
    visible = torch.cat([i["radii"] > 0 for i in infos[4]]).any(0)
    expected = (total * torch.tensor([w / 2, h / 2])).norm(dim=-1) * visible
    grad4, count4 = stats[4]
    assert torch.allclose(grad4, expected, rtol=1e-4, atol=1e-9)
    assert torch.equal(count4, visible.float())
    # the CoC renders did contribute: their share of the statistic is far from zero
    base_only = (infos[4][0]["means2d"].absgrad[0] * torch.tensor([w / 2, h / 2])).norm(dim=-1)
    assert grad4.sum() > 1.5 * base_only.sum()
    # and with M = 0 the statistic is the single base render's
    grad0, _ = stats[0]
    only = (infos[0][0]["means2d"].absgrad[0] * torch.tensor([w / 2, h / 2])).norm(dim=-1)
    assert torch.allclose(grad0, only * (infos[0][0]["radii"][0] > 0), rtol=1e-4, atol=1e-9)


def test_resume_round_trip(demo_scene: Path, tmp_path: Path) -> None:
    trainer = make_trainer(demo_scene, tmp_path, steps=6, name="a", coc_start_step=0)
    trainer.train()
    ckpt_dir = trainer.checkpoint_dir
    saved = {k: v.detach().clone() for k, v in trainer.pipeline.model.state_dict().items()}
    assert any(k.startswith("coc_mlp.") for k in saved) and "lens.focus_log" in saved and "lens.focus_unit" in saved

    from helpers import trainer_config

    cfg = trainer_config(demo_scene, tmp_path, steps=8, name="b", coc_start_step=0)
    cfg.load_dir = ckpt_dir
    resumed = cfg.setup(local_rank=0, world_size=1)
    resumed.setup()
    loaded = resumed.pipeline.model.state_dict()
    assert saved.keys() == loaded.keys()
    for k, v in saved.items():
        assert torch.equal(v, loaded[k]), k
    assert resumed._start_step == 6 and resumed.pipeline.model.step == 6
    # the optimizers (built before the checkpoint was loaded) still hold the model's Gaussians ...
    model = resumed.pipeline.model
    for name, param in model.gauss_params.items():
        assert resumed.optimizers.optimizers[name].param_groups[0]["params"][0] is param, name
        assert resumed.optimizers.optimizers[name].state[param]["exp_avg"].shape == param.shape, name
    before = {name: param.detach().clone() for name, param in model.gauss_params.items()}
    resumed.train()  # --max-num-iterations is the total: steps 6 and 7
    assert int(model.trained_steps) == 8 and [p.name for p in resumed.checkpoint_dir.glob("*.ckpt")] == ["step-000000007.ckpt"]
    # ... so the Gaussians keep training after a resume
    for name in ("means", "scales", "opacities", "features_dc"):
        assert not torch.allclose(model.gauss_params[name], before[name]), name


def test_metrics_are_of_the_sharp_render_even_with_the_preview_on(coc_trainer) -> None:
    """The viewer's defocus preview, left on during ns-train, must not change the eval metrics."""
    model = coc_trainer.pipeline.model
    model.eval()
    camera, batch = coc_trainer.pipeline.datamanager.next_eval_image(0)
    sharp_metrics, _ = model.get_image_metrics_and_images(model.get_outputs_for_camera(camera), batch)
    controls = model.depth_of_field
    controls.preview.value, controls.aperture.value = True, 4.0
    controls.focus.value = float(model.lens.focus_distance(0))
    outputs = model.get_outputs_for_camera(camera)
    assert not torch.allclose(outputs["rgb"], outputs["rgb_sharp"])  # the preview shows the defocus ...
    metrics, images = model.get_image_metrics_and_images(outputs, batch)
    assert metrics == pytest.approx(sharp_metrics)  # ... the metrics stay those of the sharp render
    assert torch.equal(images["img"][:, -outputs["rgb"].shape[1]:], outputs["rgb_sharp"])


def test_a_large_preview_blends_at_the_training_scale(coc_trainer) -> None:
    """A defocus preview 2× the training photos' size: the blend CNN sees the renders at the
    training photos' pixel scale (``preview_blend_scale='training'``), or at 2× with 'render';
    at the training size both are the same render."""
    model = coc_trainer.pipeline.model
    model.eval()
    camera, _ = coc_trainer.pipeline.datamanager.next_eval_image(0)
    assert model.training_focal == pytest.approx(float(camera.fx))  # the demo's photos share one camera
    seen = []
    weights = model.blend_cnn.weights
    model.blend_cnn.weights = lambda images: seen.append(tuple(images.shape[1:3])) or weights(images)
    focus = float(model.lens.focus_distance(0))
    try:
        at_size = model.render_defocused(camera, focus, 2.0)["rgb"]
        H, W = at_size.shape[:2]
        big = camera[0:1]  # indexing makes a new Cameras (rescaling works in place)
        big.rescale_output_resolution(2.0)
        for scale in ("render", "training"):
            model.config.preview_blend_scale = scale
            out = model.render_defocused(big, focus, 2.0)
            assert out["rgb"].shape[:2] == (2 * H, 2 * W) and out["in_focus_weight"].shape[:2] == (2 * H, 2 * W)
        model.config.preview_blend_scale = "render"
        assert torch.equal(model.render_defocused(camera, focus, 2.0)["rgb"], at_size)
    finally:
        model.config.preview_blend_scale = "training"
        del model.blend_cnn.weights
    assert seen == [(H, W), (2 * H, 2 * W), (H, W), (H, W)]


def test_h_theta_sees_a_detached_camera(coc_trainer) -> None:
    """The official code detaches every input of h_θ: with the camera optimizer on, poses must not
    get gradients through the 2^9-frequency encoding of the camera centre."""
    model = coc_trainer.pipeline.model
    seen = {}
    forward = model.coc_mlp.forward

    def spy(centre, *rest):
        seen["centre requires grad"] = centre.requires_grad
        return forward(centre, *rest)

    model.coc_mlp.forward = spy
    centre = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
    means = model.coc_gaussian_sets(centre, torch.tensor(5.0), model.means, torch.exp(model.scales), model.quats).means
    assert seen == {"centre requires grad": False}
    means.sum().backward()  # the camera still enters through its distance to each Gaussian (Eq. 7)
    assert centre.grad is not None and torch.isfinite(centre.grad).all()


def test_focus_without_sfm_points(demo_scene: Path, tmp_path: Path) -> None:
    """Without SfM points d_F and the viewer's focus range are set at set-up (before the viewer
    shows the controls) from the initial Gaussians, and again from the trained Gaussians at the
    step CoC modelling starts (the official code's initialisation)."""
    from helpers import trainer_config

    from cocogs_nerfstudio.runs import seeded_trainer

    cfg = trainer_config(demo_scene, tmp_path, steps=4, name="random", coc_start_step=2, num_random=2000)
    cfg.pipeline.datamanager.dataparser.load_3D_points = False
    trainer = seeded_trainer(cfg)
    model = trainer.pipeline.model
    centres = trainer.pipeline.datamanager.train_dataset.cameras.camera_to_worlds[:, :3, 3]
    assert bool(model.lens.focus_initialized.all())
    initial = torch.cdist(centres, model.means.detach()).mean(1)
    assert torch.allclose(model.lens.focus_distance().detach(), initial, rtol=1e-4)
    controls = model.depth_of_field.focus
    assert 0 < controls.min < float(initial.min()) and controls.max > float(initial.max())
    run_iteration(trainer, 0)
    run_iteration(trainer, 1)
    assert torch.allclose(model.lens.focus_distance().detach(), initial, rtol=1e-4)  # no CoC yet: d_F untouched
    model.gauss_params["means"].data.mul_(0.5)  # as if training had gathered the Gaussians
    at_start = torch.cdist(centres, model.means.detach()).mean(1)
    assert ((at_start / initial - 1).abs() > 0.1).all()
    run_iteration(trainer, 2)
    # d_F was set from where the Gaussians were when CoC started (then one step of its optimizer)
    assert torch.allclose(model.lens.focus_distance().detach(), at_start, rtol=0.06)  # one Adam step: ≤ 5% (focus lr 5e-2)


@pytest.mark.parametrize(
    "ablation",
    [{"learn_directions": False}, {"use_beta": False}, {"use_aperture": False}, {"use_coc": False}, {"coc_form": "sensor"}],
)
def test_table3_ablations_train(demo_scene: Path, tmp_path: Path, ablation: dict) -> None:
    """Each ablation switch of the paper's Table 3 (and the literal Eq. 7 form) trains a step."""
    trainer = make_trainer(demo_scene, tmp_path, steps=2, name="ablation", coc_start_step=0, **ablation)
    model = trainer.pipeline.model
    run_iteration(trainer, 0)
    assert sum(info["radii"].shape[0] for info in model._infos) == model.config.num_coc_sets + 1  # renders
    assert model.coc_mlp.head.weight.grad is not None and torch.isfinite(model.coc_mlp.head.weight.grad).all()
    assert torch.isfinite(model.means).all()
    if ablation.get("use_aperture") is False:  # K's output row gets no gradient without the aperture
        assert model.coc_mlp.head.weight.grad[0].abs().sum() == 0


def test_network_learning_rates_decay_from_the_coc_start() -> None:
    """h_θ, the blend CNN and d_F get no gradient before CoC starts; their learning rates decay
    ×0.01 from that step (the official code), the Gaussians' from step 0."""
    from cocogs_nerfstudio.method_config import make_trainer_config

    cfg = make_trainer_config(max_steps=1000, model=CoCoGaussianModelConfig(coc_start_step=200))

    def schedule(group: str) -> list:
        lr = cfg.optimizers[group]["optimizer"].lr
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        scheduler = cfg.optimizers[group]["scheduler"].setup().get_scheduler(optimizer, lr)
        lrs = []
        for _ in range(1000):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return lrs

    for group in ("coc_mlp", "blend_cnn", "focus"):
        lrs, lr = schedule(group), cfg.optimizers[group]["optimizer"].lr
        assert lrs[0] == pytest.approx(lr) and lrs[199] == pytest.approx(lr) and lrs[200] == pytest.approx(lr), group
        assert lrs[600] == pytest.approx(lr * 0.01**0.5, rel=1e-6), group  # half-way through the CoC phase
        assert lrs[999] == pytest.approx(lr * 0.01 ** (799 / 800), rel=1e-6), group
    means = schedule("means")
    assert means[200] == pytest.approx(1.6e-4 * 0.01**0.2, rel=1e-6)


def test_focus_init_subsamples_many_points(coc_trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    """300k points: d_F from a 5k subset within 2% of the exact mean distance, and no buffer of
    images × all points (what the cdist calls see)."""
    model = coc_trainer.pipeline.model
    model.config.focus_init = "mean"
    cameras = coc_trainer.pipeline.datamanager.train_dataset.cameras
    points = torch.randn(300_000, 3, generator=torch.Generator().manual_seed(0)) * 3.0
    shapes = []
    cdist = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda a, b: shapes.append((a.shape[0], b.shape[0])) or cdist(a, b))
    model.initialize_focus(cameras.camera_to_worlds, points, max_points=5000)
    assert shapes and all(n <= 64 and p == 5000 for n, p in shapes)
    exact = cdist(cameras.camera_to_worlds[:, :3, 3], points).mean(1)
    assert torch.allclose(model.lens.focus_distance().detach(), exact, rtol=0.02)


def test_sharp_loss_is_the_weighted_l1_of_the_sharp_render(demo_scene: Path, tmp_path: Path) -> None:
    """``sharp_loss_weight`` w adds w × mean |photo − sharp render| (the base Gaussians alone) to the
    blend's loss during CoC training; off (0) it adds nothing. ``sharp_loss_in_focus_px`` > 0 (the
    default) weights it per pixel by how in focus the model sees the photo there."""
    trainer = make_trainer(
        demo_scene, tmp_path, steps=2, name="sharp", coc_start_step=0, sharp_loss_weight=0.25, sharp_loss_in_focus_px=0.0
    )
    model = trainer.pipeline.model
    model.train()
    camera, batch = trainer.pipeline.datamanager.next_train(0)
    outputs = model(camera)
    losses = model.get_loss_dict(outputs, batch)
    gt = model.get_gt_img(batch["image"])[..., :3]  # at the resolution schedule's size
    assert losses["sharp_loss"].item() == pytest.approx(0.25 * (gt - outputs["rgb_sharp"]).abs().mean().item(), rel=1e-5)
    losses["sharp_loss"].backward()  # reaches the Gaussians, not the networks that only the blend uses
    assert model.features_dc.grad.abs().sum() > 0 and model.blend_cnn.net[0].weight.grad is None
    # a mask (nerfstudio's batch["mask"]) leaves the masked-out pixels out, as splatfacto's loss does
    mask = torch.zeros(*batch["image"].shape[:2], 1, dtype=torch.bool)
    mask[:, : mask.shape[1] // 2] = True
    masked = model.get_loss_dict(outputs, {**batch, "mask": mask})["sharp_loss"].item()
    m = model._downscale_if_required(mask).to(gt)
    assert masked == pytest.approx(0.25 * ((gt - outputs["rgb_sharp"]) * m).abs().mean().item(), rel=1e-5)
    assert masked < losses["sharp_loss"].item()
    model.config.sharp_loss_weight = 0.0
    assert "sharp_loss" not in model.get_loss_dict(outputs, batch)
    # sharp_loss_in_focus_px: per-pixel weights from the learned CoC at the rendered depth, no gradient
    model.config.sharp_loss_weight, model.config.sharp_loss_in_focus_px = 0.25, 1.0
    outputs = model(camera)
    assert outputs["coc_px"].shape == (*gt.shape[:2], 1) and not outputs["coc_px"].requires_grad
    weights = (1.0 / outputs["coc_px"]).square().clamp(max=1.0)
    assert 0 < weights.min() < 1 and weights.max() == 1  # the demo's photos: in focus at one plane only
    losses = model.get_loss_dict(outputs, batch)
    expected = 0.25 * ((gt - outputs["rgb_sharp"]).abs() * weights).mean()
    assert losses["sharp_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def _ungated_prior_model(demo_scene: Path, tmp_path: Path):
    """A CoC model in training mode with the aperture prior at weight 0.5, no gate, from step 0,
    and its first training camera and batch."""
    trainer = make_trainer(
        demo_scene, tmp_path, steps=2, name="prior", coc_start_step=0, aperture_prior_weight=0.5,
        aperture_prior_below_px=0.0, aperture_prior_start_step=0,
    )  # fmt: skip
    model = trainer.pipeline.model
    model.train()
    camera, batch = trainer.pipeline.datamanager.next_train(0)
    return model, camera, batch


def test_aperture_prior_is_the_weighted_mean_relative_aperture(demo_scene: Path, tmp_path: Path) -> None:
    """``aperture_prior_weight`` w adds w × mean K / aperture unit (h_θ's relative aperture over the
    render's Gaussians; no gate, from the first step) during CoC training; its gradient reaches h_θ
    and lowers K; off (0) it is absent."""
    model, camera, batch = _ungated_prior_model(demo_scene, tmp_path)
    outputs = model(camera)
    prior = model.get_loss_dict(outputs, batch)["aperture_prior"]
    c2w = camera.camera_to_worlds.reshape(3, 4)
    with torch.no_grad():
        out = model.coc_mlp(c2w[:, 3], model.means, torch.exp(model.scales), model.quats)
    floored = floored_aperture(out.aperture, model.config.aperture_floor)
    assert prior.item() == pytest.approx(0.5 * floored.mean().item(), rel=1e-5)
    assert 0.3 < out.aperture.mean().item() < 3  # ≈ 1 at initialisation: K in its unit
    prior.backward()
    last = [p for p in model.coc_mlp.parameters() if p.grad is not None]
    assert last and any(p.grad.abs().sum() > 0 for p in last) and model.means.grad is None
    # one plain gradient step on the prior alone lowers the mean aperture
    with torch.no_grad():
        for p in model.coc_mlp.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
        lowered = model.coc_mlp(c2w[:, 3], model.means, torch.exp(model.scales), model.quats).aperture.mean()
    assert lowered < out.aperture.mean()
    model.config.aperture_prior_weight = 0.0
    assert "aperture_prior" not in model.get_loss_dict(model(camera), batch)


def test_aperture_prior_gate_acts_on_a_small_learned_blur_after_its_start(demo_scene: Path, tmp_path: Path) -> None:
    """``aperture_prior_below_px``: the prior is on for a view only while the 90th percentile of the
    CoC in pixels (rendered depth, median K, the view's d_F; covered pixels) is below it; before
    ``aperture_prior_start_step`` it is absent."""
    model, camera, batch = _ungated_prior_model(demo_scene, tmp_path)
    ungated = model.get_loss_dict(model(camera), batch)["aperture_prior"].item()
    # the CoC the gate measures, from the render's own depth and h_θ's median K
    outputs = model(camera)
    c2w = camera.camera_to_worlds.reshape(3, 4)
    with torch.no_grad():
        focus = model._defocus_setting(camera)[0]
        aperture = model.coc_gaussian_sets(c2w[:, 3], focus, model.means, torch.exp(model.scales), model.quats).aperture
        fx = float(camera.fx) / model._get_downscale_factor()
        coc = coc_pixels(outputs["depth"], focus, aperture.median(), fx, model.config.coc_form)
        q90 = torch.quantile(coc[outputs["accumulation"] >= 0.5], 0.9).item()
    assert q90 > 0.5  # the demo's blur at initialisation: a few pixels
    for below_px, on in ((1.05 * q90, True), (0.95 * q90, False)):
        model.config.aperture_prior_below_px = below_px
        prior = model.get_loss_dict(model(camera), batch)["aperture_prior"].item()
        assert prior == (pytest.approx(ungated, rel=1e-4) if on else 0.0), (below_px, q90)
    model.config.aperture_prior_start_step = model.step + 1
    assert "aperture_prior" not in model.get_loss_dict(model(camera), batch)


def test_aperture_floor_keeps_k_above_its_share_of_the_unit(demo_scene: Path, tmp_path: Path) -> None:
    """``aperture_floor`` f (default ¼): K ≥ f units however far h_θ's K falls, h_θ's K (within
    f·e^-4) from 1 on, and the gradient still reaches h_θ; f = 0: h_θ's K alone."""
    model, camera, _ = _ungated_prior_model(demo_scene, tmp_path)
    c2w = camera.camera_to_worlds.reshape(3, 4)
    out = model.coc_mlp(c2w[:, 3], model.means, torch.exp(model.scales), model.quats)
    assert model.lens.aperture_floor == model.config.aperture_floor == 0.25
    collapsed = dataclasses.replace(out, aperture=torch.tensor([0.0, 1e-4, 1.0, 3.0]))
    soft = model.lens.aperture(collapsed) / model.lens.aperture_unit
    assert torch.allclose(soft, torch.tensor([0.25, 0.25, 1.0, 3.0]), atol=0.25 * math.exp(-4.0))
    model.lens.aperture(out).sum().backward()
    assert model.coc_mlp.head.weight.grad is not None and model.coc_mlp.head.weight.grad[0].abs().sum() > 0
    model.lens.aperture_floor = 0.0
    assert torch.allclose(model.lens.aperture(collapsed) / model.lens.aperture_unit, collapsed.aperture)


def test_focus_prior_pulls_a_drifted_focus_back_to_its_initialisation(coc_trainer) -> None:
    """``focus_prior_weight`` w adds w × (log d_F − log d_F at init)² of the training view: 0 at the
    start; after d_F of the view drifts ×2, w·ln(2)², and its gradient lowers d_F again (only that
    view's)."""
    model = coc_trainer.pipeline.model
    model.config.focus_prior_weight = 0.5
    model.train()
    camera, batch = coc_trainer.pipeline.datamanager.next_train(0)
    index = int(camera.metadata["cam_idx"])
    assert model.get_loss_dict(model(camera), batch)["focus_prior"].item() == pytest.approx(0.0, abs=1e-12)
    initial = model.lens.focus_distance(index).item()
    with torch.no_grad():
        model.lens.focus_log[index] += math.log(2.0)
    prior = model.get_loss_dict(model(camera), batch)["focus_prior"]
    assert prior.item() == pytest.approx(0.5 * math.log(2.0) ** 2, rel=1e-5)
    model.lens.focus_log.grad = None
    prior.backward()
    grad = model.lens.focus_log.grad
    assert grad[index].item() == pytest.approx(2 * 0.5 * math.log(2.0), rel=1e-5)  # d/dlog: pushes d_F down
    assert torch.count_nonzero(grad).item() == 1
    model.config.focus_prior_weight = 0.0
    assert "focus_prior" not in model.get_loss_dict(model(camera), batch)
    assert model.lens.focus_distance(index).item() == pytest.approx(2 * initial, rel=1e-5)
