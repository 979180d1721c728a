"""The ``headstart`` command line: ``fit``, ``audit``, ``check``, ``lr-find``, ``report``,
``predict``, ``evaluate``, ``models``, ``demo``."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .console import err, out

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from .errors import HeadstartError

    try:
        return args.run(args) or 0
    except HeadstartError as error:
        err.print(f"[red]error:[/] {error}", soft_wrap=True)
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
    _fit_options(fit)
    _only_given(fit)  # FitConfig holds the defaults, so a --config file can supply any value
    fit.add_argument(
        "--config", metavar="YAML", help="settings from a YAML file (flags given here win)"
    )
    fit.add_argument(
        "--resume",
        metavar="RUN",
        help="go on with an interrupted run from its last epoch (with --epochs N: train a "
        "finished run longer)",
    )
    fit.set_defaults(run=_fit)

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
    _fit_options(preview)
    _only_given(preview)
    preview.add_argument("--config", metavar="YAML", help="settings from a YAML file")
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
    _data_options(
        audit, without_backbone="no backbone: duplicates from bytes and perceptual hashes only"
    )
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
    _fine_tuning_options(lr_find)
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
    check.add_argument("--lr", type=float, help="learning rate to check (default: the plan's)")
    _fine_tuning_options(check)
    check.set_defaults(run=_check)

    report = commands.add_parser(
        "report",
        help="rebuild a run's report.html from its folder",
        description="Write RUN/report.html from the run folder alone: plan, audit, sanity "
        "checks, curves, confusion matrix, calibration, mistakes, filters. fit writes it too.",
    )
    report.add_argument("run_dir", metavar="RUN", help="a run folder (runs/<name>)")
    report.add_argument("--out", help="write the page here instead of RUN/report.html")
    report.set_defaults(run=_report)

    predict = commands.add_parser("predict", help="label images with a trained model")
    predict.add_argument("bundle", help="a run folder or its model/ folder")
    predict.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--top-k", type=int, default=1, help="labels per image (default 1)")
    predict.add_argument("--csv", action="store_true", help="write CSV to stdout, not a table")
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser("evaluate", help="score a trained model on labelled images")
    evaluate.add_argument("bundle", help="a run folder or its model/ folder")
    evaluate.add_argument("data", help="class folders, train/val/test folders, or a CSV")
    evaluate.add_argument(
        "--split",
        choices=("all", "train", "val", "test"),
        default=None,
        help="which images to score (default: test/ if DATA has one, else all)",
    )
    evaluate.set_defaults(run=_evaluate)

    models = commands.add_parser("models", help="list architectures and where weights are")
    models.add_argument("pattern", nargs="?", default=None, help="e.g. 'resnet*' or '*vit*'")
    models.add_argument(
        "--available", action="store_true", help="only those with weights on this machine"
    )
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


def _data_options(parser: argparse.ArgumentParser, *, without_backbone: str) -> None:
    """What every command that reads a dataset through a backbone shares with ``fit``: the
    same values give the same split, the same network and the same caches."""
    add = parser.add_argument
    add(
        "--arch",
        default="efficientnet_lite0",
        help="any timm architecture (see `headstart models`)",
    )
    add("--weights", help="weights file (.safetensors, or a state dict loaded with weights_only)")
    add("--no-pretrained", dest="pretrained", action="store_false", help=without_backbone)
    add("--batch-size", type=int, default=32)
    add("--val-fraction", type=float, default=0.2, help="share of each class for validation")
    add("--test-fraction", type=float, default=0.0, help="share of each class held out for test")
    add("--seed", type=int, default=0, help="the split's seed (and training's)")
    add("--cache-dir", help="pixel and feature cache (default: $HEADSTART_CACHE or ~/.cache)")
    add("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    add("--quiet", action="store_true", help="no progress bars or plan messages")


def _fine_tuning_options(parser: argparse.ArgumentParser) -> None:
    """For the commands that try fit's fine-tuning without fitting (lr-find, check)."""
    parser.add_argument(
        "--strategy",
        choices=("auto", "fine-tune", "full"),
        default="auto",
        help="which fine-tuning to try (auto: fit's plan; fine-tune if it would only probe)",
    )
    _data_options(parser, without_backbone="random initialisation, as fit --no-pretrained")


def _fit_options(parser: argparse.ArgumentParser) -> None:
    from .training.plan import STRATEGIES

    _data_options(parser, without_backbone="random initialisation: train from scratch on purpose")
    add = parser.add_argument
    add(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="auto (default) decides from the data; see the plan in the run folder",
    )
    add("--epochs", type=int, help="fine-tuning epochs (default: from the plan)")
    add("--lr", type=float, help="fine-tuning learning rate (default: from the plan)")
    _training_options(parser)
    add("--runs-dir", default="runs", help="where run folders are made (default: runs)")
    add("--name", help="run folder name (default: <data>-<n>)")
    add("--time-budget", type=float, help="minutes of fine-tuning at most")
    add(
        "--compare-scratch",
        action="store_true",
        help="also train the same network from random weights with the same budget, and "
        "report what transfer bought (start, slope, final accuracy)",
    )
    add(
        "--no-checks",
        dest="checks",
        action="store_false",
        help="skip the sanity checks before training (see `headstart check`)",
    )
    add(
        "--allow-leakage",
        action="store_true",
        help="train even when copies of an image span train and validation/test (the audit "
        "refuses by default: the held-out score would be flattered)",
    )


