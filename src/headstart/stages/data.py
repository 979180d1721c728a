"""The data stage: find the labelled files, build the network, and read every image once.

Reading means the backbone's features of every image (both views, from the cache where
possible), or, without pretrained weights, every image decoded once; either way the files that
cannot be used are found now and set aside with the reason.
"""

from __future__ import annotations

import csv
import io
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..classifier import layer_groups
from ..config import FitConfig
from ..console import progress_bar
from ..data.decoded import DecodedImages, prefetch
from ..data.images import UnreadableImage, detect_channels
from ..data.sources import Dataset, Skipped, discover
from ..errors import HeadstartError
from ..features import VIEWS, ExtractedFeatures, extract_features, feature_stores
from ..inputs import InputPipeline
from ..models import Preprocessing, WeightsSource, create_backbone
from ..runfolder import DATASET, SPLITS, RunFolder
from ..storage import write_atomically
from ..training import distributed
from ..training.freezing import trainable_stages_for

__all__ = [
    "Prepared",
    "default_cache_dir",
    "device_of",
    "find_data",
    "look_again",
    "network_for",
    "prepare",
    "record_split",
    "require_trainable",
    "seed_everything",
    "split_changes",
    "write_splits",
]


def default_cache_dir() -> Path:
    """Where decoded pixels and features are kept: ``$HEADSTART_CACHE`` or the user cache."""
    env = os.environ.get("HEADSTART_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "headstart"


@dataclass
class Prepared:
    """The data and the network, ready to learn from: where ``fit``, ``check``, ``lr_find``
    and ``audit`` all start, so that they read the same split, cache and features."""

    dataset: Dataset
    backbone: torch.nn.Module  # on the configured device
    source: WeightsSource
    architecture: str  # the network built: built-in weights may need a variant of the name
    inputs: InputPipeline  # how the network sees an image (views: decided by the plan)
    images: DecodedImages  # the decoded-pixel cache
    stores: dict | None  # the feature caches; None without pretrained weights
    features: ExtractedFeatures | None = None  # both views, once `read`

    @property
    def preprocessing(self) -> Preprocessing:
        return self.inputs.preprocessing

    @property
    def index(self) -> dict[str, int]:
        """Class name -> the index the network's head uses."""
        return {name: i for i, name in enumerate(self.dataset.classes)}

    @property
    def train_counts(self) -> list[int]:
        counts = self.dataset.counts()["train"]
        return [counts[name] for name in self.dataset.classes]

    def _extract(self, paths: list[Path], config: FitConfig, label: str) -> ExtractedFeatures:
        with progress_bar(label, len(paths), quiet=config.quiet) as advance:
            return extract_features(
                self.backbone,
                self.inputs,
                paths,
                self.images,
                self.stores,
                views=VIEWS,
                batch_size=config.batch_size,
                on_batch=advance,
            )

    def _share(self, paths: list[Path], rank: int, world: int) -> list[Path]:
        """The process ``rank``'s share of ``paths``: every ``world``-th distinct content (an
        unreadable file goes to the process whose turn it is)."""
        first: dict[str, Path] = {}
        for path in paths:
            try:
                first.setdefault(self.images.key(path), path)
            except UnreadableImage:
                first[str(path)] = path
        return [first[key] for key in sorted(first)][rank::world]

    def read(self, config: FitConfig) -> Prepared:
        """Features of every image (from the cache where possible), or, without pretrained
        weights, every image decoded once; the files that fail are dropped and listed."""
        if self.stores is not None:
            paths = [sample.path for sample in self.dataset.samples]
            rank, world = distributed.rank_and_size()
            if world > 1:
                # Under torchrun each process puts its share of the images through the
                # network into the shared cache; then every process reads them all from it.
                # Shared by content, so that copies of one image are computed once.
                self._extract(self._share(paths, rank, world), config, f"features ({world})")
                distributed.barrier()
                for store in self.stores.values():
                    store.refresh()
            self.features = self._extract(paths, config, "features")
            self.dataset = self.dataset.drop(self.features.skipped)
        else:  # no features to extract: decode everything once, to find unreadable files now
            self.dataset = self.dataset.drop(_decode_all(self.dataset, self.images, config))
        return self


def prepare(data: str | Path, config: FitConfig, *, read: bool = True) -> Prepared:
    """Seed every generator, discover ``data``, build the backbone on its device, open the
    caches and (``read``) read every image."""
    dataset = find_data(data, config)
    ready = network_for(dataset, config)
    return ready.read(config) if read else ready


def find_data(data: str | Path, config: FitConfig) -> Dataset:
    """Seed every generator and discover ``data``, split as ``config`` says; refused unless
    it can be trained on, before any image is read (a refusal costs nothing)."""
    from ..text.data import is_text_data

    if config.task != "classification":
        raise HeadstartError(
            f"task={config.task!r}: this command is built for one class an image; a "
            f"{config.task} is fitted with `headstart fit DATA --task {config.task}`"
        )
    if is_text_data(data):
        raise HeadstartError(
            f"{data} holds texts: this command works on photos (texts take fit, audit, "
            "predict, evaluate and report)"
        )
    seed_everything(config.seed)
    dataset = discover(
        data, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
    )
    require_trainable(dataset)
    return dataset


def look_again(ready: Prepared, config: FitConfig, input_size: int) -> Prepared:
    """The same images through the same network built for another input size (the plan's
    second look at low-resolution images), read again."""
    channels = ready.preprocessing.input_size[0]
    again = replace(config, in_chans=channels, input_size=input_size)
    return network_for(ready.dataset, again).read(config)


def network_for(dataset: Dataset, config: FitConfig) -> Prepared:
    """The network ``config`` names, built on its device for ``dataset`` (its input channels
    detected from the files unless given), with its caches open; no image read yet."""
    if not config.in_chans:
        config = replace(config, in_chans=detect_channels([s.path for s in dataset.samples]))
    regularisation = {
        name: value
        for name, value in (("drop_rate", config.dropout), ("drop_path_rate", config.drop_path))
        if value is not None
    }
    backbone, preprocessing, source = create_backbone(
        config.arch,
        weights=config.weights,
        pretrained=config.pretrained,
        in_chans=config.in_chans,
        input_size=config.input_size,
        **regularisation,
    )
    if isinstance(config.freeze, int):  # a freeze depth beyond the model: refused now
        trainable_stages_for(config.freeze, len(layer_groups(backbone)))
    backbone.to(device_of(config.device))
    architecture = backbone.pretrained_cfg.get("architecture", config.arch)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    inputs = InputPipeline(preprocessing)
    images = inputs.decoder(cache / "pixels")
    stores = None
    if config.pretrained:
        stores = feature_stores(
            cache / "features", architecture, source, preprocessing, backbone.num_features
        )
    return Prepared(dataset, backbone, source, architecture, inputs, images, stores)


def _decode_all(dataset: Dataset, images: DecodedImages, config: FitConfig) -> list[Skipped]:
    """Decode every file into the pixel cache; the unreadable ones, with their reasons."""

    def check(path: Path) -> Skipped | None:
        try:
            images.get(path)
        except UnreadableImage as error:
            return Skipped(path, error.reason)
        return None

    paths = [sample.path for sample in dataset.samples]
    skipped = []
    with progress_bar("decoding", len(paths), quiet=config.quiet) as advance:
        for failure in prefetch(check, paths):
            advance(1)
            if failure is not None:
                skipped.append(failure)
    return skipped


def require_trainable(dataset: Dataset) -> None:
    """Two classes with training images and a validation split, or a clear refusal."""
    counts = dataset.counts()
    present = [c for c, n in counts["train"].items() if n > 0]
    if len(present) < 2:
        raise HeadstartError(
            f"{dataset.root}: after skipping unreadable files, fewer than two "
            f"classes have training images ({', '.join(present) or 'none'})"
        )
    if not dataset.split("val"):
        raise HeadstartError(
            f"{dataset.root}: no validation images; add a val/ folder or more images per class"
        )


def record_split(run: RunFolder, dataset: Dataset, *, resuming: bool) -> None:
    """``dataset.json`` and ``splits.csv`` (which file went where, so ``evaluate`` and audits
    can reproduce the split); a resumed run must find the split it began with."""
    changed = split_changes(run, dataset) if resuming else []
    if changed:
        raise HeadstartError(
            f"cannot resume {run.path}: the data changed since it began ({len(changed)} "
            f"file(s) added, removed or moved, e.g. {changed[0][0]}); a resumed run must see "
            "the same split: start a new fit"
        )
    run.write_json(DATASET, dataset.to_dict())
    write_splits(run, ((s.path, s.label, s.split) for s in dataset.samples))


def write_splits(run: RunFolder, rows: Iterable[tuple[object, str, str]]) -> None:
    """``splits.csv``: each example's file (or row of a table), label and split."""
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["path", "label", "split"])
    writer.writerows(rows)
    write_atomically(run / SPLITS, table.getvalue().encode("utf-8", errors="surrogateescape"))


def split_changes(run: RunFolder, dataset: Dataset) -> list[tuple[Path, str, str]]:
    """The images ``(path, label, split)`` split otherwise in ``dataset`` than in ``run``
    (added, removed or moved), in order; none when the split is the run's."""
    before = set(run.splits)
    now = {(Path(s.path), s.label, s.split) for s in dataset.samples}
    return sorted(before ^ now)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and PyTorch's global generators, for what draws from them (a new
    head's initial weights, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_of(name: str) -> torch.device:
    """The torch device a ``device`` setting names; CUDA when ``auto`` finds one."""
    if name == "auto":
        return distributed.local_device()  # CUDA when there is one; torchrun's own device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HeadstartError(f"device={name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HeadstartError(f"device={name!r}, but this machine has no CUDA device; use cpu")
    return device
