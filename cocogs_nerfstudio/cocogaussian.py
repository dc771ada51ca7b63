"""CoCoGaussian: circle-of-confusion-aware Gaussian splatting (paper Sec. 4), as a Splatfacto model.

Training renders the base Gaussians G_B and M CoC Gaussian sets built from them by h_θ and the
thin-lens CoC (Eqs. 7-12), blends the M+1 images with a shallow CNN (Eq. 13) and compares the
blend with the defocused photo (Eq. 14). Everything else — evaluation, ``ns-eval``, the viewer,
novel cameras — renders the base Gaussians alone: the sharp scene.

What differs from Splatfacto, each in its own module: the lens (:mod:`lens`: d_F per photo and
the aperture's unit), h_θ (:mod:`coc_mlp`), the CoC sets (:mod:`coc`), their rasterization in one
batch (:mod:`rasterize`), the blend (:mod:`blend_cnn`), the added loss terms (:mod:`losses`) and
densification over M+1 renders (:mod:`densification`). With ``coc_enabled=False`` the model is
plain 3DGS (Splatfacto through the same rasterizer): the baseline of every comparison.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from cocogs_nerfstudio import losses
from cocogs_nerfstudio.blend_cnn import BlendCNN
from cocogs_nerfstudio.coc import CocSets, coc_diameter, coc_means, coc_pixels, coc_quats, coc_scales, fixed_directions
from cocogs_nerfstudio.coc_mlp import CocMLP
from cocogs_nerfstudio.densification import make_strategy, merge_render_infos
from cocogs_nerfstudio.lens import Lens
from cocogs_nerfstudio.lpips_offline import lpips_deferred, make_lpips
from cocogs_nerfstudio.rasterize import (
    intrinsics_matrices,
    rasterize,
    rasterize_sets,
    scale_intrinsics,
    viewmats_from_camera_to_worlds,
)
from cocogs_nerfstudio.tap_focus import surface_distance
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
    """δs_max, the largest scale factor of a CoC Gaussian over its base (Eq. 10; official code: 1.1)."""
    max_rot_factor: float = 1.1
    """δq_max, the largest rotation factor (Eq. 11; official code: 1.1)."""
    coc_start_step: int = 1500
    """Plain 3DGS before this step, CoC modelling from it (official code: 1500; the paper is silent)."""
    coc_form: Literal["world", "sensor"] = "world"
    """CoC diameter σ (Eq. 7): 'world' K·d·|1/d − 1/d_F|, the thin-lens blur disc at the Gaussian's
    distance d (K a length); 'sensor' the paper's K·|1/d − 1/d_F| literally (K a length²)."""
    aperture_init: float = 0.03
    """Unit and initial value of K, as a fraction of the mean focus distance (its square: 'sensor')."""
    aperture_floor: float = 0.25
    """Not in the paper: K never falls below this share of its unit (K + f·exp(−K/f)), so that an
    aperture collapsing early in training keeps a blur with a gradient. 0: h_θ's K alone."""
    learn_directions: bool = True
    """False: the Table 3 ablation 'w/o CoC direction vector' (fixed, evenly spaced directions)."""
    use_beta: bool = True
    """False: the ablation 'w/o CoC scaling' (β = 1)."""
    use_aperture: bool = True
    """False: the ablation 'w/o aperture parameter' (K fixed to its unit)."""
    use_coc: bool = True
    """False: the ablation 'w/o CoC' (offsets σ₀/2·β·d with a constant σ₀, no depth or focus)."""
    focus_init: Literal["sharpness", "mean"] = "sharpness"
    """Initial d_F per photo: 'mean' (the paper) the mean distance from its camera to the SfM points;
    'sharpness' the median distance of the SfM points the photo shows relatively sharpest
    (focus_init.py). Without SfM points both use the mean distance to the Gaussians."""
    focus_init_occlusion: Literal["auto", "on", "off"] = "auto"
    """With 'sharpness': count a point in a photo only if no point projected next to it is 30% nearer
    (a z-buffer over the SfM points), so that points hidden behind a sharp occluder do not look sharp.
    'auto': a photo takes that estimate only where it differs from the plain one by more than 30%."""
    sharp_loss_weight: float = 2.0
    """Not in the paper: weight of an L1 loss of the sharp render (base Gaussians alone) against the
    photo, beside the blend's loss, so that the base cannot lean on the CoC blur where the photos
    are sharp. 0: the paper's loss on the blend only."""
    sharp_loss_in_focus_px: float = 0.71
    """The sharp-render loss weighs a pixel 1 where the learned CoC at its rendered depth is at most
    this many pixels, (this / CoC)² beyond (losses.in_focus_weights). 0: every pixel 1."""
    aperture_prior_weight: float = 0.01
    """Not in the paper: weight of an L1 prior on the mean relative K, so that K can fall to zero on
    photos without defocus and the model becomes plain 3DGS there. 0: off."""
    aperture_prior_below_px: float = 2.0
    """The aperture prior acts on a view only while the 90th percentile of its learned CoC (pixels,
    over the pixels the Gaussians cover) is under this: all-in-focus photos, not defocused ones."""
    aperture_prior_start_step: int = 15000
    """The aperture prior acts from this step on, once h_θ has learned the blur the photos show."""
    focus_prior_weight: float = 0.01
    """Not in the paper: weight of (log d_F − log d_F at initialisation)² of the training view, so
    that d_F stays near the photo-sharpness estimate unless the images insist. 0: off."""
    densify_grad_combine: Literal["sum", "mean"] = "sum"
    """How the screen-space gradients of a base Gaussian's M+1 renders are combined for
    densification: 'sum', or 'mean' (official code, fewer Gaussians grow)."""
    opacity_reset: bool = False
    """Reset opacities every reset_alpha_every refinements (Splatfacto: on; official code: off)."""
    size_pruning: bool = False
    """Prune Gaussians larger than cull_scale_thresh (world) or cull_screen_size (screen) after
    reset_alpha_every refinements, as Splatfacto does (official code: off)."""
    mlp_width: int = 64
    """Hidden width of h_θ (official code: 64)."""
    mlp_layers: int = 3
    """Linear layers of h_θ, the output layer included (official code: 3)."""
    mean_freqs: int = 3
    """Frequencies of the positional encoding of a Gaussian's mean in h_θ's input (official code: 3)."""
    cam_freqs: int = 10
    """Frequencies of the positional encoding of the camera centre in h_θ's input (official code: 10)."""
    blend_cnn_width: int = 64
    """Channels of the blend CNN's hidden layers (official code: 64)."""
    preview_blend_scale: Literal["training", "render"] = "training"
    """Defocus previews larger than the training photos: 'training' runs the blend CNN at the
    training photos' pixel scale (the blur sizes it learned) and upsamples its weights; 'render':
    at the preview's size. Training renders are always blended at their own size."""
    ssim_lambda: float = 0.3
    """λ of Eq. 14 (paper: 0.3; official code: 0.25)."""


