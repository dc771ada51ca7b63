"""One rasterization function, two backends.

``rasterize`` calls gsplat's CUDA kernels for CUDA tensors and the pure-PyTorch twin in
:mod:`cocogs_nerfstudio.torch_rasterizer` otherwise. Both take the same arguments and return
``(render [C, H, W, D], alphas [C, H, W, 1], info)`` where ``info`` carries what gsplat's
``DefaultStrategy`` reads: ``means2d`` (with ``.grad`` and, if ``absgrad``, ``.absgrad`` after
backward), ``radii`` [C, N], ``width``, ``height``, ``n_cameras``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

from cocogs_nerfstudio.torch_rasterizer import rasterize_torch

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
