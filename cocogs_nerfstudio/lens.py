"""The lens CoCoGaussian learns: a focus distance d_F per training photo and the unit of the aperture K.

Its own module, as BAD-Gaussians keeps its camera trajectories: the model asks it for d_F, for K in
world units (from h_θ's relative K), for its parameter group and for its prior terms of the loss.
d_F is stored as ``focus_unit · exp(focus_log)``: positive by construction, with a learning rate
that does not depend on the scene's scale.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, Sequence, Tuple

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor, nn
from torch.nn import Parameter

from cocogs_nerfstudio.coc import CocForm, floored_aperture
from cocogs_nerfstudio.coc_mlp import CocOutputs
from cocogs_nerfstudio.focus_init import focus_from_sharpness
from cocogs_nerfstudio.rasterize import viewmats_from_camera_to_worlds

FocusInit = Literal["sharpness", "mean"]
Occlusion = Literal["auto", "on", "off"]


class Lens(nn.Module):
    """Per-photo focus distances d_F and the aperture's unit, with their initialisation and priors."""

    def __init__(
        self, num_images: int, aperture_init: float, coc_form: CocForm, aperture_floor: float, use_aperture: bool
    ) -> None:
        super().__init__()
        self.aperture_init, self.coc_form = aperture_init, coc_form
        self.aperture_floor, self.use_aperture = aperture_floor, use_aperture
        self.focus_log = Parameter(torch.zeros(num_images))
        self.register_buffer("focus_unit", torch.ones(()))
        self.register_buffer("focus_log_init", torch.zeros(num_images))
        self.register_buffer("focus_initialized", torch.zeros(num_images, dtype=torch.bool))

    def focus_distance(self, index: int | Tensor | None = None) -> Tensor:
        """Learned focus distance d_F of training photo(s) ``index`` (all when None), world units."""
        log = self.focus_log if index is None else self.focus_log[index]
        return self.focus_unit * torch.exp(log)

    @property
    def aperture_unit(self) -> Tensor:
        """The unit of K: ``aperture_init`` × the mean focus distance (world form) or × its square
        (sensor form, where K carries length²)."""
        power = 1 if self.coc_form == "world" else 2
        return self.aperture_init * self.focus_unit**power

    def aperture(self, out: CocOutputs) -> Tensor:
        """K per Gaussian [N] in world units (Eq. 7) from h_θ's relative K, kept above the floor."""
        relative = out.aperture if self.use_aperture else torch.ones_like(out.aperture)
        return self.aperture_unit * floored_aperture(relative, self.aperture_floor)

    @torch.no_grad()
    def initialize(
        self,
        camera_to_worlds: Tensor,
        points: Tensor,
        images: Optional[Sequence[Tensor]] = None,
        Ks: Optional[Tensor] = None,
        focus_init: FocusInit = "sharpness",
        occlusion: Occlusion = "auto",
        max_points: int = 100_000,
        seed: int = 0,
    ) -> Tuple[float, float]:
        """Set every photo's d_F from points of the scene; returns the (2%, 98%) quantiles of
        camera-to-point distances (the viewer's focus range).

        ``points``: the SfM points (or, without them, the Gaussians' means); at most ``max_points``
        of them, a seeded random subset. d_F is their mean distance from the camera (``mean``, the
        paper) or, given photos and intrinsics, the distance of the points each photo shows
        relatively sharpest (``sharpness``, :mod:`focus_init`). The mean distance over all photos
        becomes ``focus_unit``.
        """
        generator = torch.Generator().manual_seed(seed)
        if points.shape[0] > max_points:
            points = points[torch.randperm(points.shape[0], generator=generator)[:max_points].to(points.device)]
        c2w = camera_to_worlds.to(points)
        centres = c2w[:, :3, 3]
        dist = torch.cat([torch.cdist(chunk, points).mean(dim=1) for chunk in centres.split(64)])  # [num_images]
        unit = dist.mean()
        self.focus_unit.copy_(unit)
        if focus_init == "sharpness" and images is not None and Ks is not None:
            viewmats = viewmats_from_camera_to_worlds(c2w)
            mode = {"on": True, "off": False, "auto": "auto"}[occlusion]
            dist = focus_from_sharpness(images, viewmats, Ks.to(points), points, occlusion=mode)  # type: ignore[arg-type]
            CONSOLE.log(
                f"Focus d_F from photo sharpness: {float(dist.min()):.3g} to {float(dist.max()):.3g} "
                f"(mean SfM point distance {float(unit):.3g})"
            )
        self.focus_log.data.copy_(torch.log(dist / unit).to(self.focus_log))
        self.focus_log_init.copy_(self.focus_log.data)
        self.focus_initialized.fill_(True)
        pairs = 1_000_000  # random (camera, point) pairs
        cams = torch.randint(centres.shape[0], (pairs,), generator=generator).to(points.device)
        pts = torch.randint(points.shape[0], (pairs,), generator=generator).to(points.device)
        sample = (centres[cams] - points[pts]).norm(dim=-1)
        near, far = torch.quantile(sample, sample.new_tensor([0.02, 0.98])).tolist()
        return near, far

    def focus_prior(self, index: int | Tensor) -> Tensor:
        """(log d_F − log d_F at its initialisation)² of photo ``index`` (not in the paper)."""
        return (self.focus_log[index] - self.focus_log_init[index]) ** 2

    def param_groups(self) -> Dict[str, List[Parameter]]:
        return {"focus": [self.focus_log]}