def _only_given(parser: argparse.ArgumentParser) -> None:
    """Leave options that were not given out of the parsed namespace (defaults: FitConfig)."""
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            action.default = argparse.SUPPRESS


def _config_from(args: argparse.Namespace, *extra: str):
    """The FitConfig of a command line: the --config file, then the flags given."""
    from .config import FitConfig, load_config

    settings = load_config(args.config) if getattr(args, "config", None) else {}
    ignored = {"data", "command", "run", "config", "resume", *extra}
    settings |= {k: v for k, v in vars(args).items() if k not in ignored}
    return FitConfig(**settings)


def _training_options(parser: argparse.ArgumentParser) -> None:
    """Every lever of the recipe; each defaults to the plan's choice (see plan.json)."""
    from .data.augment import POLICIES, PRESETS, TRANSFORMS
    from .training.finetune import PRECISIONS
    from .training.freezing import UNFREEZING
    from .training.imbalance import BALANCING
    from .training.optim import OPTIMIZERS, SCHEDULES

    group = parser.add_argument_group("training (defaults: the plan's)")
    add = group.add_argument
    add("--freeze", help="'all' (head only), 'none', or how many bottom stages stay frozen")
    add("--unfreeze", choices=UNFREEZING, help="gradual: top stage first, one more each epoch")
    add("--layer-decay", type=float, help="each stage's learning rate over the one above")
    add("--optimizer", choices=OPTIMIZERS, help="default adamw (lbfgs: linear probe only)")
    add("--momentum", type=float, help="for sgd, nesterov and rmsprop (default 0.9)")
    add("--schedule", choices=SCHEDULES, help="learning-rate schedule (default cosine)")
    add("--warmup", type=float, help="share of the steps for a linear warm-up (default 0.1)")
    add("--precision", choices=PRECISIONS, help="auto: bf16/fp16 on CUDA, fp32 on CPU")
    add("--in-chans", type=int, help="input channels (default: 3, or what the files hold)")
    add("--input-size", type=int, help="input side in pixels (default: the weights' own)")
    reg = parser.add_argument_group("regularisation")
    add = reg.add_argument
    add("--weight-decay", type=float, help="default 0.02; never on biases and norm layers")
    add("--head-l1", type=float, help="L1 on the head's weights (with weight decay: elastic net)")
    add("--probe-penalty", choices=("l2", "l1", "elasticnet"), help="the linear probe's penalty")
    add("--label-smoothing", type=float, help="default 0.1")
    add("--dropout", type=float, help="dropout before the head (default: the architecture's)")
    add("--drop-path", type=float, help="stochastic depth rate (default: the architecture's)")
    add("--mixup", type=float, help="Mixup alpha, e.g. 0.2 (default off)")
    add("--cutmix", type=float, help="CutMix alpha, e.g. 1.0 (default off)")
    add("--cutout", type=float, help="probability of erasing a random patch (default 0)")
    add("--ema", type=float, help="evaluate a moving average of the weights, e.g. 0.999")
    add("--clip-grad", type=float, help="clip the gradient norm to this value")
    add("--patience", type=int, help="early stopping after this many epochs without gain (3)")
    add("--no-early-stopping", dest="early_stopping", action="store_false")
    aug = parser.add_argument_group("augmentation and class balance")
    add = aug.add_argument
    add("--augment", choices=PRESETS, help="augmentation preset (default light)")
    add("--policy", choices=POLICIES, help="a learned augmentation policy on top")
    add(
        "--no-augment",
        action="append",
        choices=TRANSFORMS,
        metavar="TRANSFORM",
        help=f"never apply this transform (it would change a label): {', '.join(TRANSFORMS)}",
    )
    add("--vflip", action="store_true", help="vertical flips too (images without an up)")
    add(
        "--balance",
        choices=BALANCING,
        help="class imbalance: auto (by the ratio), none, weighted-loss or sampler",
    )


def _fit(args: argparse.Namespace) -> int:
    from .errors import HeadstartError
    from .fit import fit, resume
    from .training import distributed

    if getattr(args, "resume", None):
        given = set(vars(args)) - {"command", "run", "resume", "data", "epochs", "quiet"}
        given -= {"config"} if args.config is None else set()
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


def _augment_preview(args: argparse.Namespace) -> int:
    from .preview import augment_preview

    path = augment_preview(args.data, _config_from(args, "out", "images"), args.out, args.images)
    out.print(f"wrote {path}")
    return 0


