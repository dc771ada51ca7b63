"""CoCoGaussian: circle-of-confusion-aware Gaussian splatting (paper Sec. 4), as a Splatfacto model.

Training renders the base Gaussians G_B and M CoC Gaussian sets built from them by h_θ and the
thin-lens CoC (Eqs. 7-12), blends the M+1 images with a shallow CNN (Eq. 13) and compares the
blend with the defocused photo (Eq. 14). Everything else — evaluation, ``ns-eval``, the viewer,
novel cameras — renders the base Gaussians alone: the sharp scene.

With ``coc_enabled=False`` the model is plain 3DGS (Splatfacto rendered through the same
rasterizer): the baseline of every comparison.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from cocogs_nerfstudio.blend_cnn import BlendCNN
from cocogs_nerfstudio.coc import (
    coc_diameter,
    coc_means,
    coc_pixels,
    coc_quats,
    coc_scales,
    fixed_directions,
    floored_aperture,
    in_focus_weight,
    spread_scales,
)
from cocogs_nerfstudio.coc_mlp import CocMLP, CocOutputs
from cocogs_nerfstudio.densification import CocStrategy, merge_render_infos
from cocogs_nerfstudio.focus_init import focus_from_sharpness
from cocogs_nerfstudio.in_focus_psf import InFocusPSF
from cocogs_nerfstudio.lpips_offline import LPIPSUnavailable, make_lpips
from cocogs_nerfstudio.rasterize import (
    intrinsics_matrices,
    rasterize,
    rasterize_sets,
    scale_intrinsics,
    viewmats_from_camera_to_worlds,
)
from cocogs_nerfstudio.viewer_controls import DepthOfFieldControls


def _occlusion_mode(setting: Union[str, bool]) -> Union[str, bool]:
    """``focus_init_occlusion`` as focus_from_sharpness takes it: True, False or "auto" (configs
    written before it had three values say True or False)."""
    return {"on": True, "off": False}.get(setting, setting) if isinstance(setting, str) else bool(setting)


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
    coc_spread: float = 0.0
    """Not in the paper: each CoC Gaussian is widened by ``coc_spread`` × the CoC radius (added in
    quadrature to its scale, coc.spread_scales), so that M copies can fill a large blur disc without
    widening the base Gaussians. 0: Eq. 10 alone."""
    max_rot_factor: float = 1.1
    """δq_max (Eq. 11; official code: 1.1)."""
    coc_start_step: int = 1500
    """Plain 3DGS before this step, CoC modelling from it (official code: 1500; paper silent)."""
    coc_form: Literal["world", "sensor"] = "world"
    """'sensor': Eq. 7 literally, σ = K|1/d − 1/d_F|. 'world' (default, measured better, see docs/results.md):
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
    docs/results.md) = median distance of the SfM points each photo shows relatively sharpest
    (focus_init.py). Without SfM points both fall back to the mean distance to the Gaussians."""
    focus_init_occlusion: Literal["auto", "on", "off"] = "auto"
    """Not in the paper: whether the sharpness init counts a point in a photo only if no point
    projected next to it is 30% nearer (a z-buffer over the SfM points), so that points hidden
    behind a sharp occluder do not look sharp there. 'on': always; 'off': never (before
    2026-11-29); 'auto' (default): a photo takes the occlusion-checked estimate only where it differs
    from the plain one by more than 30% (hidden points decided it), else the plain one (more
    points). Measured (docs/results.md, Cycles scene): 'on' gives the Cycles scene with points from
    sharp depth +2.9 dB (init off by > 30% on 18 → 4 of 21 photos) but the Blender scene −0.27 dB
    (2 seeds), whose init it changes by ≤ 12%; 'auto' changes nothing there, nor on the demo, fern
    or drinks."""
    focus_plane: bool = False
    """Not in the paper: d in Eq. 7 (and in the sharpness focus init) is the Gaussian's depth along
    the camera's viewing axis, so that a photo is in focus on a plane, as with a real lens and as
    Blender, Cycles and the demo scene render; False: its distance from the camera centre (paper),
    in focus on a sphere, which at the edge of a 54° view puts points of the focus plane 12% behind
    it. The rendered depth the sharp-render loss and the aperture prior read is this depth already.
    Measured (docs/results.md, Cycles scene; 600 steps, 2 seeds): demo and Blender scene within ±0.1 dB,
    floor −0.57 dB: off."""
    sharp_loss_weight: float = 2.0
    """Not in the paper: add this weight × the L1 loss of the sharp render (the base Gaussians
    alone) against the photo, during CoC training, so that the base cannot lean on the CoC blur
    where the photos have none. 0: the paper's loss on the blend only. Measured (docs/results.md,
    Fern; 600 steps, 3 seeds): 0.1 beats 0 everywhere; 1.0 with ``sharp_loss_in_focus_px`` 1 beats
    0.1 everywhere (fern +0.6 dB, Blender +0.7, demo +0.8, floor +0.5); 2.0 with
    ``sharp_loss_in_focus_px`` 0.71 (default since 2026-11-29) beats that on the demo (+0.23), the
    Blender scene (+0.34, triangulated points +0.29), holds fern (+0.02), loses on the floor (−0.17)
    and on the real drinks photos where they are in focus (−0.21)."""
    sharp_loss_in_focus_px: float = 0.71
    """Not in the paper: > 0 weights the sharp-render loss per pixel by how in focus the model sees
    that pixel of the photo: 1 where the CoC at the rendered depth (median learned K, the photo's
    d_F) is at most this many pixels, (this / CoC)² beyond (coc.in_focus_weight), so that the base
    Gaussians match the photo where it is sharp and are not pulled towards its blur elsewhere.
    0: the same weight everywhere (at weight 1.0 measured softer sharp renders on the defocused
    scenes: LPIPS 0.039 → 0.056 on the floor scene). With weight 2.0, 0.71 (≈ √½) weighs blurred
    pixels as weight 1 at tolerance 1 did, 1 / CoC², and in-focus ones twice. Against it
    (docs/results.md, Fern; 3 seeds): 0.5 is 0.2 dB lower on the Blender scenes and on the real drinks
    photos where they are in focus, 0.17 higher on the floor; 1 loses 0.27 dB on the floor."""
    aperture_prior_weight: float = 0.01
    """Not in the paper: add this weight × the mean relative aperture K (in units of
    ``aperture_init``, over the Gaussians of the training render) to the loss, an L1 prior that
    lets K fall to zero where the photos show no defocus (all in focus), so that the model becomes
    plain 3DGS there; gated by ``aperture_prior_below_px`` and ``aperture_prior_start_step``.
    Measured (docs/results.md, Fern): fern −0.33 dB → at the baseline; the defocused scenes unchanged (the
    gate never opened on them). 0: off (the paper)."""
    aperture_prior_below_px: float = 2.0
    """The aperture prior acts on a training view only while the blur the model has learned there is
    under this many pixels: the 90th percentile, over the pixels the Gaussians cover, of the CoC at
    the rendered depth (median K, the photo's d_F). Measured at the step it starts: all-in-focus
    fern 0.7–1.3 px, the defocused scenes 2.1 px and more (most views 3–6). 0: no gate (then the
    prior also shrinks K on defocused photos, measured −0.23 dB on the demo at weight 0.001)."""
    aperture_hold_steps: int = 0
    """Not in the paper: K stays at its unit (``aperture_init``) for this many steps from the CoC
    start while β, the directions and the factors learn, so that K is learnt from Gaussians that have
    settled rather than from the coarse initial ones. 0: K learns from the CoC start (the paper).
    100 measured (docs/results.md, Cycles scene; one or two seeds): Cycles seed 44 +0.99 dB, floor
    +0.27, drinks +0.74 / +0.08, Blender scene −0.44 / −0.32 dB: off."""
    aperture_floor: float = 0.25
    """Not in the paper: K never falls below this share of its unit (``aperture_floor_form``), so
    that an early collapse of the aperture (the Cycles scene's K fell 100× in 30 steps and never
    came back, docs/results.md) leaves a blur that still has a gradient, while all-in-focus photos
    keep a blur of at most this share. Default 0.25 (soft) since 2026-12-07, measured against 0 (600
    steps, 3 seeds, docs/results.md "Three seeds of the soft floor"): Cycles scene +1.79 dB (a
    collapse rescued) and its triangulated points +0.23, Blender +0.26, drinks +0.14 where in focus,
    demo, floor and fern within ±0.08, Blender triangulated points −0.12 (within its spread).
    0: h_θ's K alone (the paper)."""
    aperture_floor_form: Literal["linear", "soft"] = "soft"
    """How ``aperture_floor`` f enters (coc.floored_aperture): ``soft`` K + f·exp(−K/f), within
    f·e^(−1/f) of h_θ's K wherever K ≥ 1 (drinks' learned K stays at 0.8–1.7: the floor never binds
    there), f where K collapses; ``linear`` f + (1 − f) × K (a slope of 1 − f everywhere: measured
    −0.52 dB on drinks where in focus, 3 seeds)."""
    aperture_prior_below_gain: float = 0.0
    """The aperture prior acts only while the blend explains less than this share of the sharp
    render's error: 1 − L1(blend)/L1(sharp render) against the training photos, averaged over recent
    training views (``blend_gain``, logged). All in focus: the CoC sets add nothing and the share stays
    small. 0.1 measured (docs/results.md, Cycles scene): fern and the Cycles scene unchanged, and the
    real drinks photos' gain (0.0–0.08) is as low as fern's (0.02–0.05): no substitute for the pixel
    gate. 0: no such gate (default)."""
    aperture_prior_start_step: int = 15000
    """The aperture prior acts from this step on, when h_θ has learned the blur the photos show
    (half of training; from the CoC start on, the defocused Blender scene's K dipped under the
    gate early and collapsed). The small preset: 300 of 600."""
    focus_prior_weight: float = 0.01
    """Not in the paper: add this weight × (log d_F − log d_F at its initialisation)² of the training
    view to the loss, so that a photo's focus distance stays near what the photos' sharpness said
    unless the images insist (with points triangulated from defocused photos, near-focused photos'
    d_F drifted from ~7 to 12–17, truth ~7). Measured (docs/results.md, Blender scene; 600 steps, 3 seeds):
    triangulated points 27.96 ± 0.66 → 29.42 ± 0.10 dB; the other scenes within their spread
    (−0.12 to +0.07 dB). 0: off (the paper)."""
    coc_render_scale: float = 1.0
    """Render the M CoC sets at this fraction of the image size and upsample them (bilinear) before
    the blend; the base render stays at full size. They are blurred by construction, and the CNN
    picks the base render where the photo is sharp. 1: the paper (M+1 full-size renders)."""
    coc_every: int = 1
    """Not in the paper: render the CoC sets and blend on every ``coc_every``-th training step only
    (from ``coc_start_step``); the steps between render the base Gaussians alone and train them with
    the sharp-render loss only (``sharp_loss_weight`` × the L1 of the sharp render, weighted by
    ``sharp_loss_in_focus_px``: where the model sees the photo in focus), which costs what a 3DGS
    step does and does not pull the base towards the photo's blur. h_θ, the CNN and d_F learn on the
    CoC steps; densification statistics come from the CoC steps. 1: every step (the paper).
    Measured at 2 (docs/results.md, Training cost): CPU steps 1.8× faster, −0.2 to −0.65 dB on four scenes: off."""
    coc_crop: float = 1.0
    """Not in the paper: in training, render the CoC sets, blend and compute the blend's loss (Eq. 14)
    on a random crop of this fraction of the image's width and height, placed anew every step; the
    base render and the sharp-render loss stay on the whole image. The crop's pixels cost what they
    cost, the rest of the image one render instead of M+1. 1: the whole image (the paper).
    Measured at 0.5 (docs/results.md, Training cost): CPU steps 1.9× faster, −1.8 to −2.8 dB: off."""
    batch_coc_sets: bool = True
    """Render the M CoC sets in one batch (the sets as M cameras) instead of M calls: the same
    images and gradients. On CUDA one gsplat call, fewer kernel launches; on the CPU one
    projection and shading of all sets, then each set composited (see docs/results.md, Training cost)."""
    densify_grad_combine: Literal["sum", "mean"] = "sum"
    """How the screen-space gradients of the M+1 renders of a base Gaussian are combined for
    densification: 'sum' (default, measured: 'mean' under-densifies) or 'mean' (official code)."""
    opacity_reset: bool = False
    """Reset opacities every reset_alpha_every refinements (Splatfacto: on; official code: off)."""
    size_pruning: bool = False
    """Prune Gaussians larger than cull_scale_thresh (world) or cull_screen_size (screen, until
    stop_screen_size_at) after reset_alpha_every refinements, as Splatfacto does (official code:
    off). Off, those two thresholds have no effect."""
    mlp_width: int = 64
    mlp_layers: int = 3
    mean_freqs: int = 3
    cam_freqs: int = 10
    blend_cnn_width: int = 64
    blend_cnn_scale: float = 1.0
    """Not in the paper: the blend CNN sees the M+1 renders shrunk to this fraction of their size
    (area average) and its weights are upsampled (bilinear) to blend the full-size renders; the
    renders themselves stay at full size. The CNN's cost falls with the square. 1: the paper.
    Measured at 0.5 (docs/results.md, Training cost): CPU steps 20% faster; demo −0.03, Blender −0.16, floor
    −0.23 dB, and one of two triangulated-Blender runs fell back to the baseline: keep 1."""
    in_focus_psf: int = 0
    """Not in the paper: the size (3 or 5) of a learned in-focus point-spread kernel applied to every
    output image, the training blend and the sharp render alike (in_focus_psf.py); 0: off."""
    blend_sharp_weight: float = 0.0
    """Not in the paper: start the blend with this weight on the sharp (base) render through a
    learnable per-render logit offset, so that the model starts as plain 3DGS. 0: off (paper)."""
    preview_blend_scale: Literal["training", "render"] = "training"
    """Defocus previews (viewer, refocus) larger than the training photos: 'training' (default)
    runs the blend CNN on the M+1 renders shrunk to the training photos' pixel scale (focal
    length in pixels) and blends the full-size renders with its weights, upsampled; the CNN sees
    blur of the size it learned from, and a 1920-px preview costs the CNN what a training image
    does. 'render': the CNN at the render's own size. Training renders: always their own size."""
    ssim_lambda: float = 0.3
    """λ of Eq. 14 (paper: 0.3; official code: 0.25)."""


NETWORK_GROUPS = ("coc_mlp", "blend_cnn", "focus")
"""Optimizer groups of h_θ, the blend CNN and d_F (they train from ``coc_start_step``)."""
BLEND_GAIN_RATE = 0.05  # blend_gain: an exponential mean over ~20 training views


@contextmanager
def _lpips_deferred() -> Iterator[None]:
    """Within: torchmetrics' LPIPS class is a no-op stand-in, so that Splatfacto's setup does not
    download AlexNet weights (offline: a urllib traceback); the model builds LPIPS itself after."""
    import torchmetrics.image.lpip as lpip

    original = lpip.LearnedPerceptualImagePatchSimilarity
    lpip.LearnedPerceptualImagePatchSimilarity = LPIPSUnavailable  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        lpip.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]


