"""Finding labelled texts on disk: which text, which class, which split.

Two kinds of source are read::

    reviews.csv | .tsv | .jsonl      a table: one row a text, with a text and a label column
                                     (detected from their names, or given), and a split
                                     column where the data gives its own split
    tickets/billing/*.txt, ...       class folders of text files, one text a file (and
                                     tickets/train/<class>/..., as for photos)

Rows and files that hold no usable text (empty, binary, not UTF-8, no label) are set aside
with the reason, as unreadable photos are. The held-out rows are chosen per class from the
seed and the texts themselves (not their order in the file), and copies of one text (after
normalisation: case, spacing, punctuation) stay on one side of the split, so that validation
never scores a text the model trained on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..data.sources import SPLITS, Skipped, Splits, split_sizes
from ..errors import HeadstartError

__all__ = [
    "TEXT_FILES",
    "TextDataset",
    "TextSample",
    "is_text_data",
    "labels_of",
    "normalised",
    "read_texts",
    "text_key",
    "texts_to_predict",
]

#: The table formats read, by suffix: CSV, TSV and JSON Lines.
TEXT_FILES = (".csv", ".tsv", ".jsonl")
#: Column names taken for the text and the label when they are not given (in lower case,
#: the first present wins).
_TEXT_NAMES = ("text", "sentence", "review", "content", "body", "message", "document", "question")
_LABEL_NAMES = ("label", "labels", "class", "category", "target", "topic", "intent", "sentiment")
_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_SNIFF = 8192  # bytes read to tell a binary file from text


@dataclass(frozen=True)
class TextSample:
    """One labelled text, and where it came from (``reviews.csv:12`` or a file's path)."""

    text: str
    label: str
    split: str  # one of SPLITS
    where: str


@dataclass(frozen=True)
class TextDataset(Splits):
    """Labelled texts as found: what :func:`read_texts` returns. ``classes`` is sorted, so that
    the same data always gives the same class indices."""

    root: Path
    layout: str  # "table" | "class-folders" | "split-folders"
    classes: tuple[str, ...]
    samples: tuple[TextSample, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)  # role -> the table's column

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "modality": "text",
            "columns": self.columns,
            "classes": list(self.classes),
            "counts": self.counts(),
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
            "warnings": list(self.warnings),
        }


def is_text_data(source: str | Path) -> bool:
    """Whether ``source`` holds texts rather than images: a TSV or JSON Lines file, a CSV
    without a ``path`` column, or a folder whose files are ``.txt`` files."""
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix in (".tsv", ".jsonl"):
            return True
        if suffix == ".csv":
            return "path" not in (name.lower() for name in _header(path, ","))
        return False
    if path.is_dir():
        from ..data.images import IMAGE_EXTENSIONS

        texts = False
        for file in path.rglob("*"):
            if any(part.startswith(".") for part in file.relative_to(path).parts):
                continue
            suffix = file.suffix.lower()
            if suffix in IMAGE_EXTENSIONS:
                return False  # a folder of photos (a stray note among them changes nothing)
            texts = texts or suffix == ".txt"
        return texts
    return False


