"""CoCoGaussian: circle-of-confusion-aware Gaussian splatting (paper Sec. 4), as a Splatfacto model.

Training renders the base Gaussians G_B and M CoC Gaussian sets built from them by h_θ and the
thin-lens CoC (Eqs. 7-12), blends the M+1 images with a shallow CNN (Eq. 13) and compares the
blend with the defocused photo (Eq. 14). Everything else — evaluation, ``ns-eval``, the viewer,
novel cameras — renders the base Gaussians alone: the sharp scene.

With ``coc_enabled=False`` the model is plain 3DGS (Splatfacto rendered through the same
rasterizer): the baseline of every comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type, Union

import torch
from gsplat.strategy import DefaultStrategy
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig, num_sh_bases
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torch import Tensor, nn
from torch.nn import Parameter

from cocogs_nerfstudio.blend_cnn import BlendCNN
from cocogs_nerfstudio.coc import coc_diameter, coc_means, coc_quats, coc_scales, fixed_directions
from cocogs_nerfstudio.coc_mlp import CocMLP
from cocogs_nerfstudio.focus_init import focus_from_sharpness
from cocogs_nerfstudio.lpips_offline import make_lpips
from cocogs_nerfstudio.rasterize import rasterize, viewmats_from_camera_to_worlds
from cocogs_nerfstudio.viewer_controls import DepthOfFieldControls


@dataclass
class CoCoGaussianModelConfig(SplatfactoModelConfig):
    """CoCoGaussian: the paper's defaults, with the official code's choices where it is silent."""

    _target: Type = field(default_factory=lambda: CoCoGaussianModel)
    coc_enabled: bool = True
    """Model defocus with CoC Gaussians. False: plain 3DGS, the baseline."""
    num_coc_sets: int = 4
    """M, the number of CoC Gaussian sets (official code: 4)."""
    max_scale_factor: float = 1.1
    """δs_max (Eq. 10; official code: 1.1)."""
    max_rot_factor: float = 1.1
    """δq_max (Eq. 11; official code: 1.1)."""
    coc_start_step: int = 1500
    """Plain 3DGS before this step, CoC modelling from it (official code: 1500; paper silent)."""
    coc_form: Literal["world", "sensor"] = "world"
    """'sensor': Eq. 7 literally, σ = K|1/d − 1/d_F|. 'world' (default, measured better, see README):
    σ = K·d·|1/d − 1/d_F|, the thin-lens blur disc at the Gaussian's distance."""
    aperture_init: float = 0.03
    """Unit (and initial value) of K: aperture diameter as a fraction of the mean focus distance."""
    learn_directions: bool = True
    """False: the Table 3 ablation 'w/o CoC direction vector' (fixed, evenly spaced directions)."""
    use_beta: bool = True
    """False: the ablation 'w/o CoC scaling' (β = 1)."""
    use_aperture: bool = True
    """False: the ablation 'w/o aperture parameter' (K fixed to its unit)."""
    use_coc: bool = True
    """False: the ablation 'w/o CoC' (offsets σ₀/2·β·d with a constant σ₀, no depth or focus)."""
    focus_init: Literal["sharpness", "mean"] = "sharpness"
    """Initial d_F per training image: 'mean' (paper) = mean distance from the camera to the SfM
    points; 'sharpness' (default, measured better on photos focused at different depths, see
    README) = median distance of the SfM points each photo shows relatively sharpest
    (focus_init.py). Without SfM points both fall back to the mean distance to the Gaussians."""
    densify_grad_combine: Literal["sum", "mean"] = "sum"
    """How the screen-space gradients of the M+1 renders of a base Gaussian are combined for
    densification: 'sum' (default, measured: 'mean' under-densifies) or 'mean' (official code)."""
    opacity_reset: bool = False
    """Reset opacities every reset_alpha_every refinements (Splatfacto: on; official code: off)."""
    mlp_width: int = 64
    mlp_layers: int = 3
    mean_freqs: int = 3
    cam_freqs: int = 10
    blend_cnn_width: int = 64
    ssim_lambda: float = 0.3
    """λ of Eq. 14 (paper: 0.3; official code: 0.25)."""


def _camera_centre(camera_to_world: Tensor) -> Tensor:
    return camera_to_world[..., :3, 3].reshape(3)


