"""The README's examples, run as written: its command lines, then its Python, in a folder set up
as the README describes (``photos/<class>/``, ``new_photos/``, ``held_out/<class>/``)."""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from headstart.cli import _parser as command_line
from headstart.cli import main

README = Path(__file__).parents[1] / "README.md"


def code_blocks(language: str, after: str) -> list[str]:
    """The README's ``language`` code blocks in the section headed ``after``."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(after) :]
    section = section[: section.find("\n## ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def commands() -> list[str]:
    (block,) = code_blocks("bash", "## Use")
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture
def workspace(tmp_path: Path, faces: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """photos/ (12 images a class), new_photos/ (JPEGs to label), held_out/ (4 a class),
    fit.yaml; the working directory for the test."""
    for label in ("face", "not-face"):
        images = sorted((faces / label).glob("*.png"))
        (tmp_path / "photos" / label).mkdir(parents=True)
        (tmp_path / "held_out" / label).mkdir(parents=True)
        for image in images[:12]:
            shutil.copy(image, tmp_path / "photos" / label / image.name)
        for image in images[12:16]:
            shutil.copy(image, tmp_path / "held_out" / label / image.name)
    (tmp_path / "new_photos").mkdir()
    for i, image in enumerate(sorted(faces.rglob("*.png"))[-3:], start=1):
        Image.open(image).convert("RGB").save(tmp_path / "new_photos" / f"{i}.jpg")
    (tmp_path / "fit.yaml").write_text("strategy: linear-probe\nweight-decay: 0.05\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_line(line: str) -> int:
    """One README command line through the command line's ``main``, with its redirection."""
    words = shlex.split(line, comments=True)
    assert words[0] == "headstart", line
    target = None
    if ">" in words:
        words, target = words[: words.index(">")], words[words.index(">") + 1]
    output = io.StringIO()
    with contextlib.redirect_stdout(output) if target else contextlib.nullcontext():
        code = main([*words[1:], "--quiet"] if _takes_quiet(words) else words[1:])
    if target:
        Path(target).write_text(output.getvalue())
    return code


def _takes_quiet(words: list[str]) -> bool:
    return words[1] in (
        "fit",
        "audit",
        "check",
        "lr-find",
        "augment-preview",
        "rank",
        "distill",
        "tune",
    )


def new_photos(folder: Path, count: int = 2) -> None:
    """``new_photos/1.jpg``, ... : the first images of the table's ``images/``, as photos."""
    (folder / "new_photos").mkdir()
    for i in range(count):
        photo = Image.open(folder / "images" / f"{i:04d}.png").convert("RGB")
        photo.save(folder / "new_photos" / f"{i + 1}.jpg")


def run_commands(heading: str) -> None:
    """Every command line of the section's shell block; each must succeed."""
    (block,) = code_blocks("bash", heading)
    for line in (line for line in block.splitlines() if line.strip()):
        assert run_line(line) == 0, line


def run_python(heading: str) -> dict:
    """The section's Python block; the names it defined."""
    (python,) = code_blocks("python", heading)
    namespace: dict = {}
    exec(compile(python, str(README), "exec"), namespace)
    return namespace


#: The Use section's lines that train more than once or for long: 90 of the section's 220 s
#: on two idle cores. Each has its own tests in the default suite (test_lr_find, test_cli's
#: demo for --compare-scratch, test_ensemble, test_distill, test_tune); the default run of
#: the README parses them, and the slow run runs every line as written, in order. So too the
#: ONNX export (tens of seconds) and the line that predicts from it: test_export exports from
#: the command line and predicts from the exported folder.
SQUEEZING = ("lr-find", "--compare-scratch", "--ensemble", "distill", "tune", "export")


def squeezes(line: str) -> bool:
    words = shlex.split(line, comments=True)
    reads_the_export = any(Path(word).name == "model-onnx" for word in words)
    return reads_the_export or any(word in SQUEEZING for word in words)


#: The Python block's calls that repeat, through the API, what a command line of the quick run
#: runs or parses: the sanity checks (``headstart check`` runs the same ``api.check``, and
#: test_checks calls ``headstart.check``), the range test (test_lr_find runs the same
#: ``api.lr_find``) and the ONNX export (test_export exports and loads from Python). The
#: default run parses them; the slow run makes them.
PYTHON_SQUEEZING = ("check", "lr_find", "export")


def python_squeezes(statement: ast.stmt) -> bool:
    """Whether ``statement`` calls ``headstart.<one of PYTHON_SQUEEZING>``."""
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "headstart"
        and node.func.attr in PYTHON_SQUEEZING
        for node in ast.walk(statement)
    )


