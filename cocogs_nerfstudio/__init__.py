"""cocogs-nerfstudio: CoCoGaussian (CVPR 2025) as a nerfstudio plugin."""

from __future__ import annotations


def _allow_numpy_in_checkpoints() -> None:
    """nerfstudio 1.1.5 checkpoints hold numpy scalars (scheduler state); torch ≥ 2.6 loads with
    ``weights_only=True`` and refuses them (nerfstudio#3683). Allow-list exactly those types."""
    import numpy as np
    import torch

    if not hasattr(torch.serialization, "add_safe_globals"):
        return
    try:
        from numpy.core.multiarray import scalar  # numpy < 2 pickles scalars through this
    except ImportError:  # pragma: no cover
        scalar = None
    try:
        from numpy._core.multiarray import scalar as scalar2  # numpy ≥ 2
    except ImportError:
        scalar2 = None
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
    safe += [s for s in (scalar, scalar2) if s is not None]
    torch.serialization.add_safe_globals(safe)


_allow_numpy_in_checkpoints()


def _one_line_errors() -> None:
    """Command-line tools (ns-train, ns-eval, …) report bad input files in one line (:mod:`errors`)."""
    import sys

    from cocogs_nerfstudio.errors import one_line_excepthook

    sys.excepthook = one_line_excepthook


_one_line_errors()
