"""Densification with M+1 renders: merged infos by hand, size pruning as its own switch."""

from __future__ import annotations

import torch

from cocogs_nerfstudio.densification import CocStrategy, merge_render_infos


def _info(grad: list, radii: list) -> dict:
    means2d = torch.zeros(1, len(grad), 2, requires_grad=True)
    means2d.grad = torch.tensor([grad])
    means2d.absgrad = torch.tensor([grad]).abs()
    return {"means2d": means2d, "radii": torch.tensor([radii]), "width": 10, "height": 8, "n_cameras": 1}


def test_merged_infos_by_hand() -> None:
    base = _info([[1.0, 0.0], [0.0, 0.0]], [3, 0])
    coc = _info([[0.5, -1.0], [2.0, 0.0]], [0, 4])
    merged = merge_render_infos([base, coc], "sum")
    assert merged["means2d"].grad.tolist() == [[[1.5, -1.0], [2.0, 0.0]]]
    assert merged["means2d"].absgrad.tolist() == [[[1.5, 1.0], [2.0, 0.0]]]
    assert merged["radii"].tolist() == [[3, 4]]  # visible where any render saw it
    assert merged["width"] == 10 and merge_render_infos([base]) is base
    mean = merge_render_infos([base, coc], "mean")
    assert mean["means2d"].grad.tolist() == [[[0.75, -0.5], [1.0, 0.0]]]


def test_a_batch_of_renders_merges_like_the_renders_one_by_one() -> None:
    """The CoC sets rendered in one batch (gsplat: one info, ``means2d`` [R, N, 2]) count as R renders."""
    base = _info([[1.0, 0.0], [0.0, 0.0]], [3, 0])
    sets = [_info([[0.5, -1.0], [2.0, 0.0]], [0, 4]), _info([[0.0, 3.0], [-1.0, 1.0]], [5, 1])]
    batch = _info([[0.0, 0.0]] * 2, [0, 0])
    batch["means2d"] = torch.zeros(2, 2, 2, requires_grad=True)
    batch["means2d"].grad = torch.cat([info["means2d"].grad for info in sets])
    batch["means2d"].absgrad = torch.cat([info["means2d"].absgrad for info in sets])
    batch["radii"], batch["n_cameras"] = torch.cat([info["radii"] for info in sets]), 2
    for combine in ("sum", "mean"):
        one_by_one, batched = merge_render_infos([base, *sets], combine), merge_render_infos([base, batch], combine)
        for attr in ("grad", "absgrad"):
            assert torch.equal(getattr(batched["means2d"], attr), getattr(one_by_one["means2d"], attr)), (combine, attr)
        assert batched["radii"].tolist() == one_by_one["radii"].tolist() == [[5, 4]]
        assert batched["n_cameras"] == 1 and batched["means2d"].shape == (1, 2, 2)
    by_hand = torch.tensor([[[1.5, 2.0], [1.0, 1.0]]]) / 3  # the three renders' sums, averaged
    assert torch.allclose(merge_render_infos([base, batch], "mean")["means2d"].grad, by_hand)


def _params(n: int = 3) -> dict:
    scales = torch.full((n, 3), -3.0)
    scales[0] = 0.0  # Gaussian 0: scale e^0 = 1, far over the 0.5 threshold
    opacities = torch.full((n, 1), 2.0)
    opacities[2] = -9.0  # Gaussian 2: nearly transparent
    return torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(torch.zeros(n, 3)),
            "scales": torch.nn.Parameter(scales),
            "quats": torch.nn.Parameter(torch.tensor([[1.0, 0, 0, 0]] * n)),
            "opacities": torch.nn.Parameter(opacities),
        }
    )


def test_size_pruning_is_its_own_switch() -> None:
    """gsplat prunes by size only after its first opacity reset; with the reset off (the official
    code) that is never. CocStrategy prunes by size from ``size_prune_after`` on, or never."""
    for size_prune_after, survivors in ((None, 2), (100, 2), (10, 1)):
        params = _params()
        optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
        strategy = CocStrategy(prune_opa=0.005, prune_scale3d=0.5, reset_every=2**31, size_prune_after=size_prune_after)
        state = strategy.initialize_state(scene_scale=1.0)
        state["radii"] = torch.zeros(3)
        n = strategy._prune_gs(params, optimizers, state, step=50)
        assert len(params["means"]) == survivors and n == 3 - survivors, size_prune_after
        assert optimizers["means"].param_groups[0]["params"][0] is params["means"]
