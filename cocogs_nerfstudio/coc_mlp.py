"""h_θ: the MLP that predicts each base Gaussian's CoC parameters (paper Sec. 4.1, Fig. 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocogs_nerfstudio.coc import bounded_factor, coc_scale_beta, frequency_encode, unit_directions


@dataclass
class CocOutputs:
    """Per-Gaussian outputs of h_θ for M CoC sets over N base Gaussians."""

    aperture: Tensor  # K [N], > 0, relative to the model's aperture unit
    beta: Tensor  # β [M, N] in (0, 1]
    directions: Tensor  # d [M, N, 3], unit length
    scale_factors: Tensor  # δs [M, N, 3] in [1, δs_max]
    rot_factors: Tensor  # δq [M, N, 4] in [1, δq_max]


class CocMLP(nn.Module):
    """h_θ(x_cam, µ_B, s_B, q_B) → (K, β, d, δs, δq).

    Inputs (detached by the caller): frequency-encoded mean (``mean_freqs``) and camera centre
    (``cam_freqs``), activated scale and unit quaternion: 3(1+2·3) + 3(1+2·10) + 3 + 4 = 91
    inputs with the defaults, as in the official code. ``K`` comes out as ``softplus(raw)/ln 2``
    (+1e-4), i.e. ≈ 1 for a zero raw output; the model multiplies it by its aperture unit.
    """

    def __init__(
        self,
        num_sets: int = 4,
        hidden: int = 64,
        num_layers: int = 3,
        mean_freqs: int = 3,
        cam_freqs: int = 10,
        max_scale_factor: float = 1.1,
        max_rot_factor: float = 1.1,
    ) -> None:
        super().__init__()
        self.num_sets = num_sets
        self.mean_freqs = mean_freqs
        self.cam_freqs = cam_freqs
        self.max_scale_factor = max_scale_factor
        self.max_rot_factor = max_rot_factor
        in_dim = 3 * (1 + 2 * mean_freqs) + 3 * (1 + 2 * cam_freqs) + 3 + 4
        out_dim = 1 + num_sets * (1 + 3 + 3 + 4)
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden), nn.ReLU()]
            dim = hidden
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(dim, out_dim)
        with torch.no_grad():  # start near K = 1 unit, β = ½, δ = mid-range; directions random
            self.head.weight[: 1 + num_sets].mul_(0.01)
            self.head.bias.zero_()

    @property
    def in_dim(self) -> int:
        return self.trunk[0].in_features if len(self.trunk) else self.head.in_features

    def encode(self, camera_centre: Tensor, means: Tensor, scales: Tensor, quats: Tensor) -> Tensor:
        """The 91-dim input [N, in_dim]; scales are activated (exp), quats normalised here."""
        n = means.shape[0]
        cam = frequency_encode(camera_centre.reshape(1, 3), self.cam_freqs).expand(n, -1)
        return torch.cat(
            [frequency_encode(means, self.mean_freqs), cam, scales, F.normalize(quats, dim=-1)], dim=-1
        )

    def forward(self, camera_centre: Tensor, means: Tensor, scales: Tensor, quats: Tensor) -> CocOutputs:
        m, n = self.num_sets, means.shape[0]
        out = self.head(self.trunk(self.encode(camera_centre, means, scales, quats)))
        raw_k, raw_beta, rest = out[:, 0], out[:, 1 : 1 + m], out[:, 1 + m :]
        rest = rest.reshape(n, m, 10).transpose(0, 1)  # [M, N, 10]
        return CocOutputs(
            aperture=F.softplus(raw_k) / math.log(2.0) + 1e-4,  # > 0 even where softplus underflows
            beta=coc_scale_beta(raw_beta.T),
            directions=unit_directions(rest[..., 0:3]),
            scale_factors=bounded_factor(rest[..., 3:6], self.max_scale_factor),
            rot_factors=bounded_factor(rest[..., 6:10], self.max_rot_factor),
        )
