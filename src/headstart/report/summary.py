"""The report's first sections: the result in one table, the plan and why, the audit of the
data, and the sanity checks run before training."""

from __future__ import annotations

from .._version import __version__
from ..checks.core import CheckReport
from ..runfolder import (
    AUDIT,
    AUDIT_JSON,
    CHECKS,
    CONFIG_JSON,
    DATASET,
    DIAGNOSIS,
    DUPLICATES_GRID,
    ENSEMBLE,
    LABEL_ISSUES_GRID,
    PLAN,
    SUMMARY,
)
from .folder import ReportedRun, duration, number, percent
from .html import (
    Cell,
    Html,
    badge,
    bullets,
    escape,
    figure,
    join,
    note,
    paragraph,
    table,
    tag,
)
from .images import fit_png

__all__ = ["audit", "checks", "headline", "plan"]

#: Class names listed in the headline; beyond this many, "and N more".
_NAMES = 12


def headline(run: ReportedRun) -> Html:
    config = run.json(CONFIG_JSON) or {}
    dataset = run.json(DATASET) or {}
    summary = run.json(SUMMARY) or {}
    plan = run.json(PLAN) or {}
    counts = dataset.get("counts") or {}
    sizes = ", ".join(
        f"{sum(counts[split].values()):,} {split}"
        for split in ("train", "val", "test")
        if counts.get(split) and sum(counts[split].values())
    )
    classes = run.classes
    shown = ", ".join(classes[:_NAMES]) + (
        f" and {len(classes) - _NAMES} more" if len(classes) > _NAMES else ""
    )
    rows: list[tuple[object, object]] = [
        ("data", f"{config.get('data', '–')} ({sizes or 'no counts recorded'})"),
        ("classes", f"{len(classes)}: {shown}"),
        ("strategy", _strategy(summary, plan, config)),
    ]
    for split, name in (("val", "validation"), ("test", "test")):
        scores = run.scores.get(split)
        if scores:
            rows.append(
                (
                    f"{name} accuracy",
                    f"{percent(scores['accuracy'])} of {scores['n']:,} images; balanced "
                    f"accuracy {percent(scores['balanced_accuracy'])}, macro-F1 "
                    f"{percent(scores['macro_f1'])}",
                )
            )
    rows += [
        ("time", duration(summary.get("seconds"))),
        ("stopped", summary.get("stopped", "–")),
        ("diagnosis", _verdict(run, summary)),
        ("sanity checks", checks_line(run.json(CHECKS))),
    ]
    if summary.get("skipped"):
        rows.append(
            ("skipped files", f"{summary['skipped']:,} unreadable (listed in dataset.json)")
        )
    return table(None, rows, class_="facts")


def _strategy(summary: dict, plan: dict, config: dict) -> str:
    strategy = summary.get("strategy") or plan.get("strategy") or "–"
    weights = "pretrained" if config.get("pretrained", True) else "random (from scratch)"
    return f"{strategy}, {config.get('arch', 'unknown architecture')} with {weights} weights"


def _verdict(run: ReportedRun, summary: dict) -> object:
    diagnosis = run.json(DIAGNOSIS) or summary.get("diagnosis")
    if not diagnosis:
        return "none: no fine-tuning, so no training curves to read"
    return join([tag("strong", diagnosis["verdict"]), " (see the training curves)"])


def checks_line(checks: dict | None) -> object:
    if checks is None:
        return "not recorded (no checks.json)"
    report = _check_report(checks)
    if report is None:
        return "checks.json cannot be read"
    # The words the console printed, from the same counts.
    return join([badge("pass" if report.passed else "fail"), f" {report.headline()}"])


def _check_report(checks: dict) -> CheckReport | None:
    try:
        return CheckReport.from_dict(checks)
    except (KeyError, TypeError, ValueError):  # written by another version, or damaged
        return None


