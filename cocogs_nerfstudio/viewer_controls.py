"""Depth-of-field controls for nerfstudio's viser viewer (``ns-train`` and ``ns-viewer``).

Shown under "Custom Elements / model / depth_of_field" (nerfstudio lists a model's viewer elements
in alphabetical order of attribute name). Every change re-renders the view.

* **Defocus preview** (off by default = the sharp render);
* **Aperture × learned K**: a multiplier of the aperture h_θ predicts for the current view;
  0 gives the sharp image;
* **Focus distance**: in the model's world units, from the scene's near to its far bound;
* **Training image** + **View it with its learned focus**: moves the viewer camera to that
  training camera, copies the image's learned d_F into the focus slider, sets the aperture
  multiplier to 1 and turns the preview on: the photo as the model explains it.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerControl, ViewerSlider
from torch import Tensor, nn


class DepthOfFieldControls(nn.Module):
    """The viewer's aperture / focus controls of a CoCoGaussian model (holds no parameters)."""

    def __init__(self, num_train_images: int, focus_of_image: Callable[[int], Union[float, Tensor]]) -> None:
        super().__init__()
        self._focus_of_image = focus_of_image
        self.preview = ViewerCheckbox("Defocus preview", False, hint="Render with the CoC model (h_θ, M sets, blend CNN)")
        self.aperture = ViewerSlider("Aperture × learned K", 1.0, 0.0, 4.0, 0.05, hint="0 = sharp")
        self.focus = ViewerSlider("Focus distance", 1.0, 0.01, 10.0, 0.01, hint="World units of the model")
        self.training_image = ViewerSlider("Training image", 0, 0, max(num_train_images - 1, 1), 1)
        self.use_training_image = ViewerButton("View it with its learned focus", cb_hook=self._use_training_image)
        self.viewer_control = ViewerControl()

    def set_focus_range(self, near: float, far: float, default: float) -> None:
        """Slider range (call before the viewer installs the controls)."""
        self.focus.min, self.focus.max = float(near), float(far)
        self.focus.step = max((far - near) / 500.0, 1e-4)
        self.focus.value = float(min(max(default, near), far))

    def setting(self) -> Optional[Tuple[float, float]]:
        """(focus, aperture multiplier) while the preview is on and the aperture is > 0, else None."""
        if not self.preview.value or float(self.aperture.value) <= 0:
            return None
        return float(self.focus.value), float(self.aperture.value)

    def _use_training_image(self, _: ViewerButton) -> None:
        index = int(self.training_image.value)
        self.focus.value = float(self._focus_of_image(index))
        self.aperture.value = 1.0
        self.preview.value = True
        self._move_viewer_camera_to(index)

    def _move_viewer_camera_to(self, index: int) -> None:
        """Put every connected viewer camera at training camera ``index`` (as clicking its frustum)."""
        viewer = getattr(self.viewer_control, "viewer", None)
        handles = getattr(viewer, "camera_handles", None) or {}
        if viewer is None or index not in handles:
            return
        for client in viewer.viser_server.get_clients().values():
            with client.atomic():
                client.camera.position = handles[index].position
                client.camera.wxyz = handles[index].wxyz
