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
at most ``max_pairs`` pairs, so memory stays bounded; each box row is a row of a dense block, so
the pairs' alphas are broadcast arithmetic, and only pairs whose alpha reaches 1/255 are kept and
sorted by pixel. The compositing has a hand-written backward (``_CompositeCamera``: the same
derivatives autograd takes, without a graph over every pair); projection and colours use
autograd. The ``absgrad`` statistic of gsplat (sum over pixels of |∂L/∂mean2d| per pixel) is
provided too, as ``info["means2d"].absgrad`` after backward.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Optional, Tuple

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
    C, N = viewmats.shape[0], means.shape[0]
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    means_c = torch.matmul(means[None], R.transpose(1, 2)) + t[:, None, :]  # [C, N, 3]
    # Σ = M Mᵀ with M = rot·diag(scale) (Eq. 2); in camera space W Σ Wᵀ = (W M)(W M)ᵀ. The rows of
    # (W M)ᵀ for all Gaussians are one [3N, 3] × [3, 3] product per camera.
    M = quat_to_rotmat(quats) * scales[:, None, :]
    WM = torch.matmul(M.transpose(1, 2).reshape(1, 3 * N, 3), R.transpose(1, 2)).reshape(C, N, 3, 3).transpose(2, 3)

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
    # J W M, with the perspective Jacobian J = [[fx/z, 0, −fx·tx/z²], [0, fy/z, −fy·ty/z²]] (Eq. 3);
    # Σ₂D = (J W M)(J W M)ᵀ
    inv_z = 1.0 / tz
    row0 = (fx * inv_z)[..., None] * (WM[..., 0, :] - (tx * inv_z)[..., None] * WM[..., 2, :])
    row1 = (fy * inv_z)[..., None] * (WM[..., 1, :] - (ty * inv_z)[..., None] * WM[..., 2, :])
    means2d = torch.stack([fx * x * inv_z + cx, fy * y * inv_z + cy], dim=-1)

    a, b, c = (row0 * row0).sum(-1), (row0 * row1).sum(-1), (row1 * row1).sum(-1)
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


