"""Pure-PyTorch Gaussian rasterizer: the CPU twin of ``gsplat.rendering.rasterization``.

It follows gsplat 1.4.0's math step by step (paper Eqs. 1-4):

* EWA projection: camera-space covariance ``W Σ Wᵀ`` (Eq. 3) projected with the Jacobian of the
  perspective map, whose x/y are clamped to 1.3× the field of view as gsplat does, plus the
  ``eps2d`` (0.3 px²) low-pass on the diagonal; radius = ceil(3·sqrt(largest eigenvalue)).
* per pixel (centre at +0.5): ``alpha = min(0.999, opacity·exp(-½ dᵀ Σ₂D⁻¹ d))``, skipped when
  below 1/255 or when the quadratic form is negative;
* front-to-back compositing in camera-depth order (Eq. 4); a pixel stops *before* the Gaussian
  that would bring its transmittance to 1e-4 or below; the background is added with the
  remaining transmittance.

Differences from gsplat, on purpose: each Gaussian touches the pixels of its own 3σ box (cut
further to where its alpha can reach 1/255) instead of every pixel of the 16×16 tiles the box
overlaps, so contributions beyond 3σ (at most ``opacity·e^-4.5 ≈ 0.011``) are dropped; and
transmittance is accumulated in float64.

It is sparse: only (Gaussian, pixel) pairs inside each splat's box are formed, in row bands of
at most ``max_pairs`` pairs, so memory stays bounded. The compositing of the pairs has a
hand-written backward (``_CompositeBand``: the same derivatives autograd takes, ~3× less time
and memory than a graph over every pair); projection and colours use autograd. The
``absgrad`` statistic of gsplat (sum over pixels of |∂L/∂mean2d| per pixel) is provided too, as
``info["means2d"].absgrad`` after backward.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4

# Real spherical harmonics constants (degree ≤ 3), the convention of 3DGS / gsplat.
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] from (w, x, y, z) quaternions [..., 4] (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return rot.reshape(quats.shape[:-1] + (3, 3))


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis values [..., (degree+1)²] for unit directions [..., 3]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _C2[0] * xy,
            _C2[1] * yz,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * xz,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    if degree > 3:
        raise ValueError(f"SH degree {degree} > 3 is not supported")
    return torch.stack(out, dim=-1)


def eval_sh_colors(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colours [..., 3] from SH coefficients [..., K, 3] seen along ``dirs`` [..., 3] (+0.5, ≥ 0)."""
    n = (degree + 1) ** 2
    basis = sh_basis(degree, F.normalize(dirs, dim=-1))
    rgb = (basis[..., None] * coeffs[..., :n, :]).sum(dim=-2)
    return torch.clamp_min(rgb + 0.5, 0.0)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """EWA projection of N Gaussians into C pinhole cameras (paper Eq. 3).

    Returns radii [C, N] (int32, 0 = culled), means2d [C, N, 2], depths [C, N],
    conics [C, N, 3] (upper triangle of Σ₂D⁻¹) and, if asked, antialiasing compensations [C, N].
    """
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]
    rot = quat_to_rotmat(quats)
    M = rot * scales[:, None, :]
    covars = M @ M.transpose(-1, -2)  # [N, 3, 3]  (Eq. 2)
    covars_c = torch.einsum("cij,njk,clk->cnil", R, covars, R)  # W Σ Wᵀ

    depths = means_c[..., 2]
    in_range = (depths > near_plane) & (depths < far_plane)
    # Gaussians behind the camera must not poison gradients with a division by ~0.
    tz = torch.where(in_range, depths, torch.ones_like(depths))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    x, y = means_c[..., 0], means_c[..., 1]
    tx = tz * torch.maximum(torch.minimum(x / tz, lim_x_pos), -lim_x_neg)
    ty = tz * torch.maximum(torch.minimum(y / tz, lim_y_pos), -lim_y_neg)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zero, -fx * tx / tz**2, zero, fy / tz, -fy * ty / tz**2], dim=-1)
    J = J.reshape(*tz.shape, 2, 3)
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    means2d = torch.stack([fx * x / tz + cx, fy * y / tz + cy], dim=-1)

    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    compensations = None
    if calc_compensations:
        compensations = torch.sqrt(torch.clamp(det_orig / det.clamp_min(1e-10), min=0.0))
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    with torch.no_grad():
        half_tr = 0.5 * (a + c)
        v1 = half_tr + torch.sqrt(torch.clamp(half_tr**2 - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1.clamp_min(0.0)))
        valid = in_range & (det > 0) & (radius > radius_clip)
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)
    return radii, means2d, depths, conics, compensations


