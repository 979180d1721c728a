"""A sanity check's result, and the set of them that a run keeps in ``checks.json``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..console import out
from ..storage import write_atomically

__all__ = ["STATUSES", "Check", "CheckReport"]

#: ``info``: a number to compare against (a dumb baseline), nothing to pass or fail.
STATUSES = ("pass", "fail", "skip", "info")


@dataclass(frozen=True)
class Check:
    """One check: what was measured, whether it is what a healthy setup gives, what to do."""

    name: str  # stable identifier, e.g. "initial-loss"
    title: str  # for people, e.g. "loss at initialisation"
    status: str  # one of STATUSES
    summary: str  # what was measured, in words, with the numbers
    advice: str = ""  # what to do about a failure; why a check was skipped
    measured: dict[str, float | int | str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}; expected one of {STATUSES}")

    def line(self) -> str:
        advice = f"; {self.advice}" if self.advice and self.status != "pass" else ""
        return f"{self.status}: {self.title}: {self.summary}{advice}"


@dataclass
class CheckReport:
    """The checks of one run, in the order they ran. ``to_dict()`` is ``checks.json``."""

    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    def extend(self, checks: Iterable[Check]) -> None:
        self.checks.extend(checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failed

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def headline(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        text = f"{counts['pass']} passed, {counts['fail']} failed"
        if counts["fail"]:
            text += f" ({', '.join(c.title for c in self.failed)})"
        if counts["skip"]:
            text += f", {counts['skip']} skipped"
        if counts["info"]:
            text += f", {counts['info']} for information"
        return text

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "seconds": self.seconds,
            "checks": [asdict(check) for check in self.checks],
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        write_atomically(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path

    @classmethod
    def read(cls, path: str | Path) -> CheckReport:
        """The report :meth:`write` wrote."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, data: dict) -> CheckReport:
        """The report :meth:`to_dict` gave."""
        return cls([Check(**check) for check in data["checks"]], seconds=data.get("seconds", 0.0))

    def print(self, console: Console = out) -> None:
        table = Table(
            "", "check", "measured", "what to do", title="sanity checks", title_justify="left"
        )
        colours = {"pass": "green", "fail": "bold red", "skip": "dim", "info": "cyan"}
        for check in self.checks:
            advice = check.advice if check.status in ("fail", "skip") else ""
            status = f"[{colours[check.status]}]{check.status}[/]"
            table.add_row(status, check.title, check.summary, advice)
        console.print(table)