def read_texts(
    source: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    training: bool = True,
) -> TextDataset:
    """The labelled texts in ``source`` (see the module's docstring), each with its split.

    Splits the data gives (a ``split`` column, or train/val/test folders) are kept; the other
    texts are split here, ``val_fraction`` and ``test_fraction`` of each class, as photos are.
    ``training``: the data is to train on (two classes at least, each with training texts);
    False for data only scored.

    Raises:
        HeadstartError: a missing source, a file that is not text, a missing column, no
            usable text, or fewer than two classes.
    """
    if val_fraction + test_fraction >= 1:
        raise HeadstartError(
            f"val_fraction + test_fraction = {val_fraction} + {test_fraction} leaves no texts "
            "for training; their sum must be below 1"
        )
    root = Path(source).expanduser().resolve()
    if not root.exists():
        raise HeadstartError(f"{root} does not exist")
    if root.is_file():
        if root.suffix.lower() not in TEXT_FILES:
            raise HeadstartError(
                f"{root}: texts are read from {', '.join(TEXT_FILES)} files or from folders "
                "of .txt files (one folder per class)"
            )
        found = _read_table(root, text_column, label_column)
    else:
        if text_column or label_column:
            raise HeadstartError(
                f"{root} is a folder: --text-column and --label-column name a table's columns"
            )
        found = _read_folders(root)
    if not found.rows:
        reasons = Counter(item.reason.split(": ")[-1] for item in found.skipped)
        why = f" ({', '.join(f'{n} {r}' for r, n in reasons.most_common(3))})" if reasons else ""
        raise HeadstartError(f"no usable text found in {root}{why}")
    classes = sorted({label for _, label, _, _ in found.rows})
    if training and len(classes) < 2:
        raise HeadstartError(
            f"found only one class {classes[0]!r} in {root}: a classifier needs at least two"
        )
    if "val" in found.given:
        val_fraction = 0.0
    if "test" in found.given:
        test_fraction = 0.0
    samples, warnings = _assign_splits(found.rows, classes, val_fraction, test_fraction, seed)
    per_split = Counter((s.split, s.label) for s in samples)
    for label in classes:
        if training and not per_split["train", label]:
            raise HeadstartError(
                f"class {label!r} in {root} has texts only in held-out splits: every class "
                "needs training texts"
            )
    return TextDataset(
        root=root,
        layout=found.layout,
        classes=tuple(classes),
        samples=tuple(samples),
        skipped=tuple(found.skipped),
        warnings=tuple(found.warnings + warnings),
        columns=found.columns,
    )


def normalised(text: str) -> str:
    """The text as compared for copies: Unicode-folded, lower case, punctuation dropped,
    spacing collapsed ("Sorry, I'll call later" and "sorry ill call later!" are one)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", "", folded).split())


def text_key(text: str) -> str:
    """The cache key of a text: its SHA-256, so that an edited text is a new one."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- Reading ------------------------------------------------------------------------------


@dataclass
class _Found:
    layout: str
    rows: list[tuple[str, str, str, str | None]] = field(default_factory=list)  # text, label,
    skipped: list[Skipped] = field(default_factory=list)  # where, split or None
    warnings: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    given: frozenset[str] = frozenset()


def _read_table(path: Path, text_column: str | None, label_column: str | None) -> _Found:
    content = _text_of(path)
    if content is None or isinstance(content, Skipped):
        reason = content.reason if content else "empty file"
        raise HeadstartError(f"{path}: {reason}")
    records, names = _records(path, content)
    columns = _columns(path, names, text_column, label_column)
    found = _Found("table", columns=columns)
    for line, record in records:
        value = {role: _cell(record.get(name)) for role, name in columns.items()}
        where = f"{path.name}:{line}"
        if not value["text"]:
            found.skipped.append(Skipped(Path(where), "empty text"))
            continue
        if not value["label"]:
            found.skipped.append(Skipped(Path(where), "no label"))
            continue
        split = value.get("split", "").lower() or None
        if split is not None and split not in SPLITS:
            raise HeadstartError(
                f"{path}, line {line}: split {value['split']!r} is not one of "
                f"{', '.join(SPLITS)} (leave it empty to have the row split here)"
            )
        if split is not None:
            found.given |= {split} - {"train"}
        found.rows.append((value["text"], value["label"], where, split))
    return found


def _records(path: Path, content: str) -> tuple[list[tuple[int, dict]], list[str]]:
    """The rows of a table's ``content`` with their line numbers, and its column names."""
    if path.suffix.lower() == ".jsonl":
        return _json_lines(path, content)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        reader = csv.DictReader(content.splitlines(), delimiter=delimiter)
        names = [name for name in reader.fieldnames or [] if name]
        return [(reader.line_num, row) for row in reader], names
    except csv.Error as error:
        raise HeadstartError(f"cannot read {path} as a table: {error}") from None


