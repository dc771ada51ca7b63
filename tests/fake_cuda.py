"""A stand-in GPU for machines without one: CPU tensors tagged as living on another device.

Inside ``fake_cuda()``, whatever code puts on ``cuda`` (``torch.zeros(..., device="cuda")``,
``x.to(device)``, ``.cuda()``, ``x.new_tensor(...)``, modules' ``.to``) becomes a :class:`FakeCuda`
tensor: CPU data that reports the ``meta`` device (a device that, unlike a ``cuda`` tag, never
starts the CUDA runtime, also not in autograd). Every op on it runs on the CPU data. An op that
mixes it with a plain CPU tensor of one or more dimensions raises :class:`DeviceMismatch`, as CUDA
raises "Expected all tensors to be on the same device" (0-dim CPU tensors mix, as on CUDA), and
torch's own device checks (``quantile``'s ``q``, index devices…) raise as they would on a GPU.
Values can be read (``.item()``, ``float()``, ``.tolist()``, ``.cpu()``), unlike under torch's
FakeTensorMode, so code that reads back a few scalars runs as it would on a GPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

TAG = torch.device("meta")
_FROM_DATA = {"tensor", "as_tensor", "asarray", "new_tensor"}
_INDEXING = {
    torch.ops.aten.index.Tensor,
    torch.ops.aten.index_put_.default,
    torch.ops.aten.index_put.default,
    torch.ops.aten._index_put_impl_.default,
}


class DeviceMismatch(RuntimeError):
    """A GPU tensor met a CPU tensor: the same op fails on a real GPU."""


class FakeCuda(torch.Tensor):
    """CPU data that reports the tag device (see the module doc)."""

    _data: torch.Tensor

    @staticmethod
    def __new__(cls, data: torch.Tensor) -> "FakeCuda":
        t = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, data.shape, strides=data.stride(), storage_offset=data.storage_offset(),
            dtype=data.dtype, device=TAG, requires_grad=data.requires_grad,
        )  # fmt: skip
        t._data = data
        return t

    def __repr__(self) -> str:  # type: ignore[override]
        return f"FakeCuda({self._data!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        raise RuntimeError(f"a FakeCuda tensor was used outside fake_cuda() ({func})")


def _is_gpu(device: Any) -> bool:
    """A device that stands for the GPU: cuda (as code names it) or the tag."""
    if isinstance(device, str):
        return device.startswith(("cuda", "meta"))
    return isinstance(device, torch.device) and device.type in ("cuda", "meta")


def _wrap(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and not isinstance(x, FakeCuda):
        return FakeCuda(x)
    return x


# ops whose result the host must wait for on a GPU: a value read back, or an output size that
# depends on the data (nonzero, boolean masks)
_HOST_READS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.is_nonzero.default,
}


class _Dispatch(TorchDispatchMode):
    """Runs every op on CPU data; wraps results of ops on FakeCuda tensors or on the tag device;
    records the ops that would make the host wait for the GPU in ``host_reads``."""

    def __init__(self) -> None:
        super().__init__()
        self.host_reads: list = []

    def _record(self, func, args) -> None:  # noqa: ANN001
        gpu_args = [a for a in args if isinstance(a, FakeCuda)]
        if not gpu_args:
            return
        if func in _HOST_READS or (func in _INDEXING and any(
            isinstance(i, FakeCuda) and i.dtype == torch.bool for i in (args[1] or [])
        )):  # fmt: skip
            self.host_reads.append(str(func))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self._record(func, args)
        on_gpu, cpu_shapes = False, []

        def unwrap(x: Any) -> Any:
            nonlocal on_gpu
            if isinstance(x, FakeCuda):
                on_gpu = True
                return x._data
            if isinstance(x, torch.Tensor) and x.dim() > 0:
                cpu_shapes.append(tuple(x.shape))
            return x

        if func is torch.ops.aten.copy_.default:  # legal across devices on CUDA too; the result lives with dst
            dst, src = args[0], args[1]
            if isinstance(src, FakeCuda) and not isinstance(dst, FakeCuda):
                self.host_reads.append("copy to the host")
            plain = [x._data if isinstance(x, FakeCuda) else x for x in (dst, src)]
            func(*plain, *args[2:], **(kwargs or {}))
            return dst
        if func in _INDEXING and isinstance(args[0], FakeCuda):  # a GPU tensor may be indexed by CPU indices
            indices = [i._data if isinstance(i, FakeCuda) else i for i in args[1]] if args[1] is not None else None
            args = (args[0], [None if i is None else _wrap(i) for i in indices], *args[2:])
        args, kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs or {})
        if on_gpu and cpu_shapes:
            raise DeviceMismatch(f"{func}: GPU tensors mixed with CPU tensors of shapes {cpu_shapes}")
        device = kwargs.get("device")
        if device is not None:
            if on_gpu and not _is_gpu(device):
                self.host_reads.append("copy to the host")
            on_gpu = _is_gpu(device)  # an explicit device decides: .cpu() / .to("cpu") leave the GPU
            if on_gpu:
                kwargs["device"] = torch.device("cpu")
        out = func(*args, **kwargs)
        return tree_map(_wrap, out) if on_gpu else out


class _Function(TorchFunctionMode):
    """Renames ``cuda`` to the tag before torch's argument parser can start the CUDA runtime."""

    def __init__(self, dispatch: _Dispatch) -> None:
        super().__init__()
        self.dispatch = dispatch

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name == "cuda" and args and isinstance(args[0], torch.Tensor):
            return args[0].to(TAG)
        if name == "tolist" and args and isinstance(args[0], FakeCuda):
            self.dispatch.host_reads.append("tolist")
            return args[0]._data.tolist()  # a copy to the host, as on a GPU
        if name in _FROM_DATA:  # these copy their data to the device below the dispatcher: build on the CPU, tag
            like_self = name == "new_tensor" and "device" not in kwargs and isinstance(args[0], FakeCuda)
            gpu = _is_gpu(kwargs.get("device")) or like_self
            if gpu:
                kwargs["device"] = "cpu"
                if name == "new_tensor":
                    args = (args[0]._data if isinstance(args[0], FakeCuda) else args[0], *args[1:])
            out = func(*args, **kwargs)
            return _wrap(out) if gpu else out
        if _is_gpu(kwargs.get("device")):
            kwargs["device"] = TAG
        if name == "to":
            args = tuple(TAG if isinstance(a, (str, torch.device)) and _is_gpu(a) else a for a in args)
        return func(*args, **kwargs)


@contextmanager
def fake_cuda() -> Iterator[list]:
    """Within: ``cuda`` tensors are FakeCuda tensors (see the module doc). Yields the list of host
    reads (ops that would make the host wait for the GPU), which the caller may clear and inspect."""
    dispatch = _Dispatch()
    with _Function(dispatch), dispatch:
        yield dispatch.host_reads
