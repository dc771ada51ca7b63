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
            focus=model.focus_log.grad.abs().sum().item() if model.focus_log.grad is not None else 0.0,
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
    assert bool(model.focus_initialized.all())
    assert torch.allclose(model.focus_distance().detach(), expected, rtol=1e-4)

    paper = make_trainer(demo_scene, tmp_path / "mean", steps=10, name="mean", focus_init="mean").pipeline.model
    mean = torch.cdist(cams.camera_to_worlds[:, :3, 3], pts).mean(1)
    assert torch.allclose(paper.focus_distance().detach(), mean, rtol=1e-4)


def test_sharp_render_is_the_base_gaussians_alone(coc_trainer) -> None:
    model = coc_trainer.pipeline.model
    dm = coc_trainer.pipeline.datamanager
    camera, _ = dm.next_train(0)
    model.train()
    model.step = 5
    out = model.get_outputs(camera)
    # every output is an [H, W, C] image (the viewer offers each one as a choice), but for the
    # priors' training-only scalars (the focus prior is on by default: its term is here)
    images = {k: v for k, v in out.items() if k not in model.PRIOR_OUTPUTS and k != "background" and v is not None}
    assert all(v.shape[:2] == out["rgb"].shape[:2] for v in images.values())
    assert out["focus_drift"].shape == () and set(out) - set(images) <= {"background", *model.PRIOR_OUTPUTS}
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
    assert any(k.startswith("coc_mlp.") for k in saved) and "focus_log" in saved and "focus_unit" in saved

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
    resumed.train()  # nerfstudio trains max_num_iterations more steps: 6 -> 14
    assert int(model.trained_steps) == 14
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
    controls.focus.value = float(model.focus_distance(0))
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
    focus = float(model.focus_distance(0))
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


def test_a_smaller_blend_cnn_sees_shrunk_renders_and_blends_them_at_full_size(coc_trainer) -> None:
    """``blend_cnn_scale=0.5``: in training and at the training size the CNN sees the renders at half
    their size, a 2× preview at the training photos' pixel scale also halved; every output keeps
    the render's own size, and the sharp render's upsampled weight stays in [0, 1]."""
    model = coc_trainer.pipeline.model
    camera, _ = coc_trainer.pipeline.datamanager.next_eval_image(0)
    seen = []
    weights = model.blend_cnn.weights
    model.blend_cnn.weights = lambda images: seen.append(tuple(images.shape[1:3])) or weights(images)
    model.config.blend_cnn_scale = 0.5
    focus = float(model.focus_distance(0))
    try:
        model.train()
        train_camera, _ = coc_trainer.pipeline.datamanager.next_train(0)
        with torch.no_grad():
            trained = model.get_outputs(train_camera.to(model.device))
        assert "rgb_sharp" in trained  # the training blend ran
        model.eval()
        H, W = trained["rgb"].shape[:2]
        at_size = model.render_defocused(camera, focus, 2.0)
        big = camera[0:1]
        big.rescale_output_resolution(2.0)
        wide = model.render_defocused(big, focus, 2.0)
    finally:
        model.config.blend_cnn_scale = 1.0
        del model.blend_cnn.weights
    half = (round(H / 2), round(W / 2))
    assert seen == [half, half, half]
    assert at_size["rgb"].shape[:2] == (H, W) and wide["rgb"].shape[:2] == (2 * H, 2 * W)
    assert wide["in_focus_weight"].shape[:2] == (2 * H, 2 * W)
    assert ((0 <= wide["in_focus_weight"]) & (wide["in_focus_weight"] <= 1)).all()


