"""Finding a labelled dataset on disk: which files, which class, which split.

Three layouts are read, chosen by what ``source`` is::

    photos/cats/*.jpg, photos/dogs/*.jpg        class folders: split here, stratified
    photos/train/cats/..., photos/val/cats/...  split folders: used as given
    labels.csv with columns path,label[,split]  a table: rows without a split are split here

The result is a plain, frozen :class:`Dataset`: the classes (sorted, so the same data always
gives the same class indices), every sample with its split, the files set aside with the reason,
and warnings worth showing a user. Problems that make training meaningless raise
:class:`~headstart.errors.HeadstartError` with one line that says what to fix.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import HeadstartError
from .images import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGES, UnreadableImage, probe_image

__all__ = [
    "SPLITS",
    "Dataset",
    "Sample",
    "Skipped",
    "Splits",
    "absolute_path",
    "check_fractions",
    "discover",
    "image_files",
    "split_sizes",
    "unreadable_images",
]

SPLITS = ("train", "val", "test")

# Folder names accepted for each split in the split-folders layout (compared in lower case).
_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_EXTENSIONS = ", ".join(sorted(IMAGE_EXTENSIONS))


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path  # absolute
    label: str
    split: str  # one of SPLITS


@dataclass(frozen=True)
class Skipped:
    """A file left out of the dataset, and why (e.g. "empty file (0 bytes)")."""

    path: Path
    reason: str


class Splits:
    """What a labelled dataset of any kind answers: its samples by split, counts by class.
    Needs ``samples`` (each with ``split`` and ``label``) and ``classes``."""

    def split(self, name: str) -> list:
        """The samples of one split ("train", "val" or "test"), in a stable order."""
        if name not in SPLITS:
            raise ValueError(f"split={name!r}; expected one of {SPLITS}")
        return [sample for sample in self.samples if sample.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Examples per split and class, ``counts()["val"]["cats"]``; zeros included."""
        tally = Counter((sample.split, sample.label) for sample in self.samples)
        return {split: {c: tally[split, c] for c in self.classes} for split in SPLITS}


