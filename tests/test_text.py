"""Texts: read from tables and folders, encoded by the built-in sentence encoder, a probe or a
fine-tuned encoder fitted, saved, loaded, predicted and evaluated like photos."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import headstart
from headstart.cli import main
from headstart.errors import HeadstartError
from headstart.text import finetune, recipe
from headstart.text.data import is_text_data, read_texts, texts_to_predict
from headstart.text.encoder import TextEncoder, encoder_location
from headstart.text.finetune import (
    ContrastiveSettings,
    class_balanced_batches,
    fine_tune_encoder,
    length_groups,
    time_step,
)
from headstart.text.label_names import COPIES, label_names
from topics import COOKING, WEATHER, write_table

# --- Reading ------------------------------------------------------------------------------


def test_a_table_of_texts_is_told_from_a_table_of_image_paths(tmp_path: Path, topics_table: Path):
    images = write_table(tmp_path / "images.csv", [{"path": "a.jpg", "label": "cat"}])
    assert is_text_data(topics_table)
    assert not is_text_data(images)
    assert is_text_data(write_table(tmp_path / "t.tsv", [{"text": "a", "label": "b"}], "\t"))


def test_columns_are_found_by_name_and_copies_stay_on_one_side(tmp_path: Path):
    rows = [{"Sentence": t, "Topic": "weather", "id": i} for i, t in enumerate(WEATHER)]
    rows += [{"Sentence": t, "Topic": "cooking", "id": i} for i, t in enumerate(COOKING)]
    rows += [{"Sentence": "  HEAVY rain is expected across the north tonight!", "Topic": "weather"}]
    dataset = read_texts(write_table(tmp_path / "t.csv", rows), val_fraction=0.25)
    assert dataset.columns == {"text": "Sentence", "label": "Topic"}
    assert dataset.classes == ("cooking", "weather")
    copies = [s.split for s in dataset.samples if "heavy rain" in s.text.lower()]
    assert len(copies) == 2 and len(set(copies)) == 1
    assert dataset.counts()["val"] == {"cooking": 3, "weather": 3}
    # The split depends on the texts and the seed, not on their order in the file.
    reordered = read_texts(write_table(tmp_path / "r.csv", rows[::-1]), val_fraction=0.25)
    assert {s.text for s in reordered.split("val")} == {s.text for s in dataset.split("val")}


def test_json_lines_with_a_split_column_and_named_columns(tmp_path: Path):
    lines = [
        {"body": t, "kind": "w", "split": "test" if i < 2 else ""} for i, t in enumerate(WEATHER)
    ]
    lines += [
        {"body": t, "kind": "c", "split": "test" if i < 2 else ""} for i, t in enumerate(COOKING)
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dataset = read_texts(path, label_column="kind", val_fraction=0.2)
    assert dataset.counts()["test"] == {"c": 2, "w": 2}
    assert sum(dataset.counts()["val"].values()) == 4


def test_folders_of_text_files_with_bad_files_skipped_and_said(tmp_path: Path):
    for label, texts in (("weather", WEATHER[:4]), ("cooking", COOKING[:4])):
        (tmp_path / label).mkdir()
        for i, text in enumerate(texts):
            (tmp_path / label / f"{i}.txt").write_text(text)
    (tmp_path / "weather" / "empty.txt").write_text("  \n")
    (tmp_path / "weather" / "binary.txt").write_bytes(b"\x89PNG\x00\x00\x01")
    (tmp_path / "cooking" / "latin1.txt").write_bytes("crème brûlée".encode("latin-1"))
    assert is_text_data(tmp_path)
    dataset = read_texts(tmp_path)
    assert dataset.layout == "class-folders" and len(dataset.samples) == 8
    reasons = {item.path.name: item.reason for item in dataset.skipped}
    assert reasons["empty.txt"] == "empty text"
    assert reasons["binary.txt"] == "a binary file, not text"
    assert reasons["latin1.txt"].startswith("not UTF-8 text (byte 0xe8 at offset 2)")


def test_bad_tables_get_one_line_errors_that_name_the_problem(tmp_path: Path):
    missing = write_table(tmp_path / "m.csv", [{"review": "good", "score": "5"}])
    with pytest.raises(
        HeadstartError,
        match=r"no label column found among review, score; name it with --label-column",
    ):
        read_texts(missing)
    with pytest.raises(HeadstartError, match=r"has no column 'stars' \(--label-column\)"):
        read_texts(missing, label_column="stars")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"text,label\n\x00\x01\x02")
    with pytest.raises(HeadstartError, match="a binary file, not text"):
        read_texts(binary)
    one = write_table(tmp_path / "one.csv", [{"text": t, "label": "w"} for t in WEATHER])
    with pytest.raises(HeadstartError, match="only one class 'w'"):
        read_texts(one)
    rows = [{"text": "", "label": "a"}, {"text": "fine", "label": ""}]
    with pytest.raises(HeadstartError, match=r"no usable text found .*1 empty text, 1 no label"):
        read_texts(write_table(tmp_path / "e.csv", rows))


def test_texts_to_predict_from_a_file_a_table_and_standard_input(
    tmp_path: Path, topics_table: Path
):
    (tmp_path / "new.txt").write_text("first text\n\nsecond text\n")
    found = texts_to_predict([str(tmp_path / "new.txt"), str(topics_table)])
    assert found[:2] == [("new.txt:1", "first text"), ("new.txt:3", "second text")]
    assert len(found) == 2 + len(WEATHER) + len(COOKING)

    class Stdin:
        def read(self) -> str:
            return "from a pipe\n"

    assert texts_to_predict(["-"], stdin=Stdin()) == [("stdin:1", "from a pipe")]


# --- Fitting, saving, predicting ------------------------------------------------------------


def test_a_probe_on_texts_is_a_run_like_any_other(text_probe_run: headstart.FitResult):
    run = text_probe_run.run_dir
    for name in ("config.yaml", "dataset.json", "splits.csv", "audit.json", "plan.json"):
        assert (run / name).exists(), name
    assert text_probe_run.strategy == "linear-probe" and text_probe_run.unit == "texts"
    assert (
        text_probe_run.scores["val"]["accuracy"] >= 0.8
    )  # two plain topics_table, 4 validation texts
    summary = json.loads((run / "summary.json").read_text())
    assert summary["modality"] == "text"
    checks = json.loads((run / "checks.json").read_text())["checks"]
    assert {c["name"]: c["status"] for c in checks} == {
        "majority-baseline": "skip",  # 4 validation texts cannot beat 50% beyond noise
        "input-independent": "pass",
        "fits-training": "pass",
        "loss-falls": "skip",  # a probe: the encoder was not fine-tuned
    }
    page = (run / "report.html").read_text()
    for heading in ("Data audit", "Sanity checks", "Confusion matrix", "Mistakes"):
        assert heading in page
    assert "texts" in page and "images" not in page
    model = headstart.load(run)
    predictions = model.predict(["Light snow showers are likely tonight", "Stir in the flour"])
    assert [p.label for p in predictions] == ["weather", "cooking"]
    assert np.allclose(model.predict_proba("Stir in the flour").sum(), 1.0)


def test_the_embeddings_are_cached(text_probe_run, topics_table: Path, monkeypatch, tmp_path: Path):
    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(TextEncoder, "encode", no_encoding)
    again = headstart.fit(topics_table, strategy="linear-probe", runs_dir=str(tmp_path), quiet=True)
    assert again.scores["val"] == text_probe_run.scores["val"]


def test_the_audit_finds_copies_conflicts_and_leaks(tmp_path: Path):
    rows = [{"text": t, "label": "weather", "split": ""} for t in WEATHER]
    rows += [{"text": t, "label": "cooking", "split": ""} for t in COOKING]
    rows += [
        {"text": WEATHER[0].upper(), "label": "weather", "split": "test"},  # a leak
        {"text": "Sunny spells and a cool wind", "label": "weather", "split": "test"},
        {"text": COOKING[1], "label": "weather", "split": ""},  # a conflict
    ]
    result = headstart.fit(
        write_table(tmp_path / "t.csv", rows),
        strategy="linear-probe",
        runs_dir=str(tmp_path / "runs"),
        quiet=True,
    )
    audit = json.loads((result.run_dir / "audit.json").read_text())
    assert audit["leaks"]["test"] == 1
    assert audit["conflicting_texts"] == 1
    assert audit["conflicts"][0]["labels"] == {"cooking": 1, "weather": 1}
    assert audit["lengths"]["truncated"] == 0 and audit["lengths"]["limit"] == 256
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["clean_scores"]["test"]["n"] == 1  # scores without the leaked copy, beside


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory):
    """A fine-tuned encoder on 12 texts (4 held out), 40 draws of each: shared by the tests
    that only read it (one that changes its files works on a copy)."""
    folder = tmp_path_factory.mktemp("fine-tuned-texts")
    rows = [{"text": t, "label": "weather"} for t in WEATHER[:6]]
    rows += [{"text": t, "label": "cooking"} for t in COOKING[:6]]
    data = write_table(folder / "few.csv", rows)
    return headstart.fit(
        data, strategy="fine-tune", epochs=40, val_fraction=0.25, runs_dir=str(folder), quiet=True
    )


def test_a_fine_tuned_encoder_travels_in_the_bundle(fine_tuned, tmp_path: Path):
    result = fine_tuned
    assert result.strategy == "fine-tune"
    assert (result.run_dir / "model" / "encoder" / "model.safetensors").exists()
    texts = ["Cloudy with a chance of rain", "Add the butter to the pan"]
    loaded = headstart.load(result.run_dir)
    assert np.allclose(loaded.predict_proba(texts), result.model.predict_proba(texts), atol=1e-5)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    tuning = summary["fine_tuning"]
    assert tuning["loss_end"] < tuning["loss_start"]  # the contrastive loss fell

    # Weights changed under the bundle's name are refused, never run.
    run = shutil.copytree(result.run_dir, tmp_path / "run")
    weights = run / "model" / "encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(HeadstartError, match="the model was trained on encoder"):
        headstart.load(run)


def test_fine_tuning_batches_weigh_every_class_alike_and_repeat_from_the_seed():
    settings = ContrastiveSettings(batch_size=32)
    labels = [0] * 200 + [1] * 3 + [2] * 40  # one class rare, one frequent
    batches = list(class_balanced_batches(labels, settings, seed=0, steps=30))
    assert len(batches) == 30
    for batch in batches:
        assert len(set(batch)) == len(batch)  # no text twice in a batch
        counts = np.bincount(np.array(labels)[batch])
        assert counts[1] == 3 and min(counts[0], counts[2]) >= 10  # the rare class: all of it
        assert len(batch) == 32  # the places it leaves go to the others
    again = class_balanced_batches(labels, settings, seed=0, steps=30)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = class_balanced_batches(labels, settings, seed=1, steps=30)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))

    many = [label for label in range(40) for _ in range(3)]  # more classes than fit a batch
    for batch in class_balanced_batches(many, settings, seed=0, steps=30):
        assert np.bincount(np.array(many)[batch], minlength=40).max() == 2
        assert len(batch) == 32  # 16 classes, 2 texts each


def test_fine_tuning_steps_follow_the_epochs_within_their_bounds():
    settings = ContrastiveSettings()  # 40 draws of each text, 20 to 500 steps, 550,000 tokens

    def limit(*classes: tuple[int, int]) -> tuple[int, str]:
        """The steps for ``(texts, tokens each)`` of each class."""
        lengths = np.concatenate([np.full(n, tokens) for n, tokens in classes])
        labels = [label for label, (n, _) in enumerate(classes) for _ in range(n)]
        return settings.limit(lengths, labels, seed=0)

    assert limit(*[(26, 13)] * 6) == (195, "epochs")  # TREC's questions, 32 a class
    assert limit((5, 13), (5, 13)) == (20, "min_steps")
    assert limit((2700, 23), (422, 44)) == (500, "max_steps")  # every SMS message: 536,000
    # 400 news items of 56 tokens: 400 steps would read 717,000 tokens, 13 minutes here
    assert limit(*[(80, 56)] * 4) == (306, "token_budget")
    # Batches take as many of a rare class as of a frequent one: half of each batch are the
    # 100 long texts, and the budget counts them so (3,440 tokens a batch, not 32 x 21).
    assert limit((3000, 15), (100, 200)) == (159, "token_budget")


def test_the_encoder_reads_a_long_text_up_to_its_limit():
    encoder = TextEncoder()
    texts = ["rain " * 400, "Fog by noon"]
    assert encoder.token_counts(texts)[0] > encoder.max_tokens == 256
    assert encoder.read_lengths(texts).tolist() == [256, 5]


def test_a_batch_is_encoded_in_passes_of_similar_length():
    lengths = [12, 250, 14, 13, 240, 12, 30, 31]
    passes = length_groups(lengths)
    assert sorted(np.concatenate(passes).tolist()) == list(range(len(lengths)))  # each once
    assert [sorted(np.array(lengths)[rows].tolist()) for rows in passes] == [
        [12, 12, 13, 14, 30, 31],  # padding 4 short texts to 31 costs less than a pass
        [240, 250],
    ]
    assert len(length_groups([20] * 32)) == 1  # nothing to gain: one pass
    assert len(length_groups([10] * 16 + [256] * 16)) == 2


def test_passes_of_similar_length_train_as_the_whole_batch_would(monkeypatch):
    texts = [t + " and then" * (i % 4) * 20 for i, t in enumerate(WEATHER[:6] + COOKING[:6])]
    settings = ContrastiveSettings(min_steps=3, max_steps=3)

    def losses() -> list[float]:
        encoder, seen = TextEncoder(), []
        for module in encoder.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0  # its masks are drawn per pass: the same in expectation only
        labels = [0] * 6 + [1] * 6
        fine_tune_encoder(encoder, texts, labels, settings, on_step=lambda _, x: seen.append(x))
        return seen

    split, passes = finetune.length_groups, []

    def recorded(lengths: np.ndarray) -> list[np.ndarray]:
        passes.append(split(lengths))
        return passes[-1]

    monkeypatch.setattr(finetune, "length_groups", recorded)
    in_passes = losses()
    assert all(len(step) > 1 for step in passes)  # 12 to 132 tokens: never one pass
    monkeypatch.setattr(finetune, "length_groups", lambda lengths: [np.arange(len(lengths))])
    assert in_passes == pytest.approx(losses(), rel=1e-4)


def test_the_plan_says_the_fine_tuning_cost_it_measured(fine_tuned):
    result = fine_tuned
    plan = json.loads((result.run_dir / "plan.json").read_text())
    # "weather" and "cooking" say what the texts are about: each joins as 8 sentences.
    assert plan["label_names"]["used"] and plan["label_names"]["copies"] == 8
    assert any(r.startswith("the class names join the fine-tuning") for r in plan["reasons"])
    # 40 draws of 8 training texts (4 held out) and the names' 16 sentences, 32 a step.
    assert plan["steps"] == 30 and plan["refit"]
    assert plan["estimated_seconds"] > 0
    said = next(r for r in plan["reasons"] if "steps" in r)
    assert "30 steps" in said and "measured here" in said
    assert "35 more for the refit if the fine-tuned encoder is kept" in said  # 40 draws of 28
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["fine_tuning"]["steps"] == 30
    assert summary["refit"]["fine_tuning"]["steps"] == 35  # on all 12 texts and the names
    assert "Its refit on 12 texts, as it ran" in (result.run_dir / "report.html").read_text()


def test_class_names_join_the_fine_tuning_only_when_the_encoder_reads_the_labels_in_them():
    encoder = TextEncoder("all-MiniLM-L6-v2")
    embeddings = encoder.encode(WEATHER + COOKING)
    labels = [1] * len(WEATHER) + [0] * len(COOKING)  # classes in sorted order

    names = label_names(("cooking", "weather"), encoder, embeddings, labels)
    assert names.zero_shot_accuracy > 0.9 and names.p_above_chance < 0.001 and names.used
    texts, classes = names.examples()
    assert texts[0] == "This sentence is cooking." and texts[-1] == "This sentence is weather."
    assert classes == [0] * COPIES + [1] * COPIES
    assert names.reason().startswith("the class names join the fine-tuning's training texts")

    # The same names on the wrong classes: the encoder's guesses contradict the labels.
    swapped = label_names(("weather", "cooking"), encoder, embeddings, labels)
    assert swapped.zero_shot_accuracy < 0.1 and swapped.p_below_chance < 0.001
    assert not swapped.used and "they mislead the encoder" in swapped.reason()
    # Four texts cannot tell names from chance: they are used (the prior helps most there).
    few = label_names(("cooking", "weather"), encoder, embeddings[[0, 1, 12, 13]], [1, 1, 0, 0])
    assert few.p_above_chance > 0.05 and few.used and "not shown to beat chance" in few.reason()
    # Numbers and codes without a letter are no words: not even measured.
    assert label_names(("0", "1"), encoder, embeddings, labels) is None
    # Readable: "not_spam" is read as "not spam"; the test repeats from its seed.
    again = label_names(("cooking_recipe", "weather-report"), encoder, embeddings, labels)
    assert again.sentences == (
        "This sentence is cooking recipe.",
        "This sentence is weather report.",
    )
    assert again == label_names(("cooking_recipe", "weather-report"), encoder, embeddings, labels)


@dataclass(frozen=True)
class SmallBudget(ContrastiveSettings):
    token_budget: int = 3_000  # about 35 steps of 8 texts of 10 tokens


def test_the_plan_says_when_long_texts_cut_the_fine_tuning_short(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(recipe, "ContrastiveSettings", SmallBudget)
    rows = [{"text": t, "label": "weather"} for t in WEATHER[:6]]
    rows += [{"text": t, "label": "cooking"} for t in COOKING[:6]]
    data = write_table(tmp_path / "few.csv", rows)
    result = headstart.fit(
        data,
        strategy="fine-tune",
        epochs=400,
        val_fraction=0.25,
        label_names=False,  # the 8 training texts alone
        runs_dir=str(tmp_path),
        quiet=True,
    )
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["label_names"] is None
    assert "the class names are not used as examples, as asked" in " ".join(plan["reasons"])
    said = next(r for r in plan["reasons"] if "steps" in r)
    assert "draws of each text, not 400: the texts average" in said
    assert "the fine-tuning reads 3,000 tokens at most" in said
    assert 20 < plan["steps"] < 100  # 400 draws of 8 texts would be 100 steps
    assert f"({plan['steps']} draws of each text, not 400" in said  # a batch: all 8 of them
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["fine_tuning"]["steps"] == plan["steps"]
    refit = summary["refit"]["fine_tuning"]["steps"]
    assert 20 < refit < 150 and f"and {refit} more for the refit" in said


def test_timing_a_fine_tuning_step_leaves_the_encoder_as_it_was():
    encoder = TextEncoder("all-MiniLM-L6-v2")
    before = {name: value.clone() for name, value in encoder.model.state_dict().items()}
    texts = WEATHER[:3] + COOKING[:3]
    seconds = time_step(encoder, texts, [0, 0, 0, 1, 1, 1], ContrastiveSettings(), seed=0)
    assert seconds > 0
    after = encoder.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None for p in encoder.model.parameters())
    assert not encoder.model.training  # back in inference mode, as encode() expects


def test_settings_for_photos_are_refused_for_texts_and_back(
    topics_table: Path, faces: Path, tmp_path
):
    with pytest.raises(HeadstartError, match=r"--augment: setting.s. for photos"):
        headstart.fit(topics_table, augment="strong", runs_dir=str(tmp_path))
    with pytest.raises(HeadstartError, match=r"--text-column: setting.s. for texts"):
        headstart.fit(faces, text_column="text", runs_dir=str(tmp_path))
    with pytest.raises(HeadstartError, match=r"--label-names: setting.s. for texts"):
        headstart.fit(faces, label_names=False, runs_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_predict_and_evaluate_from_the_command_line(
    text_probe_run, topics_table: Path, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.setattr("sys.stdin", type("In", (), {"read": lambda self: "Bake for an hour\n"})())
    code = main(
        [
            "predict",
            str(text_probe_run.run_dir),
            "-",
            "--text",
            "Windy and wet all day",
            "--csv",
            "--quiet",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["where"], r["label1"]) for r in rows] == [
        ("--text 1", "weather"),
        ("stdin:1", "cooking"),
    ]
    # Other data holding the training texts: they are left out, and counted. With 10 texts
    # a class the probe was fitted again on train and validation: all of them trained it.
    assert json.loads((text_probe_run.run_dir / "summary.json").read_text())["refit"]["texts"] == 24
    rows = [{"text": t, "label": "weather"} for t in WEATHER] + [
        {"text": "Drizzle and grey skies until Friday", "label": "weather"}
    ]
    other = write_table(tmp_path / "other.csv", rows)
    scores, _ = headstart.evaluate(text_probe_run.run_dir, other, quiet=True)
    assert scores["left_out"] == len(WEATHER) and scores["n"] == 1
    # The data it was fitted on holds no text it did not train on: said, not scored.
    with pytest.raises(HeadstartError, match="does not hold out for testing"):
        headstart.evaluate(text_probe_run.run_dir, topics_table, quiet=True)
    with pytest.raises(HeadstartError, match="fitted again on its validation texts"):
        headstart.evaluate(text_probe_run.run_dir, topics_table, split="val", quiet=True)


def test_evaluate_scores_the_runs_own_test_texts(topics_table: Path, tmp_path: Path):
    result = headstart.fit(
        topics_table,
        strategy="linear-probe",
        test_fraction=0.25,
        runs_dir=str(tmp_path),
        quiet=True,
    )
    scores, _ = headstart.evaluate(result.run_dir, topics_table, quiet=True)
    assert scores["split"] == "test" and scores["n"] == result.scores["test"]["n"] == 6
    assert scores["accuracy"] == result.scores["test"]["accuracy"]  # the refit model's own


# --- Encoders ------------------------------------------------------------------------------


def test_unknown_encoders_get_a_clear_error(tmp_path: Path):
    with pytest.raises(HeadstartError, match="neither a folder nor a Hugging Face name"):
        encoder_location("not a model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeadstartError, match="not an encoder folder"):
        encoder_location(str(tmp_path / "empty"))


HUB_SCRIPT = """
import json
from headstart.errors import HeadstartError
from headstart.text.encoder import TextEncoder

