"""Files written whole or not at all, with the system's own errors when they cannot be.

Every weight file headstart writes (model bundles, cached features, exported weights) goes
through :func:`write_tensors`: the bytes are made in memory, written next to the target and
renamed onto it, so a crash or a full disk never leaves a file that looks complete and is not.
Writing with Python's own file calls also means that a full disk or a read-only folder raise
:class:`OSError` with its ``errno`` and file name, which the command line reports in one line
(safetensors' own writer raises an error type of its own that says neither).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # PyTorch is imported by what writes its tensors, not by this module
    import torch

__all__ = ["write_atomically", "write_tensors"]


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