def _pair_terms(q: Tensor, px: Tensor, py: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dy, σ, e^{−σ}) of (splat, pixel) pairs, given each pair's splat row of ``q`` [6, P]
    (mean x, y, conic a, b, c, opacity): d = mean2d − pixel centre, σ = ½ dᵀ Σ₂D⁻¹ d."""
    dx = q[0] - (px.to(q.dtype) + 0.5)
    dy = q[1] - (py.to(q.dtype) + 0.5)
    sigma = 0.5 * (q[2] * dx * dx + q[4] * dy * dy) + q[3] * dx * dy
    return dx, dy, sigma, torch.exp(-sigma)


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


class _Boxes:
    """The pixel boxes [x0, x1) × [y0, y1) of one camera's visible splats ``ids`` (depth order),
    cut into row bands of at most ``max_pairs`` (splat, pixel) pairs so that memory stays bounded."""

    def __init__(self, ids: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor, width: int, height: int, max_pairs: int) -> None:
        self.ids, self.x0, self.y0, self.y1 = ids, x0, y0, y1
        self.w = (x1 - x0).clamp_min(0)
        self.width, self.height = width, height
        total = int((self.w * (y1 - y0).clamp_min(0)).sum().item())
        self.band_h = math.ceil(height / max(1, min(height, math.ceil(total / max_pairs))))

    def pairs(self, par: Tensor) -> Iterator[Tuple[Tensor, Tensor]]:
        """Per band, the (splat, pixel) pairs whose alpha reaches 1/255: (splat as an index into
        ``ids``, pixel y·width + x), sorted by pixel and by depth within a pixel.

        ``par`` [6, n]: mean x, y, conic a, b, c and opacity of each splat. The box rows (splat, y)
        are grouped by width rounded up to a power of two, cw; each group is a dense [rows, cw]
        block, so the pairs' σ and alpha are broadcast arithmetic, not per-pair gathers.
        """
        n = len(self.ids)
        dev = par.device
        # sort key of a pair: pixel·n + depth rank (unique); int32 sorts twice as fast where it fits
        key_dtype = torch.int32 if self.width * self.height * max(n, 1) < 2**31 else torch.int64
        for ya in range(0, self.height, self.band_h):
            by0, by1 = self.y0.clamp(min=ya), self.y1.clamp(max=min(self.height, ya + self.band_h))
            h = torch.where(self.w > 0, (by1 - by0).clamp_min(0), 0)
            rid = torch.repeat_interleave(torch.arange(n, device=dev), h)  # the splat of each box row
            if len(rid) == 0:
                continue
            y = by0.index_select(0, rid) + torch.arange(len(rid), device=dev) - (torch.cumsum(h, 0) - h).index_select(0, rid)
            bits = torch.frexp((self.w.index_select(0, rid) - 1).to(par.dtype)).exponent  # cw = 2^bits ≥ w
            bits, order = torch.sort(bits, stable=True)
            rid, y = rid.index_select(0, order), y.index_select(0, order)
            x0, w = self.x0.index_select(0, rid), self.w.index_select(0, rid)
            q = par.index_select(1, rid)[..., None]
            dy = q[1] - (y.to(par.dtype)[:, None] + 0.5)
            row_key = ((y * self.width + x0) * n + rid).to(key_dtype)
            keys, first = [], 0
            for b, count in enumerate(torch.bincount(bits).tolist()):
                if count == 0:
                    continue
                rows, cw = slice(first, first + count), 1 << b
                first += count
                xs = torch.arange(cw, device=dev)
                dx = q[0, rows] - ((x0[rows, None] + xs).to(par.dtype) + 0.5)
                dyr = dy[rows]
                sigma = 0.5 * (q[2, rows] * dx * dx + q[4, rows] * dyr * dyr) + q[3, rows] * dx * dyr
                alpha = torch.clamp(q[5, rows] * torch.exp(-sigma), max=ALPHA_MAX)
                flat = ((xs < w[rows, None]) & (sigma >= 0) & (alpha >= ALPHA_MIN)).view(-1).nonzero().squeeze(1)
                keys.append(row_key[rows].index_select(0, flat >> b) + ((flat & (cw - 1)) * n).to(key_dtype))
            key = torch.sort(torch.cat(keys)).values
            if len(key) > 0:
                pix = torch.div(key, n, rounding_mode="floor")
                yield (key - pix * n).long(), pix.long()


class _CompositeCamera(torch.autograd.Function):
    """Front-to-back compositing of one camera's splats (paper Eqs. 1 and 4).

    Per band, the (splat, pixel) pairs whose alpha reaches 1/255 come sorted by pixel and by depth
    within a pixel (:meth:`_Boxes.pairs`); each pixel's transmittance is a cumulative sum of
    log(1 − α) along its run. Forward gives the colour sum Σ αᵢ Tᵢ cᵢ [n_pixels, D] and Σ log(1 − αᵢ) [n_pixels]
    (float64); backward is written out by hand (the derivatives autograd would take through every
    pair, without its per-pair graph):

    * ∂/∂cᵢ = αᵢ Tᵢ g;  ∂/∂αᵢ = Tᵢ cᵢ·g − (Σ_{j>i} αⱼ Tⱼ cⱼ·g + g_logT) / (1 − αᵢ);
    * αᵢ = min(0.999, oᵢ e^{−σᵢ}), σᵢ = ½ dᵀ Σ₂D⁻¹ d with d = mean2d − pixel centre.

    The pixel's stop (Tᵢ₊₁ ≤ 1e-4 ends it) is a constant of the backward pass, as in gsplat.
    Per-pair values are rows of [k, P] tensors: on the CPU, gathers and the per-splat sums
    (``index_add_`` along the pairs) are several times faster than on [P, k] rows.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        boxes: _Boxes,
        absgrad_buf: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        # the visible splats in depth order, one column each: mean x, y, conic a, b, c, opacity
        par = torch.cat([means2d.t(), conics.t(), opacities[None]]).index_select(1, boxes.ids)
        col = colors.t().index_select(1, boxes.ids)  # [D, n]
        n_pixels = boxes.width * boxes.height
        out = colors.new_zeros(colors.shape[1], n_pixels)
        log_t = torch.zeros(n_pixels, dtype=torch.float64, device=means2d.device)
        keep_for_backward = any(ctx.needs_input_grad[:4])
        bands = []
        for lid, pix in boxes.pairs(par):
            q = par.index_select(1, lid)
            dx, dy, _, falloff = _pair_terms(q, pix % boxes.width, torch.div(pix, boxes.width, rounding_mode="floor"))
            raw = q[5] * falloff
            alpha = torch.clamp(raw, max=ALPHA_MAX)
            log1m = torch.log1p(-alpha.double())
            runs = _Runs(pix)
            excl = runs.before(log1m)  # log T before each pair
            alive = (excl + log1m) > math.log(T_MIN)  # T after this pair stays above 1e-4
            trans = torch.exp(excl).to(alpha.dtype)
            weight = alpha * trans * alive
            c = col.index_select(1, lid)
            out.index_add_(1, pix, c * weight)
            log_t += runs.to_pixels(runs.totals(log1m * alive), n_pixels)
            if keep_for_backward:
                bands.append((lid, pix, runs, q, c, dx, dy, falloff, raw, trans, weight, alive))
        ctx.bands, ctx.ids, ctx.absgrad_buf = bands, boxes.ids, absgrad_buf
        ctx.n_splats = means2d.shape[0]
        return out.t(), log_t

    @staticmethod
    def backward(ctx: Any, g_out: Tensor, g_log_t: Tensor):  # type: ignore[override]
        D = g_out.shape[1]
        g_out_t = g_out.t().contiguous()  # [D, n_pixels]
        g_log_t = g_log_t.double()
        # per visible splat: colour [D], mean2d [2], conic [3], opacity, |mean2d| [2]
        acc = g_out.new_zeros(D + 8, len(ctx.ids))
        for lid, pix, runs, q, c, dx, dy, falloff, raw, trans, weight, alive in ctx.bands:
            g_pair = g_out_t.index_select(1, pix)
            c_dot_g = (c * g_pair).sum(0)
            contrib = (weight * c_dot_g).double()  # αⱼ Tⱼ cⱼ·g, zero past the pixel's stop
            incl = contrib + runs.before(contrib)
            after = runs.totals(contrib).index_select(0, runs.run_of_pair) - incl  # Σ over later pairs
            one_minus = 1.0 - torch.clamp(raw, max=ALPHA_MAX).double()
            g_alpha = trans * c_dot_g - ((after + g_log_t.index_select(0, pix)) / one_minus).to(trans.dtype)
            g_raw = g_alpha * alive * (raw <= ALPHA_MAX)  # the clamp at 0.999 passes no gradient
            g_sigma = -g_raw * raw
            g_dx = g_sigma * (q[2] * dx + q[3] * dy)
            g_dy = g_sigma * (q[4] * dy + q[3] * dx)
            rows = [g_dx, g_dy, g_sigma * 0.5 * dx * dx, g_sigma * dx * dy, g_sigma * 0.5 * dy * dy]
            rows += [g_raw * falloff, g_dx.abs(), g_dy.abs()]
            acc.index_add_(1, lid, torch.cat([weight * g_pair, torch.stack(rows)]))
        grads = acc.new_zeros(ctx.n_splats, D + 8).index_copy_(0, ctx.ids, acc.t())
        grad_colors, grad_means2d, grad_conics, grad_opac, absgrad = grads.split([D, 2, 3, 1, 2], 1)
        if ctx.absgrad_buf is not None:
            ctx.absgrad_buf.add_(absgrad)
        return grad_means2d, grad_conics, grad_colors, grad_opac[:, 0], None, None


