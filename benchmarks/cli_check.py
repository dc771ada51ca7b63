"""The command lines a user runs, end to end on one scene, each as its own process:

    ns-train (short, CoC on early) → ns-eval → cocogs-export → cocogs-refocus
    → ns-train --load-dir (a resume that must keep training)

    python benchmarks/cli_check.py SCENE [--method cocogaussian] [--steps 200] [--coc-start 50] --out DIR

Each command is checked for what a user would look at (metrics in range, a PLY with one vertex
per Gaussian, refocus frames, a resumed run that continued from its checkpoint and changed the
Gaussians). One line per command (seconds, result) and DIR/cli_check.json; exit status 1 when a
command failed. ``benchmarks/gpu_check.sh`` runs it on CUDA; the test suite runs it on the CPU with
a few steps, so that it cannot rot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch


def _checkpoint(run: Path) -> Dict[str, Any]:
    ckpt = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def _gaussians(state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    prefix = "_model.gauss_params."
    return {k[len(prefix) :]: v for k, v in state["pipeline"].items() if k.startswith(prefix)}


def _ply_vertices(path: Path) -> int:
    with path.open("rb") as f:
        for line in f:
            if line.startswith(b"element vertex"):
                return int(line.split()[-1])
            if line.startswith(b"end_header"):
                break
    raise ValueError(f"{path}: no vertex count in the PLY header")


class Checks:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.results: List[Dict[str, Any]] = []

    def run(self, name: str, argv: List[str], check: Callable[[], str], timeout: float) -> bool:
        """Run one command, then ``check`` (which returns what it verified or raises)."""
        start = time.perf_counter()
        log = self.out / f"{name}.log"
        with log.open("w") as f:
            proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        seconds = round(time.perf_counter() - start, 1)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            result = {"command": name, "ok": False, "seconds": seconds, "error": f"exit {proc.returncode}", "log_tail": tail}
        else:
            try:
                result = {"command": name, "ok": True, "seconds": seconds, "checked": check()}
            except Exception as err:  # noqa: BLE001  (a failed check is reported, the next command still runs)
                result = {"command": name, "ok": False, "seconds": seconds, "error": f"{type(err).__name__}: {err}"}
        self.results.append(result)
        print(f"{'ok  ' if result['ok'] else 'FAIL'} {name:<8} {seconds:7.1f} s  {result.get('checked') or result.get('error')}", flush=True)
        for line in result.get("log_tail", []):
            print(f"     | {line}", flush=True)
        return bool(result["ok"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", default="cocogaussian")
    parser.add_argument("--steps", type=int, default=200, help="training steps (the resume trains half as many more)")
    parser.add_argument("--coc-start", type=int, default=50)
    parser.add_argument("--frames", type=int, default=5, help="frames of each refocus sweep")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per command")
    parser.add_argument("train_args", nargs="*", help="more ns-train arguments (after --)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    checks = Checks(out)
    run = out / "runs" / "cli" / args.method / "first"
    resumed = out / "runs" / "cli" / args.method / "resumed"
    config = run / "config.yml"

    def train(timestamp: str, steps: int, *extra: str) -> List[str]:
        return [
            py, "-m", "nerfstudio.scripts.train", args.method, "--data", str(args.scene.resolve()),
            "--output-dir", str(out / "runs"), "--experiment-name", "cli", "--timestamp", timestamp,
            "--max-num-iterations", str(steps), "--steps-per-save", str(steps), "--vis", "tensorboard",
            "--viewer.quit-on-train-completion", "True", "--machine.seed", "42",
            "--pipeline.model.coc-start-step", str(args.coc_start),
            *(f"--optimizers.{group}.scheduler.warmup-steps={args.coc_start}" for group in ("coc-mlp", "blend-cnn", "focus")),
            *extra, *args.train_args,
        ]  # fmt: skip

    def trained() -> str:
        state = _checkpoint(run)
        n = len(_gaussians(state)["means"])
        focus = state["pipeline"]["_model.lens.focus_log"]
        assert state["step"] == args.steps - 1 and n > 0 and torch.isfinite(focus).all()
        return f"step {state['step']}, {n} Gaussians, {len(focus)} learned focus distances"

    if not checks.run("ns-train", train("first", args.steps), trained, args.timeout):
        return _finish(checks, out)

    def evaluated() -> str:
        metrics = json.loads((out / "eval.json").read_text())["results"]
        assert 5 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1, metrics
        lpips = f", LPIPS {metrics['lpips']:.4f}" if "lpips" in metrics else " (LPIPS off: no AlexNet weights)"
        return f"PSNR {metrics['psnr']:.2f}, SSIM {metrics['ssim']:.4f}{lpips}"

    checks.run("ns-eval", [py, "-m", "nerfstudio.scripts.eval", "--load-config", str(config),
                           "--output-path", str(out / "eval.json")], evaluated, args.timeout)  # fmt: skip

    def exported() -> str:
        vertices = _ply_vertices(out / "export" / "splat.ply")
        count = len(_gaussians(_checkpoint(run))["means"])
        assert vertices == count, f"{vertices} vertices for {count} Gaussians"
        return f"splat.ply with {vertices} Gaussians (the sharp base Gaussians)"

    checks.run("cocogs-export", [py, "-m", "cocogs_nerfstudio.export", "--load-config", str(config),
                                 "--output-dir", str(out / "export")], exported, args.timeout)  # fmt: skip

    def refocused() -> str:
        sweeps = {d: len(list((out / "refocus" / d).glob("*.png"))) for d in ("focus_sweep", "aperture_sweep")}
        assert all(n == args.frames for n in sweeps.values()), sweeps
        return f"{sweeps['focus_sweep']} focus and {sweeps['aperture_sweep']} aperture frames"

    checks.run("refocus", [py, "-m", "cocogs_nerfstudio.refocus", "--load-config", str(config),
                           "--output-dir", str(out / "refocus"), "--frames", str(args.frames), "--no-video"],
               refocused, args.timeout)  # fmt: skip

    more = max(2, args.steps // 2)

    def resumed_training() -> str:
        before, after = _checkpoint(run), _checkpoint(resumed)
        assert after["step"] == before["step"] + more, (before["step"], after["step"])
        g0, g1 = _gaussians(before), _gaussians(after)
        if g0["means"].shape == g1["means"].shape:
            moved = (g1["means"] - g0["means"]).abs().max().item()
            assert moved > 0, "the Gaussians did not train after the resume"
            return f"step {before['step']} → {after['step']}, Gaussians moved (max {moved:.2e})"
        return f"step {before['step']} → {after['step']}, {len(g0['means'])} → {len(g1['means'])} Gaussians"

    # --max-num-iterations is the total step count, for a resumed run too (trainer.py)
    checks.run("resume", train("resumed", args.steps + more, "--load-dir", str(run / "nerfstudio_models")),
               resumed_training, args.timeout)  # fmt: skip
    return _finish(checks, out)


def _finish(checks: Checks, out: Path) -> int:
    (out / "cli_check.json").write_text(json.dumps(checks.results, indent=1))
    failed = [r["command"] for r in checks.results if not r["ok"]]
    print(f"cli_check: {len(checks.results) - len(failed)} of {len(checks.results)} commands passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
