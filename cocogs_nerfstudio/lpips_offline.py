"""LPIPS (AlexNet) that never fails with a network traceback.

torchmetrics' LPIPS loads torchvision's AlexNet ImageNet weights, downloading them into
``$TORCH_HOME/hub/checkpoints`` when missing. Offline, that is a urllib stack trace; here it is one
line that says how to provide the file, and evaluation goes on without the LPIPS metric.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def lpips_help() -> str:
    return (
        f"LPIPS is off: the AlexNet weights {alexnet_weights_path()} are missing and could not be "
        f"downloaded. Put {ALEXNET_FILE} in $TORCH_HOME/hub/checkpoints/ (offline copy: "
        "export TORCH_HOME=<path>/shared/torch_home) to get LPIPS."
    )


def _fetch_weights(path: Path) -> None:
    """Download the AlexNet weights quietly (torchvision would print and raise on its own)."""
    from torchvision.models import AlexNet_Weights

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(AlexNet_Weights.IMAGENET1K_V1.url, str(path), progress=False)


class LPIPSUnavailable(nn.Module):
    """Stands in for LPIPS when its weights cannot be had: returns NaN; ``available`` is False."""

    available = False

    def __init__(self, **_: object) -> None:  # accepts LearnedPerceptualImagePatchSimilarity's arguments
        super().__init__()

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:  # noqa: ARG002
        return preds.new_tensor(float("nan"))


def make_lpips() -> nn.Module:
    """torchmetrics' LPIPS (AlexNet, inputs in [0, 1]) with ``available = True``, or, with a one-line
    message, :class:`LPIPSUnavailable`. Either is a module: callers test ``.available``."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    try:
        path = alexnet_weights_path()
        if not path.exists():
            _fetch_weights(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lpips = LearnedPerceptualImagePatchSimilarity(normalize=True)
    except Exception:  # noqa: BLE001  (URLError, OSError, HTTP errors, corrupt files…)
        from nerfstudio.utils.rich_utils import CONSOLE

        CONSOLE.print(f"[yellow]{lpips_help()}", soft_wrap=True)
        return LPIPSUnavailable()
    lpips.available = True
    return lpips


@contextmanager
def lpips_deferred() -> Iterator[None]:
    """Within: torchmetrics' LPIPS class is a no-op stand-in, so that Splatfacto's setup does not
    download AlexNet weights (offline: a urllib traceback); the model builds LPIPS itself after."""
    import torchmetrics.image.lpip as lpip

    original = lpip.LearnedPerceptualImagePatchSimilarity
    lpip.LearnedPerceptualImagePatchSimilarity = LPIPSUnavailable  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        lpip.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]
