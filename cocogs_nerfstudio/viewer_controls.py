"""Depth-of-field controls for nerfstudio's viser viewer (``ns-train`` and ``ns-viewer``).

Shown under "Custom Elements / model / depth_of_field" (nerfstudio lists a model's viewer elements
in alphabetical order of attribute name). Every change re-renders the view.

* **Defocus preview** (off by default = the sharp render);
* **Aperture × learned K**: a multiplier of the aperture h_θ predicts for the current view;
  0 gives the sharp image;
* **Focus distance**: in the model's world units, from the scene's near to its far bound; with the
  preview on, a **click on the image** focuses on the surface under the cursor (tap to focus), and
  **Focus** below says where, also in the input poses' units;
* **Training image** + **View it with its learned focus**: moves the viewer camera to that
  training camera, copies the image's learned d_F into the focus slider, sets the aperture
  multiplier to 1 and turns the preview on: the photo as the model explains it.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerCheckbox,
    ViewerClick,
    ViewerControl,
    ViewerSlider,
    ViewerText,
)
from torch import Tensor, nn

SurfaceDistance = Callable[[Sequence[float], Sequence[float]], Optional[float]]


class DepthOfFieldControls(nn.Module):
    """The viewer's aperture / focus controls of a CoCoGaussian model (holds no parameters).

    ``focus_of_image``: a training photo's learned d_F; ``surface_distance``: the distance along a
    ray to the surface it meets, or None (:func:`tap_focus.surface_distance`).
    """

    def __init__(
        self,
        num_train_images: int,
        focus_of_image: Callable[[int], Union[float, Tensor]],
        surface_distance: Optional[SurfaceDistance] = None,
    ) -> None:
        super().__init__()
        self._focus_of_image, self._surface_distance = focus_of_image, surface_distance
        self.input_scale = 1.0  # model world units per unit of the input poses (the dataparser scale)
        self.preview = ViewerCheckbox("Defocus preview", False, cb_hook=self._preview_changed,
                                      hint="Render with the CoC model; click the image to focus there")  # fmt: skip
        self.focus_status = ViewerText("Focus", "click the image with the preview on to focus there", disabled=True)
        self.aperture = ViewerSlider("Aperture × learned K", 1.0, 0.0, 4.0, 0.05, hint="0 = sharp")
        self.focus = ViewerSlider("Focus distance", 1.0, 0.01, 10.0, 0.01, cb_hook=self._focus_changed,
                                  hint="World units of the model")  # fmt: skip
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

    def describe(self, focus: float) -> str:
        """A focus distance in the model's units and in the input poses' units."""
        return f"{focus:.4g} (model units) = {focus / self.input_scale:.4g} in your poses' units"

    def _focus_changed(self, slider: ViewerSlider) -> None:
        self.focus_status.value = f"at {self.describe(float(slider.value))}"

    def _preview_changed(self, checkbox: ViewerCheckbox) -> None:
        """With the preview on, clicks on the image focus there; off, the viewer's clicks are its own."""
        if getattr(self.viewer_control, "viser_server", None) is None or self._surface_distance is None:
            return  # no viewer running
        if checkbox.value:
            self.viewer_control.register_pointer_cb("click", self.focus_at_click)
        else:
            self.viewer_control.unregister_pointer_cb()

    def focus_at_click(self, click: ViewerClick) -> None:
        """Tap to focus: the focus slider moves to the distance of the surface under the click (the
        preview re-renders focused there); on empty background it stays, and the status says so."""
        assert self._surface_distance is not None
        distance = self._surface_distance(click.origin, click.direction)
        if distance is None:
            self.focus_status.value = "no surface under the click: focus unchanged"
            return
        self.focus.max = max(float(self.focus.max), distance)
        self.focus.min = min(float(self.focus.min), distance)
        self.focus.value = distance
        self.focus_status.value = f"at the click: {self.describe(distance)}"