@pytest.mark.parametrize(
    "every_line", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["quick", "all"]
)
def test_the_command_lines_then_the_python_run_as_written(workspace, every_line):
    for line in commands():
        if line.startswith("torchrun"):
            continue  # tests/test_readme.py::test_the_distributed_command_runs_as_written
        if squeezes(line) and not every_line:
            assert command_line().parse_args(shlex.split(line, comments=True)[1:]).command
            continue
        assert run_line(line) == 0, line
    assert (workspace / "runs" / "photos-1" / "report.html").exists()
    rows = list(csv.DictReader((workspace / "predictions.csv").open()))
    assert len(rows) == 3 and {"label1", "probability1"} <= set(rows[0])
    if every_line:
        assert (workspace / "lr" / "lr_find.png").exists()
        student = json.loads((workspace / "runs" / "photos-6" / "config.json").read_text())
        assert Path(student["teacher"]).name == "photos-5"
        assert (workspace / "runs" / "photos-tuned-1" / "search.json").exists()

    (python,) = code_blocks("python", "## Use")
    namespace: dict = {}
    if every_line:
        exec(compile(python, str(README), "exec"), namespace)
    else:  # statement by statement, in order; the squeezing calls are parsed, not made
        squeezed = 0
        for statement in ast.parse(python, str(README)).body:
            if python_squeezes(statement):
                squeezed += 1
                continue
            exec(compile(ast.Module([statement], []), str(README), "exec"), namespace)
        assert squeezed == len(PYTHON_SQUEEZING)
        assert all(callable(getattr(namespace["headstart"], n)) for n in PYTHON_SQUEEZING)
    assert namespace["result"].scores["val"]["accuracy"] > 0.5
    assert namespace["ranking"].best.candidate.pretrained
    assert namespace["longer"].plan.fine_tune.epochs == 10


@pytest.mark.slow
def test_the_distributed_command_runs_as_written(workspace):
    (line,) = [line for line in commands() if line.startswith("torchrun")]
    words = shlex.split(line, comments=True)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", *words[1:], "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert (workspace / "runs" / "photos-1" / "model" / "model.safetensors").exists()


@pytest.fixture
def text_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tickets.csv (text,label), mail.tsv (body,team), new_tickets.txt: as the README's
    texts section describes them, with two topics of real sentences."""
    from test_text import COOKING, WEATHER

    rows = [(t, "weather") for t in WEATHER] + [(t, "cooking") for t in COOKING]
    with open(tmp_path / "tickets.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("text", "label"), *rows])
    with open(tmp_path / "mail.tsv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file, delimiter="\t").writerows([("body", "team"), *rows])
    (tmp_path / "new_tickets.txt").write_text("Rain all week\nAdd a pinch of salt\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow  # test_text runs these commands one by one
def test_the_text_examples_run_as_written(text_workspace: Path):
    run_commands("## Texts")
    assert (text_workspace / "runs" / "tickets-1" / "model" / "model.safetensors").exists()
    assert (text_workspace / "runs" / "mail-1" / "plan.json").exists()
    assert (text_workspace / "runs" / "tickets-1" / "model-onnx" / "tokenizer.json").exists()
    assert run_python("## Texts")["result"].run_dir.name == "tickets-2"


@pytest.fixture
def regression_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """counts.csv (path,count) and new_photos/, as the README's regression section describes
    them: 30 handwritten digits, the digit's value standing in for the count."""
    from test_regression import write_digits

    write_digits(tmp_path, 30, column="count").rename(tmp_path / "counts.csv")
    new_photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow  # test_regression runs these commands one by one
def test_the_regression_examples_run_as_written(regression_workspace: Path):
    run_commands("## A number per image")
    predicted = list(csv.DictReader((regression_workspace / "counts_predicted.csv").open()))
    assert [Path(row["path"]).name for row in predicted] == ["1.jpg", "2.jpg"]
    assert all(0 <= float(row["count"]) <= 9 for row in predicted)
    assert run_python("## A number per image")["result"].run_dir.name == "counts-2"


@pytest.fixture
def labels_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tags.csv (path,labels) and new_photos/, as the README's multi-label section describes
    them: 60 images of two digit slots, labelled with the digits they show."""
    from test_multilabel import write_pairs

    write_pairs(tmp_path, 60).rename(tmp_path / "tags.csv")
    new_photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow  # test_multilabel runs these commands at 64 px
def test_the_multilabel_examples_run_as_written(labels_workspace: Path):
    run_commands("## Several labels per image")
    predicted = list(csv.DictReader((labels_workspace / "tags_predicted.csv").open()))
    assert [Path(row["path"]).name for row in predicted] == ["1.jpg", "2.jpg"]
    assert run_python("## Several labels per image")["result"].run_dir.name == "tags-2"
