"""Device placement without a GPU: the model's set-up and training step on a stand-in GPU.

CI has no GPU, and gsplat's kernels need one, so the CUDA path cannot run here. What can run is
everything around the rasterizer on tensors that behave like GPU tensors (``fake_cuda``): set-up
(focus init from photos and SfM points, viewer ranges), a training step with CoC (h_θ, CoC sets,
blend CNN, loss, backward, merged densification infos, optimizer), the defocus preview and the
evaluation metrics. Any CPU tensor that meets them fails the test, as it would fail on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fake_cuda import DeviceMismatch, FakeCuda, fake_cuda
from helpers import run_iteration, trainer_config


def test_the_stand_in_gpu_behaves_like_cuda() -> None:
    with fake_cuda():
        x = torch.arange(6.0).to("cuda")
        assert isinstance(x, FakeCuda) and isinstance(torch.zeros(2, device=x.device), FakeCuda)
        assert isinstance(x.new_tensor([1.0]), FakeCuda) and isinstance(torch.tensor([1.0], device="cuda:0"), FakeCuda)
        with pytest.raises(DeviceMismatch):
            x + torch.ones(6)  # a CPU tensor of 1+ dims
        with pytest.raises(RuntimeError, match="same device"):
            torch.quantile(x, torch.tensor([0.02, 0.98]))  # the set-up bug this guard was made for
        assert float((x * torch.tensor(2.0)).sum()) == 30.0  # 0-dim CPU tensors mix, as on CUDA
        assert x.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and type(x.cpu()) is torch.Tensor
        cpu = torch.zeros(6)
        cpu.copy_(x)  # copies across devices are legal
        assert x[torch.tensor([1, 2])].tolist() == [1.0, 2.0]  # so are CPU indices into a GPU tensor
        layer = torch.nn.Linear(6, 1).to("cuda")
        layer(x[None]).sum().backward()
        assert isinstance(layer.weight.grad, FakeCuda)


def test_setup_training_step_preview_and_metrics_stay_on_the_gpu(demo_scene: Path, tmp_path: Path) -> None:
    cfg = trainer_config(demo_scene, tmp_path, steps=3, name="gpu", coc_start_step=0)
    cfg.machine.device_type = "cuda"
    from cocogs_nerfstudio.runs import seeded_trainer

    with fake_cuda():
        trainer = seeded_trainer(cfg)  # datamanager caches photos "on the GPU", focus init from them
        model = trainer.pipeline.model
        assert isinstance(model.means, FakeCuda) and isinstance(model.lens.focus_log, FakeCuda)
        assert bool(model.lens.focus_initialized.all())
        assert model.depth_of_field.focus.min < model.depth_of_field.focus.max
        for step in range(2):
            run_iteration(trainer, step)  # 5 renders, blend CNN, loss, backward, densification stats, Adam
        assert isinstance(model.strategy_state["grad2d"], FakeCuda)
        assert float(model.strategy_state["grad2d"].sum()) > 0

        model.eval()
        camera, batch = trainer.pipeline.datamanager.next_eval_image(0)
        preview = model.render_defocused(camera, float(model.lens.focus_distance(0)), 2.0)
        assert isinstance(preview["rgb"], FakeCuda) and isinstance(preview["in_focus_weight"], FakeCuda)
        metrics, _ = model.get_image_metrics_and_images(preview, batch)
        assert 0 < metrics["psnr"] < 60 and "lpips" in metrics


def test_a_training_render_does_not_wait_for_the_gpu(demo_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the rasterizer (gsplat syncs on its own), the model's training forward pass, loss and
    metrics read nothing back from the GPU once an image has been seen: no ``.item()``, no copies
    to the host, no data-dependent shapes. (Issue 10: d_F's initialised flag, the image size and
    nerfstudio's intrinsics were read back every step.)"""
    import cocogs_nerfstudio.cocogaussian as cocogaussian
    from cocogs_nerfstudio.runs import seeded_trainer

    cfg = trainer_config(demo_scene, tmp_path, steps=3, name="sync", coc_start_step=0)
    cfg.machine.device_type = "cuda"
    with fake_cuda() as host_reads:
        def uncounted(rasterize):  # noqa: ANN001, ANN202
            def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                before = len(host_reads)
                out = rasterize(*args, **kwargs)
                del host_reads[before:]
                return out

            return run

        for name in ("rasterize", "rasterize_sets"):  # the base render, the CoC sets
            monkeypatch.setattr(cocogaussian, name, uncounted(getattr(cocogaussian, name)))
        trainer = seeded_trainer(cfg)
        model = trainer.pipeline.model
        model.train()
        camera, batch = trainer.pipeline.datamanager.next_train(0)
        model.get_outputs(camera.to(model.device))  # the first visit reads the image size once
        host_reads.clear()
        outputs = model.get_outputs(camera.to(model.device))
        metrics = model.get_metrics_dict(outputs, batch)
        loss = sum(model.get_loss_dict(outputs, batch, metrics).values())
        assert isinstance(loss, FakeCuda) and "in_focus_weight" in outputs
        assert host_reads == []