def splat_extent(conics: Tensor, opacities: Tensor, radii: Tensor) -> Tuple[Tensor, Tensor]:
    """Half-widths (x, y) in pixels of the box outside which a splat's alpha is below 1/255.

    alpha ≥ 1/255 ⇔ dᵀΣ⁻¹d ≤ 2·ln(255·opacity): an ellipse whose bounding box has half-widths
    sqrt(2·ln(255·o)·Σ_xx) and sqrt(2·ln(255·o)·Σ_yy). Never wider than gsplat's 3σ ``radii``.
    """
    a, b, c = conics.unbind(-1)
    det = (a * c - b * b).clamp_min(1e-12)
    level = 2.0 * torch.log((255.0 * opacities).clamp_min(1.0))
    rx = torch.minimum(torch.sqrt(level * c / det), radii)
    ry = torch.minimum(torch.sqrt(level * a / det), radii)
    return rx, ry


def _pair_grid(
    x0: Tensor, y0: Tensor, w: Tensor, h: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Enumerate every pixel of each box: (box index, px, py), boxes in order."""
    counts = w * h
    total = int(counts.sum().item())
    box = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=counts.device) - start.index_select(0, box)
    wb = w.index_select(0, box)
    return box, x0.index_select(0, box) + local % wb, y0.index_select(0, box) + torch.div(local, wb, rounding_mode="floor")


def _pair_offsets(means2d: Tensor, conics: Tensor, ids: Tensor, px: Tensor, py: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dy, σ) of (Gaussian ``ids``, pixel) pairs: d = mean2d − pixel centre, σ = ½ dᵀ Σ₂D⁻¹ d."""
    m = means2d.index_select(0, ids)
    dx = m[:, 0] - (px.to(m.dtype) + 0.5)
    dy = m[:, 1] - (py.to(m.dtype) + 0.5)
    con = conics.index_select(0, ids)
    return dx, dy, 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy


class _Runs:
    """Pairs sorted by pixel: each pixel's pairs form a run. Sums along runs by cumulative sums
    (float64), cheaper on the CPU than a scatter onto the pixels."""

    def __init__(self, pix: Tensor) -> None:
        first = torch.ones_like(pix, dtype=torch.bool)
        first[1:] = pix[1:] != pix[:-1]
        self.starts = first.nonzero().squeeze(1)
        self.ends = torch.cat([self.starts[1:], self.starts.new_tensor([len(pix)])]) - 1
        self.pix = pix.index_select(0, self.starts)  # the pixel of each run
        self.run_of_pair = torch.cumsum(first.long(), 0) - 1

    def totals(self, values: Tensor) -> Tensor:
        """Σ of the values [P] of each run (float64)."""
        incl = torch.cumsum(values.double(), 0)
        return incl.index_select(0, self.ends) - (incl - values).index_select(0, self.starts)

    def before(self, values: Tensor) -> Tensor:
        """Σ of the values [P] before each pair within its run (0 for a run's first)."""
        excl = torch.cumsum(values, 0) - values
        return excl - excl.index_select(0, self.starts).index_select(0, self.run_of_pair)

    def to_pixels(self, run_values: Tensor, n_pixels: int) -> Tensor:
        """Per-run values [R] placed in a zero image [n_pixels]."""
        return run_values.new_zeros(n_pixels).index_copy_(0, self.pix, run_values)


class _CompositeBand(torch.autograd.Function):
    """Front-to-back compositing of one band's (Gaussian, pixel) pairs (paper Eqs. 1 and 4).

    Pairs come sorted by pixel, and by depth within a pixel. Forward gives the band's colour sum
    Σ αᵢ Tᵢ cᵢ [P, D] and Σ log(1 − αᵢ) [P] (float64) per pixel; backward is written out by hand
    (the same derivatives autograd would take through every pair, without its per-pair graph):

    * ∂/∂cᵢ = αᵢ Tᵢ g;  ∂/∂αᵢ = Tᵢ cᵢ·g − (Σ_{j>i} αⱼ Tⱼ cⱼ·g + g_logT) / (1 − αᵢ);
    * αᵢ = min(0.999, oᵢ e^{−σᵢ}), σᵢ = ½ dᵀ Σ₂D⁻¹ d with d = mean2d − pixel centre.

    The pixel's stop (Tᵢ₊₁ ≤ 1e-4 ends it) is a constant of the backward pass, as in gsplat.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        gid: Tensor,
        px: Tensor,
        py: Tensor,
        pix: Tensor,
        n_pixels: int,
        absgrad_buf: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        dx, dy, sigma = _pair_offsets(means2d, conics, gid, px, py)
        falloff = torch.exp(-sigma)
        alpha = torch.clamp(opacities.index_select(0, gid) * falloff, max=ALPHA_MAX)
        log1m = torch.log1p(-alpha.double())
        runs = _Runs(pix)
        excl = runs.before(log1m)  # log T before each pair
        alive = (excl + log1m) > math.log(T_MIN)  # T after this pair stays above 1e-4
        trans = torch.exp(excl).to(alpha.dtype)
        weight = alpha * trans * alive
        col = colors.index_select(0, gid)
        out = colors.new_zeros(n_pixels, colors.shape[1]).index_add_(0, pix, weight[:, None] * col)
        log_t = runs.to_pixels(runs.totals(log1m * alive), n_pixels)
        ctx.save_for_backward(means2d, conics, colors, opacities, gid, pix, dx, dy, falloff, trans, weight, alive)
        ctx.runs = runs
        ctx.absgrad_buf = absgrad_buf
        return out, log_t

    @staticmethod
    def backward(ctx: Any, g_out: Tensor, g_log_t: Tensor):  # type: ignore[override]
        means2d, conics, colors, opacities, gid, pix, dx, dy, falloff, trans, weight, alive = ctx.saved_tensors
        runs = ctx.runs
        g_pair = g_out.index_select(0, pix)
        col = colors.index_select(0, gid)
        c_dot_g = (col * g_pair).sum(1)
        contrib = (weight * c_dot_g).double()  # αⱼ Tⱼ cⱼ·g, zero past the pixel's stop
        incl = contrib + runs.before(contrib)
        after = runs.totals(contrib).index_select(0, runs.run_of_pair) - incl  # Σ over later pairs
        raw = opacities.index_select(0, gid) * falloff
        one_minus = 1.0 - torch.clamp(raw, max=ALPHA_MAX).double()
        g_alpha = trans * c_dot_g - ((after + g_log_t.double().index_select(0, pix)) / one_minus).to(trans.dtype)
        g_raw = g_alpha * alive * (raw <= ALPHA_MAX)  # the clamp at 0.999 passes no gradient
        g_sigma = -g_raw * raw
        con = conics.index_select(0, gid)
        g_dx = g_sigma * (con[:, 0] * dx + con[:, 1] * dy)
        g_dy = g_sigma * (con[:, 2] * dy + con[:, 1] * dx)
        # one scatter for every per-Gaussian gradient: colours, mean2d, conic, opacity, |mean2d|
        per_pair = [weight[:, None] * g_pair, g_dx[:, None], g_dy[:, None]]
        per_pair += [g_sigma[:, None] * torch.stack([0.5 * dx * dx, dx * dy, 0.5 * dy * dy], dim=1)]
        per_pair += [(g_raw * falloff)[:, None], g_dx.abs()[:, None], g_dy.abs()[:, None]]
        acc = means2d.new_zeros(len(means2d), colors.shape[1] + 8).index_add_(0, gid, torch.cat(per_pair, 1))
        grad_colors, grad_means2d, grad_conics, grad_opac, absgrad = acc.split([colors.shape[1], 2, 3, 1, 2], 1)
        if ctx.absgrad_buf is not None:
            ctx.absgrad_buf.add_(absgrad)
        return grad_means2d, grad_conics, grad_colors, grad_opac[:, 0], None, None, None, None, None, None


def _composite_band(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    box: Tensor,
    px: Tensor,
    py: Tensor,
    width: int,
    out: Tensor,
    log_t: Tensor,
    absgrad_buf: Optional[Tensor],
) -> Tuple[Tensor, Tensor]:
    """Alpha-composite the (Gaussian, pixel) pairs of one band; Gaussians are in depth order."""
    with torch.no_grad():  # drop negligible pairs first: the compositing only sees the rest
        _, _, sigma = _pair_offsets(means2d, conics, box, px, py)
        alpha = torch.clamp(opacities.index_select(0, box) * torch.exp(-sigma), max=ALPHA_MAX)
        keep = ((sigma >= 0) & (alpha >= ALPHA_MIN)).nonzero().squeeze(1)
        gid, px, py = box.index_select(0, keep), px.index_select(0, keep), py.index_select(0, keep)
        # stable sort by pixel keeps the depth order within each pixel
        pix, order = torch.sort(py * width + px, stable=True)
        gid, px, py = gid.index_select(0, order), px.index_select(0, order), py.index_select(0, order)
    if len(pix) == 0:
        return out, log_t
    band_out, band_log_t = _CompositeBand.apply(
        means2d, conics, colors, opacities, gid, px, py, pix, out.shape[0], absgrad_buf
    )
    return out + band_out, log_t + band_log_t


def rasterize_torch(
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
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    absgrad: bool = False,
    max_pairs: int = 2_000_000,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Same inputs and outputs as ``gsplat.rendering.rasterization`` (non-packed, pinhole).

    Returns render [C, H, W, D], alphas [C, H, W, 1] and an info dict with ``radii``,
    ``means2d`` (its ``.grad`` / ``.absgrad`` are filled by backward), ``depths``, ``conics``,
    ``opacities``, ``width``, ``height``, ``n_cameras``.
    """
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
    N = means.shape[0]
    C = viewmats.shape[0]
    radii, means2d, depths, conics, comp = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
        radius_clip, calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    opac = opacities[None, :].expand(C, N)
    if comp is not None:
        opac = opac * comp

    if sh_degree is None:
        cols = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
    else:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]
        shs = colors if colors.dim() == 4 else colors[None].expand(C, -1, -1, -1)
        cols = eval_sh_colors(sh_degree, means[None] - campos[:, None], shs)
    if render_mode in ("RGB+D", "RGB+ED"):
        cols = torch.cat([cols, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        cols = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)
    D = cols.shape[-1]

    absgrad_buf = torch.zeros_like(means2d) if absgrad else None
    renders, alphas = [], []
    for ci in range(C):
        out = means.new_zeros(height * width, D)
        log_t = torch.zeros(height * width, dtype=torch.float64, device=means.device)
        with torch.no_grad():
            ids = (radii[ci] > 0).nonzero().squeeze(1)
            ids = ids[torch.argsort(depths[ci, ids])]
            m = means2d[ci, ids]
            rx, ry = splat_extent(conics[ci, ids], opac[ci, ids], radii[ci, ids].float())
            x0 = torch.floor(m[:, 0] - rx).clamp(0, width).long()
            x1 = torch.ceil(m[:, 0] + rx).clamp(0, width).long()
            y0 = torch.floor(m[:, 1] - ry).clamp(0, height).long()
            y1 = torch.ceil(m[:, 1] + ry).clamp(0, height).long()
            w = (x1 - x0).clamp_min(0)
            total = int((w * (y1 - y0).clamp_min(0)).sum().item())
            n_bands = max(1, min(height, math.ceil(total / max_pairs)))
            band_h = math.ceil(height / n_bands)
        for ya in range(0, height, band_h):
            yb = min(height, ya + band_h)
            with torch.no_grad():
                by0, by1 = y0.clamp(min=ya), y1.clamp(max=yb)
                h = (by1 - by0).clamp_min(0)
                sel = ((h > 0) & (w > 0)).nonzero().squeeze(1)
                if len(sel) == 0:
                    continue
                box, px, py = _pair_grid(x0[sel], by0[sel], w[sel], h[sel])
                gid = ids.index_select(0, sel.index_select(0, box))  # global Gaussian index of each pair, in depth order
            out, log_t = _composite_band(
                means2d[ci], conics[ci], cols[ci], opac[ci], gid, px, py, width, out, log_t,
                None if absgrad_buf is None else absgrad_buf[ci],
            )  # fmt: skip
        trans = torch.exp(log_t).to(out.dtype)
        if backgrounds is not None:
            out = out + trans[:, None] * backgrounds[ci][None, :]
        renders.append(out.reshape(height, width, D))
        alphas.append((1.0 - trans).reshape(height, width, 1))
    render = torch.stack(renders, 0)
    alpha = torch.stack(alphas, 0)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    if absgrad_buf is not None:
        means2d.absgrad = absgrad_buf  # type: ignore[attr-defined]
    info: Dict[str, Any] = {
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opac,
        "width": width,
        "height": height,
        "n_cameras": C,
        "tile_size": 16,
        "camera_ids": None,
        "gaussian_ids": None,
        "backend": "torch",
    }
    return render, alpha, info