@dataclass(frozen=True)
class Dataset(Splits):
    """A labelled image dataset as found on disk: what :func:`discover` returns.

    ``classes`` is sorted and fixed: a class's index is its position here, and :meth:`drop`
    keeps it even if a class loses all its files, so indices never shift under a model.
    """

    root: Path
    layout: str  # "class-folders" | "split-folders" | "csv"
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    # The files whose split headstart chose (the rest were given by the data): only these
    # may be moved, to keep copies of one image on one side (see headstart.auditing.split).
    split_here: frozenset[Path] = frozenset()

    def drop(self, skipped: Iterable[Skipped]) -> Dataset:
        """A copy without the samples at ``skipped``'s paths, which are added to ``.skipped``.

        Used when a file that passed discovery fails to decode later (a truncated JPEG passes
        the header check). Classes are kept as they are; see the class docstring.
        """
        skipped = tuple(skipped)
        gone = {absolute_path(item.path) for item in skipped}
        samples = tuple(s for s in self.samples if s.path not in gone)
        warnings = list(self.warnings)
        left = Counter(s.label for s in samples if s.split == "train")
        for name in self.classes:
            message = f"class '{name}' has no training images left after dropping unreadable files"
            if left[name] == 0 and message not in warnings:
                warnings.append(message)
        return replace(
            self, samples=samples, skipped=self.skipped + skipped, warnings=tuple(warnings)
        )

    def to_dict(self) -> dict:
        """A JSON-able summary (not the sample list): what a run records about its data."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": list(self.classes),
            "counts": self.counts(),
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
            "warnings": list(self.warnings),
        }


def discover(
    source: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
    training: bool = True,
) -> Dataset:
    """Find the images, labels and splits in ``source``.

    Args:
        source: a folder with one sub-folder per class (images are found at any depth inside
            a class folder); a folder holding ``train/`` and ``val/`` (or ``valid/``,
            ``validation/``) and optionally ``test/``, each with class folders; or a CSV file
            with the header ``path,label[,split]``, paths relative to the CSV's folder or
            absolute.
        val_fraction, test_fraction: the share of each class held out for validation and
            testing where the data does not give that split itself: with class folders, and
            with split folders or a CSV that has no val (or no test) split, in which case it
            is carved from train (or from the rows with no split). Each class with at least
            two images keeps one in train and one in val (when ``val_fraction > 0``); with
            three, also one in test (when ``test_fraction > 0``).
        seed: the held-out images depend only on the seed and the file names, not on the
            order the file system lists them; each class is shuffled on its own, so adding
            a class leaves the others' splits unchanged.
        check_files: read each file's header (:func:`~headstart.data.images.probe_image`)
            and set aside the unusable ones in ``Dataset.skipped``.
        training: the data is to train on, so every class needs training images; False for
            data only scored (``evaluate``), which may hold a test split alone.

    In folders, hidden files and folders (``.DS_Store``, macOS ``._photo.jpg``, ``__MACOSX``)
    and files whose names do not end in an image extension are ignored; a CSV's rows are
    taken as listed, and a listed file that does not exist is skipped as "file not found".

    Raises:
        HeadstartError: bad parameters, a missing source, no images, fewer than two classes,
            no readable file, or contradictory splits.
    """
    check_fractions(val_fraction, test_fraction)
    root = absolute_path(source)
    if not root.exists():
        raise HeadstartError(f"{root} does not exist")
    if root.is_file() and root.suffix.lower() == ".csv":
        found = _read_csv(root)
    elif root.is_dir():
        found = _read_split_folders(root) or _read_class_folders(root)
    else:
        raise HeadstartError(
            f"{root} is neither a folder nor a .csv file: give a folder of class folders, "
            "a folder with train/ and val/, or a CSV file with columns path,label[,split]"
        )
    if not found.files:
        raise HeadstartError(
            f"no images found: looked in {found.looked} for files ending {_EXTENSIONS} "
            "(any letter case)"
        )

    files = found.files
    if check_files:
        bad = unreadable_images([path for path, _, _ in files])
        if len(bad) == len(files):
            raise HeadstartError(
                f"none of the {len(files)} image files found in {root} can be read, "
                f"e.g. {bad[0].path}: {bad[0].reason}"
            )
        found.skipped += bad
        unreadable = {item.path for item in bad}
        files = [f for f in files if f[0] not in unreadable]

    classes, warnings = _choose_classes(found, files, training)
    files = [f for f in files if f[1] in classes]
    # A split given by the data is not carved out of train a second time.
    if "val" in found.given:
        val_fraction = 0.0
    if "test" in found.given:
        if test_fraction > 0:
            warnings.append(
                f"test_fraction={test_fraction} is ignored: the data gives a test split"
            )
        test_fraction = 0.0
    samples, split_warnings = _assign_splits(files, classes, val_fraction, test_fraction, seed)
    warnings += split_warnings
    chosen = frozenset(path for path, _, split in files if split is None)
    per_split = Counter((s.split, s.label) for s in samples)
    for label in classes:
        if training and per_split["train", label] == 0:
            held_out = [split for split in SPLITS if per_split[split, label]]
            raise HeadstartError(
                f"class '{label}' in {found.where} has images only in {' and '.join(held_out)}: "
                "every class needs training images"
            )
        warnings += [
            f"class '{label}' has no images in the {split} split"
            for split in ("val", "test")
            if split in found.given and not per_split[split, label]
        ]
    return Dataset(
        root=root,
        layout=found.layout,
        classes=tuple(classes),
        samples=tuple(samples),
        skipped=tuple(sorted(found.skipped, key=lambda item: str(item.path))),
        warnings=tuple(found.warnings + warnings),
        split_here=chosen,
    )


# --- What a layout reader finds, before files are checked and splits assigned ---------------


@dataclass
class _Found:
    layout: str
    where: Path  # the folder holding the class folders, or the CSV file: for messages
    looked: str  # where images were looked for, for "no images found"
    # (absolute path, label, split or None for "split it here"), sorted by path
    files: list[tuple[Path, str, str | None]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Files listed per label, readable or not, and class folders with no image at all:
    # both are needed to say why a class was left out.
    listed: Counter[str] = field(default_factory=Counter)
    empty: list[Path] = field(default_factory=list)
    given: frozenset[str] = frozenset()  # the splits the data assigns itself ("val", "test")

    def add(self, paths: Iterable[Path], label: str, split: str | None) -> None:
        paths = list(paths)
        self.files += [(path, label, split) for path in paths]
        self.listed[label] += len(paths)


def image_files(items: Iterable[str | Path]) -> list[Path]:
    """The image files among ``items``: files as given, folders searched recursively for
    image names (hidden files and folders inside them skipped), in order.

    Raises:
        HeadstartError: an item that does not exist, or no image at all.
    """
    items, found = list(items), []
    for item in map(Path, items):
        if item.is_dir():
            found += sorted(
                p
                for p in item.rglob("*")
                if _is_image_name(p)
                and not any(_hidden(part) for part in p.relative_to(item).parts)
            )
        elif item.exists():
            found.append(item)
        else:
            raise HeadstartError(f"{item}: no such file or folder")
    if not found:
        raise HeadstartError(f"no images found in {', '.join(map(str, items))}")
    return found


def _read_class_folders(root: Path) -> _Found:
    found = _Found("class-folders", root, f"the sub-folders of {root} (one per class)")
    children = list(_visible_children(root))
    for folder in (child for child in children if child.is_dir()):
        images = _images_under(folder, found.skipped)
        if images:
            found.add(images, folder.name, None)
        else:
            found.empty.append(folder)
    loose = [child for child in children if child.is_file() and _is_image_name(child)]
    if loose and not found.listed:
        raise HeadstartError(
            f"{root} holds {len(loose)} images but no class folder with images: put each "
            "class's images in a sub-folder named after the class"
        )
    if loose:
        found.warnings.append(
            f"{len(loose)} images directly in {root} are ignored: an image's class is the "
            "name of the sub-folder it is in"
        )
    return found


def _read_split_folders(root: Path) -> _Found | None:
    """The split-folders layout, or None when ``root`` has no train folder of class folders.

    A folder named "train" that holds no sub-folders, or that sits alone among other folders,
    is taken for a class (trains, buses, cars) rather than a split.
    """
    by_split: dict[str, Path] = {}
    others = []
    for child in (child for child in _visible_children(root) if child.is_dir()):
        split = next(
            (s for s, names in _SPLIT_FOLDERS.items() if child.name.lower() in names), None
        )
        if split is None:
            others.append(child)
        elif split in by_split:
            raise HeadstartError(
                f"{root} has both {by_split[split].name}/ and {child.name}/ for the {split} "
                "split: keep one"
            )
        else:
            by_split[split] = child
    if "train" not in by_split:
        return None
    train = by_split["train"]
    if not any(child.is_dir() for child in _visible_children(train)) or (
        others and by_split.keys() == {"train"}
    ):
        return None  # "train" is a class here, next to "bus" and "car", say
    found = _Found(
        "split-folders",
        train,
        f"the class folders inside {', '.join(str(by_split[s]) for s in SPLITS if s in by_split)}",
        given=frozenset(by_split) - {"train"},
    )
    found.warnings += [
        f"folder {other} is ignored: next to {train.name}/ only val/ (or valid/, validation/) "
        "and test/ are read"
        for other in others
    ]
    for split in (s for s in SPLITS if s in by_split):
        for folder in (p for p in _visible_children(by_split[split]) if p.is_dir()):
            images = _images_under(folder, found.skipped)
            if split == "train" and not images:
                found.empty.append(folder)
            elif split == "train":
                # Left unassigned: a val or test split missing as a folder is carved from them.
                found.add(images, folder.name, None)
            elif images and not found.listed[folder.name]:
                raise HeadstartError(
                    f"class '{folder.name}' is in {by_split[split]} but has no images in "
                    f"{train}: every class needs training images"
                )
            else:
                found.add(images, folder.name, split)
    return found


def _read_csv(csv_path: Path) -> _Found:
    found = _Found("csv", csv_path, f"the rows of {csv_path}")
    base = csv_path.parent
    first_line: dict[Path, int] = {}
    try:
        # -sig: Excel's BOM; surrogateescape: file names that are not UTF-8 (POSIX allows any
        # bytes) read back as the same names, as headstart writes them.
        with open(csv_path, newline="", encoding="utf-8-sig", errors="surrogateescape") as file:
            reader = csv.DictReader(file)
            columns = {name.strip().lower(): name for name in reader.fieldnames or [] if name}
            if not {"path", "label"} <= columns.keys():
                raise HeadstartError(
                    f"{csv_path} needs a header line with columns path,label[,split]; "
                    f"its first line is: {','.join(reader.fieldnames or []) or '(empty)'}"
                )
            for row in reader:
                line = reader.line_num
                value = {key: (row.get(name) or "").strip() for key, name in columns.items()}
                if not any(value.values()):
                    continue  # a blank line
                for column in ("path", "label"):
                    if not value[column]:
                        raise HeadstartError(f"{csv_path}, line {line}: the {column} is empty")
                split = value.get("split", "").lower() or None
                if split is not None and split not in SPLITS:
                    raise HeadstartError(
                        f"{csv_path}, line {line}: split {value['split']!r} is not one of "
                        f"{', '.join(SPLITS)} (leave it empty to have the row split here)"
                    )
                path = absolute_path(base / Path(value["path"]).expanduser())
                if path in first_line:
                    raise HeadstartError(
                        f"{csv_path}, line {line}: {value['path']} is listed again "
                        f"(first on line {first_line[path]})"
                    )
                first_line[path] = line
                if split is not None:
                    found.given |= {split} - {"train"}
                if path.is_file():
                    found.add([path], value["label"], split)
                else:
                    found.listed[value["label"]] += 1
                    found.skipped.append(Skipped(path, "file not found"))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise HeadstartError(f"cannot read {csv_path} as a CSV file: {error}") from None
    if not found.files and not found.skipped:
        raise HeadstartError(f"no images found: {csv_path} has a header but no rows")
    if not found.files:
        raise HeadstartError(
            f"none of the {len(found.skipped)} files listed in {csv_path} exist, e.g. "
            f"{found.skipped[0].path} (relative paths are read from {base})"
        )
    return found


# --- From files to classes and splits -------------------------------------------------------


def _choose_classes(
    found: _Found, files: list[tuple[Path, str, str | None]], training: bool
) -> tuple[list[str], list[str]]:
    """The classes with usable images; the others are left out with a warning. Data to train
    on needs two at least."""
    usable = Counter(label for _, label, _ in files)
    warnings = [
        f"class '{folder.name}' is left out: {folder} has no images" for folder in found.empty
    ]
    warnings += [
        f"class '{label}' is left out: none of its {n} files can be read"
        for label, n in sorted(found.listed.items())
        if not usable[label]
    ]
    classes = sorted(usable)
    if len(classes) < 2 and training:
        how = "two labels" if found.layout == "csv" else "one sub-folder each"
        raise HeadstartError(
            f"found only one class '{classes[0]}' in {found.where}: a classifier needs at "
            f"least two classes, {how}"
        )
    return classes, warnings


def _assign_splits(
    files: list[tuple[Path, str, str | None]],
    classes: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[Sample], list[str]]:
    """Samples with a split each: given splits kept, the rest split per class at random."""
    samples = [Sample(path, label, split) for path, label, split in files if split is not None]
    warnings = []
    for label in classes:
        paths = sorted((p for p, lab, split in files if lab == label and split is None), key=str)
        if not paths:
            continue
        # A string seed is hashed with SHA-512: stable across runs and Python versions, unlike
        # hash(). One generator per class: adding a class leaves the others' splits alone.
        random.Random(f"{seed}/{label}").shuffle(paths)
        n_val, n_test = split_sizes(len(paths), val_fraction, test_fraction)
        splits = ["val"] * n_val + ["test"] * n_test
        splits += ["train"] * (len(paths) - len(splits))
        samples += [Sample(p, label, s) for p, s in zip(paths, splits, strict=True)]
        images = f"{len(paths)} image{'s' if len(paths) != 1 else ''}"
        if val_fraction > 0 and n_val == 0:
            warnings.append(f"class '{label}' has {images}: none left for validation")
        if test_fraction > 0 and n_test == 0:
            warnings.append(f"class '{label}' has {images}: none left for testing")
    order = {label: i for i, label in enumerate(classes)}
    samples.sort(key=lambda s: (SPLITS.index(s.split), order[s.label], str(s.path)))
    return samples, warnings


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a class's ``n`` images go to val and to test; one at least stays in train."""
    n_val, n_test = int(n * val_fraction + 0.5), int(n * test_fraction + 0.5)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    while n_val + n_test > n - 1:  # rounding up took the last training image
        if n_test >= n_val:  # validation is the more needed of the two
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


