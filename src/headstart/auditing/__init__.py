"""``headstart audit``: become one with the data before any training.

What an expert looks for in the first hour, found in seconds after feature extraction:
unusable files (with their cause), exact and near duplicates (flagged where they leak across
splits or disagree on the label), class balance, image sizes and modes, blank images and
outliers, and how many labels are likely wrong (and whether the features are good enough
to tell), as counts, file lists, image grids and ``audit.json``.

>>> import headstart
>>> report = headstart.audit("photos/")              # doctest: +SKIP
>>> report.leaks                                     # doctest: +SKIP
>>> report.write("runs/audit-photos")                # doctest: +SKIP
>>> report.write_split("split.csv")                  # doctest: +SKIP
"""

from .core import audit_dataset
from .duplicates import DuplicateGroup
from .labels import LabelCheck, LabelIssue
from .report import AuditReport, check_leakage, print_summary

__all__ = [
    "AuditReport",
    "DuplicateGroup",
    "LabelCheck",
    "LabelIssue",
    "audit_dataset",
    "check_leakage",
    "print_summary",
]
