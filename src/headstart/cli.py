"""The ``headstart`` command line: ``fit``, ``distill``, ``tune``, ``audit``, ``check``,
``lr-find``, ``report``, ``push``, ``export``, ``serve``, ``predict``, ``evaluate``, ``models``,
``demo``.

Every setting of a fit is a flag built from the settings table (:mod:`headstart.config`), so
a flag, a ``FitConfig`` field and a YAML key always share a name, a type and a default.
Nothing heavy is imported until a command runs: ``headstart --help`` answers at once.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__
from .config import COMMANDS, GROUPS, RANK_IMAGES, Setting, default_of, settings_table

if TYPE_CHECKING:
    from .tasks.multilabel.model import MultiLabelModel
    from .tasks.regression.model import Regressor

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from rich.markup import escape

    from .console import err  # rich, like everything heavy, only once a command runs
    from .errors import HeadstartError

    try:
        return args.run(args) or 0
    except HeadstartError as error:
        err.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
        return 2
    except OSError as error:  # a full disk, a read-only folder, a folder under a file ...
        where = f": {error.filename}" if error.filename else ""
        err.print(f"[red]error:[/] {escape(f'{error.strerror or error}{where}')}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: cached pixels and features are kept; a fine-tuning goes "
            "on from its last epoch with `headstart fit --resume RUN`"
        )
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headstart",
        description="A strong classifier from a small labelled dataset, by transfer learning.",
    )
    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    fit = commands.add_parser(
        "fit",
        help="train a classifier on a folder of labelled images",
        description="Train a classifier: DATA is a folder with one "
        "sub-folder per class, a folder with train/ val/ (test/), or a "
        "CSV of path,label[,split].",
    )
    fit.add_argument("data", nargs="?", help="folder or CSV file (not with --resume)")
    fit.add_argument(
        "--resume",
        metavar="RUN",
        help="go on with an interrupted run from its last epoch (with --epochs N: train a "
        "finished run longer)",
    )
    _settings(fit, "fit")
    fit.set_defaults(run=_fit)

    distill = commands.add_parser(
        "distill",
        help="distil a finished run's model (an ensemble, say) into one smaller or faster network",
        description="Fit a student network on RUN's data and split, trained on the "
        "probabilities of RUN's model (its teacher) on every augmented batch in place of the "
        "labels; it ends with the two side by side: accuracy, parameters, size and latency. "
        "The student is a normal run folder (predict, export, serve, --resume).",
    )
    distill.add_argument("run_dir", metavar="RUN", help="the teacher: a finished run folder")
    distill.add_argument(
        "--student",
        metavar="ARCH",
        help="the student's architecture (a timm name; default: the teacher's own)",
    )
    _settings(distill, "distill", leave_out=("arch", "teacher"))
    distill.set_defaults(run=_distill)

    tune = commands.add_parser(
        "tune",
        help="search the fine-tuning settings with Optuna, then fit the best",
        description="The sanity checks, the learning-rate range test, a coarse round of short "
        "trials over wide ranges (poor ones pruned from their epoch curves), then a finer "
        "round around the best; the best trial is fitted as a normal run in the same folder, "
        "whose report shows the search. Settings given are the base every trial draws over, "
        "and are not searched; --time-budget bounds the search (the best's fit comes after).",
    )
    tune.add_argument("data", help="folder or CSV file, as for fit")
    tune.add_argument("--trials", type=int, default=12, help="trials in all (default 12)")
    tune.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage shared by several processes or machines, e.g. "
        "sqlite:///study.db or postgresql://... (default: study.db in the run folder)",
    )
    tune.add_argument("--study", metavar="NAME", help="the study's name in --storage")
    tune.add_argument(
        "--sampler", choices=("tpe", "random"), default="tpe", help="TPE, or random search"
    )
    _settings(tune, "tune")
    tune.set_defaults(run=_tune)

    preview = commands.add_parser(
        "augment-preview",
        help="a grid of the exact training tensors, augmented, before any training",
        description="Write a PNG grid of training images exactly as they enter the network "
        "(augmented, then de-normalised for display), so a person can check that no "
        "augmentation changes a label. Takes fit's data and augmentation options.",
    )
    preview.add_argument("data", help="folder or CSV file, as for fit")
    preview.add_argument("--out", default="augment-preview.png", help="PNG file to write")
    preview.add_argument("--images", type=int, default=32, help="how many (default 32)")
    _settings(preview, "augment-preview")
    preview.set_defaults(run=_augment_preview)

    audit = commands.add_parser(
        "audit",
        help="look at the data as an expert would, before any training",
        description="Find unusable files, duplicates (and leaks across splits), class "
        "imbalance, odd images and likely label errors in DATA (as for fit); write "
        "audit.json and image grids. Nothing in DATA is changed.",
    )
    audit.add_argument("data", help="folder or CSV file, as for fit")
    audit.add_argument(
        "--out", help="folder for audit.json and the grids (default: runs/audit-<data>-<n>)"
    )
    audit.add_argument(
        "--fix-split",
        metavar="CSV",
        help="write path,label,split with every duplicate group in one split; "
        "then `headstart fit CSV`",
    )
    _settings(audit, "audit")
    audit.set_defaults(run=_audit)

    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate range test: loss against learning rate, and a suggestion",
        description="Fine-tune on DATA (as for fit, from the probe-trained head) while the "
        "learning rate rises exponentially, one batch per step; plot the loss against it and "
        "suggest a learning rate, with the rule used. Writes lr_find.json and lr_find.png.",
    )
    lr_find.add_argument("data", help="folder or CSV file, as for fit")
    lr_find.add_argument("--steps", type=int, default=100, help="batches at most (default 100)")
    lr_find.add_argument("--out", help="folder for the files (default: runs/lr-find-<data>-<n>)")
    _settings(lr_find, "lr-find")
    lr_find.set_defaults(run=_lr_find)

    check = commands.add_parser(
        "check",
        help="the sanity checks fit runs before training, alone",
        description="Dumb baselines (majority class, a linear model on cached features, "
        "zeroed inputs), the loss at initialisation, and a few training steps on one batch "
        "(inputs normalised, pipeline agrees with the feature cache, the loss falls, one batch "
        "is memorised, trained parameters move and frozen ones do not). Exit status 1 when a "
        "check fails.",
    )
    check.add_argument("data", help="folder or CSV file, as for fit")
    check.add_argument("--out", help="also write checks.json into this folder")
    check.add_argument(
        "--steps", type=int, default=20, help="fine-tuning steps watched for a falling loss"
    )
    _settings(check, "check")
    check.set_defaults(run=_check)

    rank = commands.add_parser(
        "rank",
        help="rank candidate backbones for DATA before fine-tuning any",
        description="Put a sample of DATA's training images through each candidate network "
        "once and rank the candidates by LogME (the evidence that a linear model on their "
        "features explains the labels), with a cross-validated linear probe beside it; say "
        "which to fine-tune. The features land in fit's cache.",
    )
    rank.add_argument("data", help="folder or CSV file, as for fit")
    rank.add_argument(
        "--models",
        metavar="LIST",
        help="comma-separated candidates, [random:]ARCH[@SIZE] (default: --arch at the size "
        "its weights were trained at, at 3/4 and 1/2 of it, and randomly initialised)",
    )
    rank.add_argument(
        "--most-images",
        type=int,
        default=RANK_IMAGES,
        help=f"training images put through each candidate, at most (default {RANK_IMAGES})",
    )
    rank.add_argument("--out", help="also write ranking.json into this folder")
    _settings(rank, "rank")
    rank.set_defaults(run=_rank)

    report = commands.add_parser(
        "report",
        help="rebuild a run's report.html from its folder",
        description="Write RUN/report.html from the run folder alone: plan, audit, sanity "
        "checks, curves, confusion matrix, calibration, mistakes, filters. fit writes it too.",
    )
    report.add_argument("run_dir", metavar="RUN", help="a run folder (runs/<name>)")
    report.add_argument("--out", help="write the page here instead of RUN/report.html")
    report.set_defaults(run=_report)

    push = commands.add_parser(
        "push",
        help="upload a run's model bundle and its model card to the Hugging Face hub",
        description="Upload RUN's model/ folder (weights, headstart.json, the model card "
        "README.md) to the hub repository REPO_ID, created when absent. Needs a network and "
        "a token with write access (`hf auth login`, or HF_TOKEN).",
    )
    push.add_argument("run_dir", metavar="RUN", help="a run folder or its model/ folder")
    push.add_argument("repo_id", metavar="REPO_ID", help="user/name on the hub")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.set_defaults(run=_push)

    export = commands.add_parser(
        "export",
        help="a run's model as ONNX or TorchScript, checked against PyTorch",
        description="Write RUN's model as a bundle run by ONNX Runtime (no PyTorch needed to "
        "predict) or TorchScript: normalisation, the averaged views and the calibrated softmax "
        "inside the network, any batch size. A text model exports to ONNX: the encoder and "
        "head in the network, its tokenizer beside it (run by onnxruntime and tokenizers). "
        "Before it is kept, both predict the run's validation images or texts (or --images, "
        "--texts): the export fails beyond a difference of 1e-4 in probability. predict, "
        "evaluate, serve and headstart.load take the new folder.",
    )
    export.add_argument("run_dir", metavar="RUN", help="a run folder or its model/ folder")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("--out", help="the new bundle's folder (default: RUN/model-FORMAT)")
    export.add_argument(
        "--images",
        nargs="+",
        help="images or folders for the parity check (default: the run's validation images)",
    )
    export.add_argument(
        "--texts",
        nargs="+",
        metavar="FILE",
        help="a text model's parity check: text files (one text a line), tables or folders of "
        ".txt files, read as predict reads them (default: the run's validation texts)",
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="quantise the ONNX weights to 8 bits: about 3x smaller, its cost in accuracy measured "
        "and shown; on a CPU often slower than the float export (measure before you ship it)",
    )
    export.add_argument("--quiet", action="store_true", help="say nothing but the result")
    export.set_defaults(run=_export)

    serve = commands.add_parser(
        "serve",
        help="serve a model over HTTP: POST /predict, GET /health, GET /metadata",
        description="Serve RUN's model (or an exported bundle) with uvicorn until Ctrl-C or "
        "SIGTERM, answering the requests it holds before it exits. POST /predict takes an "
        "image's bytes as the body, or images as multipart files; for a text model, the body "
        'as one text, or JSON {"texts": [...]} with Content-Type: application/json (?top_k=3 '
        "for either); concurrent requests are predicted together. Bad input gets a 4xx and a "
        "message.",
    )
    serve.add_argument("run_dir", metavar="RUN", help="a run folder, a bundle or an export")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument(
        "--max-batch", type=int, default=32, help="images or texts per batch, at most"
    )
    serve.add_argument(
        "--max-body-mb", type=float, default=20, help="request size limit (default 20 MB)"
    )
    serve.add_argument(
        "--max-megapixels", type=float, default=40, help="image size limit (default 40)"
    )
    serve.add_argument(
        "--no-calibration", action="store_true", help="the network's own probabilities"
    )
    serve.set_defaults(run=_serve)

    predict = commands.add_parser("predict", help="label images (or texts) with a trained model")
    predict.add_argument("bundle", help="a run folder or its model/ folder")
    predict.add_argument(
        "inputs",
        nargs="*",
        help="image files or folders (searched recursively); for a text model, text files "
        "(.txt: one text a line), tables (their text column), folders of .txt files, or - "
        "(standard input, one text a line)",
    )
    predict.add_argument(
        "--text", action="append", default=[], help="a text to label (text models; repeatable)"
    )
    predict.add_argument("--text-column", help="the tables' text column (text models)")
    predict.add_argument("--top-k", type=int, default=1, help="labels per image (default 1)")
    predict.add_argument("--csv", action="store_true", help="write CSV to stdout, not a table")
    predict.add_argument(
        "--no-calibration",
        action="store_true",
        help="the network's own probabilities, without the bundle's temperature (fitted on "
        "validation by fit; the labels are the same)",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser("evaluate", help="score a trained model on labelled images")
    evaluate.add_argument("bundle", help="a run folder or its model/ folder")
    evaluate.add_argument("data", help="class folders, train/val/test folders, or a CSV")
    evaluate.add_argument(
        "--split",
        choices=("all", "train", "val", "test"),
        default=None,
        help="which images to score (default: the run's held-out images when DATA is what it "
        "was fitted on; else test/ if DATA has one, else all; images the run trained on are "
        "left out and counted)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    evaluate.set_defaults(run=_evaluate)

    models = commands.add_parser("models", help="list architectures and where weights are")
    models.add_argument("pattern", nargs="?", default=None, help="e.g. 'resnet*' or '*vit*'")
    models.add_argument(
        "--available", action="store_true", help="only those with weights on this machine"
    )
    models.add_argument("--all", action="store_true", help="every architecture timm knows")
    models.set_defaults(run=_models)

    demo = commands.add_parser("demo", help="the whole job on a built-in dataset, offline")
    demo.add_argument(
        "--dataset",
        choices=("lfw", "digits"),
        default="lfw",
        help="lfw: faces vs not (scikit-image); digits: 0-9 (scikit-learn)",
    )
    demo.add_argument("--no-scratch", action="store_true", help="skip the from-scratch comparison")
    demo.add_argument("--runs-dir", default="runs")
    demo.set_defaults(run=_demo)
    return parser


def _settings(
    parser: argparse.ArgumentParser, command: str, leave_out: tuple[str, ...] = ()
) -> None:
    """One flag per setting this command takes, from the settings table (its name, help,
    choices and default), grouped as the table groups them, but those in ``leave_out`` (the
    command says them otherwise); and ``--config YAML``.

    A flag that is not given is left out of the parsed arguments, so that a ``--config``
    file can supply the value and FitConfig holds every default.
    """
    table = settings_table()
    for group, title in GROUPS.items():
        if command not in COMMANDS[group]:
            continue
        section = parser.add_argument_group(title)
        for name, described in table.items():
            if described.group == group and name not in leave_out:
                _flag(section, name, described)
    parser.add_argument(
        "--config",
        metavar="YAML",
        default=argparse.SUPPRESS,
        help="settings from a YAML file (flags given here win)",
    )


def _flag(section: argparse._ArgumentGroup, name: str, described: Setting) -> None:
    option = "--" + name.replace("_", "-")
    common = {"dest": name, "default": argparse.SUPPRESS}
    default = default_of(name)
    if described.kind == "bool":
        if default:
            help_text = described.help.removeprefix("False: ")
            section.add_argument(
                f"--no-{option[2:]}", action="store_false", help=help_text, **common
            )
        else:
            section.add_argument(option, action="store_true", help=described.help, **common)
        return
    shown = f" (default {default})" if default not in (None, []) else ""
    help_text = described.help + shown
    if described.kind == "names":
        section.add_argument(
            option,
            action="append",
            choices=described.choices,
            metavar=described.metavar,
            help=f"{help_text}: {', '.join(described.choices)}" if described.choices else help_text,
            **common,
        )
        return
    kinds = {"int": int, "float": float, "str": str, "freeze": _stages_or_word}
    choices = [c for c in described.choices if c is not None] if described.choices else None
    section.add_argument(
        option,
        type=kinds[described.kind],
        choices=choices,
        metavar=described.metavar,
        help=help_text,
        **common,
    )


def _stages_or_word(text: str) -> int | str:
    """``--freeze 3`` is a number of stages; ``--freeze all`` a word."""
    return int(text) if text.isdigit() else text


def _config_from(args: argparse.Namespace, *command_only: str):
    """The FitConfig of a command line: the --config file, then the flags given."""
    from .config import FitConfig

    return FitConfig.of(**_settings_given(args, *command_only))


def _settings_given(args: argparse.Namespace, *command_only: str) -> dict:
    """The settings of a command line, by name: the --config file's, then the flags given
    (a flag left out is not in ``args``: its default is argparse.SUPPRESS)."""
    from .config import load_config

    settings = load_config(args.config) if getattr(args, "config", None) else {}
    ignored = {"data", "command", "run", "config", "resume", *command_only}
    return settings | {k: v for k, v in vars(args).items() if k not in ignored}


def _fit(args: argparse.Namespace) -> int:
    from .errors import HeadstartError
    from .from_runs import resume
    from .printing import print_fit_summary
    from .recipe import fit
    from .training import distributed

    if getattr(args, "resume", None):
        given = set(vars(args)) - {"command", "run", "resume", "data", "epochs", "quiet"}
        if args.data or given:
            raise HeadstartError(
                "--resume RUN takes the data and settings the run was started with; "
                f"only --epochs and --quiet may be given (got {', '.join(sorted(given)) or 'DATA'})"
            )
        result = resume(
            args.resume, epochs=getattr(args, "epochs", None), quiet=getattr(args, "quiet", False)
        )
    elif not args.data:
        raise HeadstartError("DATA is missing: `headstart fit DATA` (or --resume RUN)")
    else:
        result = fit(args.data, _config_from(args))
    if distributed.is_main():  # under torchrun, one summary
        print_fit_summary(result)
    return 0


def _distill(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import HeadstartError
    from .from_runs import distill
    from .printing import print_fit_summary

    settings = load_config(args.config) if getattr(args, "config", None) else {}
    if {"arch", "teacher"} & set(settings):
        raise HeadstartError(
            f"{args.config}: arch and teacher are distill's --student and RUN, not settings"
        )
    settings |= {
        k: v
        for k, v in vars(args).items()
        if k not in {"command", "run", "config", "run_dir", "student"}
    }
    print_fit_summary(distill(args.run_dir, args.student, **settings))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from .printing import print_fit_summary
    from .tuning import tune

    # The settings given, by name: those are not searched, even where given at their default.
    settings = _settings_given(args, "trials", "storage", "study", "sampler")
    found = tune(
        args.data,
        args.trials,
        storage=args.storage,
        study=args.study,
        sampler=args.sampler,
        **settings,
    )
    if found.fitted is not None:
        print_fit_summary(found.fitted)
    else:  # the result of this process: where its search's best was fitted
        from .console import out

        out.print(
            f"the best trial ({found.best_accuracy:.1%} on validation) is fitted in "
            f"{found.fitted_in}, by another process of the study; this one's search: "
            f"{found.run_dir}",
            soft_wrap=True,  # paths whole, as a script reads them
            markup=False,
        )
    return 0


def _augment_preview(args: argparse.Namespace) -> int:
    from .console import out
    from .preview import augment_preview

    path = augment_preview(args.data, _config_from(args, "out", "images"), args.out, args.images)
    out.print(f"wrote {path}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from .api import audit
    from .auditing import print_summary
    from .console import out
    from .errors import HeadstartError
    from .runfolder import AUDIT_JSON, new_folder
    from .text.data import is_text_data

    if args.fix_split and is_text_data(args.data):
        raise HeadstartError(
            "--fix-split is for photos: fit draws a split of texts with every copy on one side"
        )
    report = audit(args.data, _config_from(args, "out", "fix_split"))
    folder = Path(args.out) if args.out else new_folder("runs", f"audit-{Path(args.data).stem}")
    if is_text_data(args.data):
        path = report.write(folder)
        for line in report.findings() or ["nothing to report"]:
            out.print(f"- {line}", soft_wrap=True)
        out.print(f"\nwritten: {path}")
        return 0
    report.write(folder)
    print_summary(report)
    out.print(f"\nwritten: {folder / AUDIT_JSON}, and the image grids beside it")
    if args.fix_split:
        path = report.write_split(args.fix_split)
        out.print(
            f"split without leaks: {path} (every duplicate group in one split, identical "
            f"copies once); train on it with `headstart fit {path}`"
        )
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from .api import lr_find
    from .console import out
    from .runfolder import new_folder

    result = lr_find(args.data, _config_from(args, "steps", "out"), steps=args.steps)
    folder = Path(args.out) if args.out else new_folder("runs", f"lr-find-{Path(args.data).stem}")
    data, plot = result.save(folder)
    if result.suggestion is None:
        out.print(f"[yellow]{result.describe()}[/]", soft_wrap=True)
    else:
        out.print(
            f"[bold]suggested learning rate {result.suggestion:.2g}[/] (top stage; "
            f"`headstart fit --lr {result.suggestion:.2g}`)"
        )
        out.print(f"  rule: {result.rule}", soft_wrap=True)
        groups = ", ".join(f"{name} {lr:.2g}" for name, lr in result.group_lrs.items())
        out.print(f"  per parameter group: {groups}", soft_wrap=True)
    out.print(
        f"  {len(result.lrs)} steps from {result.start:g}, {result.stopped}, {result.seconds:.0f} s"
    )
    out.print(f"written: {data}, {plot}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .api import check
    from .console import out
    from .runfolder import CHECKS

    report = check(args.data, _config_from(args, "steps", "out"), steps=args.steps)
    report.print()
    out.print(f"{report.headline()} in {report.seconds:.0f} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        out.print(f"written: {report.write(Path(args.out) / CHECKS)}")
    return 0 if report.passed else 1


def _rank(args: argparse.Namespace) -> int:
    from .console import out
    from .ranking import rank

    models = [m for m in args.models.split(",") if m.strip()] if args.models else None
    config = _config_from(args, "models", "most_images", "out")
    ranking = rank(args.data, models, config, most_images=args.most_images)
    ranking.print()
    out.print(f"next: headstart fit {args.data} {' '.join(ranking.fit_flags())}", soft_wrap=True)
    if args.out:
        out.print(f"written: {ranking.write(args.out)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .console import out
    from .report import build_report

    out.print(f"written: {build_report(args.run_dir, args.out)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from .console import out
    from .publish import push

    out.print(f"pushed: {push(args.run_dir, args.repo_id, private=args.private)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .bundle import describe
    from .console import out
    from .exporting import export

    texts = args.texts  # an image model refuses them, before any is read
    if texts and describe(args.run_dir).modality == "text":
        from .text.data import texts_to_predict

        texts = [text for _, text in texts_to_predict(args.texts)]
    folder = export(
        args.run_dir,
        args.format,
        out=args.out,
        images=args.images,
        texts=texts,
        int8=args.int8,
        quiet=args.quiet,
    )
    out.print(f"written: {folder}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .errors import HeadstartError
    from .serve import Limits, serve

    if args.max_batch < 1 or not 0 < args.port < 65536:
        raise HeadstartError("--max-batch must be at least 1 and --port within 1..65535")
    limits = Limits(round(args.max_body_mb * 2**20), round(args.max_megapixels * 1e6))
    serve(
        args.run_dir,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        limits=limits,
        calibrated=not args.no_calibration,
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .console import err, out
    from .data.sources import image_files
    from .errors import HeadstartError
    from .loading import load

    model = load(args.bundle)
    if args.no_calibration:
        model.temperature = 1.0
    if getattr(model, "modality", "image") == "text":
        return _predict_texts(model, args)
    if args.text or args.text_column:
        raise HeadstartError("--text and --text-column are for text models; this one reads images")
    if not args.inputs:
        raise HeadstartError("no images given: `headstart predict RUN photos/ ...`")
    paths = image_files(args.inputs)
    if getattr(model, "task", "classification") == "regression":
        return _predict_numbers(model, paths, args)
    if getattr(model, "task", "classification") == "multi-label":
        return _predict_label_sets(model, paths, args)
    predictions, skipped = model.predict_files(paths, top_k=args.top_k, quiet=args.quiet)
    if args.csv:
        try:
            _write_csv(predictions, max(1, min(args.top_k, len(model.classes))))
        except OSError as error:  # a full disk under a redirected output: say which file
            raise OSError(error.errno, error.strerror, "the standard output") from None
    else:
        from rich.table import Table

        table = Table("file", "prediction", title_justify="left")
        for path, prediction in predictions:
            table.add_row(str(path), ", ".join(f"{label} {p:.1%}" for label, p in prediction.top))
        out.print(table)
    for skip in skipped:
        err.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", soft_wrap=True)
    return 0 if predictions else 1


def _predict_numbers(model: Regressor, paths: list[Path], args: argparse.Namespace) -> int:
    from .console import err, out

    predictions, skipped = model.predict_files(paths, quiet=args.quiet)
    name = model.target.name
    if args.csv:
        try:
            writer = csv.writer(sys.stdout)
            writer.writerow(["path", name])
            writer.writerows((path, f"{value:.6g}") for path, value in predictions)
            sys.stdout.flush()
        except OSError as error:  # a full disk under a redirected output: say which file
            raise OSError(error.errno, error.strerror, "the standard output") from None
    else:
        from rich.table import Table

        table = Table("file", f"predicted {name}", title_justify="left")
        for path, value in predictions:
            table.add_row(str(path), f"{value:.4g}")
        out.print(table)
    for skip in skipped:
        err.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", soft_wrap=True)
    return 0 if predictions else 1


def _predict_label_sets(model: MultiLabelModel, paths: list[Path], args: argparse.Namespace) -> int:
    from .console import err, out

    predictions, skipped = model.predict_files(paths, quiet=args.quiet)
    if args.csv:
        try:
            writer = csv.writer(sys.stdout)
            writer.writerow(["path", "labels", *model.classes])
            for path, found in predictions:
                chances = (f"{found.probabilities[label]:.4f}" for label in model.classes)
                writer.writerow([path, "|".join(found.labels), *chances])
            sys.stdout.flush()
        except OSError as error:  # a full disk under a redirected output: say which file
            raise OSError(error.errno, error.strerror, "the standard output") from None
    else:
        from rich.table import Table

        table = Table("file", "labels", title_justify="left")
        for path, found in predictions:
            said = ", ".join(f"{label} {found.probabilities[label]:.1%}" for label in found.labels)
            table.add_row(str(path), said or "(none)")
        out.print(table)
    for skip in skipped:
        err.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", soft_wrap=True)
    return 0 if predictions else 1


def _predict_texts(model, args: argparse.Namespace) -> int:
    from .console import out
    from .errors import HeadstartError
    from .text.data import texts_to_predict

    found = [(f"--text {n}", text) for n, text in enumerate(args.text, 1)]
    if args.inputs:
        found += texts_to_predict(args.inputs, text_column=args.text_column)
    if not found:
        raise HeadstartError("no texts given: files, tables, - (standard input) or --text TEXT")
    predictions = model.predict([text for _, text in found], top_k=args.top_k, quiet=args.quiet)
    k = max(1, min(args.top_k, len(model.classes)))
    if args.csv:
        writer = csv.writer(sys.stdout)
        labels = [f"{kind}{i}" for i in range(1, k + 1) for kind in ("label", "probability")]
        writer.writerow(["where", "text", *labels])
        for (where, text), prediction in zip(found, predictions, strict=True):
            values = [v for label, p in prediction.top for v in (label, f"{p:.4f}")]
            writer.writerow([where, text, *values])
        sys.stdout.flush()
        return 0
    from rich.table import Table

    table = Table("text", "prediction", title_justify="left")
    for (_, text), prediction in zip(found, predictions, strict=True):
        shown = text if len(text) <= 80 else text[:79] + "…"
        table.add_row(shown, ", ".join(f"{label} {p:.1%}" for label, p in prediction.top))
    out.print(table)
    return 0


def _write_csv(predictions: list, k: int) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(
        ["path", *[f"{kind}{i}" for i in range(1, k + 1) for kind in ("label", "probability")]]
    )
    for path, prediction in predictions:
        writer.writerow([path, *[v for label, p in prediction.top for v in (label, f"{p:.4f}")]])
    sys.stdout.flush()


def _evaluate(args: argparse.Namespace) -> int:
    from .api import evaluate
    from .console import err, out

    scores, skipped = evaluate(args.bundle, args.data, split=args.split, quiet=args.quiet)
    from rich.table import Table

    if scores["left_out"] and args.quiet:  # else evaluate said it
        unit = scores.get("unit", "images")
        err.print(f"[yellow]left out[/] {scores['left_out']} {unit} the run trained on")
    if scores.get("task") == "regression":
        baseline = scores["mean_baseline"]
        out.print(
            f"MAE {scores['mae']:.4g}, RMSE {scores['rmse']:.4g}, R² {scores['r2']:.3f}, "
            f"median absolute error {scores['median_absolute_error']:.4g} on {scores['n']} "
            f"images (split: {scores['split']}); predicting the training mean "
            f"{baseline['value']:.4g}: MAE {baseline['mae']:.4g}, RMSE {baseline['rmse']:.4g}",
            soft_wrap=True,
        )
        for skip in skipped:
            err.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", soft_wrap=True)
        return 0
    if scores.get("task") == "multi-label":
        _print_label_scores(scores)
        for skip in skipped:
            err.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", soft_wrap=True)
        return 0
    out.print(
        f"accuracy {scores['accuracy']:.1%}, balanced accuracy "
        f"{scores['balanced_accuracy']:.1%}, macro-F1 {scores['macro_f1']:.3f} "
        f"on {scores['n']} {scores.get('unit', 'images')} (split: {scores['split']})",
        soft_wrap=True,
    )
    table = Table(
        "class", "precision", "recall", "f1", scores.get("unit", "images"), title_justify="left"
    )
    for name, row in scores["per_class"].items():
        table.add_row(
            name,
            f"{row['precision']:.1%}",
            f"{row['recall']:.1%}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    out.print(table)
    classes = list(scores["per_class"])
    matrix = Table("true \\ predicted", *classes, title="confusion matrix", title_justify="left")
    for name, row in zip(classes, scores["confusion_matrix"], strict=True):
        matrix.add_row(name, *map(str, row))
    out.print(matrix)
    for skip in skipped:
        err.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", soft_wrap=True)
    return 0


def _print_label_scores(scores: dict) -> None:
    from rich.table import Table

    from .console import out

    baseline = scores["frequency_baseline"]
    out.print(
        f"mAP {scores['map']:.3f}, micro-F1 {scores['micro_f1']:.3f}, macro-F1 "
        f"{scores['macro_f1']:.3f}, every label right on {scores['subset_accuracy']:.1%} of "
        f"{scores['n']} images (split: {scores['split']}); knowing only the labels' "
        f"frequencies: mAP {baseline['map']:.3f}",
        soft_wrap=True,
    )
    table = Table("label", "AP", "precision", "recall", "f1", "images", title_justify="left")
    for name, row in scores["per_label"].items():
        table.add_row(
            name,
            "-" if row["ap"] is None else f"{row['ap']:.3f}",
            f"{row['precision']:.1%}",
            f"{row['recall']:.1%}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    out.print(table)


def _models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .console import out
    from .models import list_models

    found = list_models(args.pattern)
    # Without a pattern, the hundreds of architectures without weights here are counted, not
    # listed: a pattern (or --all) lists them.
    shown = found if args.pattern and not args.available else [m for m in found if m.weights]
    if getattr(args, "all", False):
        shown = found
    table = Table("architecture", "weights on this machine", title_justify="left")
    for info in shown:
        table.add_row(info.name, info.weights or "-")
    out.print(table)
    hidden = len(found) - len(shown)
    more = (
        f"; {hidden} more without weights here (`headstart models PATTERN` or --all lists them)"
        if hidden
        else ""
    )
    out.print(
        f"{len(shown)} architecture(s){more}; with internet access, timm fetches any "
        "pretrained weights from the Hugging Face hub"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.dataset, runs_dir=args.runs_dir, compare_scratch=not args.no_scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
