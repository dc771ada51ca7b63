"""One rasterization function, two backends.

``rasterize`` calls gsplat's CUDA kernels for CUDA tensors and the pure-PyTorch twin in
:mod:`cocogs_nerfstudio.torch_rasterizer` otherwise. Both take the same arguments and return
``(render [C, H, W, D], alphas [C, H, W, 1], info)`` where ``info`` carries what gsplat's
``DefaultStrategy`` reads: ``means2d`` (with ``.grad`` and, if ``absgrad``, ``.absgrad`` after
backward), ``radii`` [C, N], ``width``, ``height``, ``n_cameras``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Literal, Optional, Tuple

import torch
from torch import Tensor

from cocogs_nerfstudio.torch_rasterizer import rasterize_sets_torch, rasterize_torch

Backend = Literal["auto", "gsplat", "torch"]


def select_backend(device: torch.device, backend: Backend = "auto") -> str:
    """'gsplat' for CUDA devices, 'torch' otherwise; ``COCOGS_RASTERIZER`` overrides 'auto'."""
    if backend == "auto":
        backend = os.environ.get("COCOGS_RASTERIZER", "auto")  # type: ignore[assignment]
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise RuntimeError("the gsplat backend needs CUDA tensors; use backend='torch' on CPU")
    if backend not in ("gsplat", "torch"):
        raise ValueError(f"unknown rasterizer backend {backend!r}")
    return backend


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    absgrad: bool = False,
    backend: Backend = "auto",
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Rasterize N Gaussians into C cameras (paper Eqs. 1-4).

    Args:
        means [N, 3], quats [N, 4] (w, x, y, z; normalised inside), scales [N, 3] (activated),
        opacities [N] (activated), colors [N, D] or SH [N, K, 3] with ``sh_degree``,
        viewmats [C, 4, 4] world-to-camera (OpenCV axes), Ks [C, 3, 3], backgrounds [C, D].
    """
    if select_backend(means.device, backend) == "gsplat":
        from gsplat.rendering import rasterization

        render, alpha, info = rasterization(
            means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
            viewmats=viewmats, Ks=Ks, width=width, height=height, near_plane=near_plane,
            far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree, backgrounds=backgrounds,
            render_mode=render_mode, rasterize_mode=rasterize_mode, absgrad=absgrad,
            packed=False, sparse_grad=False,
        )  # fmt: skip
        info["backend"] = "gsplat"
        return render, alpha, info
    return rasterize_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        backgrounds=backgrounds, render_mode=render_mode, rasterize_mode=rasterize_mode,
        absgrad=absgrad,
    )  # fmt: skip


def rasterize_sets(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    absgrad: bool = False,
    backend: Backend = "auto",
) -> Tuple[Tensor, Tensor, List[Dict[str, Any]]]:
    """S sets of the same N Gaussians (the CoC sets, Eqs. 10-12: moved, rescaled and rotated per
    set; opacities and colours shared) rendered RGB by one camera.

    Args:
        means [S, N, 3], quats [S, N, 4], scales [S, N, 3] (activated), opacities [N] (activated),
        colors [N, D] or SH [N, K, 3] with ``sh_degree``, viewmats [1, 4, 4], Ks [1, 3, 3].
    Returns:
        renders [S, H, W, D], alphas [S, H, W, 1] and, for the strategy, the info of the S sets
        rendered in one batch as if by S cameras (gsplat: one projection, one tile sort, one
        rasterization; torch: one projection and shading of the S·N Gaussians, then each set
        composited): the same images and gradients as S separate :func:`rasterize` calls.
    """
    if means.shape[0] == 0:  # M = 0: no CoC sets
        channels = 3 if sh_degree is not None else colors.shape[-1]
        return means.new_zeros(0, height, width, channels), means.new_zeros(0, height, width, 1), []
    if select_backend(means.device, backend) == "gsplat":
        return _rasterize_sets_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
            sh_degree, rasterize_mode, absgrad,
        )  # fmt: skip
    render, alpha, info = rasterize_sets_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree, rasterize_mode=rasterize_mode, absgrad=absgrad,
    )  # fmt: skip
    return render, alpha, [info]


