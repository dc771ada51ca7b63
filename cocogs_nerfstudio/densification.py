"""Densification of the base Gaussians with M+1 renders a step (gsplat's DefaultStrategy).

Two things differ from Splatfacto: the strategy sees one info dict merged from the M+1 renders
(:func:`merge_render_infos`), and pruning by size is an explicit switch instead of a side effect of
the opacity reset (:class:`CocStrategy`). Plain tensor code, no nerfstudio imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional, Sequence

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove
from torch import Tensor


def merge_render_infos(infos: Sequence[Dict[str, Any]], combine: Literal["sum", "mean"] = "sum") -> Dict[str, Any]:
    """One info dict for the strategy from the renders of one step (base render first).

    An info holds one render, or several of one batch (``means2d`` [R, N, 2], ``radii`` [R, N]:
    the CoC sets rendered together), all of one image size. The screen-space gradients
    (``means2d.grad``, and ``.absgrad`` where the rasterizer provides it) of all renders are summed,
    or averaged (the official code), per base Gaussian; a Gaussian counts as visible where any
    render saw it (``radii`` is the largest of its radii).
    """
    if len(infos) == 1 and infos[0]["radii"].shape[0] == 1:
        return infos[0]
    base = infos[0]
    count = sum(info["radii"].shape[0] for info in infos)

    def total(attr: str) -> Optional[Tensor]:
        parts = [getattr(info["means2d"], attr, None) for info in infos]
        parts = [part for part in parts if part is not None]
        if not parts:
            return None
        summed = torch.cat(parts, 0).sum(0, keepdim=True)
        return summed / count if combine == "mean" else summed

    proxy = torch.zeros_like(base["means2d"][:1].detach())
    proxy.grad = total("grad")
    proxy.absgrad = total("absgrad")  # type: ignore[attr-defined]
    merged_radii = torch.cat([info["radii"] for info in infos], 0).amax(0, keepdim=True)
    return {**base, "means2d": proxy, "radii": merged_radii, "n_cameras": 1}


@dataclass
class CocStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy, with pruning by size decoupled from the opacity reset.

    gsplat prunes Gaussians larger than ``prune_scale3d`` (world) or ``prune_scale2d`` (screen)
    only after ``reset_every`` steps, so with the opacity reset off (the official CoCoGaussian
    code, and this plugin's default) they are never pruned by size. Here that is its own setting.
    """

    size_prune_after: Optional[int] = None
    """Prune by size from this step on; None: never (the official code: no size pruning)."""

    @torch.no_grad()
    def _prune_gs(self, params, optimizers, state: Dict[str, Any], step: int) -> int:  # type: ignore[override]
        is_prune = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
        if self.size_prune_after is not None and step > self.size_prune_after:
            is_prune |= torch.exp(params["scales"]).amax(dim=-1) > self.prune_scale3d * state["scene_scale"]
            if step < self.refine_scale2d_stop_iter:
                is_prune |= state["radii"] > self.prune_scale2d
        n_prune = int(is_prune.sum())
        if n_prune > 0:
            remove(params=params, optimizers=optimizers, state=state, mask=is_prune)
        return n_prune


def make_strategy(cfg: Any, num_train_images: int) -> CocStrategy:
    """The strategy for a Splatfacto-style model config ``cfg`` (its densification settings), with
    the opacity reset and size pruning as the config's own switches."""
    reset_every = cfg.reset_alpha_every * cfg.refine_every
    return CocStrategy(
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
        pause_refine_after_reset=num_train_images + cfg.refine_every if cfg.opacity_reset else 0,
        absgrad=cfg.use_absgrad,
        revised_opacity=False,
        verbose=True,
        size_prune_after=reset_every if cfg.size_pruning else None,
    )
