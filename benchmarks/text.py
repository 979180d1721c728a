"""headstart on real text sets, at several labelled texts per class, beside SetFit.

For each set of ``../shared/data/text/`` (``train.csv`` and ``test.csv``, columns text,label)
and each number of labelled texts per class (8, 32, all), draws that many training texts per
class (seeds 0 to ``--draws`` - 1: which texts are drawn moves accuracy by points at 32 a
class, so methods are compared on the same draws and averaged over them), fits headstart with
``--strategy linear-probe`` and with the default (``auto``: the probe and the SetFit-style
fine-tuned encoder, validation choosing), and scores each on the whole test file with
``headstart.evaluate`` (test texts that are copies of training texts are left out, and
counted). With ``--setfit`` and the ``setfit`` package installed, SetFit itself (same encoder,
its defaults) is trained on the same texts (all of them: it holds none out) and scored on the
same test texts. On every text of a set, SetFit's default pairs (every pair of texts, 12.5
million on TREC) would take days on a CPU: there it is given headstart's cap on steps (500).

    python benchmarks/text.py [--sets trec6 sms_spam] [--shots 8 32 all] [--draws 3] [--setfit]
                              [--data FOLDER]

Movie-review sentiment (SST-2's sentences): ``python benchmarks/rotten_tomatoes.py
FOLDER`` writes the Rotten Tomatoes set there, then ``--data FOLDER --sets rotten_tomatoes``.

Prints one row per (set, shots, draw, method): test accuracy, macro-F1, texts scored,
seconds; then, per (set, shots, method), the mean over the draws and, beside SetFit, the mean
paired difference with the lowest and highest.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

# This folder's datasets.py (the image benchmarks' sets) would shadow Hugging Face's
# `datasets`, which sentence-transformers and SetFit import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import headstart  # noqa: E402
from headstart.text.data import text_key  # noqa: E402
from headstart.text.finetune import ContrastiveSettings  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"
#: SetFit's steps on a whole set: headstart's own cap.
SETFIT_STEPS_ON_ALL = ContrastiveSettings.max_steps


def sample(rows: list[dict], shots: int | None, seed: int = 0) -> list[dict]:
    """``shots`` rows per label (all when None), drawn per label in sorted label order."""
    if shots is None:
        return rows
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    return [row for label in sorted(by_label) for row in rng.sample(by_label[label], shots)]


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def write(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in rows)
    return path


def headstart_row(train: Path, test: Path, strategy: str, work: Path) -> dict:
    started = time.perf_counter()
    result = headstart.fit(train, strategy=strategy, runs_dir=str(work), quiet=True)
    seconds = time.perf_counter() - started
    scores, _ = headstart.evaluate(result.run_dir, test, quiet=True)
    return {
        "method": f"headstart {strategy}",
        "kept": result.strategy,
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "scored": scores["n"],
        "seconds": seconds,
    }


def setfit_row(
    train_rows: list[dict], test_rows: list[dict], work: Path, max_steps: int = -1
) -> dict:
    """SetFit trained on ``train_rows`` (its checkpoints in ``work``), scored on the test
    texts that are not copies of training texts."""
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import accuracy_score, f1_score

    from datasets import Dataset
    from headstart.text.encoder import encoder_location

    trained = {text_key(r["text"]) for r in train_rows}
    test_rows = [r for r in test_rows if text_key(r["text"]) not in trained]
    started = time.perf_counter()
    model = SetFitModel.from_pretrained(str(encoder_location("all-MiniLM-L6-v2")[0]))
    arguments = TrainingArguments(max_steps=max_steps, output_dir=str(work / "setfit"))
    Trainer(model=model, args=arguments, train_dataset=Dataset.from_list(train_rows)).train()
    seconds = time.perf_counter() - started
    predicted = model.predict([r["text"] for r in test_rows])
    truth = [r["label"] for r in test_rows]
    return {
        "method": "SetFit",
        "kept": "-",
        "accuracy": accuracy_score(truth, list(predicted)),
        "macro_f1": f1_score(truth, list(predicted), average="macro"),
        "scored": len(test_rows),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["trec6", "sms_spam"])
    parser.add_argument("--shots", nargs="+", default=["8", "32", "all"])
    parser.add_argument("--draws", type=int, default=1, help="draws of the training texts")
    parser.add_argument("--strategies", default="linear-probe,auto")
    parser.add_argument("--setfit", action="store_true", help="also train SetFit")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the sets")
    args = parser.parse_args()
    print("| set | texts a class | draw | method | kept | test accuracy | macro-F1 | scored | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    table: dict[tuple[str, str, str], dict[int, float]] = {}
    for name in args.sets:
        test = args.data / name / "test.csv"
        rows, test_rows = read(args.data / name / "train.csv"), read(test)
        for shots in args.shots:
            draws = 1 if shots == "all" else args.draws  # every text: one draw
            for draw in range(draws):
                chosen = sample(rows, None if shots == "all" else int(shots), seed=draw)
                with tempfile.TemporaryDirectory() as scratch:
                    work = Path(scratch)
                    train = write(chosen, work / f"{name}-{shots}-{draw}.csv")
                    results = [
                        headstart_row(train, test, strategy, work)
                        for strategy in args.strategies.split(",")
                    ]
                    if args.setfit:
                        steps = SETFIT_STEPS_ON_ALL if shots == "all" else -1
                        results.append(setfit_row(chosen, test_rows, work, steps))
                for r in results:
                    table.setdefault((name, shots, r["method"]), {})[draw] = r["accuracy"]
                    print(
                        f"| {name} | {shots} | {draw} | {r['method']} | {r['kept']} | "
                        f"{r['accuracy']:.1%} | {r['macro_f1']:.3f} | {r['scored']} | "
                        f"{r['seconds']:.0f} |",
                        flush=True,
                    )
    print_means(table)


def print_means(table: dict[tuple[str, str, str], dict[int, float]]) -> None:
    """Each method's mean accuracy over its draws and, beside SetFit on the same draws, the
    mean paired difference (the lowest and highest in brackets)."""
    print("\n| set | texts a class | method | draws | mean test accuracy | minus SetFit's |")
    print("|---|---|---|---|---|---|")
    for (name, shots, method), found in table.items():
        setfit = table.get((name, shots, "SetFit"), {})
        paired = [found[d] - setfit[d] for d in found if d in setfit]
        beside = (
            f"{sum(paired) / len(paired):+.1%} ({min(paired):+.1%} to {max(paired):+.1%})"
            if paired and method != "SetFit"
            else "-"
        )
        mean = sum(found.values()) / len(found)
        print(f"| {name} | {shots} | {method} | {len(found)} | {mean:.1%} | {beside} |")


if __name__ == "__main__":
    main()
