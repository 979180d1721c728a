"""Files written whole or not at all, with the system's own errors when they cannot be.

Every file headstart writes into a run or a cache goes through :func:`write_atomically`
(weights through :func:`write_tensors`, pictures through :func:`write_png`): the bytes are
made in memory, written next to the target and renamed onto it, so a crash or a full disk never
leaves a file that looks complete and is not. Logs grow by :func:`append_line`, whose torn
last line (a crash mid-write) spoils only itself.
Writing with Python's own file calls also means that a full disk or a read-only folder raise
:class:`OSError` with its ``errno`` and file name, which the command line reports in one line
(safetensors' own writer raises an error type of its own that says neither).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported by what makes the tensors and pictures, not by this module
    import torch
    from matplotlib.figure import Figure
    from PIL import Image

__all__ = ["append_line", "write_atomically", "write_png", "write_tensors"]


def write_atomically(path: str | Path, data: bytes) -> Path:
    """``data`` as the file ``path``: whole, or (on any error) not at all. Writers racing on
    one path (threads, processes sharing a cache) each write their own partial file."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        with open(partial, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except OSError as error:  # a failed write names no file: name the one meant
        partial.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def write_png(picture: Image.Image | Figure, path: str | Path) -> Path:
    """A Pillow image or a Matplotlib figure as a PNG file, written atomically."""
    buffer = io.BytesIO()
    if hasattr(picture, "savefig"):
        picture.savefig(buffer, format="png")
    else:
        picture.save(buffer, format="PNG")
    return write_atomically(path, buffer.getvalue())


def append_line(path: str | Path, line: str) -> None:
    """``line`` and a newline at the end of the text file ``path``, flushed at once. A last line
    that a crash cut short is ended first, so that it spoils only itself."""
    path = Path(path)
    torn = path.exists() and path.stat().st_size and _last_byte(path) != b"\n"
    with open(path, "a", encoding="utf-8") as file:
        file.write(("\n" if torn else "") + line + "\n")


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1)


def write_tensors(
    tensors: Mapping[str, torch.Tensor] | Mapping[str, np.ndarray],
    path: str | Path,
    metadata: dict[str, str] | None = None,
) -> Path:
    """``tensors`` (all PyTorch or all NumPy) as a safetensors file, written atomically."""
    if all(isinstance(value, np.ndarray) for value in tensors.values()):
        from safetensors.numpy import save
    else:
        from safetensors.torch import save
    return write_atomically(path, save(dict(tensors), metadata=metadata))