def test_blend_and_coc_scales_outside_0_1_are_refused() -> None:
    from nerfstudio.data.scene_box import SceneBox

    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    for name, value in (("blend_cnn_scale", 0.0), ("coc_render_scale", 1.5)):
        with pytest.raises(ValueError, match=f"{name} {value}"):
            CoCoGaussianModelConfig(**{name: value}).setup(scene_box=box, num_train_data=1, seed_points=None)


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
    means, _, _, _ = model.coc_gaussian_sets(centre, torch.tensor(5.0), model.means, torch.exp(model.scales), model.quats)
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
    assert bool(model.focus_initialized.all())
    initial = torch.cdist(centres, model.means.detach()).mean(1)
    assert torch.allclose(model.focus_distance().detach(), initial, rtol=1e-4)
    controls = model.depth_of_field.focus
    assert 0 < controls.min < float(initial.min()) and controls.max > float(initial.max())
    run_iteration(trainer, 0)
    run_iteration(trainer, 1)
    assert torch.allclose(model.focus_distance().detach(), initial, rtol=1e-4)  # no CoC yet: d_F untouched
    model.gauss_params["means"].data.mul_(0.5)  # as if training had gathered the Gaussians
    at_start = torch.cdist(centres, model.means.detach()).mean(1)
    assert ((at_start / initial - 1).abs() > 0.1).all()
    run_iteration(trainer, 2)
    # d_F was set from where the Gaussians were when CoC started (then one step of its optimizer)
    assert torch.allclose(model.focus_distance().detach(), at_start, rtol=0.06)  # one Adam step: ≤ 5% (focus lr 5e-2)


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


def test_focus_plane_measures_d_along_the_viewing_axis(demo_scene: Path, tmp_path: Path) -> None:
    """``focus_plane``: a Gaussian on the focus plane but off the axis (depth 5, distance 6.25) is in
    focus (σ = 0: its CoC copies stay on it), where the paper's distance gives σ = K·6.25·|1/6.25 − 1/5|
    = K/4, i.e. copies σ/2·β = β·K/8 away (Eqs. 7, 9). It trains a step."""
    trainer = make_trainer(demo_scene, tmp_path, steps=2, name="plane", coc_start_step=0, focus_plane=True)
    model = trainer.pipeline.model
    run_iteration(trainer, 0)
    assert model.coc_mlp.head.weight.grad is not None and torch.isfinite(model.means).all()
    centre, axis, focus = torch.zeros(3), torch.tensor([0.0, 0.0, -1.0]), torch.tensor(5.0)
    means = torch.tensor([[0.0, 3.75, -5.0]])
    scales, quats = torch.exp(model.scales[:1]).detach(), model.quats[:1].detach()
    with torch.no_grad():
        coc_means = model.coc_gaussian_sets(centre, focus, means, scales, quats, axis=axis)[0]
        assert torch.allclose(coc_means, means.expand_as(coc_means))
        model.config.focus_plane = False
        coc_means, _, _, aperture = model.coc_gaussian_sets(centre, focus, means, scales, quats)
        beta = model.coc_mlp(centre, means, scales, quats).beta  # [M, 1]
    offsets = (coc_means - means).norm(dim=-1)
    assert torch.allclose(offsets, beta * aperture / 8, rtol=1e-5)
    assert (offsets > 0).all()


def test_network_learning_rates_decay_from_the_coc_start() -> None:
    """h_θ, the blend CNN and d_F get no gradient before CoC starts; their learning rates decay
    ×0.01 from that step (the official code), the Gaussians' from step 0; h_θ's ramps up from 0
    over ``coc_mlp_ramp`` steps first (a sine quarter), then decays ×0.01 over the rest."""
    from cocogs_nerfstudio.method_config import make_trainer_config, small_trainer_config

    assert make_trainer_config().optimizers["coc_mlp"]["scheduler"].ramp_steps == 0  # off by default
    assert small_trainer_config().optimizers["coc_mlp"]["scheduler"].ramp_steps == 0
    cfg = make_trainer_config(max_steps=1000, model=CoCoGaussianModelConfig(coc_start_step=200), coc_mlp_ramp=100)

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

    for group in ("blend_cnn", "focus"):
        lrs, lr = schedule(group), cfg.optimizers[group]["optimizer"].lr
        assert lrs[0] == pytest.approx(lr) and lrs[199] == pytest.approx(lr) and lrs[200] == pytest.approx(lr), group
        assert lrs[600] == pytest.approx(lr * 0.01**0.5, rel=1e-6), group  # half-way through the CoC phase
    lrs, lr = schedule("coc_mlp"), cfg.optimizers["coc_mlp"]["optimizer"].lr
    assert lrs[199] == pytest.approx(lr) and lrs[200] == 0.0
    assert lrs[250] == pytest.approx(lr * math.sin(math.pi / 4), rel=1e-6) and lrs[300] == pytest.approx(lr)
    assert lrs[650] == pytest.approx(lr * 0.01**0.5, rel=1e-6) and lrs[999] > lr * 0.01
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
    assert torch.allclose(model.focus_distance().detach(), exact, rtol=0.02)


