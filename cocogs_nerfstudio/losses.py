"""The loss terms CoCoGaussian adds to the blend's loss (Eq. 14), none of them in the paper.

Plain tensor functions, no nerfstudio imports. ``coc_px`` is the blur the model has learned for a
training view: the CoC (Eq. 7) at each pixel's rendered depth with h_θ's median K and the photo's
d_F, in pixels [H, W, 1].
"""

from __future__ import annotations

from torch import Tensor


def in_focus_weights(coc_px: Tensor, tolerance_px: float) -> Tensor:
    """1 where the learned CoC is at most ``tolerance_px``, ``(tolerance_px / CoC)²`` beyond: the
    share of a blur disc's area that one in-focus pixel covers. ``tolerance_px`` ≤ 0: all 1."""
    if tolerance_px <= 0:
        return coc_px.new_ones(())
    return (tolerance_px / coc_px.clamp_min(1e-12)).square().clamp(max=1.0)


def sharp_render_loss(photo: Tensor, sharp: Tensor, coc_px: Tensor, weight: float, tolerance_px: float) -> Tensor:
    """``weight`` × L1 of the sharp render (base Gaussians alone) against the photo [H, W, 3], per
    pixel × :func:`in_focus_weights`: the base matches the photo where the model sees it in focus
    and is not pulled towards its blur elsewhere."""
    return weight * ((photo - sharp).abs() * in_focus_weights(coc_px, tolerance_px)).mean()


def small_blur(coc_px: Tensor, accumulation: Tensor, below_px: float, quantile: float = 0.9) -> Tensor:
    """1.0 when the ``quantile`` of the learned CoC over the pixels the Gaussians cover (accumulation
    ≥ 0.5) is under ``below_px``, else 0.0; a tensor, so that no value is read back to the host.
    ``below_px`` ≤ 0: always 1."""
    if below_px <= 0:
        return coc_px.new_ones(())
    coc = coc_px.detach().masked_fill(accumulation.detach() < 0.5, float("nan")).flatten()
    coc = coc[:: max(1, coc.numel() // 2**20)]  # torch.quantile's size limit
    return (coc.nanquantile(quantile) < below_px).float()


def aperture_prior(
    aperture_relative: Tensor, coc_px: Tensor, accumulation: Tensor, weight: float, below_px: float
) -> Tensor:
    """``weight`` × the mean relative aperture K of the view, an L1 prior that lets K fall to zero
    on photos without defocus, applied only while the view's learned blur is small
    (:func:`small_blur`): all-in-focus photos, not defocused ones."""
    return weight * (aperture_relative * small_blur(coc_px, accumulation, below_px))
