"""Errors a user can fix, and how the command-line tools print them: one line that names the file.

Installed as ``sys.excepthook`` when the plugin is imported (nerfstudio's own commands import it
from ``config.yml``): a :class:`DataInputError`, or a checkpoint that ``torch.load`` cannot read
(any error raised inside ``torch.load``: truncated by a kill during a save, or not a checkpoint), ends in ``error: <file>: <what>``
instead of a traceback. Everything else keeps Python's own report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Optional, Type


class DataInputError(ValueError):
    """Bad input data; the message names the file and what is wrong."""


def checkpoint_being_loaded(tb: Optional[TracebackType]) -> Optional[Path]:
    """The file a ``torch.load`` in this traceback was reading, if the error came from one."""
    while tb is not None:
        code, local = tb.tb_frame.f_code, tb.tb_frame.f_locals
        if code.co_name == "load" and code.co_filename.endswith(("torch/serialization.py", "torch\\serialization.py")):
            f = local.get("f")
            if isinstance(f, (str, Path)):
                return Path(f)
        tb = tb.tb_next
    return None


def unreadable_checkpoint_message(path: Path, err: BaseException) -> str:
    return (
        f"{path}: unreadable checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
        "it was cut short (a run killed while saving) or is not a checkpoint: delete it to use the previous one"
    )


def one_line_excepthook(
    exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType], _previous=sys.excepthook
) -> None:
    if issubclass(exc_type, DataInputError):
        print(f"error: {exc}", file=sys.stderr)
        return
    path = checkpoint_being_loaded(tb) if issubclass(exc_type, Exception) else None
    if path is not None:
        print(f"error: {unreadable_checkpoint_message(path, exc)}", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)
