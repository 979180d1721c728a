"""Finding a dataset on disk: class folders, split folders and CSV files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from headstart.data import SPLITS, Dataset, Sample, Skipped, discover
from headstart.data.sources import image_files
from headstart.errors import HeadstartError


def write_image(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def class_folders(root: Path, sizes: dict[str, int], ext: str = ".png") -> Path:
    """``root/<class>/<class>_<i><ext>``, ``sizes[class]`` images each."""
    for label, n in sizes.items():
        for i in range(n):
            write_image(root / label / f"{label}_{i:03d}{ext}")
    return root


def names(samples: list[Sample]) -> list[str]:
    return sorted(sample.path.name for sample in samples)


# --- Class folders: split here, stratified and deterministic --------------------------------


def test_class_folders_are_split_per_class(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 10, "dogs": 20})
    dataset = discover(root, val_fraction=0.2)

    assert dataset.layout == "class-folders"
    assert dataset.root == root
    assert dataset.classes == ("cats", "dogs")
    assert dataset.counts() == {
        "train": {"cats": 8, "dogs": 16},
        "val": {"cats": 2, "dogs": 4},
        "test": {"cats": 0, "dogs": 0},
    }
    assert all(sample.path.is_absolute() for sample in dataset.samples)
    assert all(sample.path.parent.name == sample.label for sample in dataset.samples)
    assert dataset.skipped == () and dataset.warnings == ()


def test_images_are_found_at_any_depth_and_extensions_in_any_case(tmp_path):
    root = tmp_path / "data"
    write_image(root / "cats" / "2023" / "summer" / "a.JPG")
    write_image(root / "cats" / "b.jpeg")
    write_image(root / "dogs" / "c.PNG")
    write_image(root / "dogs" / "d.webp")
    dataset = discover(root, val_fraction=0.5)
    assert names(dataset.samples) == ["a.JPG", "b.jpeg", "c.PNG", "d.webp"]


def test_a_test_split_can_be_held_out_too(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 10, "dogs": 10})
    counts = discover(root, val_fraction=0.2, test_fraction=0.1).counts()
    assert counts["train"] == {"cats": 7, "dogs": 7}
    assert counts["val"] == {"cats": 2, "dogs": 2}
    assert counts["test"] == {"cats": 1, "dogs": 1}


def test_split_is_the_same_for_the_same_seed_whatever_the_listing_order(tmp_path):
    # The same files, created in opposite orders in two places.
    forward, backward = tmp_path / "forward", tmp_path / "backward"
    for i in range(30):
        write_image(forward / "a" / f"{i}.png")
        write_image(forward / "b" / f"{i}.png")
        write_image(backward / "b" / f"{29 - i}.png")
        write_image(backward / "a" / f"{29 - i}.png")

    def val_files(root: Path, seed: int) -> list[str]:
        val = discover(root, seed=seed).split("val")
        return sorted(str(s.path.relative_to(root)) for s in val)

    assert val_files(forward, seed=0) == val_files(backward, seed=0)
    assert val_files(forward, seed=0) == val_files(forward, seed=0)
    assert any(val_files(forward, seed) != val_files(forward, 0) for seed in (1, 2, 3))


def test_adding_a_class_leaves_the_other_classes_split_alone(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 15, "dogs": 15})
    before = names(discover(root).split("val"))
    class_folders(root, {"birds": 15})
    after = names([s for s in discover(root).split("val") if s.label != "birds"])
    assert after == before


def test_every_class_with_two_images_gets_one_in_train_and_one_in_val(tmp_path):
    root = class_folders(tmp_path / "rare", {"common": 40, "rare": 2, "single": 1})
    dataset = discover(root, val_fraction=0.1)
    counts = dataset.counts()
    assert (counts["train"]["rare"], counts["val"]["rare"]) == (1, 1)
    assert (counts["train"]["single"], counts["val"]["single"]) == (1, 0)
    assert dataset.warnings == ("class 'single' has 1 image: none left for validation",)


def test_val_fraction_zero_puts_everything_in_train(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 3, "dogs": 3})
    dataset = discover(root, val_fraction=0.0)
    assert len(dataset.split("train")) == 6 and dataset.split("val") == []
    assert dataset.warnings == ()


def test_hidden_and_non_image_files_are_ignored_silently(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 2, "dogs": 2})
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cats" / "._cats_000.png").write_bytes(b"\0\5\26\7 AppleDouble")
    (root / "cats" / "notes.txt").write_text("cute")
    write_image(root / "dogs" / ".thumbnails" / "x.png")
    write_image(root / ".cache" / "y.png")
    write_image(root / "__MACOSX" / "cats" / "z.png")

    dataset = discover(root)
    assert dataset.classes == ("cats", "dogs")
    assert names(dataset.samples) == [
        "cats_000.png",
        "cats_001.png",
        "dogs_000.png",
        "dogs_001.png",
    ]
    assert dataset.skipped == () and dataset.warnings == ()


def test_unreadable_files_are_skipped_with_a_reason(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 5, "dogs": 5})
    (root / "cats" / "empty.jpg").touch()
    (root / "dogs" / "page.jpg").write_text("<html>Not found</html>")

    dataset = discover(root)
    reasons = {item.path.name: item.reason for item in dataset.skipped}
    assert reasons == {
        "empty.jpg": "empty file (0 bytes)",
        "page.jpg": "not an image (an HTML page, e.g. an error page saved by a download)",
    }
    assert "empty.jpg" not in names(dataset.samples)
    assert len(dataset.samples) == 10


def test_files_are_not_opened_when_check_files_is_off(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 2, "dogs": 2})
    (root / "cats" / "empty.jpg").touch()
    dataset = discover(root, check_files=False)
    assert "empty.jpg" in names(dataset.samples) and dataset.skipped == ()


def test_an_empty_class_folder_is_left_out_with_a_warning(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 3, "dogs": 3})
    (root / "birds").mkdir()
    dataset = discover(root)
    assert dataset.classes == ("cats", "dogs")
    assert dataset.warnings == (f"class 'birds' is left out: {root / 'birds'} has no images",)


def test_a_class_whose_files_are_all_unreadable_is_left_out_with_a_warning(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 3, "dogs": 3})
    (root / "birds").mkdir()
    (root / "birds" / "a.jpg").touch()
    dataset = discover(root)
    assert dataset.classes == ("cats", "dogs")
    assert "class 'birds' is left out: none of its 1 files can be read" in dataset.warnings
    assert [item.path.name for item in dataset.skipped] == ["a.jpg"]


def test_images_next_to_the_class_folders_are_ignored_with_a_warning(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 2, "dogs": 2})
    write_image(root / "stray.png")
    dataset = discover(root)
    assert len(dataset.samples) == 4
    assert "1 images directly in" in dataset.warnings[0]


# --- Split folders: used as given -------------------------------------------------------


def test_split_folders_are_used_as_given(tmp_path):
    root = tmp_path / "data"
    class_folders(root / "train", {"ants": 4, "bees": 5})
    class_folders(root / "valid", {"ants": 2, "bees": 1})
    class_folders(root / "test", {"ants": 1, "bees": 1})

    dataset = discover(root, val_fraction=0.5)  # ignored: the data has its own val split
    assert dataset.layout == "split-folders"
    assert dataset.classes == ("ants", "bees")
    assert dataset.counts() == {
        "train": {"ants": 4, "bees": 5},
        "val": {"ants": 2, "bees": 1},
        "test": {"ants": 1, "bees": 1},
    }
    assert all(
        s.path.parent.parent.name == {"val": "valid"}.get(s.split, s.split) for s in dataset.samples
    )


def test_val_is_carved_from_train_when_only_train_and_test_are_given(tmp_path):
    root = tmp_path / "kaggle"
    class_folders(root / "train", {"ants": 10, "bees": 10})
    class_folders(root / "test", {"ants": 3, "bees": 3})
    counts = discover(root, val_fraction=0.2, test_fraction=0.3).counts()
    assert counts["train"] == {"ants": 8, "bees": 8}
    assert counts["val"] == {"ants": 2, "bees": 2}
    assert counts["test"] == {"ants": 3, "bees": 3}  # the folder, not 30% of train


def test_a_class_named_train_is_a_class_not_a_split(tmp_path):
    root = class_folders(tmp_path / "vehicles", {"train": 3, "bus": 3, "car": 3})
    dataset = discover(root)
    assert dataset.layout == "class-folders"
    assert dataset.classes == ("bus", "car", "train")


def test_a_class_missing_from_val_is_a_warning(tmp_path):
    root = tmp_path / "data"
    class_folders(root / "train", {"ants": 3, "bees": 3})
    class_folders(root / "val", {"ants": 1})
    assert discover(root).warnings == ("class 'bees' has no images in the val split",)


def test_a_class_only_in_val_is_an_error_naming_it(tmp_path):
    root = tmp_path / "data"
    class_folders(root / "train", {"ants": 3, "bees": 3})
    class_folders(root / "val", {"ants": 1, "wasps": 1})
    with pytest.raises(HeadstartError, match=r"class 'wasps' is in .*val but has no images in"):
        discover(root)


# --- CSV files ----------------------------------------------------------------------------


def test_csv_with_relative_and_absolute_paths_and_a_missing_file(tmp_path):
    write_image(tmp_path / "images" / "1.png")
    write_image(tmp_path / "images" / "2.png")
    elsewhere = write_image(tmp_path / "other" / "3.png")
    labels = tmp_path / "images" / "labels.csv"
    labels.write_text(f"path,label\n1.png,cat\n2.png,dog\n{elsewhere},dog\nmissing.png,cat\n")
    dataset = discover(labels, val_fraction=0.0)
    assert dataset.layout == "csv"
    assert dataset.classes == ("cat", "dog")
    assert {(s.path, s.label) for s in dataset.samples} == {
        (tmp_path / "images" / "1.png", "cat"),
        (tmp_path / "images" / "2.png", "dog"),
        (elsewhere, "dog"),
    }
    assert dataset.skipped == (Skipped(tmp_path / "images" / "missing.png", "file not found"),)


def test_csv_split_column_is_used_and_empty_splits_are_split_here(tmp_path):
    rows = ["path,label,split"]
    for label in ("cat", "dog"):
        for i in range(10):
            write_image(tmp_path / f"{label}{i}.png")
            split = "test" if i == 0 else ""
            rows.append(f"{label}{i}.png,{label},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")

    counts = discover(tmp_path / "labels.csv", val_fraction=0.2).counts()
    assert counts["test"] == {"cat": 1, "dog": 1}
    assert counts["val"] == {"cat": 2, "dog": 2}
    assert counts["train"] == {"cat": 7, "dog": 7}


def test_csv_with_a_bad_split_names_the_line_and_value(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("path,label,split\na.png,cat,train\na.png,dog,holdout\n")
    with pytest.raises(HeadstartError, match=r"line 3: split 'holdout' is not one of train, val"):
        discover(tmp_path / "labels.csv")


def test_csv_without_the_needed_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,class\na.png,cat\n")
    with pytest.raises(HeadstartError, match=r"columns path,label.*filename,class"):
        discover(tmp_path / "labels.csv")


# --- Errors: one line that says what is wrong ---------------------------------------------


def test_missing_source(tmp_path):
    with pytest.raises(HeadstartError, match=r"nowhere does not exist"):
        discover(tmp_path / "nowhere")


def test_source_that_is_neither_a_folder_nor_a_csv(tmp_path):
    (tmp_path / "labels.txt").write_text("a.png cat\n")
    with pytest.raises(HeadstartError, match=r"neither a folder nor a \.csv file"):
        discover(tmp_path / "labels.txt")


def test_no_images_says_where_it_looked_and_for_what(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "readme.md").write_text("photos coming soon")
    with pytest.raises(HeadstartError) as caught:
        discover(tmp_path)
    message = str(caught.value)
    assert "no images found" in message and str(tmp_path) in message
    assert ".jpg" in message and ".png" in message


def test_a_single_class_cannot_make_a_classifier(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 3})
    with pytest.raises(HeadstartError) as caught:
        discover(root)
    assert str(caught.value) == (
        f"found only one class 'cats' in {root}: a classifier needs at least two classes, "
        "one sub-folder each"
    )


def test_images_without_class_folders(tmp_path):
    write_image(tmp_path / "a.png")
    with pytest.raises(HeadstartError, match="no class folder with images"):
        discover(tmp_path)


def test_all_files_unreadable(tmp_path):
    for name in ("cats/a.jpg", "dogs/b.jpg"):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).touch()
    with pytest.raises(HeadstartError, match=r"none of the 2 image files .* empty file"):
        discover(tmp_path)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"val_fraction": 1.0}, r"val_fraction=1.0 is not allowed: .* from 0 up to \(not"),
        ({"val_fraction": -0.1}, r"val_fraction=-0.1 is not allowed"),
        ({"test_fraction": float("nan")}, r"test_fraction=nan is not allowed"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, r"0.6 \+ 0.4 leaves no images"),
    ],
)
def test_parameters_are_checked_before_looking_at_files(tmp_path, arguments, message):
    with pytest.raises(HeadstartError, match=message):
        discover(tmp_path / "not even there", **arguments)


# --- The Dataset object -------------------------------------------------------------------


def test_drop_moves_samples_to_skipped_and_keeps_the_classes(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 5, "dogs": 5})
    dataset = discover(root)
    broken = dataset.split("train")[0]
    smaller = dataset.drop([Skipped(broken.path, "truncated or corrupt image data")])

    assert len(smaller.samples) == len(dataset.samples) - 1
    assert broken not in smaller.samples
    assert smaller.skipped[-1] == Skipped(broken.path, "truncated or corrupt image data")
    assert smaller.classes == dataset.classes
    assert len(dataset.samples) == 10  # the original is unchanged: datasets are frozen


def test_to_dict_is_a_json_summary(tmp_path):
    root = class_folders(tmp_path / "pets", {"cats": 5, "dogs": 5})
    (root / "cats" / "empty.jpg").touch()
    summary = json.loads(json.dumps(discover(root).to_dict()))
    assert summary["root"] == str(root)
    assert summary["layout"] == "class-folders"
    assert summary["classes"] == ["cats", "dogs"]
    assert summary["counts"]["val"] == {"cats": 1, "dogs": 1}
    assert summary["skipped"] == [
        {"path": str(root / "cats" / "empty.jpg"), "reason": "empty file (0 bytes)"}
    ]
    assert summary["warnings"] == []


def test_split_names_are_checked():
    dataset = Dataset(Path("/data"), "csv", ("a", "b"), ())
    assert {name: dataset.split(name) for name in SPLITS} == {"train": [], "val": [], "test": []}
    with pytest.raises(ValueError, match="split='validation'"):
        dataset.split("validation")


def test_a_gif_is_read_as_its_first_frame_and_unreadable_formats_are_listed(tmp_path):
    for label in ("cats", "dogs"):
        for i in range(3):
            write_image(tmp_path / label / f"{i}.png")
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((10, 10, 10), (250, 0, 0))]
    frames[0].save(tmp_path / "cats" / "moving.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "dogs" / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image, not listed")

    dataset = discover(tmp_path)
    assert tmp_path / "cats" / "moving.gif" in {s.path for s in dataset.samples}
    reasons = {s.path.name: s.reason for s in dataset.skipped}
    assert set(reasons) == {"phone.heic"} and "cannot read" in reasons["phone.heic"]


def test_images_to_predict_are_listed_from_files_and_folders(tmp_path):
    # A folder inside a hidden one (a cache) is searched; hidden things inside it are not.
    folder = tmp_path / ".cache" / "new"
    for name in ("b.jpg", "a.png", "notes.txt", ".hidden/c.jpg", "__MACOSX/d.jpg", "sub/e.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    single = tmp_path / "one.jpg"
    single.write_bytes(b"x")
    found = image_files([folder, single])
    assert found == [folder / "a.png", folder / "b.jpg", folder / "sub/e.jpg", single]
    with pytest.raises(HeadstartError, match="no such file"):
        image_files([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeadstartError, match="no images found"):
        image_files([tmp_path / "empty"])