def print_fit_summary(result) -> None:
    from rich.table import Table

    out.print()
    out.print(f"[bold]strategy[/]: {result.plan.strategy}")
    for reason in result.plan.reasons:
        out.print(f"  - {reason}", soft_wrap=True)
    for split, scores in result.scores.items():
        out.print(
            f"\n[bold]{split}[/]: accuracy {scores['accuracy']:.1%}, balanced "
            f"{scores['balanced_accuracy']:.1%}, macro-F1 {scores['macro_f1']:.3f} "
            f"({scores['n']} images)"
        )
        if split == "val" and "test" not in result.scores:
            out.print("  (validation also chose the model; --test-fraction holds out a test set)")
        table = Table()
        for column in ("class", "recall", "precision", "images"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, row in scores["per_class"].items():
            table.add_row(
                name, f"{row['recall']:.1%}", f"{row['precision']:.1%}", str(row["support"])
            )
        out.print(table)
    if result.skipped:
        out.print(
            f"[yellow]{len(result.skipped)} file(s) skipped[/] "
            f"(listed in {result.run_dir / 'dataset.json'}):"
        )
        for skip in result.skipped[:10]:
            out.print(f"  {skip.path}: {skip.reason}", soft_wrap=True)
    if result.stopped != "finished":
        out.print(f"[yellow]training stopped early: {result.stopped}[/]; best model kept")
    out.print(f"time: {result.seconds:.0f} s; model bundle: [bold]{result.run_dir / 'model'}[/]")


def _audit(args: argparse.Namespace) -> int:
    from .audit import audit, print_summary
    from .run import new_folder

    report = audit(
        args.data,
        arch=args.arch,
        weights=args.weights,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        cache_dir=args.cache_dir,
        pretrained=args.pretrained,
        batch_size=args.batch_size,
        device=args.device,
        quiet=args.quiet,
    )
    folder = Path(args.out) if args.out else new_folder("runs", f"audit-{Path(args.data).stem}")
    report.write(folder)
    print_summary(report)
    out.print(f"\nwritten: {folder / 'audit.json'}, and the image grids beside it")
    if args.fix_split:
        path = report.write_split(args.fix_split)
        out.print(
            f"split without leaks: {path} (every duplicate group in one split, identical "
            f"copies once); train on it with `headstart fit {path}`"
        )
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from .errors import HeadstartError
    from .fit import lr_find
    from .run import new_folder

    if args.steps < 10:
        raise HeadstartError(f"--steps {args.steps}: a range test needs at least 10 (try 100)")
    settings = {
        k: v for k, v in vars(args).items() if k not in ("data", "command", "run", "steps", "out")
    }
    result = lr_find(args.data, steps=args.steps, **settings)
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
    from .fit import check

    settings = {k: v for k, v in vars(args).items() if k not in ("data", "command", "run", "out")}
    report = check(args.data, **settings)
    report.print()
    out.print(f"{report.headline()} in {report.seconds:.0f} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        out.print(f"written: {report.write(Path(args.out) / 'checks.json')}")
    return 0 if report.passed else 1


def _report(args: argparse.Namespace) -> int:
    from .report import build_report

    out.print(f"written: {build_report(args.run_dir, args.out)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .bundle import load
    from .data.images import IMAGE_EXTENSIONS
    from .errors import HeadstartError

    model = load(args.bundle)
    paths: list[Path] = []
    for item in map(Path, args.inputs):
        if item.is_dir():
            paths += sorted(
                p
                for p in item.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.parts)
            )
        elif item.exists():
            paths.append(item)
        else:
            raise HeadstartError(f"{item}: no such file or folder")
    if not paths:
        raise HeadstartError(f"no images found in {', '.join(args.inputs)}")
    predictions, skipped = model.predict_files(paths, top_k=args.top_k)
    if args.csv:
        writer = csv.writer(sys.stdout)
        k = max(1, min(args.top_k, len(model.classes)))
        writer.writerow(
            ["path", *[f"{kind}{i}" for i in range(1, k + 1) for kind in ("label", "probability")]]
        )
        for path, prediction in predictions:
            writer.writerow(
                [path, *[v for label, p in prediction.top for v in (label, f"{p:.4f}")]]
            )
    else:
        from rich.table import Table

        table = Table("file", "prediction", title_justify="left")
        for path, prediction in predictions:
            table.add_row(str(path), ", ".join(f"{label} {p:.1%}" for label, p in prediction.top))
        out.print(table)
    for skip in skipped:
        err.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", soft_wrap=True)
    return 0 if predictions else 1


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    scores, skipped = evaluate(args.bundle, args.data, split=args.split)
    from rich.table import Table

    out.print(
        f"accuracy {scores['accuracy']:.1%}, balanced accuracy "
        f"{scores['balanced_accuracy']:.1%}, macro-F1 {scores['macro_f1']:.3f} "
        f"on {scores['n']} images"
    )
    table = Table("class", "precision", "recall", "f1", "images", title_justify="left")
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


def _models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .models import list_models

    models = list_models(args.pattern)
    if args.available:
        models = [m for m in models if m.weights]
    table = Table("architecture", "weights on this machine", title_justify="left")
    for info in models:
        table.add_row(info.name, info.weights or "-")
    out.print(table)
    out.print(
        f"{len(models)} architecture(s); with internet access, timm fetches any "
        "pretrained weights from the Hugging Face hub"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.dataset, runs_dir=args.runs_dir, compare_scratch=not args.no_scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