def _composite(
    radii: Tensor,
    means2d: Tensor,
    depths: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    width: int,
    height: int,
    backgrounds: Optional[Tensor],
    absgrad: bool,
    max_pairs: int,
) -> Tuple[Tensor, Tensor]:
    """Images [C, H, W, D] and alphas [C, H, W, 1] of C sets of projected splats ([C, N, ...]),
    each composited front to back (Eq. 4); with ``absgrad``, backward fills ``means2d.absgrad``."""
    C, D = means2d.shape[0], colors.shape[-1]
    absgrad_buf = torch.zeros_like(means2d) if absgrad else None
    renders, alphas = [], []
    for ci in range(C):
        with torch.no_grad():
            ids = (radii[ci] > 0).nonzero().squeeze(1)
            ids = ids[torch.argsort(depths[ci, ids])]
            m = means2d[ci, ids]
            rx, ry = splat_extent(conics[ci, ids], opacities[ci, ids], radii[ci, ids].float())
            boxes = _Boxes(
                ids,
                torch.floor(m[:, 0] - rx).clamp(0, width).long(), torch.ceil(m[:, 0] + rx).clamp(0, width).long(),
                torch.floor(m[:, 1] - ry).clamp(0, height).long(), torch.ceil(m[:, 1] + ry).clamp(0, height).long(),
                width, height, max_pairs,
            )  # fmt: skip
        out, log_t = _CompositeCamera.apply(
            means2d[ci], conics[ci], colors[ci], opacities[ci], boxes, None if absgrad_buf is None else absgrad_buf[ci]
        )
        trans = torch.exp(log_t).to(out.dtype)
        if backgrounds is not None:
            out = out + trans[:, None] * backgrounds[ci][None, :]
        renders.append(out.reshape(height, width, D))
        alphas.append((1.0 - trans).reshape(height, width, 1))
    if absgrad_buf is not None:
        means2d.absgrad = absgrad_buf  # type: ignore[attr-defined]
    return torch.stack(renders, 0), torch.stack(alphas, 0)