# --- Files on disk ------------------------------------------------------------------------


def unreadable_images(paths: list[Path]) -> list[Skipped]:
    """The files among ``paths`` that fail :func:`probe_image` (read from their headers, in
    threads), in the order given."""

    def probe(path: Path) -> Skipped | None:
        try:
            probe_image(path)
        except UnreadableImage as error:
            return Skipped(path, error.reason)
        return None

    # Header reads are mostly waiting on the disk (or a network share): threads overlap it.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="headstart-probe") as pool:
        return [item for item in pool.map(probe, paths) if item is not None]


def _images_under(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """Image files at any depth in ``folder``, hidden ones left out, sorted by path."""

    def unlistable(error: OSError) -> None:
        skipped.append(Skipped(Path(error.filename), f"cannot list folder ({error.strerror})"))

    found = []
    for top, dirs, files in os.walk(folder, onerror=unlistable):
        dirs[:] = [d for d in dirs if not _hidden(d)]  # pruned in place: os.walk skips them
        visible = [name for name in files if not _hidden(name)]
        found += [Path(top, name) for name in visible if _is_image_name(name)]
        skipped += [
            Skipped(Path(top, name), UNSUPPORTED_IMAGES[os.path.splitext(name)[1].lower()])
            for name in visible
            if os.path.splitext(name)[1].lower() in UNSUPPORTED_IMAGES
        ]
    return sorted(found, key=str)


def _visible_children(folder: Path) -> Iterator[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError as error:
        raise HeadstartError(f"cannot list {folder}: {error.strerror or error}") from None
    return (child for child in children if not _hidden(child.name))


def _hidden(name: str) -> bool:
    # "__MACOSX" holds the resource forks macOS adds to zip files: never images, never a class.
    return name.startswith(".") or name == "__MACOSX"


def _is_image_name(name: str | Path) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def absolute_path(path: str | Path) -> Path:
    # Absolute without resolving symbolic links, so paths read as the user wrote them.
    return Path(os.path.abspath(Path(path).expanduser()))


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuse shares held out that are not numbers in [0, 1), or that leave nothing to train on."""
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise HeadstartError(
            f"val_fraction + test_fraction = {val_fraction} + {test_fraction} leaves no images "
            "for training; their sum must be below 1"
        )


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise HeadstartError(
            f"{name}={value!r} is not allowed: it must be a number from 0 up to (not "
            "including) 1, the share of each class held out"
        )