def _rasterize_sets_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
    sh_degree, rasterize_mode, absgrad, tile_size: int = 16,
) -> Tuple[Tensor, Tensor, List[Dict[str, Any]]]:  # fmt: skip
    """:func:`rasterize_sets` with gsplat's kernels: the S·N Gaussians projected by the one camera
    in one call, then the S sets taken as S cameras of N Gaussians for the tile sort and the
    rasterization (what gsplat's ``rasterization`` does for C cameras of shared Gaussians)."""
    from gsplat.cuda._wrapper import (
        fully_fused_projection,
        isect_offset_encode,
        isect_tiles,
        rasterize_to_pixels,
        spherical_harmonics,
    )

    S, N = means.shape[:2]
    radii, means2d, depths, conics, compensations = fully_fused_projection(
        means.reshape(S * N, 3), None, quats.reshape(S * N, 4), scales.reshape(S * N, 3), viewmats, Ks,
        width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane, packed=False,
        calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    radii, means2d = radii.reshape(S, N), means2d.reshape(S, N, 2)
    depths, conics = depths.reshape(S, N), conics.reshape(S, N, 3)
    opacities = opacities.repeat(S, 1)
    if compensations is not None:
        opacities = opacities * compensations.reshape(S, N)
    if sh_degree is None:
        rgb = colors.expand(S, -1, -1)
    else:  # view directions from the camera centre (-Rᵀt), as gsplat takes it from inverse(viewmat)
        rot, trans = viewmats[0, :3, :3], viewmats[0, :3, 3]
        centre = -(rot.T @ trans)
        rgb = spherical_harmonics(sh_degree, means - centre, colors.expand(S, -1, -1, -1), masks=radii > 0)
        rgb = torch.clamp_min(rgb + 0.5, 0.0)
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, n_cameras=S)
    isect_offsets = isect_offset_encode(isect_ids, S, tile_width, tile_height)
    renders, alphas = rasterize_to_pixels(
        means2d, conics, rgb, opacities, width, height, tile_size, isect_offsets, flatten_ids, absgrad=absgrad
    )
    info = {
        "means2d": means2d, "radii": radii, "depths": depths, "conics": conics, "opacities": opacities,
        "width": width, "height": height, "n_cameras": S, "tile_size": tile_size, "backend": "gsplat",
    }  # fmt: skip
    return renders, alphas, [info]


def viewmats_from_camera_to_worlds(camera_to_worlds: Tensor) -> Tensor:
    """World-to-camera matrices [C, 4, 4] in OpenCV axes from nerfstudio's OpenGL c2w [C, 3, 4]."""
    c2w = camera_to_worlds.reshape(-1, 3, 4)
    rot = c2w[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=c2w.device, dtype=c2w.dtype)
    rot_inv = rot.transpose(1, 2)
    view = torch.zeros(c2w.shape[0], 4, 4, device=c2w.device, dtype=c2w.dtype)
    view[:, :3, :3] = rot_inv
    view[:, :3, 3] = -(rot_inv @ c2w[:, :3, 3:4]).squeeze(-1)
    view[:, 3, 3] = 1.0
    return view


def intrinsics_matrices(cameras: Any) -> Tensor:
    """Intrinsics [C, 3, 3] of nerfstudio ``Cameras`` on their device (their own
    ``get_intrinsics_matrices`` builds them on the CPU: a copy from the GPU, a host sync)."""
    fx, fy, cx, cy = (v.reshape(-1, 1) for v in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.cat([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def scale_intrinsics(Ks: Tensor, sx: float, sy: float) -> Tensor:
    """Intrinsics [C, 3, 3] of the same cameras rendering an image ``sx`` × ``sy`` times the size
    (pixel centres kept aligned: fx, cx scale with x; fy, cy with y)."""
    return torch.cat([Ks[:, :1] * sx, Ks[:, 1:2] * sy, Ks[:, 2:]], dim=1)