def _render_info(
    radii: Tensor, means2d: Tensor, depths: Tensor, conics: Tensor, opacities: Tensor, width: int, height: int
) -> Dict[str, Any]:
    """The info dict of gsplat's ``rasterization`` for C images of projected splats ([C, N, ...])."""
    return {
        "radii": radii, "means2d": means2d, "depths": depths, "conics": conics, "opacities": opacities,
        "width": width, "height": height, "n_cameras": radii.shape[0], "tile_size": 16, "camera_ids": None,
        "gaussian_ids": None, "backend": "torch",
    }  # fmt: skip


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

    render, alpha = _composite(radii, means2d, depths, conics, opac, cols, width, height, backgrounds, absgrad, max_pairs)
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    return render, alpha, _render_info(radii, means2d, depths, conics, opac, width, height)


def rasterize_sets_torch(
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
    rasterize_mode: str = "classic",
    absgrad: bool = False,
    max_pairs: int = 2_000_000,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """S sets of the same N Gaussians (moved, rescaled, rotated; opacities and colours shared),
    rendered RGB by one camera: means [S, N, 3], quats [S, N, 4], scales [S, N, 3], opacities [N],
    colors [N, D] or SH [N, K, 3]; viewmats [1, 4, 4], Ks [1, 3, 3].

    The S·N Gaussians are projected and shaded together (a quarter of the operations of four
    separate calls), then each set is composited as its own image. Returns renders [S, H, W, D],
    alphas [S, H, W, 1] and one info whose ``means2d`` [S, N, 2] and ``radii`` [S, N] hold the
    sets as if seen by S cameras (the form of gsplat's batched call)."""
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
    S, N = means.shape[:2]
    radii, means2d, depths, conics, comp = project_gaussians(
        means.reshape(S * N, 3), quats.reshape(S * N, 4), scales.reshape(S * N, 3), viewmats, Ks, width, height,
        eps2d, near_plane, far_plane, calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    radii, depths = radii.reshape(S, N), depths.reshape(S, N)
    means2d, conics = means2d.reshape(S, N, 2), conics.reshape(S, N, 3)
    opac = opacities[None, :].expand(S, N)
    if comp is not None:
        opac = opac * comp.reshape(S, N)
    if sh_degree is None:
        cols = colors[None].expand(S, -1, -1)
    else:
        campos = torch.linalg.inv(viewmats)[0, :3, 3]
        cols = eval_sh_colors(sh_degree, means - campos, colors)
    render, alpha = _composite(radii, means2d, depths, conics, opac, cols, width, height, None, absgrad, max_pairs)
    return render, alpha, _render_info(radii, means2d, depths, conics, opac, width, height)