def _json_lines(path: Path, content: str) -> tuple[list[tuple[int, dict]], list[str]]:
    records, names = [], {}
    for line, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as error:
            raise HeadstartError(f"{path}, line {line}: not a JSON object ({error})") from None
        if not isinstance(record, dict):
            raise HeadstartError(f"{path}, line {line}: not a JSON object")
        records.append((line, record))
        names |= dict.fromkeys(record)
    return records, list(names)


def _columns(
    path: Path, names: list[str], text_column: str | None, label_column: str | None
) -> dict[str, str]:
    """role -> column: the ones given (which must exist), else found by name."""
    by_lower = {name.strip().lower(): name for name in names}
    listed = ", ".join(names) or "(none)"
    columns = {}
    for role, given, known, flag in (
        ("text", text_column, _TEXT_NAMES, "--text-column"),
        ("label", label_column, _LABEL_NAMES, "--label-column"),
    ):
        if given is not None:
            if given not in names and given.lower() not in by_lower:
                raise HeadstartError(
                    f"{path} has no column {given!r} ({flag}); its columns: {listed}"
                )
            columns[role] = given if given in names else by_lower[given.lower()]
        else:
            match = next((by_lower[n] for n in known if n in by_lower), None)
            if match is None:
                raise HeadstartError(
                    f"{path}: no {role} column found among {listed}; name it with {flag}"
                )
            columns[role] = match
    if columns["text"] == columns["label"]:
        raise HeadstartError(f"{path}: the text and the label are both column {columns['text']!r}")
    if "split" in by_lower and by_lower["split"] not in columns.values():
        columns["split"] = by_lower["split"]
    return columns


def _cell(value: object) -> str:
    """A table cell as text: strings stripped, JSON numbers and lists written out."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _read_folders(root: Path) -> _Found:
    children = [c for c in sorted(root.iterdir()) if not c.name.startswith(".")]
    splits = {
        split: next((c for c in children if c.is_dir() and c.name.lower() in names), None)
        for split, names in _SPLIT_FOLDERS.items()
    }
    if splits["train"] is not None:
        found = _Found("split-folders")
        for split, folder in splits.items():
            if folder is not None:
                _read_class_folders(folder, split, found)
                found.given |= {split} - {"train"}
        return found
    found = _Found("class-folders")
    _read_class_folders(root, None, found)
    return found


def _read_class_folders(root: Path, split: str | None, found: _Found) -> None:
    for folder in (c for c in sorted(root.iterdir()) if c.is_dir() and not c.name.startswith(".")):
        for file in sorted(folder.rglob("*.txt")):
            if any(part.startswith(".") for part in file.relative_to(folder).parts):
                continue
            content = _text_of(file)
            if content is None:
                found.skipped.append(Skipped(file, "empty text"))
            elif isinstance(content, Skipped):
                found.skipped.append(content)
            else:
                found.rows.append((content.strip(), folder.name, str(file), split))


def _text_of(path: Path) -> str | Skipped | None:
    """The file's text (UTF-8, a byte-order mark allowed); a Skipped that says why it is not
    text; None when it holds nothing but spacing."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return Skipped(path, f"cannot be read ({error.strerror or error})")
    if b"\x00" in data[:_SNIFF]:
        return Skipped(path, "a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return Skipped(
            path,
            f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8",
        )
    return text if text.strip() else None


