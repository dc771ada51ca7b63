"""ns-viewer in headless Chromium: the depth-of-field controls are there and change the view.

Skips when Chromium (Debian package ``chromium``) or the ``playwright`` Python package is absent.
The screenshots go to ``$COCOGS_SCREENSHOT_DIR`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import console_script

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ns-viewer exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


def _viewport(page) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    canvas = page.locator("canvas").first
    shot = np.asarray(Image.open(BytesIO(canvas.screenshot())).convert("RGB")).astype(np.int16)
    return shot[:, : int(shot.shape[1] * 0.45)]  # the left of the 3D view: no control panel, no tooltips


def _wait_for_change(page, before: np.ndarray, timeout: float) -> np.ndarray:
    """The viewport once it differs from ``before`` and has stopped changing (CPU renders are slow)."""
    deadline = time.time() + timeout
    last = before
    while time.time() < deadline:
        time.sleep(3)
        now = _viewport(page)
        if np.abs(now - before).mean() > 0.5 and np.abs(now - last).mean() < 0.05:
            return now
        last = now
    return last


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_viewer_defocus_controls_change_the_render(trained: dict, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("COCOGS_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = trained["cocogaussian"]["config"]
    log = open(tmp_path / "ns-viewer.log", "w")
    proc = subprocess.Popen(
        [console_script("ns-viewer"), "--load-config", str(config), "--viewer.websocket-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TORCHDYNAMO_DISABLE": "1"},
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}", proc, timeout=180)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 640, "height": 420})
            page.goto(f"http://127.0.0.1:{port}")
            for label in ("Defocus preview", "Aperture × learned K", "Focus distance", "Training image"):
                page.get_by_text(label, exact=True).first.wait_for(timeout=120_000)
            time.sleep(10)
            empty = _viewport(page)
            # jump to training view 0, focused as learned: the defocused photo as the model explains it
            page.get_by_role("button", name="View it with its learned focus").click()
            defocused = _wait_for_change(page, empty, timeout=180)
            page.screenshot(path=str(shots / "viewer_defocus_preview.png"))
            # switch the preview off: the same view, sharp
            page.get_by_label("Defocus preview").uncheck(force=True)
            sharp = _wait_for_change(page, defocused, timeout=180)
            page.screenshot(path=str(shots / "viewer_sharp.png"))
            browser.close()
        assert np.abs(defocused - empty).mean() > 5, "the button did not bring the scene into view"
        before, after = defocused, sharp
        assert np.abs(after - before).mean() > 0.5, "the view did not change when the preview was switched off"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
