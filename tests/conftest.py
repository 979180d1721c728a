"""Shared fixtures: real, small datasets written once per session, and a shared cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.demo import demo_dataset


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pixel and feature cache for the whole session (as a user's machine would have)."""
    path = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSTART_CACHE", str(path))
    yield path
    patch.undo()


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's LFW subset as class folders: 100 faces, 100 other patches."""
    return demo_dataset("lfw", tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def small_faces(tmp_path_factory: pytest.TempPathFactory, faces: Path) -> Path:
    """24 images per class from the LFW subset: enough to train, quick to fine-tune."""
    root = tmp_path_factory.mktemp("small") / "faces"
    for folder in sorted(p for p in faces.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:24]:
            shutil.copy(image, root / folder.name / image.name)
    return root


@pytest.fixture(scope="session")
def small_faces_ensemble(small_faces: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two fine-tunings of ``small_faces`` (an epoch each) as one ensemble: what test_ensemble
    examines and test_distill distils. Read only: a test that changes it works on a copy."""
    import headstart

    return headstart.fit(
        small_faces,
        strategy="fine-tune",
        epochs=1,
        ensemble=2,
        tta="none",
        runs_dir=tmp_path_factory.mktemp("ensembles"),
        quiet=True,
    )


@pytest.fixture(scope="session")
def fitted(faces: Path, tmp_path_factory: pytest.TempPathFactory):
    """A default fit of the faces data, shared by the tests that only read its results."""
    import headstart

    return headstart.fit(faces, runs_dir=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="session")
def topics_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 labelled texts of two topics in a CSV whose columns are named as users name them."""
    from topics import COOKING, WEATHER, write_table

    rows = [{"Sentence": t, "Topic": "weather"} for t in WEATHER]
    rows += [{"Sentence": t, "Topic": "cooking"} for t in COOKING]
    return write_table(tmp_path_factory.mktemp("texts") / "topics.csv", rows)


@pytest.fixture(scope="session")
def text_probe_run(topics_table: Path, tmp_path_factory: pytest.TempPathFactory):
    """A linear probe on ``topics_table``, shared by the tests that only read it."""
    import headstart

    runs = tmp_path_factory.mktemp("text-runs")
    return headstart.fit(topics_table, strategy="linear-probe", runs_dir=str(runs), quiet=True)


def write_photo(path: Path, seed: int, size: tuple[int, int] = (96, 64)) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path