encoder = TextEncoder("acme/minilm")
vector = encoder.encode(["a text"])
try:
    TextEncoder("acme/absent")
    error = None
except HeadstartError as raised:
    error = str(raised)
print(json.dumps({"source": encoder.source, "width": vector.shape[1], "error": error}))
"""


def test_hub_encoders_load_offline_from_a_prefilled_cache(tmp_path: Path):
    """A Hugging Face name is read from the hub cache, as huggingface_hub lays it out; with
    HF_HUB_OFFLINE=1, a name not in it is a clear error (in a fresh interpreter: the hub
    library reads its settings when imported)."""
    built_in, _ = encoder_location("all-MiniLM-L6-v2")
    repo = tmp_path / "models--acme--minilm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(built_in, repo / "snapshots" / commit)
    package_root = Path(headstart.__file__).parents[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(package_root), os.environ.get("PYTHONPATH")) if p
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["source"] == "hub" and found["width"] == 384
    assert "'acme/absent' is not in the Hugging Face cache" in found["error"]
    assert "HF_HUB_OFFLINE" in found["error"]


def test_the_audit_alone_and_the_report_rebuilt(
    text_probe_run, topics_table: Path, tmp_path: Path, capsys
):
    assert main(["audit", str(topics_table), "--out", str(tmp_path / "audit"), "--quiet"]) == 0
    found = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert found["texts"] == len(WEATHER) + len(COOKING)
    assert "written:" in capsys.readouterr().out
    assert main(["audit", str(topics_table), "--fix-split", str(tmp_path / "split.csv")]) == 2
    assert "--fix-split is for photos" in capsys.readouterr().err
    page = tmp_path / "page.html"
    assert main(["report", str(text_probe_run.run_dir), "--out", str(page)]) == 0
    assert "Mistakes" in page.read_text()


def test_commands_for_photos_say_so_on_texts(topics_table: Path):
    with pytest.raises(HeadstartError, match="holds texts: this command works on photos"):
        headstart.check(topics_table)