def test_coc_sets_rendered_at_half_size(demo_scene: Path, tmp_path: Path) -> None:
    """coc_render_scale=0.5: the M CoC sets are rasterized at 48×36 for the 96×72 demo and
    upsampled; the blend, its gradients and the densification statistics are those of full size."""
    trainer = make_trainer(demo_scene, tmp_path, steps=2, name="half", coc_start_step=0, coc_render_scale=0.5)
    model = trainer.pipeline.model
    run_iteration(trainer, 0)
    sizes = [(info["width"], info["height"], info["radii"].shape[0]) for info in model._infos]
    assert sizes == [(96, 72, 1), (48, 36, model.config.num_coc_sets)]  # the base render, the CoC sets
    assert model.coc_mlp.head.weight.grad.abs().sum() > 0 and model.focus_log.grad.abs().sum() > 0
    model.train()
    camera, _ = trainer.pipeline.datamanager.next_train(1)
    with torch.no_grad():
        out = model.get_outputs(camera)
    assert out["rgb"].shape == out["rgb_sharp"].shape == (72, 96, 3)
    assert torch.equal(model.combined_info()["radii"] > 0, torch.cat([i["radii"] > 0 for i in model._infos]).any(0, keepdim=True))


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
    # sharp_loss_in_focus_px: per-pixel weights from the CoC at the rendered depth, no gradient
    assert "sharp_loss_weights" not in outputs
    model.config.sharp_loss_weight, model.config.sharp_loss_in_focus_px = 0.25, 1.0
    outputs = model(camera)
    weights = outputs["sharp_loss_weights"]
    assert weights.shape == (*gt.shape[:2], 1) and not weights.requires_grad
    assert 0 < weights.min() < 1 and weights.max() == 1  # the demo's photos: in focus at one plane only
    losses = model.get_loss_dict(outputs, batch)
    expected = 0.25 * ((gt - outputs["rgb_sharp"]).abs() * weights).mean()
    assert losses["sharp_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_coc_every_trains_the_base_alone_between_coc_steps(demo_scene: Path, tmp_path: Path) -> None:
    """``coc_every`` 2: steps 0, 2, … render the CoC sets and blend; steps 1, 3, … the base alone,
    whose loss is the in-focus sharp-render term only, with the weights a CoC step computes for the
    same camera, no gradient to h_θ, the CNN or d_F, and no densification statistics."""
    trainer = make_trainer(
        demo_scene, tmp_path, steps=4, name="every", coc_start_step=0, coc_every=2, sharp_loss_weight=0.25
    )
    model = trainer.pipeline.model
    model.train()
    model.config.background_color = "black"  # not a random one per render
    camera, batch = trainer.pipeline.datamanager.next_train(0)
    model.step = 2
    coc = model(camera)
    model.step = 1
    sharp = model(camera)
    assert "in_focus_weight" in coc and "sharp_only" not in coc  # the blend ran
    assert "in_focus_weight" not in sharp and torch.equal(sharp["rgb"], sharp["rgb_sharp"])
    assert torch.allclose(sharp["rgb_sharp"], coc["rgb_sharp"], atol=1e-6)  # the same base render (same SH degree)
    assert torch.allclose(sharp["sharp_loss_weights"], coc["sharp_loss_weights"], atol=1e-6)
    losses = model.get_loss_dict(sharp, batch)
    gt = model.get_gt_img(batch["image"])[..., :3]
    assert losses["main_loss"].item() == 0.0 and "focus_prior" not in losses
    expected = 0.25 * ((gt - sharp["rgb_sharp"]).abs() * sharp["sharp_loss_weights"]).mean()
    assert losses["sharp_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    assert model.features_dc.grad.abs().sum() > 0 and model.means.grad.abs().sum() > 0
    assert model.blend_cnn.net[0].weight.grad is None and model.coc_mlp.head.weight.grad is None
    assert model.focus_log.grad is None
    # densification: a CoC step counts the Gaussians it saw, a sharp-only step none
    model.zero_grad(set_to_none=True)
    for step in (0, 1):
        before = model.strategy_state["count"]
        before = None if before is None else before.clone()
        run_iteration(trainer, step)
        count = model.strategy_state["count"]
        if step == 0:
            assert count.sum() > 0
        else:
            assert torch.equal(count, before)
    with pytest.raises(ValueError, match="coc_every 2 .* sharp_loss_in_focus_px"):
        make_trainer(demo_scene, tmp_path / "bad", steps=2, name="bad", coc_every=2, sharp_loss_in_focus_px=0.0)


def test_coc_crop_renders_the_coc_sets_and_the_blend_on_a_crop(
    demo_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``coc_crop`` 0.5: the CoC sets are rasterized for a 48×36 crop of the 96×72 image (the same
    pixels as the whole image's render), the blend replaces the sharp render there and nowhere else,
    Eq. 14 is computed on the crop, and every part of the model still gets a gradient."""
    import cocogs_nerfstudio.cocogaussian as cocogaussian

    trainer = make_trainer(demo_scene, tmp_path, steps=2, name="crop", coc_start_step=0, coc_crop=0.5)
    model = trainer.pipeline.model
    model.train()
    model.config.background_color = "black"
    camera, batch = trainer.pipeline.datamanager.next_train(0)
    captured = []
    original = cocogaussian.rasterize_sets

    def capture(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = original(*args, **kwargs)
        captured.append(out)
        return out

    monkeypatch.setattr(cocogaussian, "rasterize_sets", capture)
    crop = (10, 20, 36, 48)  # y0, x0, height, width
    monkeypatch.setattr(model, "_random_crop", lambda W, H: crop)
    outputs = model(camera)
    seen = model._infos  # what the densification strategy is given
    model.config.coc_crop = 1.0
    with torch.no_grad():
        whole = model(camera)
    y0, x0, h, w = crop
    (part, part_alpha, _), (full, full_alpha, _) = captured
    assert part.shape[1:3] == (h, w) and full.shape[1:3] == (72, 96)
    # the same pixels, up to 3DGS's projection: splats beyond 1.3× a view's field of view get the
    # Jacobian at its edge (gsplat does the same), and the crop's view is narrower (with that clamp
    # off, the alphas agree to 5e-7)
    diff = (part - full[:, y0 : y0 + h, x0 : x0 + w]).abs()
    diff_alpha = (part_alpha - full_alpha[:, y0 : y0 + h, x0 : x0 + w]).abs()
    assert diff.mean() < 2e-4 and diff_alpha.mean() < 5e-4 and diff.max() < 1e-2 and diff_alpha.max() < 1e-2
    assert len(seen) == 2 and all((i["width"], i["height"]) == (96, 72) for i in seen)  # a crop's pixels are the image's
    rgb, sharp = outputs["rgb"].detach(), outputs["rgb_sharp"].detach()
    assert rgb.shape == sharp.shape == (72, 96, 3) and torch.allclose(sharp, whole["rgb_sharp"], atol=1e-6)
    inside = torch.zeros(72, 96, dtype=torch.bool)
    inside[y0 : y0 + h, x0 : x0 + w] = True
    assert torch.equal(rgb[~inside], sharp[~inside]) and not torch.allclose(rgb[inside], sharp[inside])
    model.config.coc_crop = 0.5
    model._crop = crop  # the loss reads the crop of the last training render
    losses = model.get_loss_dict(outputs, batch)
    gt = model.get_gt_img(batch["image"])[y0 : y0 + h, x0 : x0 + w, :3]
    pred = outputs["rgb"][y0 : y0 + h, x0 : x0 + w]
    ssim = model.ssim(gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None])
    lam = model.config.ssim_lambda
    expected = (1 - lam) * (gt - pred).abs().mean() + lam * (1 - ssim)
    assert losses["main_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    for name, p in (("means", model.means), ("cnn", model.blend_cnn.net[0].weight),
                    ("h_theta", model.coc_mlp.head.weight), ("focus", model.focus_log)):  # fmt: skip
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
    with pytest.raises(ValueError, match="coc_crop and coc_render_scale"):
        make_trainer(demo_scene, tmp_path / "bad", steps=2, name="bad", coc_crop=0.5, coc_render_scale=0.5)


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
    floored = floored_aperture(out.aperture, model.config.aperture_floor, model.config.aperture_floor_form)
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
        focus = model._defocus_setting(camera, c2w)[0]
        aperture = model.coc_gaussian_sets(c2w[:, 3], focus, model.means, torch.exp(model.scales), model.quats)[3]
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


def test_aperture_hold_steps_keep_k_at_its_unit_from_the_coc_start(demo_scene: Path, tmp_path: Path) -> None:
    """``aperture_hold_steps`` n: for n steps from the CoC start K is its unit, with no gradient to
    h_θ's K; from then on h_θ's K."""
    model, camera, _ = _ungated_prior_model(demo_scene, tmp_path)
    c2w = camera.camera_to_worlds.reshape(3, 4)
    model.config.aperture_hold_steps = 5
    out = model.coc_mlp(c2w[:, 3], model.means, torch.exp(model.scales), model.quats)
    for step, held in ((4, True), (5, False)):
        model.step = step
        aperture = model.aperture_of(out)
        learned = floored_aperture(out.aperture, model.config.aperture_floor, model.config.aperture_floor_form)
        expected = model.aperture_unit * (torch.ones_like(out.aperture) if held else learned)
        assert torch.allclose(aperture, expected) and not torch.allclose(out.aperture, torch.ones_like(out.aperture))
        assert aperture.requires_grad != held


def test_aperture_floor_keeps_k_above_its_share_of_the_unit(demo_scene: Path, tmp_path: Path) -> None:
    """``aperture_floor`` f: relative K = f + (1 − f) × h_θ's K, so K ≥ f units however far h_θ's
    K falls, the same K where h_θ says 1, and the gradient still reaches h_θ (scaled by 1 − f)."""
    model, camera, _ = _ungated_prior_model(demo_scene, tmp_path)
    c2w = camera.camera_to_worlds.reshape(3, 4)
    out = model.coc_mlp(c2w[:, 3], model.means, torch.exp(model.scales), model.quats)
    model.config.aperture_floor, model.config.aperture_floor_form = 0.25, "linear"
    collapsed = dataclasses.replace(out, aperture=torch.tensor([0.0, 1e-4, 1.0, 3.0]))
    expected = torch.tensor([0.25, 0.25 + 0.75e-4, 1.0, 2.5])
    assert torch.allclose(model.aperture_of(collapsed) / model.aperture_unit, expected)
    floored = model.aperture_of(out)
    floored.sum().backward()
    assert model.coc_mlp.head.weight.grad is not None and model.coc_mlp.head.weight.grad[0].abs().sum() > 0
    model.config.aperture_floor_form = "soft"  # f at a collapsed K, h_θ's K (within f·e^-4) from 1 on
    soft = model.aperture_of(collapsed) / model.aperture_unit
    assert torch.allclose(soft, torch.tensor([0.25, 0.25, 1.0, 3.0]), atol=0.25 * math.exp(-4.0))
    model.config.aperture_floor = 0.0
    assert torch.allclose(model.aperture_of(collapsed) / model.aperture_unit, collapsed.aperture)


def test_blend_gain_is_a_running_mean_and_gates_the_aperture_prior(demo_scene: Path, tmp_path: Path) -> None:
    """Each training blend moves ``blend_gain`` by 1/20 of the way to 1 − L1(blend)/L1(sharp render)
    against the photo; ``aperture_prior_below_gain`` g turns the prior off while blend_gain ≥ g."""
    model, camera, batch = _ungated_prior_model(demo_scene, tmp_path)
    outputs = model(camera)
    gt = model.composite_with_background(model.get_gt_img(batch["image"]), outputs["background"])
    # a blend that matches the photo where the sharp render is 0.2 off: gain 1; then 0.1 off: gain ½
    outputs.update(rgb_sharp=(gt + 0.2).detach(), rgb=gt.detach())
    model.blend_gain.fill_(0.0)
    metrics: dict = {}
    prior = model.get_loss_dict(outputs, batch, metrics)["aperture_prior"]
    assert model.blend_gain.item() == pytest.approx(0.05) and metrics["blend_gain"].item() == pytest.approx(0.05)
    outputs.update(rgb=(gt + 0.1).detach())
    model.get_loss_dict(outputs, batch)
    assert model.blend_gain.item() == pytest.approx(0.05 + 0.05 * (0.5 - 0.05))
    expected = 0.0725
    for below, on in ((0.07, True), (0.065, False)):  # a blend no better than the sharp render: gain 0
        model.config.aperture_prior_below_gain = below
        gated = model.get_loss_dict({**outputs, "rgb": outputs["rgb_sharp"]}, batch)["aperture_prior"]
        expected *= 0.95  # 0.0689, then 0.0654: updated before the gate reads it
        assert model.blend_gain.item() == pytest.approx(expected)
        assert gated.item() == (pytest.approx(prior.item(), rel=1e-5) if on else 0.0)
    model.eval()  # evaluation leaves it alone
    model.get_loss_dict(model(camera), batch)
    assert model.blend_gain.item() == pytest.approx(expected)


def test_focus_prior_pulls_a_drifted_focus_back_to_its_initialisation(coc_trainer) -> None:
    """``focus_prior_weight`` w adds w × (log d_F − log d_F at init)² of the training view: 0 at the
    start; after d_F of the view drifts ×2, w·ln(2)², and its gradient lowers d_F again (only that
    view's). A checkpoint without the initial d_F (older versions) loads with it as its d_F, and with
    ``blend_gain`` 1 where it has none."""
    model = coc_trainer.pipeline.model
    model.config.focus_prior_weight = 0.5
    model.train()
    camera, batch = coc_trainer.pipeline.datamanager.next_train(0)
    index = int(camera.metadata["cam_idx"])
    assert model.get_loss_dict(model(camera), batch)["focus_prior"].item() == pytest.approx(0.0, abs=1e-12)
    initial = model.focus_distance(index).item()
    with torch.no_grad():
        model.focus_log[index] += math.log(2.0)
    prior = model.get_loss_dict(model(camera), batch)["focus_prior"]
    assert prior.item() == pytest.approx(0.5 * math.log(2.0) ** 2, rel=1e-5)
    model.focus_log.grad = None
    prior.backward()
    grad = model.focus_log.grad
    assert grad[index].item() == pytest.approx(2 * 0.5 * math.log(2.0), rel=1e-5)  # d/dlog: pushes d_F down
    assert torch.count_nonzero(grad).item() == 1
    model.config.focus_prior_weight = 0.0
    assert "focus_prior" not in model.get_loss_dict(model(camera), batch)
    model.blend_gain.fill_(0.3)
    state = {k: v for k, v in model.state_dict().items() if k not in ("focus_log_init", "blend_gain")}
    model.load_state_dict(state)  # older checkpoints: without the initial d_F and blend_gain
    assert torch.equal(model.focus_log_init, model.focus_log.detach())
    assert model.blend_gain.item() == 1.0  # no evidence yet: aperture_prior_below_gain keeps the prior off
    assert model.focus_distance(index).item() == pytest.approx(2 * initial, rel=1e-5)