class CoCoGaussianModel(SplatfactoModel):
    """Splatfacto + CoC Gaussians, learnable aperture (h_θ) and per-image focus d_F."""

    config: CoCoGaussianModelConfig

    # ------------------------------------------------------------------ setup
    def populate_modules(self) -> None:
        """Splatfacto's setup, device-agnostic and offline-safe, plus h_θ, the blend CNN and d_F."""
        cfg = self.config
        if self.seed_points is not None and not cfg.random_init:
            means = self.seed_points[0].float().clone()
        else:
            means = (torch.rand((cfg.num_random, 3)) - 0.5) * cfg.random_scale
        distances, _ = self.k_nearest_sklearn(means, 3)
        avg_dist = torch.from_numpy(distances).mean(dim=-1, keepdim=True).clamp_min(1e-7)
        n = means.shape[0]
        dim_sh = num_sh_bases(cfg.sh_degree)
        quats = torch.randn(n, 4)
        quats = quats / quats.norm(dim=-1, keepdim=True)
        features_rest = torch.zeros(n, dim_sh - 1, 3)
        has_colors = self.seed_points is not None and not cfg.random_init and self.seed_points[1].shape[0] > 0
        if has_colors:
            rgb = self.seed_points[1].float() / 255.0
            features_dc = RGB2SH(rgb) if cfg.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
        else:
            features_dc = torch.rand(n, 3)
        self.gauss_params = nn.ParameterDict(
            {
                "means": Parameter(means),
                "scales": Parameter(torch.log(avg_dist.repeat(1, 3))),
                "quats": Parameter(quats),
                "features_dc": Parameter(features_dc),
                "features_rest": Parameter(features_rest),
                "opacities": Parameter(torch.logit(0.1 * torch.ones(n, 1))),
            }
        )
        self.camera_optimizer = cfg.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        if cfg.use_bilateral_grid:
            raise ValueError("use_bilateral_grid is not supported by cocogaussian")

        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = make_lpips()
        self.step = 0
        self.crop_box = None
        if cfg.background_color == "random":
            self.background_color = torch.tensor([0.1490, 0.1647, 0.2157])  # viser's background
        else:
            from nerfstudio.utils.colors import get_color

            self.background_color = get_color(cfg.background_color)

        reset_every = cfg.reset_alpha_every * cfg.refine_every if cfg.opacity_reset else 2**31
        self.strategy = DefaultStrategy(
            prune_opa=cfg.cull_alpha_thresh,
            grow_grad2d=cfg.densify_grad_thresh,
            grow_scale3d=cfg.densify_size_thresh,
            grow_scale2d=cfg.split_screen_size,
            prune_scale3d=cfg.cull_scale_thresh,
            prune_scale2d=cfg.cull_screen_size,
            refine_scale2d_stop_iter=cfg.stop_screen_size_at,
            refine_start_iter=cfg.warmup_length,
            refine_stop_iter=cfg.stop_split_at,
            reset_every=reset_every,
            refine_every=cfg.refine_every,
            pause_refine_after_reset=self.num_train_data + cfg.refine_every if cfg.opacity_reset else 0,
            absgrad=cfg.use_absgrad,
            revised_opacity=False,
            verbose=True,
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self._infos: List[Dict] = []
        self.defocus_preview: Optional[Tuple[float, float]] = None
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))

        if cfg.coc_enabled:
            self.coc_mlp = CocMLP(
                num_sets=cfg.num_coc_sets,
                hidden=cfg.mlp_width,
                num_layers=cfg.mlp_layers,
                mean_freqs=cfg.mean_freqs,
                cam_freqs=cfg.cam_freqs,
                max_scale_factor=cfg.max_scale_factor,
                max_rot_factor=cfg.max_rot_factor,
            )
            self.blend_cnn = BlendCNN(cfg.blend_cnn_width)
            # d_F = focus_unit · exp(focus_log): positive by construction, scale-free learning rate
            self.focus_log = Parameter(torch.zeros(self.num_train_data))
            self.register_buffer("focus_unit", torch.ones(()))
            self.register_buffer("focus_initialized", torch.zeros(self.num_train_data, dtype=torch.bool))
            self.depth_of_field = DepthOfFieldControls(self.num_train_data, lambda i: float(self.focus_distance(i)))

    # ------------------------------------------------------------------ focus d_F
    @torch.no_grad()
    def initialize_focus(
        self,
        camera_to_worlds: Tensor,
        points: Tensor,
        images: Optional[Sequence[Tensor]] = None,
        Ks: Optional[Tensor] = None,
    ) -> None:
        """d_F of every training image from the SfM points: their mean distance from the camera
        (``focus_init='mean'``, the paper) or, given the photos and intrinsics, the distance of the
        points each photo shows relatively sharpest (``'sharpness'``, :mod:`focus_init`)."""
        if not self.config.coc_enabled:
            return
        centres = camera_to_worlds[:, :3, 3].to(points)
        all_dist = torch.cdist(centres, points)  # [num_train, P]
        dist = all_dist.mean(dim=1)
        self.focus_unit.fill_(float(dist.mean()))
        if self.config.focus_init == "sharpness" and images is not None and Ks is not None:
            viewmats = viewmats_from_camera_to_worlds(camera_to_worlds.to(points))
            sharp = focus_from_sharpness(images, viewmats.cpu(), Ks.cpu(), points.cpu()).to(points)
            CONSOLE.log(
                f"Focus d_F from photo sharpness: {float(sharp.min()):.3g} to {float(sharp.max()):.3g} "
                f"(mean SfM point distance {float(dist.mean()):.3g})"
            )
            dist = sharp
        self.focus_log.data.copy_(torch.log(dist / self.focus_unit).to(self.focus_log))
        self.focus_initialized.fill_(True)
        sample = all_dist.flatten()[torch.randperm(all_dist.numel())[:1_000_000]]
        near, far = torch.quantile(sample, torch.tensor([0.02, 0.98], dtype=sample.dtype)).tolist()
        self.depth_of_field.set_focus_range(0.5 * near, 1.5 * far, float(self.focus_unit))

    @torch.no_grad()
    def _lazy_init_focus(self, index: int, centre: Tensor) -> None:
        """Fallback without SfM points: mean distance to the current Gaussians, at first visit."""
        dist = (self.means - centre[None]).norm(dim=-1).mean()
        if not bool(self.focus_initialized.any()):
            self.focus_unit.fill_(float(dist))
            self.depth_of_field.set_focus_range(0.1 * float(dist), 5.0 * float(dist), float(dist))
        self.focus_log.data[index] = torch.log(dist / self.focus_unit)
        self.focus_initialized[index] = True

    def focus_distance(self, index: Union[int, Tensor, None] = None) -> Tensor:
        """Learned focus distance d_F of training image(s) ``index`` (all when None)."""
        log = self.focus_log if index is None else self.focus_log[index]
        return self.focus_unit * torch.exp(log)

    @property
    def aperture_unit(self) -> Tensor:
        """The unit of K: aperture_init × focus distance (world form) or × its square (sensor form)."""
        power = 1 if self.config.coc_form == "world" else 2
        return self.config.aperture_init * self.focus_unit**power

    # ------------------------------------------------------------------ CoC Gaussians
    def coc_gaussian_sets(
        self,
        centre: Tensor,
        focus: Tensor,
        means: Tensor,
        scales: Tensor,
        quats: Tensor,
        aperture_scale: float = 1.0,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Means, scales, quats [M, N, ·] of the CoC sets for a camera at ``centre`` (Eqs. 7-12).

        ``scales`` are activated; ``aperture_scale`` multiplies the learned K (viewer control).
        """
        cfg = self.config
        out = self.coc_mlp(centre, means.detach(), scales.detach(), quats.detach())
        unit = self.aperture_unit
        aperture = unit * (out.aperture if cfg.use_aperture else torch.ones_like(out.aperture))
        if cfg.use_coc:
            distance = (means - centre[None]).norm(dim=-1).clamp_min(1e-6)  # d(µ)
            diameter = coc_diameter(distance, focus, aperture * aperture_scale, cfg.coc_form)
        else:
            diameter = (self.config.aperture_init * self.focus_unit * aperture_scale).expand(means.shape[0])
        beta = out.beta if cfg.use_beta else torch.ones_like(out.beta)
        if cfg.learn_directions:
            directions = out.directions
        else:
            directions = fixed_directions(means, centre, cfg.num_coc_sets)
        unit_quats = quats / quats.norm(dim=-1, keepdim=True)
        return (
            coc_means(means, diameter, beta, directions),
            coc_scales(scales, out.scale_factors),
            coc_quats(unit_quats, out.rot_factors),
        )

    def _defocus_setting(self, camera: Cameras, c2w: Tensor) -> Optional[Tuple[Tensor, float]]:
        """(focus distance, aperture multiplier) when this render is defocused, else None.

        Training with CoC on: the training image's learned d_F (by its ``cam_idx``) and K as
        learned. Anything else (eval, ns-eval, viewer, novel cameras) is sharp, unless a defocus
        preview is set (:meth:`set_defocus_preview`, or the viewer's depth-of-field controls); a
        camera's index is never used outside training, so no test or novel camera picks up a
        training image's d_F.
        """
        cfg = self.config
        if not cfg.coc_enabled:
            return None
        if self.training:
            if self.step < cfg.coc_start_step or camera.metadata is None or "cam_idx" not in camera.metadata:
                return None
            index = int(camera.metadata["cam_idx"])  # type: ignore[index]
            if not bool(self.focus_initialized[index]):
                self._lazy_init_focus(index, _camera_centre(c2w).detach())
            return self.focus_distance(index), 1.0
        setting = self.defocus_preview if self.defocus_preview is not None else self.depth_of_field.setting()
        if setting is None or setting[1] <= 0:
            return None
        focus, aperture_scale = setting
        return torch.tensor(float(focus), device=self.device), float(aperture_scale)

    def set_defocus_preview(self, focus: Optional[float], aperture_scale: float = 1.0) -> None:
        """Render non-training views defocused: focus distance (model world units) and a
        multiplier of the learned aperture K. ``None`` or an aperture of 0 gives the sharp render."""
        self.defocus_preview = None if focus is None else (float(focus), float(aperture_scale))

    @torch.no_grad()
    def render_defocused(self, camera: Cameras, focus: float, aperture_scale: float = 1.0) -> Dict[str, Tensor]:
        """Outputs of ``camera`` focused at ``focus`` with the learned aperture × ``aperture_scale``."""
        previous, was_training = self.defocus_preview, self.training
        self.set_defocus_preview(focus, aperture_scale)
        self.eval()  # a preview is never a training render, whatever mode the caller left us in
        try:
            return self.get_outputs_for_camera(camera)
        finally:
            self.defocus_preview = previous
            self.train(was_training)

    # ------------------------------------------------------------------ rendering
    def _render(
        self, means, quats, scales, opacities, colors, viewmat, K, W, H, sh_degree, render_mode, background
    ) -> Tuple[Tensor, Tensor, Optional[Tensor], Dict]:
        render, alpha, info = rasterize(
            means=means,
            quats=quats,
            scales=scales,
            opacities=opacities,
            colors=colors,
            viewmats=viewmat,
            Ks=K,
            width=W,
            height=H,
            near_plane=0.01,
            far_plane=1e10,
            render_mode=render_mode,
            sh_degree=sh_degree,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )
        rgb = torch.clamp(render[0, ..., :3] + (1 - alpha[0]) * background, 0.0, 1.0)
        depth = None
        if render_mode == "RGB+ED":
            depth = render[0, ..., 3:4]
            depth = torch.where(alpha[0] > 0, depth, depth.detach().max())
        return rgb, alpha[0], depth, info

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """Sharp render of the base Gaussians; in training, with CoC on, the blended defocus render."""
        if not isinstance(camera, Cameras):
            CONSOLE.print("Called get_outputs with not a camera")
            return {}
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            c2w = self.camera_optimizer.apply_to_camera(camera)
        else:
            c2w = camera.camera_to_worlds
        crop_ids = None
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)

        def crop(t: Tensor) -> Tensor:
            return t if crop_ids is None else t[crop_ids]

        means, quats, log_scales = crop(self.means), crop(self.quats), crop(self.scales)
        opacities = torch.sigmoid(crop(self.opacities)).squeeze(-1)
        colors = torch.cat((crop(self.features_dc)[:, None, :], crop(self.features_rest)), dim=1)
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors, sh_degree = torch.sigmoid(colors).squeeze(1), None

        scale_fac = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale_fac)
        viewmat = viewmats_from_camera_to_worlds(c2w)
        K = camera.get_intrinsics_matrices().to(self.device)
        W, H = int(camera.width.item()), int(camera.height.item())
        self.last_size = (H, W)
        camera.rescale_output_resolution(scale_fac)
        render_mode = "RGB+ED" if (self.config.output_depth_during_training or not self.training) else "RGB"
        background = self._get_background_color()

        scales = torch.exp(log_scales)
        rgb, alpha, depth, info = self._render(
            means, quats, scales, opacities, colors, viewmat, K, W, H, sh_degree, render_mode, background
        )
        infos = [info]
        outputs: Dict[str, Union[Tensor, List]] = {"rgb": rgb, "depth": depth, "accumulation": alpha}

        defocus = self._defocus_setting(camera, c2w)
        if defocus is not None:
            focus, aperture_scale = defocus
            sets = self.coc_gaussian_sets(_camera_centre(c2w), focus, means, scales, quats, aperture_scale)
            images = []
            for m in range(self.config.num_coc_sets):
                rgb_m, _, _, info_m = self._render(
                    sets[0][m], sets[2][m], sets[1][m], opacities, colors, viewmat, K, W, H, sh_degree, "RGB", background
                )
                images.append(rgb_m)
                infos.append(info_m)
            images.append(rgb)  # I_{M+1}: the base render
            blurred, weights = self.blend_cnn(torch.stack(images, 0))
            outputs.update(rgb=blurred, rgb_sharp=rgb, blend_weights=weights)

        if self.training and torch.is_grad_enabled():
            for inf in infos:
                inf["means2d"].retain_grad()
            self._infos = infos
            self.info = infos[0]
        if not self.training and background.shape[0] == 3:
            background = background.expand(H, W, 3)
        outputs["background"] = background
        return outputs

    # ------------------------------------------------------------------ densification
    def combined_info(self) -> Dict:
        """One info dict for gsplat's strategy from the M+1 renders of this step.

        Screen-space gradients (and absgrads) of the renders are summed (or averaged) per base
        Gaussian; a Gaussian counts as visible when any render saw it.
        """
        infos = self._infos
        if len(infos) == 1:
            return infos[0]

        def total(attr: str) -> Optional[Tensor]:
            parts = [getattr(i["means2d"], attr, None) for i in infos]
            parts = [p for p in parts if p is not None]
            if not parts:
                return None
            s = torch.stack(parts, 0).sum(0)
            return s / len(infos) if self.config.densify_grad_combine == "mean" else s

        proxy = torch.zeros_like(infos[0]["means2d"].detach())
        proxy.grad = total("grad")
        proxy.absgrad = total("absgrad")  # type: ignore[attr-defined]
        radii = torch.stack([i["radii"] for i in infos], 0).amax(0)
        return {**infos[0], "means2d": proxy, "radii": radii}

    def step_post_backward(self, step: int) -> None:
        assert step == self.step
        self.trained_steps.fill_(step + 1)
        self.strategy.step_post_backward(
            params=self.gauss_params,
            optimizers=self.optimizers,
            state=self.strategy_state,
            step=self.step,
            info=self.combined_info(),
            packed=False,
        )

    # ------------------------------------------------------------------ params, checkpoints
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        if self.config.coc_enabled:
            groups["coc_mlp"] = list(self.coc_mlp.parameters())
            groups["blend_cnn"] = list(self.blend_cnn.parameters())
            groups["focus"] = [self.focus_log]
        return groups

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        """Resize the Gaussians to the checkpoint's count, then restore the training step."""
        result = super().load_state_dict(dict, **kwargs)
        self.step = int(self.trained_steps)
        return result

    # ------------------------------------------------------------------ metrics
    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR, SSIM and (when its weights are available) LPIPS of the sharp render."""
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        combined = torch.cat([gt, pred], dim=1)
        gt_b, pred_b = gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None]
        metrics = {"psnr": float(self.psnr(gt_b, pred_b).item()), "ssim": float(self.ssim(gt_b, pred_b))}
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips(gt_b, pred_b))
        return metrics, {"img": combined}

