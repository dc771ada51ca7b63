"""Micro-benchmarks on a GPU (CUDA only; numbers in docs/experiments.md "GPU mode"): the blend CNN alone
(fp32 / bf16 autocast / channels-last / width 32, at 1920×1440 and 400×300, 5 images) and gsplat
calls (one, four, and one of 4N Gaussians), to see where a CoC step and the preview can gain.

    python benchmarks/gpu_micro.py      # on the device, after `source .gpu/gpu_env.sh`
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from gsplat.rendering import rasterization

from cocogs_nerfstudio.blend_cnn import BlendCNN

DEVICE = "cuda"


def milliseconds(fn: Callable[[], object], repeats: int = 20) -> float:
    """Mean milliseconds of ``fn()`` after one warm-up call, the device synchronised."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def blend_cnn(height: int, width: int, channels: int) -> str:
    images = torch.rand(5, height, width, 3, device=DEVICE)
    cnn = BlendCNN(channels).to(DEVICE)

    def train_step(bf16: bool) -> None:
        x = images.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            out, _ = cnn(x)
        out.float().sum().backward()

    with torch.no_grad():
        fp32 = milliseconds(lambda: cnn(images))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = milliseconds(lambda: cnn(images))
            last = cnn.to(memory_format=torch.channels_last)
            nchw = images.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            bf16_last = milliseconds(lambda: last.net(nchw))
    return (
        f"blend CNN {width}x{height} width {channels}: no-grad fp32 {fp32:.2f} ms, bf16 {bf16:.2f}, "
        f"bf16+channels_last {bf16_last:.2f}; fwd+bwd fp32 {milliseconds(lambda: train_step(False)):.2f}, "
        f"bf16 {milliseconds(lambda: train_step(True)):.2f}"
    )


def gsplat_calls(n: int = 63000, width: int = 400, height: int = 300) -> str:
    torch.manual_seed(0)
    means = torch.randn(n, 3, device=DEVICE) * 2 + torch.tensor([0, 0, 8.0], device=DEVICE)
    params = [
        t.requires_grad_()
        for t in (
            means,
            torch.randn(n, 4, device=DEVICE),
            torch.rand(n, 3, device=DEVICE) * 0.05,
            torch.rand(n, device=DEVICE),
            torch.randn(n, 16, 3, device=DEVICE) * 0.3,
        )
    ]
    viewmats = torch.eye(4, device=DEVICE)[None]
    Ks = torch.tensor([[[400.0, 0, width / 2], [0, 400, height / 2], [0, 0, 1]]], device=DEVICE)

    def render(*gaussians: torch.Tensor) -> torch.Tensor:
        return rasterization(*gaussians, viewmats, Ks, width, height, sh_degree=3, packed=False)[0].sum()

    one = milliseconds(lambda: render(*params).backward())
    four = milliseconds(lambda: sum(render(*params) for _ in range(4)).backward())
    batch = milliseconds(lambda: render(*(torch.cat([p] * 4) for p in params)).backward())
    return (
        f"gsplat {width}x{height}, {n} Gaussians, fwd+bwd: one call {one:.2f} ms, four calls {four:.2f} ms, "
        f"one call of 4N {batch:.2f} ms"
    )


if __name__ == "__main__":
    for size in ((1440, 1920), (300, 400)):
        for channels in (64, 32):
            print(blend_cnn(*size, channels), flush=True)
    print(gsplat_calls(), flush=True)