def _assign_splits(
    rows: list[tuple[str, str, str, str | None]],
    classes: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[TextSample], list[str]]:
    """Samples with a split each: given splits kept, the rest split per class at random,
    copies of a text (once normalised) always together."""
    samples = [TextSample(t, label, split, where) for t, label, where, split in rows if split]
    warnings = []
    for label in classes:
        groups: dict[str, list[tuple[str, str]]] = {}
        for text, lab, where, split in rows:
            if lab == label and split is None:
                groups.setdefault(normalised(text) or text, []).append((text, where))
        if not groups:
            continue
        order = sorted(groups, key=text_key)  # the texts decide, not the file's order
        random.Random(f"{seed}/{label}").shuffle(order)
        n_val, n_test = split_sizes(len(order), val_fraction, test_fraction)
        chosen = ["val"] * n_val + ["test"] * n_test
        chosen += ["train"] * (len(order) - len(chosen))
        for key, split in zip(order, chosen, strict=True):
            samples += [TextSample(text, label, split, where) for text, where in groups[key]]
        if val_fraction > 0 and n_val == 0:
            warnings.append(
                f"class {label!r} has {len(order)} distinct text(s): none for validation"
            )
    index = {label: i for i, label in enumerate(classes)}
    position = {where: i for i, (_, _, where, _) in enumerate(rows)}  # the source's order
    samples.sort(key=lambda s: (SPLITS.index(s.split), index[s.label], position[s.where]))
    return samples, warnings


def _header(path: Path, delimiter: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as file:
            return next(csv.reader(file, delimiter=delimiter), [])
    except (OSError, csv.Error):
        return []


def labels_of(samples: Iterable[TextSample], classes: Iterable[str]) -> list[int]:
    index = {name: i for i, name in enumerate(classes)}
    return [index[sample.label] for sample in samples]


def texts_to_predict(
    items: Iterable[str], *, text_column: str | None = None, stdin=None
) -> list[tuple[str, str]]:
    """``(where, text)`` of every text in ``items``: ``-`` reads standard input and a ``.txt``
    file given by name, one text a line; a table (CSV, TSV, JSON Lines), its text column; a
    folder, each ``.txt`` file in it (at any depth) one text.

    Raises:
        HeadstartError: an item that does not exist or is not text, a table without a text
            column, or no text at all.
    """
    import sys

    found: list[tuple[str, str]] = []
    for item in items:
        path = Path(item).expanduser()
        if item == "-":
            lines = (stdin or sys.stdin).read().splitlines()
            found += [(f"stdin:{n}", t.strip()) for n, t in enumerate(lines, 1) if t.strip()]
        elif path.is_dir():
            for file in sorted(path.rglob("*.txt")):
                content = _text_of(file)
                if isinstance(content, str):
                    found.append((str(file), content.strip()))
        elif not path.is_file():
            raise HeadstartError(f"{item}: no such file or folder")
        elif path.suffix.lower() in TEXT_FILES:
            found += _table_texts(path, text_column)
        else:
            content = _text_of(path)
            if isinstance(content, Skipped):
                raise HeadstartError(f"{path}: {content.reason}")
            lines = (content or "").splitlines()
            found += [(f"{path.name}:{n}", t.strip()) for n, t in enumerate(lines, 1) if t.strip()]
    if not found:
        raise HeadstartError(f"no text found in {', '.join(items)}")
    return found


def _table_texts(path: Path, text_column: str | None) -> list[tuple[str, str]]:
    content = _text_of(path)
    if not isinstance(content, str):
        raise HeadstartError(f"{path}: {content.reason if content else 'empty file'}")
    records, names = _records(path, content)
    by_lower = {name.strip().lower(): name for name in names}
    if text_column is not None:
        column = text_column if text_column in names else by_lower.get(text_column.lower())
    else:
        column = next((by_lower[n] for n in _TEXT_NAMES if n in by_lower), None)
        if column is None and len(names) == 1:
            column = names[0]
    if column is None:
        raise HeadstartError(
            f"{path}: no text column found among {', '.join(names) or '(none)'}; name it "
            "with --text-column"
        )
    return [
        (f"{path.name}:{line}", _cell(record.get(column)))
        for line, record in records
        if _cell(record.get(column))
    ]
