"""The audit's result: one object, its JSON form, its image grids, and its summary."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ..console import out
from ..data.decoded import DecodedImages
from ..data.sources import Dataset, Sample, Skipped
from ..errors import HeadstartError
from ..runfolder import AUDIT_JSON, CONTACT_SHEETS, DUPLICATES_GRID, LABEL_ISSUES_GRID
from ..storage import write_atomically, write_png
from . import duplicates as _duplicates
from .balance import Balance
from .duplicates import DuplicateGroup
from .files import causes
from .labels import LabelCheck, LabelIssue
from .properties import Properties
from .split import fixed_split, write_split
from .views import Section, Tile, render

__all__ = ["AuditReport", "check_leakage", "print_summary"]

#: Most images on one class's contact sheet (evenly spaced through the class).
CONTACT_SHEET_IMAGES = 120
#: Most duplicate groups and label issues drawn; audit.json lists them all.
MOST_DRAWN = 60


@dataclass
class AuditReport:
    """Everything the audit found. ``to_dict()`` is the content of ``audit.json``."""

    dataset: Dataset  # the readable samples, as audited
    unusable: list[Skipped]
    duplicates: list[DuplicateGroup]  # leaks first, then conflicting labels, then by size
    balance: Balance
    properties: Properties
    label_check: LabelCheck | None  # None: labels not checked (see notes)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    keys: dict[Sample, str] = field(default_factory=dict, repr=False)  # content hashes
    images: DecodedImages | None = field(default=None, repr=False)  # pixels for the grids

    @property
    def label_issues(self) -> list[LabelIssue] | None:
        """The images whose label is most likely wrong, most likely first, as many as cleanlab
        estimates are wrong; None when labels were not checked."""
        return None if self.label_check is None else self.label_check.issues

    @property
    def leaks(self) -> list[DuplicateGroup]:
        """Duplicate groups with a copy in train and another, with the same label, in val or
        test (see :attr:`DuplicateGroup.leaks`)."""
        return [group for group in self.duplicates if group.leaks]

    def fixed_split(self) -> list[Sample]:
        """The samples re-split so that no duplicate group spans splits; see :mod:`.split`."""
        return fixed_split(self.dataset, self.duplicates, self.keys)

    def write_split(self, path: str | Path) -> Path:
        """Write :meth:`fixed_split` as a ``path,label,split`` CSV that ``fit`` reads."""
        return write_split(self.fixed_split(), path)

    def counts(self) -> dict:
        """The findings in numbers: what a run's summary keeps of the audit."""
        groups, check = self.duplicates, self.label_check
        return {
            "unusable": len(self.unusable),
            "duplicate_groups": len(groups),
            "leaks": len(self.leaks),
            "conflicting_labels": sum(g.conflicting_labels for g in groups),
            "imbalance_ratio": self.balance.ratio,
            "flagged": {kind: len(found) for kind, found in self.properties.flagged.items()},
            "label_issues": None if check is None else check.estimated,
            "label_issues_reliable": None if check is None else check.reliable,
            "probe_accuracy": None if check is None else round(check.probe_accuracy, 4),
        }

    def headline(self) -> str:
        """The findings in one line, for the log of a fit."""
        groups = self.duplicates
        parts = [
            f"{len(self.unusable)} unusable files",
            f"{len(groups)} duplicate groups ({len(self.leaks)} leak across splits)",
            f"imbalance {self.balance.ratio:.1f}:1",
        ]
        flagged = [f"{len(f)} {kind}" for kind, f in self.properties.flagged.items() if f]
        if flagged:
            parts.append("odd images: " + ", ".join(flagged))
        if self.label_check is not None:
            parts.append(self.label_check.headline())
        return "; ".join(parts)

    def to_dict(self) -> dict:
        groups = self.duplicates
        return {
            "data": str(self.dataset.root),
            "layout": self.dataset.layout,
            "classes": list(self.dataset.classes),
            "images": len(self.dataset.samples),
            "unusable": {
                "count": len(self.unusable),
                "causes": causes(self.unusable),
                "files": [{"path": str(s.path), "reason": s.reason} for s in self.unusable],
            },
            "duplicates": {
                "groups": len(groups),
                "exact": sum(g.kind == "exact" for g in groups),
                "near": sum(g.kind == "near" for g in groups),
                "files": sum(len(g.samples) for g in groups),
                "leaks": len(self.leaks),
                "conflicting_labels": sum(g.conflicting_labels for g in groups),
                "thresholds": {
                    "hash_distance": _duplicates.HASH_DISTANCE,
                    "feature_similarity": _duplicates.FEATURE_SIMILARITY,
                    "max_zoom": _duplicates.MAX_ZOOM,
                    "region_difference": _duplicates.REGION_DIFFERENCE,
                },
                "list": [g.to_dict() for g in groups],
            },
            "balance": self.balance.to_dict(),
            "properties": self.properties.to_dict(),
            "label_issues": None if self.label_check is None else self.label_check.to_dict(),
            "warnings": list(self.dataset.warnings),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 2),
            "timings": {stage: round(t, 2) for stage, t in self.timings.items()},
        }

    def write(self, folder: str | Path) -> Path:
        """Write ``audit.json`` and the image grids into ``folder`` (created if needed).

        ``contact-sheets/<class>.png``: up to CONTACT_SHEET_IMAGES images of each class;
        ``duplicates.png``: the groups, leaks first; ``label-issues.png``: the suspected label
        errors, most likely first. Grids need the pixels: without ``images`` only the JSON is
        written.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / AUDIT_JSON
        write_atomically(target, (json.dumps(_clean(self.to_dict()), indent=2) + "\n").encode())
        if self.images is None:
            return folder
        pixels = self.images.get

        sheets = folder / CONTACT_SHEETS
        sheets.mkdir(exist_ok=True)
        for name in self.dataset.classes:
            members = [s for s in self.dataset.samples if s.label == name]
            if not members:
                continue
            shown = _evenly(members, CONTACT_SHEET_IMAGES)
            title = f"class '{name}': {len(members)} images" + (
                "" if len(shown) == len(members) else f", {len(shown)} shown (evenly spaced)"
            )
            sections = [Section(f"in {s}", []) for s in ("train", "val", "test")]
            for sample in shown:
                section = sections[("train", "val", "test").index(sample.split)]
                section.tiles.append(Tile(sample.path))
            image = render(title, [s for s in sections if s.tiles], pixels, columns=12)
            write_png(image, sheets / f"{_file_name(name)}.png")

        if self.duplicates:
            sections = []
            for group in self.duplicates[:MOST_DRAWN]:
                problems = ["LEAK across splits"] if group.leaks else []
                if group.conflicting_labels:
                    problems.append("CONFLICTING LABELS")
                heading = f"{group.kind} ({', '.join(group.evidence)}): {len(group.samples)} files"
                sections.append(
                    Section(
                        " - ".join([heading, *problems]),
                        [
                            Tile(s.path, (f"{s.split} / {s.label}", s.path.name))
                            for s in group.samples[:10]
                        ],
                        warning=bool(problems),
                    )
                )
            title = f"{len(self.duplicates)} duplicate groups, {len(self.leaks)} leak across splits"
            write_png(render(title, sections, pixels), folder / DUPLICATES_GRID)

        check = self.label_check
        if check is not None and check.issues:
            tiles = [
                Tile(
                    issue.sample.path,
                    (
                        f"label: {issue.sample.label}",
                        f"-> {issue.suggested} {issue.suggested_probability:.0%}",
                        issue.sample.path.name,
                    ),
                )
                for issue in check.issues[:MOST_DRAWN]
            ]
            title = (
                f"about {check.estimated} labels may be wrong (cleanlab's estimate), most likely "
                "first (label: as given; ->: the cross-validated probe's best other class)"
            )
            heading = "" if check.reliable else f"UNRELIABLE: {check.why}"
            section = Section(heading, tiles, warning=not check.reliable)
            write_png(render(title, [section], pixels), folder / LABEL_ISSUES_GRID)
        return folder


def check_leakage(report: AuditReport) -> None:
    """Raise :class:`HeadstartError` if any duplicate group leaks: copies with one label in
    train and in val or test. Copies across splits that disagree on the label are no reason
    to refuse: they lower the held-out score instead of flattering it (the audit reports them
    as conflicting labels)."""
    leaks = report.leaks
    if not leaks:
        return
    examples = []
    for group in leaks[:2]:
        train, held_out = group.leaking_pair
        examples.append(f"{train.path} ({train.split}) = {held_out.path} ({held_out.split})")
    raise HeadstartError(
        f"{len(leaks)} group(s) of duplicate images span train and validation/test, which "
        f"flatters the held-out score, e.g. {'; '.join(examples)}: pass --allow-leakage to "
        f"train anyway, or `headstart audit {report.dataset.root} --fix-split split.csv` "
        "and fit split.csv"
    )


def print_summary(report: AuditReport, console: Console | None = None) -> None:
    """The findings as a person reads them: counts first, then the files involved."""
    console = console or out
    dataset = report.dataset
    console.print(
        f"[bold]audit[/] of {dataset.root} ({dataset.layout}, {len(dataset.classes)} classes, "
        f"{len(dataset.samples)} usable images) in {report.seconds:.0f} s",
        soft_wrap=True,
    )

    console.print()
    if report.unusable:
        by_cause = ", ".join(f"{cause} {n}" for cause, n in causes(report.unusable).items())
        console.print(f"[bold yellow]unusable files: {len(report.unusable)}[/] ({by_cause})")
        for item in report.unusable[:10]:
            console.print(f"  {item.path}: {item.reason}", soft_wrap=True)
        _more(console, len(report.unusable), 10)
    else:
        console.print("[green]unusable files: none[/]")

    console.print()
    groups = report.duplicates
    if groups:
        exact = sum(g.kind == "exact" for g in groups)
        conflicting = sum(g.conflicting_labels for g in groups)
        leaks = len(report.leaks)
        color = "red" if leaks or conflicting else "yellow"
        console.print(
            f"[bold {color}]duplicates: {len(groups)} groups[/] ({exact} exact, "
            f"{len(groups) - exact} near; {sum(len(g.samples) for g in groups)} files); "
            f"[{'red' if leaks else 'green'}]{leaks} leak across splits[/], "
            f"{conflicting} with conflicting labels"
        )
        table = Table("kind", "splits", "labels", "files", box=None, padding=(0, 1))
        for group in groups[:10]:
            names = [str(s.path) for s in group.samples]
            table.add_row(
                group.kind,
                ("[red]" if group.leaks else "") + "+".join(group.splits),
                ("[red]" if group.conflicting_labels else "") + ", ".join(group.labels),
                "\n".join(names[:3] + ([f"... {len(names) - 3} more"] if len(names) > 3 else [])),
            )
        console.print(table)
        _more(console, len(groups), 10)
    else:
        console.print("[green]duplicates: none[/]")

    console.print()
    balance = report.balance
    splits = [s for s in ("train", "val", "test") if any(balance.counts[s].values())]
    table = Table("class", *splits, title="images per class and split", title_justify="left")
    for name in dataset.classes:
        cells = []
        for split in splits:
            n = balance.counts[split][name]
            small = split == "val" and name in balance.too_small
            cells.append(f"[yellow]{n}[/]" if small else str(n))
        table.add_row(name, *cells)
    console.print(table)
    console.print(f"imbalance ratio (largest / smallest training class): {balance.ratio:.1f}")
    for advice in balance.advice:
        console.print(f"  - {advice}", soft_wrap=True)

    console.print()
    summary = report.properties.summary
    if summary.get("images"):
        width, height = summary["width"], summary["height"]
        console.print(
            f"[bold]images[/]: width {width['min']}..{width['max']} (median {width['median']}), "
            f"height {height['min']}..{height['max']} (median {height['median']}); "
            f"aspect {summary['aspect']['min']:.2f}..{summary['aspect']['max']:.2f}; "
            f"modes {', '.join(f'{m} {n}' for m, n in summary['modes'].items())}"
        )
        console.print(
            "  most common sizes: "
            + ", ".join(f"{size} ({n})" for size, n in summary["common_sizes"].items())
        )
    for kind, found in report.properties.flagged.items():
        if found:
            console.print(f"  [yellow]{kind}: {len(found)}[/]")
            for item in found[:3]:
                console.print(f"    {item.sample.path}: {item.note}", soft_wrap=True)
            _more(console, len(found), 3, indent="    ")

    console.print()
    _print_label_check(report.label_check, console)

    for note in [*dataset.warnings, *report.notes]:
        console.print(f"[yellow]note[/]: {note}", soft_wrap=True)


def _print_label_check(check: LabelCheck | None, console: Console) -> None:
    if check is None:
        console.print("label issues: not checked (see notes)")
        return
    color = "green" if check.reliable and not check.issues else "yellow"
    console.print(f"[bold {color}]label issues: {check.headline()}[/]", soft_wrap=True)
    if check.reliable and check.issues:
        console.print(
            f"  confident learning on a linear probe's predictions: {check.why}; the images "
            "most likely wrong first",
            soft_wrap=True,
        )
    elif not check.reliable:
        console.print(f"  {check.advice}", soft_wrap=True)
    if not check.issues:
        return
    table = Table("file", "split", "label", "suggested", box=None, padding=(0, 1))
    for issue in check.issues[:15]:
        table.add_row(
            str(issue.sample.path),
            issue.sample.split,
            f"{issue.sample.label} ({issue.given_probability:.0%})",
            f"{issue.suggested} ({issue.suggested_probability:.0%})",
        )
    console.print(table)
    _more(console, len(check.issues), 15)


def _more(console: Console, total: int, shown: int, indent: str = "  ") -> None:
    if total > shown:
        console.print(f"{indent}... and {total - shown} more (all in audit.json)")


def _evenly(items: list, most: int) -> list:
    if len(items) <= most:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, most).round()]


def _file_name(label: str) -> str:
    return re.sub(r"[^\w.-]+", "-", label).strip("-.") or "class"


def _clean(value):
    """JSON-safe: infinities and NaN as null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