def plan(run: ReportedRun) -> Html:
    plan = run.json(PLAN)
    if plan is None:
        return note("plan.json is missing: the run stopped before planning")
    parts = [
        paragraph(
            tag("strong", plan.get("strategy", "–")),
            f": a {plan.get('size', '?')} dataset, its domain {plan.get('domain', '?')} to the "
            "pretraining data. Why, in the order the plan decided:",
        ),
        bullets(plan.get("reasons") or []),
    ]
    evidence = plan.get("evidence") or {}
    if evidence:
        parts += [
            tag("h3", "The evidence"),
            table(
                ["measurement", "value"],
                [(name, _evidence(key, v)) for name, key, v in _flattened(evidence)],
                "lr",
            ),
        ]
    settings = plan.get("fine_tune")
    if settings:
        parts += [
            tag("h3", "Fine-tuning settings"),
            table(
                ["setting", "value"],
                [(name, _evidence(key, v)) for name, key, v in _flattened(settings)],
                "lr",
            ),
        ]
    summary = run.json(SUMMARY) or {}
    kept = (summary.get("kept") or {}).get("why")
    if kept:
        parts += [tag("h3", "The model kept"), paragraph(kept)]
    parts += _members(run.json(ENSEMBLE) or {}, summary)
    parts += _test_time(plan, summary.get("test_time"))
    return join(parts)


def _members(ensemble: dict, summary: dict) -> list:
    """Each member of an ensemble beside the ensemble, on validation and test."""
    members = ensemble.get("members") or []
    if not members:
        return []

    def accuracy(scores: dict, split: str) -> str:
        found = (scores or {}).get(split)
        return percent(found["accuracy"]) if found else "–"

    rows = [
        (f"member {i}", member["seed"], *(accuracy(member["scores"], s) for s in ("val", "test")))
        for i, member in enumerate(members, 1)
    ]
    scores = summary.get("scores") or {}
    rows.append(("the ensemble", "–", accuracy(scores, "val"), accuracy(scores, "test")))
    return [
        tag("h3", "The ensemble's members"),
        table(["model", "seed", "validation", "test"], rows, "lrrr"),
        note("the ensemble's scores are with its test-time crops and calibration"),
    ]


def _test_time(plan: dict, decided: dict | None) -> list:
    """What a prediction averages: the mirror image (the plan's call) and the crops
    (validation's), with each set of crops measured."""
    flip = "yes" if plan.get("test_time_flip") else "no"
    parts = [
        tag("h3", "Test-time augmentation"),
        note(f"predictions average the image and its mirror image: {flip}"),
    ]
    if not decided:
        return parts
    parts.append(paragraph(decided["why"]))
    measured = decided.get("measured") or {}
    if measured:
        rows = [
            (
                name,
                m["cost"],
                f"{m['z']:.2f}",
                f"+{m['fixed']} / -{m['broken']}",
                f"{m['nll']:.3f}",
                percent(m["accuracy"]),
            )
            for name, m in measured.items()
        ]
        header = ["crops", "cost", "z (loss gain)", "fixed / broken", "loss", "accuracy"]
        parts.append(table(header, rows, "lrrrrr"))
        parts.append(
            note(
                f"on {decided['images']} validation images, each set at its own fitted "
                "temperature, against the centre crop alone"
            )
        )
    return parts


def _evidence(key: str, value: object) -> object:
    """A measured value for the evidence table: numbers right-aligned, words left, wrapping."""
    if isinstance(value, float) and ("accuracy" in key or "skill" in key):
        return percent(value) if "accuracy" in key else f"{value:.2f}"
    if isinstance(value, str | list | tuple):
        return Cell(number(value), "text")
    return number(value)


#: Longest list the evidence table shows item by item; longer ones are counted.
_MOST_ITEMS = 8


def _flattened(values: dict, prefix: str = "") -> list[tuple[str, str, object]]:
    """``(shown name, key, value)`` rows of a nested mapping: ``domain gap · input size``."""
    rows: list[tuple[str, str, object]] = []
    for key, value in values.items():
        name = f"{prefix}{key.replace('_', ' ')}"
        if isinstance(value, dict):
            rows += _flattened(value, f"{name} · ")
        elif isinstance(value, list | tuple) and len(value) > _MOST_ITEMS:
            rows.append((name, key, f"{len(value)} values (see plan.json)"))
        else:
            rows.append((name, key, value))
    return rows