class CoCoGaussianModel(SplatfactoModel):
    """Splatfacto + CoC Gaussians, a learned aperture (h_θ) and per-photo focus d_F (the lens)."""

    config: CoCoGaussianModelConfig

    # ------------------------------------------------------------------ setup
    def populate_modules(self) -> None:
        """Splatfacto's setup on any device and offline, a strategy with explicit opacity reset and
        size pruning, plus h_θ, the blend CNN and the lens."""
        cfg = self.config
        if cfg.use_bilateral_grid:
            raise ValueError("use_bilateral_grid is not supported by cocogaussian")
        # Splatfacto's populate_modules puts seed colours on .cuda() and builds LPIPS with a
        # download: let it build everything without colours and LPIPS, then add both here.
        seeds, colors = self.seed_points, None
        if seeds is not None:
            colors = seeds[1]
            self.seed_points = (seeds[0].float().clone(), seeds[1][:0])
        with lpips_deferred():
            super().populate_modules()
        self.seed_points = seeds
        if colors is not None and colors.shape[0] > 0 and not cfg.random_init:
            rgb = colors.float() / 255.0
            self.features_dc.data = RGB2SH(rgb) if cfg.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
        self.lpips = make_lpips()

        self.strategy = make_strategy(cfg, self.num_train_data)
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self._infos: List[Dict] = []  # this training step's render infos, for step_post_backward
        self._train_image_sizes: Dict[int, Tuple[int, int]] = {}
        self.defocus_preview: Optional[Tuple[float, float]] = None
        self.training_focal: Optional[float] = None  # training photos' focal length (px), set by the pipeline
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))

        if cfg.coc_enabled:
            self.coc_mlp = CocMLP(
                cfg.num_coc_sets, cfg.mlp_width, cfg.mlp_layers, cfg.mean_freqs, cfg.cam_freqs, cfg.max_scale_factor,
                cfg.max_rot_factor,
            )
            self.blend_cnn = BlendCNN(cfg.blend_cnn_width)
            self.lens = Lens(self.num_train_data, cfg.aperture_init, cfg.coc_form, cfg.aperture_floor, cfg.use_aperture)
            self.depth_of_field = DepthOfFieldControls(
                self.num_train_data, self.lens.focus_distance, functools.partial(surface_distance, self)
            )

    @torch.no_grad()
    def initialize_focus(
        self,
        camera_to_worlds: Tensor,
        points: Tensor,
        images: Optional[Sequence[Tensor]] = None,
        Ks: Optional[Tensor] = None,
        max_points: int = 100_000,
    ) -> None:
        """d_F of every training photo (:meth:`Lens.initialize`) and the viewer's focus range."""
        cfg = self.config
        if not cfg.coc_enabled:
            return
        near, far = self.lens.initialize(
            camera_to_worlds, points, images, Ks, cfg.focus_init, cfg.focus_init_occlusion, max_points
        )
        self.depth_of_field.set_focus_range(0.5 * near, 1.5 * far, float(self.lens.focus_unit))

    # ------------------------------------------------------------------ CoC Gaussians
    def coc_gaussian_sets(
        self, centre: Tensor, focus: Tensor, means: Tensor, scales: Tensor, quats: Tensor, aperture_scale: float = 1.0
    ) -> CocSets:
        """The M CoC sets for a camera at ``centre`` focused at ``focus`` (Eqs. 7-12); ``scales``
        activated, ``aperture_scale`` multiplies the learned K (the viewer's aperture control)."""
        cfg = self.config
        out = self.coc_mlp(centre.detach(), means.detach(), scales.detach(), quats.detach())
        aperture = self.lens.aperture(out) * aperture_scale
        if cfg.use_coc:
            distance = (means - centre[None]).norm(dim=-1).clamp_min(1e-6)  # d(µ)
            diameter = coc_diameter(distance, focus, aperture, cfg.coc_form)
        else:
            diameter = (cfg.aperture_init * self.lens.focus_unit * aperture_scale).expand(means.shape[0])
        beta = out.beta if cfg.use_beta else torch.ones_like(out.beta)
        directions = out.directions if cfg.learn_directions else fixed_directions(means, centre, cfg.num_coc_sets)
        unit_quats = quats / quats.norm(dim=-1, keepdim=True)
        return CocSets(
            means=coc_means(means, diameter, beta, directions),
            scales=coc_scales(scales, out.scale_factors),
            quats=coc_quats(unit_quats, out.rot_factors),
            aperture=aperture,
        )

    def _blend(
        self, sets: CocSets, sharp: Tensor, opacities: Tensor, colors: Tensor, sh_degree: Optional[int],
        viewmat: Tensor, K: Tensor, W: int, H: int, background: Tensor,
    ) -> Tuple[Tensor, Tensor, List[Dict]]:  # fmt: skip
        """The M CoC sets rasterized in one batch, the sharp render appended as I_{M+1}, blended by
        the CNN (Eq. 13): the defocused image [H, W, 3], the weights [M+1, H, W, 1], the sets' infos."""
        renders, alphas, infos = rasterize_sets(
            sets.means, sets.quats, sets.scales, opacities, colors, viewmat, K, W, H, sh_degree=sh_degree,
            absgrad=self.strategy.absgrad, rasterize_mode=self.config.rasterize_mode,
        )  # fmt: skip
        images = torch.clamp(renders + (1 - alphas) * background, 0.0, 1.0)  # [M, H, W, 3]
        images = torch.cat([images, sharp[None]])
        blurred, weights = self.blend_cnn(images, self._blend_cnn_size(K, W, H))
        return blurred, weights, infos

    def _blend_cnn_size(self, K: Tensor, W: int, H: int) -> Optional[Tuple[int, int]]:
        """(height, width) at which the blend CNN sees a preview larger than the training photos
        (``preview_blend_scale='training'``: their pixel scale), else None (the render's own size)."""
        if self.training or self.config.preview_blend_scale != "training" or self.training_focal is None:
            return None
        scale = self.training_focal / float(K[0, 0, 0])
        if scale > 0.95:  # not more than 5% larger than the training scale
            return None
        return max(1, round(H * scale)), max(1, round(W * scale))

    # ------------------------------------------------------------------ defocus settings
    def _defocus_setting(self, camera: Cameras) -> Optional[Tuple[Tensor, float]]:
        """(focus distance, aperture multiplier) when this render is defocused, else None.

        Training with CoC on: the training photo's learned d_F (by its ``cam_idx``) and K as learned.
        Anything else (eval, ns-eval, viewer, novel cameras) is sharp, unless a defocus preview is
        set (:meth:`set_defocus_preview`, or the viewer's depth-of-field controls); a camera's index
        is never used outside training, so no test or novel camera picks up a photo's d_F.
        """
        cfg = self.config
        if not cfg.coc_enabled:
            return None
        if self.training:
            if self.step < cfg.coc_start_step or camera.metadata is None or "cam_idx" not in camera.metadata:
                return None
            index = int(camera.metadata["cam_idx"])  # type: ignore[index]  (a Python int: no sync)
            return self.lens.focus_distance(index), 1.0
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
    def _gaussians(self) -> Optional[Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Optional[int]]]:
        """(means, quats, activated scales, opacities, colours, SH degree) of the Gaussians to render:
        those inside the viewer's crop box outside training; None when the box holds none."""
        keep = None
        if self.crop_box is not None and not self.training:
            keep = self.crop_box.within(self.means).squeeze()
            if keep.sum() == 0:
                return None

        def select(t: Tensor) -> Tensor:
            return t if keep is None else t[keep]

        colors = torch.cat((select(self.features_dc)[:, None, :], select(self.features_rest)), dim=1)
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors, sh_degree = torch.sigmoid(colors).squeeze(1), None
        opacities = torch.sigmoid(select(self.opacities)).squeeze(-1)
        return select(self.means), select(self.quats), torch.exp(select(self.scales)), opacities, colors, sh_degree

    def _image_size(self, camera: Cameras) -> Tuple[int, int]:
        """(width, height) of a one-image camera; a training image's is read from the device once
        and kept (by ``cam_idx``), so that a training step does not wait for the GPU to read it."""
        index = camera.metadata.get("cam_idx") if self.training and camera.metadata else None
        size = self._train_image_sizes.get(index) if index is not None else None
        if size is None:
            size = (int(camera.width.item()), int(camera.height.item()))
            if index is not None:
                self._train_image_sizes[int(index)] = size
        return size

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """The sharp render of the base Gaussians; when defocused (training with CoC on, or a preview),
        the CoC sets' blend as ``rgb`` beside it (``rgb_sharp``) and the blend's weight of it."""
        if not isinstance(camera, Cameras):
            CONSOLE.print("Called get_outputs with not a camera")
            return {}
        assert not self.training or camera.shape[0] == 1, "Only one camera at a time"
        c2w = self.camera_optimizer.apply_to_camera(camera) if self.training else camera.camera_to_worlds
        gaussians = self._gaussians()
        if gaussians is None:
            return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
        means, quats, scales, opacities, colors, sh_degree = gaussians
        # Splatfacto's resolution schedule, without host syncs (nerfstudio's get_intrinsics_matrices
        # copies fx, fy, cx, cy to the host, and .item() reads the size every step)
        scale = 1.0 / self._get_downscale_factor()
        width, height = self._image_size(camera)
        W, H = int(width * scale), int(height * scale)  # as Cameras.rescale_output_resolution floors
        K = scale_intrinsics(intrinsics_matrices(camera), scale, scale)
        viewmat = viewmats_from_camera_to_worlds(c2w)
        self.last_size = (H, W)
        defocus = self._defocus_setting(camera)
        depth_needed = not self.training or self.config.output_depth_during_training or defocus is not None
        background = self._get_background_color()
        render, alpha, info = rasterize(
            means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmat, Ks=K,
            width=W, height=H, render_mode="RGB+ED" if depth_needed else "RGB", sh_degree=sh_degree,
            absgrad=self.strategy.absgrad, rasterize_mode=self.config.rasterize_mode,
        )  # fmt: skip
        alpha, depth = alpha[0], (render_depth(render[0, ..., 3:4], alpha[0]) if depth_needed else None)
        rgb = torch.clamp(render[0, ..., :3] + (1 - alpha) * background, 0.0, 1.0)
        outputs: Dict[str, Union[Tensor, List]] = {"rgb": rgb, "depth": depth, "accumulation": alpha}
        infos = [info]

        if defocus is not None:
            focus, aperture_scale = defocus
            centre = c2w[..., :3, 3].reshape(3)
            sets = self.coc_gaussian_sets(centre, focus, means, scales, quats, aperture_scale)
            blurred, weights, set_infos = self._blend(
                sets, rgb, opacities, colors, sh_degree, viewmat, K, W, H, background
            )
            infos.extend(set_infos)
            # [H, W, C] images only (the viewer offers each): the blend, the sharp render, and the
            # blend's weight of the sharp render (1: the CNN sees this pixel in focus)
            outputs.update(rgb=blurred, rgb_sharp=rgb, in_focus_weight=weights[-1])
            if self.training:  # for the loss terms: the learned blur in pixels, the mean relative K
                assert depth is not None
                aperture = sets.aperture.detach().median()
                focal = K[0, 0, 0]
                outputs["coc_px"] = coc_pixels(depth.detach(), focus.detach(), aperture, focal, self.config.coc_form)
                outputs["aperture_relative"] = sets.aperture.mean() / (self.lens.aperture_unit * aperture_scale)

        if self.training and torch.is_grad_enabled():
            optimizers = getattr(self, "optimizers", {})  # set by step_cb, before the first training step
            for inf in infos:
                self.strategy.step_pre_backward(self.gauss_params, optimizers, self.strategy_state, self.step, inf)
            self._infos = infos
            self.info = infos[0]
        if not self.training and background.shape[0] == 3:
            background = background.expand(H, W, 3)
        outputs["background"] = background
        return outputs

    # ------------------------------------------------------------------ densification
    def step_post_backward(self, step: int) -> None:
        """gsplat's strategy, with the statistics of this step's M+1 renders merged per base Gaussian."""
        assert step == self.step
        self.trained_steps.fill_(step + 1)
        info = merge_render_infos(self._infos, self.config.densify_grad_combine)
        self.strategy.step_post_backward(
            self.gauss_params, self.optimizers, self.strategy_state, step, info, packed=False
        )

    # ------------------------------------------------------------------ params, checkpoints
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        if self.config.coc_enabled:
            groups.update(coc_mlp=list(self.coc_mlp.parameters()), blend_cnn=list(self.blend_cnn.parameters()))
            groups.update(self.lens.param_groups())
        return groups

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        """Resize the Gaussians to the checkpoint's count in place, then restore the training step.

        Splatfacto replaces the Gaussian Parameters here; nerfstudio's Trainer has already given
        the old ones to its optimizers, so a resumed run (``--load-dir``) would step orphaned
        tensors and the Gaussians would not train. Resizing ``.data`` keeps each Parameter (and
        the optimizer's reference to it); the optimizer state is loaded right after this.
        """
        if "means" in dict:  # checkpoints of old nerfstudio versions, as Splatfacto handles them
            for name in self.gauss_params.keys():
                dict[f"gauss_params.{name}"] = dict.pop(name)
        count = dict["gauss_params.means"].shape[0]
        for param in self.gauss_params.values():
            param.data = param.data.new_zeros((count,) + tuple(param.shape[1:]))
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)  # per-Gaussian stats restart
        result = super(SplatfactoModel, self).load_state_dict(dict, **kwargs)
        self.step = int(self.trained_steps)
        return result

    # ------------------------------------------------------------------ losses, metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """Splatfacto's loss on the blend (Eq. 14), plus the sharp-render loss and the lens's priors
        (:mod:`losses`) in CoC training."""
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if not self.training or "coc_px" not in outputs:
            return loss_dict
        cfg, coc_px = self.config, outputs["coc_px"]
        photo = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        mask = self._downscale_if_required(batch["mask"]).to(self.device) if "mask" in batch else 1.0
        if cfg.sharp_loss_weight > 0:
            loss_dict["sharp_loss"] = losses.sharp_render_loss(
                photo * mask, outputs["rgb_sharp"] * mask, coc_px, cfg.sharp_loss_weight, cfg.sharp_loss_in_focus_px
            )
        if cfg.aperture_prior_weight > 0 and self.step >= cfg.aperture_prior_start_step:
            loss_dict["aperture_prior"] = losses.aperture_prior(
                outputs["aperture_relative"], coc_px, outputs["accumulation"], cfg.aperture_prior_weight,
                cfg.aperture_prior_below_px,
            )  # fmt: skip
        if cfg.focus_prior_weight > 0:
            loss_dict["focus_prior"] = cfg.focus_prior_weight * self.lens.focus_prior(batch["image_idx"])
        return loss_dict

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """Splatfacto's PSNR, SSIM, LPIPS (and ``color_corrected_metrics``), always of the sharp
        render: a defocus preview left on in the viewer changes what is shown, not what is measured."""
        sharp = {**outputs, "rgb": outputs.get("rgb_sharp", outputs["rgb"])}
        metrics, images = super().get_image_metrics_and_images(sharp, batch)
        if not self.lpips.available:
            metrics.pop("lpips", None)
            metrics.pop("cc_lpips", None)
        return metrics, images


def render_depth(depth: Tensor, alpha: Tensor) -> Tensor:
    """Expected depth [H, W, 1] where a Gaussian covers the pixel; elsewhere the largest depth."""
    return torch.where(alpha > 0, depth, depth.detach().max())