def _camera_centre(camera_to_world: Tensor) -> Tensor:
    return camera_to_world[..., :3, 3].reshape(3)


def _camera_axis(camera_to_world: Tensor) -> Tensor:
    """Unit viewing direction [3] of a camera-to-world matrix (nerfstudio/OpenGL: looks down −z)."""
    return -camera_to_world[..., :3, 2].reshape(3)


class CoCoGaussianModel(SplatfactoModel):
    """Splatfacto + CoC Gaussians, learnable aperture (h_θ) and per-image focus d_F."""

    config: CoCoGaussianModelConfig
    PRIOR_OUTPUTS = ("aperture_relative", "aperture_prior_on", "focus_drift", "sharp_only")
    """Training-only scalar outputs that the priors' losses read; every other output is an image."""

    # ------------------------------------------------------------------ setup
    def populate_modules(self) -> None:
        """Splatfacto's setup on any device and offline, a strategy with explicit opacity reset and
        size pruning, plus h_θ, the blend CNN and d_F."""
        cfg = self.config
        if cfg.use_bilateral_grid:
            raise ValueError("use_bilateral_grid is not supported by cocogaussian")
        for name in ("coc_render_scale", "blend_cnn_scale", "coc_crop"):
            if not 0 < getattr(cfg, name) <= 1:
                raise ValueError(f"{name} {getattr(cfg, name)}: expected a fraction of the image size in (0, 1]")
        if cfg.coc_crop < 1 and cfg.coc_render_scale < 1:
            raise ValueError("coc_crop and coc_render_scale cannot both be below 1: use one of them")
        if cfg.coc_every < 1:
            raise ValueError(f"coc_every {cfg.coc_every}: expected a step interval of at least 1")
        if cfg.coc_enabled and cfg.coc_every > 1 and (cfg.sharp_loss_weight <= 0 or cfg.sharp_loss_in_focus_px <= 0):
            raise ValueError(
                f"coc_every {cfg.coc_every} trains the steps between CoC steps with the in-focus sharp-render loss "
                f"alone: it needs sharp_loss_weight > 0 and sharp_loss_in_focus_px > 0 (they are "
                f"{cfg.sharp_loss_weight} and {cfg.sharp_loss_in_focus_px}); without them those steps would fit "
                "the base Gaussians to the photos' blur"
            )
        # Splatfacto's populate_modules puts seed colours on .cuda() and builds LPIPS with a
        # download: let it build everything without colours and LPIPS, then add both here.
        seeds, colors = self.seed_points, None
        if seeds is not None:
            colors = seeds[1]
            self.seed_points = (seeds[0].float().clone(), seeds[1][:0])
        with _lpips_deferred():
            super().populate_modules()
        self.seed_points = seeds
        if colors is not None and colors.shape[0] > 0 and not cfg.random_init:
            rgb = colors.float() / 255.0
            self.features_dc.data = RGB2SH(rgb) if cfg.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
        self.lpips = make_lpips()

        reset_every = cfg.reset_alpha_every * cfg.refine_every
        self.strategy = CocStrategy(
            prune_opa=cfg.cull_alpha_thresh,
            grow_grad2d=cfg.densify_grad_thresh,
            grow_scale3d=cfg.densify_size_thresh,
            grow_scale2d=cfg.split_screen_size,
            prune_scale3d=cfg.cull_scale_thresh,
            prune_scale2d=cfg.cull_screen_size,
            refine_scale2d_stop_iter=cfg.stop_screen_size_at,
            refine_start_iter=cfg.warmup_length,
            refine_stop_iter=cfg.stop_split_at,
            reset_every=reset_every if cfg.opacity_reset else 2**31,
            refine_every=cfg.refine_every,
            pause_refine_after_reset=self.num_train_data + cfg.refine_every if cfg.opacity_reset else 0,
            absgrad=cfg.use_absgrad,
            revised_opacity=False,
            verbose=True,
            size_prune_after=reset_every if cfg.size_pruning else None,
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self._infos: List[Dict] = []
        self._sharp_only = False  # this training step renders the base alone (coc_every)
        self._crop: Optional[Tuple[int, int, int, int]] = None  # coc_crop: (y0, x0, height, width)
        self._train_image_sizes: Dict[int, Tuple[int, int]] = {}
        self.defocus_preview: Optional[Tuple[float, float]] = None
        self.training_focal: Optional[float] = None  # focal length (px) of the training photos
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
            self.blend_cnn = BlendCNN(cfg.blend_cnn_width, cfg.num_coc_sets + 1, cfg.blend_sharp_weight)
            self.in_focus_psf = InFocusPSF(cfg.in_focus_psf) if cfg.in_focus_psf else None
            # d_F = focus_unit · exp(focus_log): positive by construction, scale-free learning rate
            self.focus_log = Parameter(torch.zeros(self.num_train_data))
            self.register_buffer("focus_unit", torch.ones(()))
            self.register_buffer("focus_log_init", torch.zeros(self.num_train_data))  # focus_prior_weight
            self.register_buffer("focus_initialized", torch.zeros(self.num_train_data, dtype=torch.bool))
            # aperture_prior_below_gain: running mean of 1 − L1(blend)/L1(sharp) over training views
            self.register_buffer("blend_gain", torch.ones(()))
            self.depth_of_field = DepthOfFieldControls(self.num_train_data, lambda i: float(self.focus_distance(i)))

    # ------------------------------------------------------------------ focus d_F
    @torch.no_grad()
    def initialize_focus(
        self,
        camera_to_worlds: Tensor,
        points: Tensor,
        images: Optional[Sequence[Tensor]] = None,
        Ks: Optional[Tensor] = None,
        max_points: int = 100_000,
        seed: int = 0,
    ) -> None:
        """d_F of every training image and the viewer's focus range, from points of the scene.

        ``points`` are the SfM points (or, without them, the Gaussians' means). d_F is their mean
        distance from the camera (``focus_init='mean'``, the paper) or, given the photos and
        intrinsics, the distance of the points each photo shows relatively sharpest
        (``'sharpness'``, :mod:`focus_init`). At most ``max_points`` points (a seeded random
        subset) are used, so memory grows with images + points, not with their product. Runs on
        the points' device; reads a handful of scalars back.
        """
        if not self.config.coc_enabled:
            return
        generator = torch.Generator().manual_seed(seed)
        if points.shape[0] > max_points:
            points = points[torch.randperm(points.shape[0], generator=generator)[:max_points].to(points.device)]
        c2w = camera_to_worlds.to(points)
        centres = c2w[:, :3, 3]
        dist = torch.cat([torch.cdist(chunk, points).mean(dim=1) for chunk in centres.split(64)])  # [num_train]
        unit = dist.mean()
        self.focus_unit.copy_(unit)
        if self.config.focus_init == "sharpness" and images is not None and Ks is not None:
            viewmats = viewmats_from_camera_to_worlds(c2w)
            dist = focus_from_sharpness(
                images, viewmats, Ks.to(points), points,
                occlusion=_occlusion_mode(self.config.focus_init_occlusion), depth=self.config.focus_plane,
            )  # fmt: skip
            CONSOLE.log(
                f"Focus d_F from photo sharpness: {float(dist.min()):.3g} to {float(dist.max()):.3g} "
                f"(mean SfM point distance {float(unit):.3g})"
            )
        self.focus_log.data.copy_(torch.log(dist / unit).to(self.focus_log))
        self.focus_log_init.copy_(self.focus_log.data)
        self.focus_initialized.fill_(True)
        # the viewer's focus range: 2-98% of camera-to-point distances, from random (camera, point) pairs
        pairs = 1_000_000
        cams = torch.randint(centres.shape[0], (pairs,), generator=generator).to(points.device)
        pts = torch.randint(points.shape[0], (pairs,), generator=generator).to(points.device)
        sample = (centres[cams] - points[pts]).norm(dim=-1)
        near, far = torch.quantile(sample, sample.new_tensor([0.02, 0.98])).tolist()
        self.depth_of_field.set_focus_range(0.5 * near, 1.5 * far, float(unit))

    def focus_distance(self, index: Union[int, Tensor, None] = None) -> Tensor:
        """Learned focus distance d_F of training image(s) ``index`` (all when None)."""
        log = self.focus_log if index is None else self.focus_log[index]
        return self.focus_unit * torch.exp(log)

    @property
    def aperture_unit(self) -> Tensor:
        """The unit of K: aperture_init × focus distance (world form) or × its square (sensor form)."""
        power = 1 if self.config.coc_form == "world" else 2
        return self.config.aperture_init * self.focus_unit**power

    def aperture_of(self, out: CocOutputs) -> Tensor:
        """K per Gaussian [N] in world units (Eq. 7) from h_θ's outputs for one camera."""
        relative = out.aperture if self.config.use_aperture else torch.ones_like(out.aperture)
        relative = floored_aperture(relative, self.config.aperture_floor, self.config.aperture_floor_form)
        if self.step - self.config.coc_start_step < self.config.aperture_hold_steps:  # held at its unit
            relative = torch.ones_like(relative)
        return self.aperture_unit * relative

    # ------------------------------------------------------------------ CoC Gaussians
    def coc_gaussian_sets(
        self,
        centre: Tensor,
        focus: Tensor,
        means: Tensor,
        scales: Tensor,
        quats: Tensor,
        aperture_scale: float = 1.0,
        axis: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Means, scales, quats [M, N, ·] of the CoC sets for a camera at ``centre`` (Eqs. 7-12),
        and K [N] (Eq. 7, × ``aperture_scale``).

        ``scales`` are activated; ``aperture_scale`` multiplies the learned K (viewer control).
        ``axis``: the camera's unit viewing direction, needed with ``focus_plane`` (d = depth along it).
        """
        cfg = self.config
        out = self.coc_mlp(centre.detach(), means.detach(), scales.detach(), quats.detach())
        aperture = self.aperture_of(out) * aperture_scale
        if cfg.use_coc:
            if cfg.focus_plane:
                if axis is None:
                    raise ValueError("focus_plane needs the camera's viewing axis")
                distance = ((means - centre[None]) @ axis).clamp_min(1e-6)  # d(µ): depth along the axis
            else:
                distance = (means - centre[None]).norm(dim=-1).clamp_min(1e-6)  # d(µ)
            diameter = coc_diameter(distance, focus, aperture, cfg.coc_form)
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
            spread_scales(coc_scales(scales, out.scale_factors), diameter, cfg.coc_spread),
            coc_quats(unit_quats, out.rot_factors),
            aperture,
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
            index = int(camera.metadata["cam_idx"])  # type: ignore[index]  (a Python int: no sync)
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

    def set_training_focal(self, focal: float) -> None:
        """The training photos' focal length in pixels (their median), for ``preview_blend_scale``."""
        self.training_focal = float(focal)

    def _blend_cnn_size(self, K: Tensor, W: int, H: int) -> Optional[Tuple[int, int]]:
        """(height, width) at which the blend CNN sees renders of W×H with intrinsics K, or None for
        their own size: ``blend_cnn_scale`` of it, and for previews larger than the training photos
        (``preview_blend_scale='training'``) that of the training photos' pixel scale. Previews read
        the focal length back from the device; training renders do not."""
        scale = self.config.blend_cnn_scale
        if not self.training and self.config.preview_blend_scale == "training" and self.training_focal is not None:
            preview = self.training_focal / float(K[0, 0, 0])
            if preview <= 0.95:  # more than 5% larger than the training scale
                scale *= preview
        if scale >= 0.999:
            return None
        return max(1, round(H * scale)), max(1, round(W * scale))

    def _random_crop(self, W: int, H: int) -> Tuple[int, int, int, int]:
        """(y0, x0, height, width) of a uniformly placed crop of ``coc_crop`` × the image's sides."""
        h, w = max(1, round(H * self.config.coc_crop)), max(1, round(W * self.config.coc_crop))
        y0, x0 = (int(torch.randint(0, size - side + 1, ())) for size, side in ((H, h), (W, w)))
        return y0, x0, h, w

    @staticmethod
    def _paste(image: Tensor, patch: Tensor, crop: Tuple[int, int, int, int]) -> Tensor:
        """``image`` [H, W, C] with ``patch`` in place of its crop (differentiable in both)."""
        y0, x0, h, w = crop
        out = image.clone()
        out[y0 : y0 + h, x0 : x0 + w] = patch
        return out

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

        # Splatfacto's resolution schedule, without host syncs: nerfstudio's get_intrinsics_matrices
        # copies the device's fx, fy, cx, cy to the host, and .item() reads the size every step
        scale = 1.0 / self._get_downscale_factor()
        width, height = self._image_size(camera)
        W, H = int(width * scale), int(height * scale)  # as Cameras.rescale_output_resolution floors
        K = scale_intrinsics(intrinsics_matrices(camera), scale, scale)
        viewmat = viewmats_from_camera_to_worlds(c2w)
        self.last_size = (H, W)
        defocus = self._defocus_setting(camera, c2w)
        self._crop = None  # set below when this training step's blend covers a crop (coc_crop)
        # coc_every: between CoC steps, the base alone with the in-focus sharp loss (defocus kept for its weights)
        coc_phase = self.step - self.config.coc_start_step
        sharp_only = self.training and defocus is not None and coc_phase % self.config.coc_every != 0
        sharp_loss_on = self.training and defocus is not None and self.config.sharp_loss_weight > 0
        in_focus_px = self.config.sharp_loss_in_focus_px if sharp_loss_on else 0.0  # no depth or weights unused
        prior_on = (
            not sharp_only
            and self.config.aperture_prior_weight > 0
            and self.step >= self.config.aperture_prior_start_step
        )
        prior_gate_px = self.config.aperture_prior_below_px if prior_on else 0.0
        depth_needed = (
            self.config.output_depth_during_training or not self.training or in_focus_px > 0 or prior_gate_px > 0
        )
        render_mode = "RGB+ED" if depth_needed else "RGB"
        background = self._get_background_color()

        scales = torch.exp(log_scales)
        rgb, alpha, depth, info = self._render(
            means, quats, scales, opacities, colors, viewmat, K, W, H, sh_degree, render_mode, background
        )
        infos = [info]
        psf = getattr(self, "in_focus_psf", None) or (lambda image: image)
        outputs: Dict[str, Union[Tensor, List]] = {"rgb": psf(rgb), "depth": depth, "accumulation": alpha}

        if sharp_only:
            assert defocus is not None and depth is not None
            focus = defocus[0]
            with torch.no_grad():  # h_θ's median K for the sharp loss's weights, as the CoC steps measure it
                aperture = self.aperture_of(self.coc_mlp(_camera_centre(c2w), means, scales, quats)).median()
            outputs.update(rgb_sharp=outputs["rgb"], sharp_only=torch.ones((), device=self.device))
        elif defocus is not None:
            focus, aperture_scale = defocus
            sets = self.coc_gaussian_sets(
                _camera_centre(c2w), focus, means, scales, quats, aperture_scale, axis=_camera_axis(c2w)
            )
            crop = self._random_crop(W, H) if self.training and self.config.coc_crop < 1 else None
            W_v, H_v, K_v = W, H, K  # the view the CoC sets and the blend cover: the image, or the crop
            if crop is not None:
                y0, x0, H_v, W_v = crop
                K_v = K.clone()
                K_v[..., 0, 2] -= x0
                K_v[..., 1, 2] -= y0
            # the CoC sets are blurred by construction: optionally rendered smaller, then upsampled
            scale = self.config.coc_render_scale
            W_c, H_c = max(1, round(W_v * scale)), max(1, round(H_v * scale))
            K_c = scale_intrinsics(K_v, W_c / W_v, H_c / H_v)
            renders, alphas, set_infos = rasterize_sets(
                sets[0], sets[2], sets[1], opacities, colors, viewmat, K_c, W_c, H_c, sh_degree=sh_degree,
                absgrad=self.strategy.absgrad, rasterize_mode=self.config.rasterize_mode, batch=self.config.batch_coc_sets,
            )  # fmt: skip
            images = torch.clamp(renders + (1 - alphas) * background, 0.0, 1.0)  # [M, H_c, W_c, 3]
            if (W_c, H_c) != (W_v, H_v):  # bilinear, pixel centres aligned (as K_c scales them)
                images = F.interpolate(images.permute(0, 3, 1, 2), size=(H_v, W_v), mode="bilinear", align_corners=False)
                images = images.permute(0, 2, 3, 1)
            if crop is not None:  # a crop's pixels are the image's: its gradients need no conversion
                set_infos = [{**inf, "width": W, "height": H} for inf in set_infos]
            infos.extend(set_infos)
            base = rgb if crop is None else rgb[y0 : y0 + H_v, x0 : x0 + W_v]
            images = torch.cat([images, base[None]])  # I_{M+1}: the base render
            blurred, weights = self.blend_cnn(images, self._blend_cnn_size(K_v, W_v, H_v))
            blurred, sharp_weight = psf(blurred), weights[-1]
            if crop is not None:  # the blend inside the crop, the sharp render around it
                blurred = self._paste(outputs["rgb"], blurred, crop)
                sharp_weight = self._paste(torch.ones_like(alpha), sharp_weight, crop)
            self._crop = crop
            # [H, W, C] outputs only (the viewer offers each as a choice): the blend, the sharp
            # render, and the blend weight of the sharp render (1 = the CNN sees this pixel in focus)
            outputs.update(rgb=blurred, rgb_sharp=outputs["rgb"], in_focus_weight=sharp_weight)
            # the gate and the sharp loss's weights measure the CoC with h_θ's median aperture
            aperture = sets[3].detach().median() if (self.training and prior_gate_px > 0) or in_focus_px > 0 else None
            if self.training and prior_on:  # mean K in its unit, for the prior
                outputs["aperture_relative"] = sets[3].mean() / (self.aperture_unit * aperture_scale)
                if prior_gate_px > 0:  # on only while the learned blur is small (no host sync)
                    coc = coc_pixels(depth.detach(), focus.detach(), aperture, K[0, 0, 0], self.config.coc_form)
                    coc = coc.masked_fill(alpha.detach() < 0.5, float("nan"))  # pixels the Gaussians cover
                    coc = coc.flatten()[:: max(1, coc.numel() // 2**20)]  # torch.quantile's size limit
                    outputs["aperture_prior_on"] = (torch.nanquantile(coc, 0.9) < prior_gate_px).float()
                    outputs["aperture_relative"] = outputs["aperture_relative"] * outputs["aperture_prior_on"]
            if self.training and self.config.focus_prior_weight > 0:  # (log d_F − log d_F at init)²
                index = int(camera.metadata["cam_idx"])  # type: ignore[index]  (set: defocus is not None)
                outputs["focus_drift"] = (self.focus_log[index] - self.focus_log_init[index]) ** 2
        if in_focus_px > 0:  # where the photo is in focus for the model: the sharp loss's weights
            outputs["sharp_loss_weights"] = in_focus_weight(
                depth.detach(), focus.detach(), aperture, K[0, 0, 0], in_focus_px, self.config.coc_form
            )  # [H, W, 1]

        if self.training and torch.is_grad_enabled():
            optimizers = getattr(self, "optimizers", {})  # set by step_cb, before the first training step
            for inf in infos:
                self.strategy.step_pre_backward(self.gauss_params, optimizers, self.strategy_state, self.step, inf)
            self._infos = infos
            self._sharp_only = sharp_only
            self.info = infos[0]
        if not self.training and background.shape[0] == 3:
            background = background.expand(H, W, 3)
        outputs["background"] = background
        return outputs

    # ------------------------------------------------------------------ densification
    def combined_info(self) -> Dict:
        """The info dict of this step's M+1 renders, merged for the strategy (:mod:`densification`);
        a sharp-only step (``coc_every``) counts no Gaussian as seen, so that the statistics stay
        those of the CoC steps (their gradients sum M+1 renders)."""
        info = merge_render_infos(self._infos, self.config.densify_grad_combine)
        if self._sharp_only:
            info = {**info, "radii": torch.zeros_like(info["radii"])}
        return info

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """Splatfacto's callbacks; says so when the networks' learning-rate decay does not start
        with CoC modelling (``--pipeline.model.coc-start-step`` changed alone)."""
        start, optimizers, late = self.config.coc_start_step, training_callback_attributes.optimizers, []
        if self.config.coc_enabled and optimizers is not None:
            schedulers = [(group, optimizers.config.get(group, {}).get("scheduler")) for group in NETWORK_GROUPS]
            late = [group for group, sched in schedulers if sched is not None and getattr(sched, "warmup_steps", 0) != start]
        if late:
            CONSOLE.print(
                f"[yellow]The learning rates of {', '.join(late)} start decaying at another step than CoC modelling "
                f"({self.config.coc_start_step}): set --optimizers.<group>.scheduler.warmup-steps "
                f"{self.config.coc_start_step} too.",
                soft_wrap=True,
            )
        return super().get_training_callbacks(training_callback_attributes)

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
            image = list(self.blend_cnn.parameters()) + (list(self.in_focus_psf.parameters()) if self.in_focus_psf else [])
            networks = (list(self.coc_mlp.parameters()), image, [self.focus_log])
            groups.update(zip(NETWORK_GROUPS, networks))
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
        if "focus_log" in dict and "focus_log_init" not in dict:  # checkpoints from before focus_prior_weight
            dict["focus_log_init"] = dict["focus_log"].clone()
        if "focus_log" in dict and "blend_gain" not in dict:  # checkpoints from before aperture_prior_below_gain
            dict["blend_gain"] = torch.ones(())
        count = dict["gauss_params.means"].shape[0]
        for param in self.gauss_params.values():
            param.data = param.data.new_zeros((count,) + tuple(param.shape[1:]))
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)  # per-Gaussian stats restart
        result = super(SplatfactoModel, self).load_state_dict(dict, **kwargs)
        self.step = int(self.trained_steps)
        return result

    # ------------------------------------------------------------------ metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """Splatfacto's loss on the blend (Eq. 15), plus ``sharp_loss_weight`` × L1 of the sharp render
        and ``aperture_prior_weight`` × the mean relative aperture, ``focus_prior_weight`` × the
        view's squared log drift of d_F. A sharp-only step (``coc_every``) has no blend: its loss is
        the sharp-render term alone."""
        losses = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.training and "sharp_only" in outputs:
            losses["main_loss"] = torch.zeros_like(losses["main_loss"])
        crop = self._crop if self.training else None
        sharp_loss_on = self.training and self.config.sharp_loss_weight > 0 and "rgb_sharp" in outputs
        blend_on = self.training and "in_focus_weight" in outputs  # a blend, not a sharp-only step
        if crop is not None or sharp_loss_on or blend_on:  # the photo, masked as splatfacto masks its loss
            gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
            mask = self._downscale_if_required(batch["mask"]).to(self.device) if "mask" in batch else 1.0
            gt = gt * mask
        if crop is not None:  # coc_crop: Eq. 14 on the crop the blend covers
            y0, x0, h, w = crop
            gt_crop, pred = gt[y0 : y0 + h, x0 : x0 + w], (outputs["rgb"] * mask)[y0 : y0 + h, x0 : x0 + w]
            ssim = self.ssim(gt_crop.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None])
            lam = self.config.ssim_lambda
            losses["main_loss"] = (1 - lam) * (gt_crop - pred).abs().mean() + lam * (1 - ssim)
        if sharp_loss_on or blend_on:  # the sharp render's error, for its loss and for blend_gain
            sharp_error = (gt - outputs["rgb_sharp"] * mask).abs()
        if sharp_loss_on:
            error = sharp_error
            if "sharp_loss_weights" in outputs:  # sharp_loss_in_focus_px
                error = error * outputs["sharp_loss_weights"]
            losses["sharp_loss"] = self.config.sharp_loss_weight * error.mean()
        if blend_on:  # how much of the sharp render's error the blend explains (aperture_prior_below_gain)
            with torch.no_grad():
                error_sharp = sharp_error.detach().mean()
                gain = 1.0 - (gt - outputs["rgb"] * mask).abs().mean() / error_sharp.clamp_min(1e-8)
                self.blend_gain.lerp_(gain.to(self.blend_gain), BLEND_GAIN_RATE)
            if metrics_dict is not None:
                metrics_dict["blend_gain"] = self.blend_gain.clone()
        if self.training and "aperture_relative" in outputs:  # aperture_prior_weight
            relative = outputs["aperture_relative"]
            if self.config.aperture_prior_below_gain > 0:
                relative = relative * (self.blend_gain < self.config.aperture_prior_below_gain)
            losses["aperture_prior"] = self.config.aperture_prior_weight * relative
        if self.training and "focus_drift" in outputs:  # focus_prior_weight
            losses["focus_prior"] = self.config.focus_prior_weight * outputs["focus_drift"]
        return losses

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