def audit(run: ReportedRun) -> Html:
    data = run.json(f"{AUDIT}/{AUDIT_JSON}")
    if data is None:
        return note("audit/audit.json is missing: this run was not audited")
    duplicates = data.get("duplicates") or {}
    balance = data.get("balance") or {}
    flagged = ((data.get("properties") or {}).get("flagged")) or {}
    issues = data.get("label_issues")
    rows = [
        ("images audited", number(data.get("images"))),
        ("unusable files", number((data.get("unusable") or {}).get("count"))),
        (
            "duplicate groups",
            f"{duplicates.get('groups', 0):,} ({duplicates.get('exact', 0):,} exact, "
            f"{duplicates.get('near', 0):,} near; {duplicates.get('files', 0):,} files)",
        ),
        ("groups leaking across splits", number(duplicates.get("leaks"))),
        ("groups with conflicting labels", number(duplicates.get("conflicting_labels"))),
        ("class imbalance (largest : smallest)", _ratio(balance.get("imbalance_ratio"))),
        _label_errors(issues),
    ]
    rows += [(f"odd images: {kind}", f"{len(found):,}") for kind, found in flagged.items()]
    parts = [table(["finding", "count"], rows, "lr")]
    remarks = [*(balance.get("advice") or []), *(data.get("warnings") or [])]
    remarks += data.get("notes") or []
    if remarks:
        parts.append(bullets(remarks))
    for file, caption in (
        (DUPLICATES_GRID, f"Duplicate groups, leaks first ({AUDIT}/{DUPLICATES_GRID})"),
        (
            LABEL_ISSUES_GRID,
            f"Labels most likely wrong, most likely first ({AUDIT}/{LABEL_ISSUES_GRID})",
        ),
    ):
        if run.exists(f"{AUDIT}/{file}"):
            pixels, cut = fit_png(run.audit / file)
            more = "; cut off at the bottom here, the file shows all" if cut else ""
            parts.append(figure(pixels, caption, caption + more))
    parts.append(note("contact sheets of every class: audit/contact-sheets/ in the run folder"))
    return join(parts)


def _label_errors(found: dict | None) -> tuple[str, object]:
    """The label check's row: cleanlab's estimate, and whether the probe behind it can be
    trusted (audits written before the estimate was recorded show the list's length)."""
    if found is None:
        return ("labels likely wrong", "not sought")
    if "estimated_count" not in found:
        return ("suspected label errors", number(found.get("count")))
    estimate = f"about {found['estimated_count']:,} (cleanlab's estimate)"
    verdict = badge("pass", "RELIABLE") if found.get("reliable") else badge("fail", "UNRELIABLE")
    return ("labels likely wrong", join([estimate, Html("<br>"), verdict, " ", found["why"]]))


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} : 1"


def checks(run: ReportedRun) -> Html:
    data = run.json(CHECKS)
    if data is None:
        return note("checks.json is missing: the sanity checks did not run in this fit")
    found = data.get("checks") or []
    report = _check_report(data)
    summary = report.headline() if report and found else ""
    rows = []
    for check in found:
        status = check.get("status", "info")
        finding = [tag("strong", check.get("title") or check.get("name", "")), Html("<br>")]
        finding.append(check.get("summary", ""))
        if status == "fail" and check.get("advice"):
            finding += [Html("<br>"), tag("em", "what to do: "), check["advice"]]
        measured = join(
            tag("span", f"{key} = {number(value)}", class_="measure")
            for key, value in (check.get("measured") or {}).items()
        )
        rows.append((badge(status), join(finding), measured))
    return join(
        [
            paragraph(
                f"{len(found)} checks in {duration(data.get('seconds'))}: {summary or 'none'}."
            ),
            table(["status", "check", "measured"], rows, "lll"),
        ]
    )


def subtitle(run: ReportedRun, built: str) -> Html:
    return escape(
        f"run folder {run.path.resolve()} · report built {built} by headstart {__version__}"
    )
