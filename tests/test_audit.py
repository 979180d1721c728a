"""headstart audit on a dataset with planted faults: it must find each one, and little else.

The dataset is made of real photos (scikit-image's LFW faces and non-face patches, and its
sample photos), so features behave as they do on users' data. Into it are planted: exact
copies, JPEG re-encodes, resized, mirrored and slightly cropped copies (some across train and
val: leaks), a copy filed under the other class, flipped labels, corrupt files, a blank image
and a class far smaller than the others.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as photos

from headstart import audit
from headstart.auditing import AuditReport, audit_dataset, check_leakage
from headstart.cli import main
from headstart.data import discover
from headstart.data.decoded import DecodedImages
from headstart.errors import HeadstartError
from headstart.features import VIEWS, extract_features, feature_stores
from headstart.inputs import InputPipeline
from headstart.models import create_backbone
from headstart.stages.data import default_cache_dir

# scikit-image photos that ship with the package (no download): a small third class.
SCENES = (
    "astronaut",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "stereo_motorcycle",
    "cell",
    "text",
)


@dataclass
class Planted:
    root: Path
    copies: list[set[Path]] = field(default_factory=list)  # each planted duplicate group
    leaks: list[set[Path]] = field(default_factory=list)  # those across train and val
    conflicting: set[Path] = field(default_factory=set)  # a copy filed under another class
    flipped: dict[Path, str] = field(default_factory=dict)  # path -> its true class
    corrupt: dict[Path, str] = field(default_factory=dict)  # path -> words of the reason
    blank: Path | None = None

    def clean(self, report: AuditReport) -> list[Path]:
        """The usable images that are neither planted copies nor flipped."""
        planted = set().union(*self.copies) | set(self.flipped)
        return [s.path for s in report.dataset.samples if s.path not in planted]


def plant_faults(root: Path) -> Planted:
    """Class folders under train/ and val/, with every fault of the issue planted."""
    from skimage.data import lfw_subset

    planted = Planted(root)
    # LFW's 25-pixel crops, shown at 100 pixels: 100 faces, 100 patches of other things.
    lfw = [Image.fromarray(np.uint8(np.round(a * 255))) for a in lfw_subset()]
    originals: dict[str, tuple[Image.Image, str, str]] = {}  # name -> (image, split, label)
    for i, image in enumerate(lfw):
        label = "face" if i < 100 else "not-face"
        split = "val" if i % 100 >= 80 else "train"
        originals[f"{label}-{i:03d}.png"] = (image.resize((100, 100), Image.BICUBIC), split, label)
    for j, name in enumerate(SCENES):
        originals[f"{name}.jpg"] = (scene(name), "val" if j % 4 == 3 else "train", "scene")

    def place(split: str, label: str, name: str) -> Path:
        path = root / split / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # Ten flipped labels, none of them on an image that also has a copy.
    wrong = {3: "not-face", 11: "not-face", 25: "not-face", 47: "not-face", 85: "not-face"}
    wrong |= {104: "face", 117: "face", 139: "face", 160: "face", 190: "face"}
    files = {}
    for name, (image, split, label) in originals.items():
        number = int(name[-7:-4]) if name[-7:-4].isdigit() else None
        given = wrong.get(number, label)
        files[name] = path = place(split, given, name)
        image.save(path, quality=92) if path.suffix == ".jpg" else image.save(path)
        if given != label:
            planted.flipped[path] = label

    def copy(name: str, split: str, how: str, **options) -> None:
        image, source_split, label = originals[name]
        source = files[name]
        stem = f"{source.stem}-{how}"
        if how == "copy":
            target = place(split, label, stem + source.suffix)
            shutil.copyfile(source, target)
        elif how.startswith("jpeg"):
            target = place(split, label, stem + ".jpg")
            image.save(target, quality=options["quality"])
        elif how.startswith("resized"):
            target = place(split, label, stem + ".png")
            scale = options["scale"]
            size = (round(image.width * scale), round(image.height * scale))
            image.resize(size, Image.LANCZOS).save(target)
        elif how.startswith("crop"):
            target = place(split, label, stem + ".png")
            keep, (x, y) = options["keep"], options["at"]
            left, top = round(image.width * (1 - keep) * x), round(image.height * (1 - keep) * y)
            right, bottom = left + round(image.width * keep), top + round(image.height * keep)
            image.crop((left, top, right, bottom)).save(target)
        else:  # mirror
            target = place(split, label, stem + ".png")
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)
        planted.copies.append({source, target})
        if split != source_split:
            planted.leaks.append({source, target})

    copy("face-005.png", "train", "copy")
    copy("not-face-120.png", "train", "copy")
    copy("camera.jpg", "train", "copy")
    copy("face-030.png", "val", "copy")  # leak
    copy("not-face-150.png", "val", "copy")  # leak
    copy("face-007.png", "train", "jpeg70", quality=70)
    copy("not-face-130.png", "val", "jpeg40", quality=40)  # leak
    copy("chelsea.jpg", "train", "jpeg50", quality=50)
    copy("retina.jpg", "val", "jpeg75", quality=75)  # leak
    copy("face-009.png", "train", "resized50", scale=0.5)
    copy("not-face-135.png", "val", "resized150", scale=1.5)  # leak
    copy("coffee.jpg", "val", "resized60", scale=0.6)  # leak
    copy("face-014.png", "train", "crop90", keep=0.90, at=(0.2, 0.6))
    copy("not-face-142.png", "val", "crop88", keep=0.88, at=(1, 0))  # leak
    copy("immunohistochemistry.jpg", "train", "crop85", keep=0.85, at=(0.3, 0.8))
    copy("stereo_motorcycle.jpg", "val", "crop92", keep=0.92, at=(0, 1))  # leak
    copy("face-060.png", "train", "mirror")
    # The same file under both classes: a duplicate with conflicting labels.
    conflict = place("train", "not-face", "face-070-copy.png")
    shutil.copyfile(files["face-070.png"], conflict)
    planted.copies.append({files["face-070.png"], conflict})
    planted.conflicting = {conflict}

    # Files that cannot be used.
    jpeg = io.BytesIO()
    originals["rocket.jpg"][0].save(jpeg, "JPEG", quality=90)
    corrupt = {
        place("train", "scene", "truncated.jpg"): (jpeg.getvalue()[:9000], "truncated"),
        place("train", "face", "notes.jpg"): (b"shopping list: eggs, milk\n", "not an image"),
        place("train", "not-face", "empty.png"): (b"", "empty"),
        place("val", "face", "page.jpg"): (b"<!DOCTYPE html><html>404</html>", "HTML page"),
        place("train", "scene", "bomb.png"): (_png_header(20_000, 10_000), "decompression bomb"),
    }
    for path, (content, reason) in corrupt.items():
        path.write_bytes(content)
        planted.corrupt[path] = reason

    planted.blank = place("train", "scene", "blank.png")
    Image.new("RGB", (200, 150), (128, 130, 127)).save(planted.blank)
    return planted


def scene(name: str) -> Image.Image:
    """One of scikit-image's sample photos, in RGB, at most 480 pixels a side."""
    pixels = getattr(photos, name)()
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels
    image = Image.fromarray(pixels).convert("RGB")
    image.thumbnail((480, 480))
    return image


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def audit_pixels(root: Path) -> AuditReport:
    """The audit from pixels alone (no backbone features): quick on a few made-up images."""
    _, preprocessing, _ = create_backbone("efficientnet_lite0")
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation)
    return audit_dataset(discover(root), None, images, quiet=True)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    return plant_faults(tmp_path_factory.mktemp("planted") / "photos")


@pytest.fixture(scope="module")
def report(planted: Planted) -> AuditReport:
    return audit(planted.root, quiet=True)


def test_every_unusable_file_is_listed_with_its_cause(planted, report):
    reasons = {item.path: item.reason for item in report.unusable}
    assert set(reasons) == set(planted.corrupt)
    for path, words in planted.corrupt.items():
        assert words in reasons[path] or words.split()[0] in reasons[path], reasons[path]
    assert report.to_dict()["unusable"]["causes"] == {
        "not an image": 2,
        "decompression bomb": 1,
        "empty file": 1,
        "truncated or corrupt image data": 1,
    }
    assert not any(s.path in planted.corrupt for s in report.dataset.samples)


def test_finds_the_planted_duplicates_and_leaks(planted, report):
    found = [{s.path for s in group.samples} for group in report.duplicates]
    recall = np.mean([any(copies <= group for group in found) for copies in planted.copies])
    leaking = [{s.path for s in group.samples} for group in report.leaks]
    leak_recall = np.mean([any(copies <= group for group in leaking) for copies in planted.leaks])
    # The issue's bar is 95%; on this data every copy is found, crops of 8-15% included.
    assert recall >= 0.95 and leak_recall >= 0.95, (recall, leak_recall)
    assert recall == leak_recall == 1.0
    conflicts = [g for g in report.duplicates if g.conflicting_labels]
    assert [{s.path for s in g.samples} & planted.conflicting for g in conflicts] == [
        planted.conflicting
    ]


def test_rarely_calls_distinct_images_duplicates(planted, report):
    # The LFW non-face patches include many look-alikes (dark backgrounds with one edge)
    # that features alone would pair up; the pixel check must not.
    grouped = {s.path for group in report.duplicates for s in group.samples}
    clean = planted.clean(report)
    false_alarms = [path for path in clean if path in grouped]
    assert len(false_alarms) / len(clean) < 0.02, false_alarms


def test_ranks_the_flipped_labels_and_suggests_the_true_class(planted, report):
    issues = {issue.sample.path: issue for issue in report.label_issues}
    caught = [path for path in planted.flipped if path in issues]
    assert len(caught) / len(planted.flipped) >= 0.7, sorted(issues)
    assert all(issues[path].suggested == planted.flipped[path] for path in caught)
    clean = planted.clean(report)
    false_alarms = [path for path in clean if path in issues]
    assert len(false_alarms) / len(clean) < 0.02, false_alarms
    # Most likely first: the flipped labels head the list.
    top = [issue.sample.path for issue in report.label_issues[: len(planted.flipped)]]
    assert len(set(top) & (set(planted.flipped) | planted.conflicting)) >= 8


def test_estimates_how_many_labels_are_wrong_and_lists_that_many(planted, report):
    # Eleven labels are wrong: the ten flipped, and a face copied into the not-face folder.
    wrong = set(planted.flipped) | planted.conflicting
    check = report.label_check
    assert check.reliable, check.why  # the probe agrees with 93% of the labels
    assert len(wrong) - 2 <= check.estimated <= len(wrong) + 4  # 13 (a blank, a cell photo)
    assert len(report.label_issues) == check.estimated
    listed = {issue.sample.path for issue in report.label_issues}
    assert len(wrong & listed) >= len(wrong) - 1
    assert f"about {check.estimated} labels may be wrong (cleanlab's estimate" in report.headline()
    assert "unreliable" not in report.headline()
    assert report.counts()["label_issues"] == check.estimated
    assert report.counts()["label_issues_reliable"] is True


def test_reports_the_imbalance_and_the_class_too_small_to_validate(report):
    balance = report.balance
    assert balance.counts["train"]["scene"] < balance.counts["train"]["face"] / 4
    assert balance.imbalanced and balance.ratio > 4
    assert balance.too_small == ("scene",)
    assert any("balanced accuracy" in line for line in balance.advice)


def test_describes_image_sizes_and_flags_the_odd_ones(planted, report):
    summary = report.properties.summary
    assert summary["common_sizes"]["100x100"] >= 200
    assert summary["modes"]["L"] >= 200 and summary["modes"]["RGB"] >= 15
    assert summary["channels"] == {1: summary["modes"]["L"], 3: summary["modes"]["RGB"]}
    flagged = {
        kind: {f.sample.path.name for f in found}
        for kind, found in report.properties.flagged.items()
    }
    assert planted.blank.name in flagged["blank"]
    assert "face-009-resized50.png" in flagged["very small"]  # 50 pixels, upscaled 5x
    assert "text.jpg" in flagged["elongated"]  # 448x172: the centre crop keeps 38%


def test_writes_audit_json_and_image_grids(report, tmp_path):
    folder = report.write(tmp_path / "audit")
    written = json.loads((folder / "audit.json").read_text())
    assert written["duplicates"]["leaks"] == len(report.leaks) == 8
    labels = written["label_issues"]
    assert labels["count"] == labels["estimated_count"] == len(report.label_issues)
    assert labels["reliable"] is True and labels["probe_accuracy"] >= labels["reliable_accuracy"]
    assert labels["why"].startswith("the probe that judges the labels agrees with")
    assert {f["path"] for f in written["unusable"]["files"]} == {
        str(s.path) for s in report.unusable
    }
    for name in (
        "duplicates.png",
        "label-issues.png",
        *(f"contact-sheets/{c}.png" for c in report.dataset.classes),
    ):
        with Image.open(folder / name) as image:
            assert image.width > 200 and image.height > 100


def test_fit_refuses_leaks_with_a_one_line_way_out(report):
    with pytest.raises(HeadstartError) as caught:
        check_leakage(report)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("8 group(s) of duplicate images span train and validation/test")
    assert "--allow-leakage" in message and "--fix-split" in message


def test_fixed_split_removes_leaks_and_moves_no_file(planted, report, tmp_path):
    before = sorted((p, p.stat().st_size) for p in planted.root.rglob("*"))
    csv_path = report.write_split(tmp_path / "split.csv")
    assert sorted((p, p.stat().st_size) for p in planted.root.rglob("*")) == before
    rows = list(csv.DictReader(csv_path.open()))
    assert set(rows[0]) == {"path", "label", "split"}
    # Identical copies are listed once; near copies stay, in the split of their original.
    assert len(rows) == len(report.dataset.samples) - 5
    again = audit(csv_path, quiet=True)  # features come from the cache: quick
    assert again.dataset.layout == "csv"
    assert not again.leaks
    check_leakage(again)


def test_features_are_left_in_the_cache_for_fit(planted, report):
    backbone, preprocessing, source = create_backbone("efficientnet_lite0")
    architecture = backbone.pretrained_cfg.get("architecture", "efficientnet_lite0")
    cache = default_cache_dir()
    stores = feature_stores(
        cache / "features", architecture, source, preprocessing, backbone.num_features
    )
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation, cache / "pixels")
    paths = [s.path for s in report.dataset.samples]
    again = extract_features(
        backbone, InputPipeline(preprocessing), paths, images, stores, views=VIEWS
    )
    assert again.computed == 0


def test_audits_without_features_from_pixels_alone(planted, report):
    # What fit does with --no-pretrained: exact and hash-found duplicates, no label check.
    dataset = discover(planted.root)
    images = report.images
    alone = audit_dataset(dataset, None, images)
    assert alone.label_issues is None and alone.notes
    found = [{s.path for s in g.samples} for g in alone.duplicates]
    assert all(any(group <= f for f in found) for group in planted.copies[:12])  # not the crops
    assert not alone.properties.flagged["outlier"]


def test_no_duplicates_in_the_demo_data(faces):
    # fit audits before training and refuses leaks: the demo must pass untouched.
    report = audit(faces, quiet=True)
    assert not report.leaks
    assert not [g for g in report.duplicates if g.kind == "near"]


def test_tiny_look_alikes_are_not_duplicates_but_their_copies_are(tmp_path):
    # 8x8 digits by different writers are blurred alike by enlargement; a copy is not.
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "digits"
    for i in range(600):
        path = root / str(digits.target[i]) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.uint8(digits.images[i] * 15)).save(path)
    source = root / str(digits.target[0]) / "0000.png"
    copy = source.with_name("0000-enlarged.png")
    Image.open(source).resize((24, 24), Image.Resampling.LANCZOS).save(copy)

    _, preprocessing, _ = create_backbone("efficientnet_lite0")
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation)
    report = audit_dataset(discover(root), None, images, quiet=True)
    assert [{s.path for s in g.samples} for g in report.duplicates] == [{source, copy}]


def test_photos_of_one_scene_that_differ_in_one_region_are_not_copies(tmp_path):
    # Another photo of one scene (a hand with one more finger raised, an object moved) differs
    # a lot in one place: here a corner, a sixteenth of the photo. Averaged over the whole
    # photo that difference is as small as a copy's; in its own region it is not. A copy
    # differs a little everywhere, and is still found.
    root = tmp_path / "scenes"
    copies, others = [], []
    for name in ("astronaut", "camera", "rocket"):
        photo = scene(name)
        original = save(photo, root / name / "photo.png")
        copies.append({original, save(photo, root / name / "photo-again.jpg", quality=60)})
        others.append(save(with_corner_replaced(photo), root / name / "another-photo.png"))
    report = audit_pixels(root)
    found = [{s.path for s in group.samples} for group in report.duplicates]
    assert sorted(found, key=sorted) == sorted(copies, key=sorted)


def with_corner_replaced(photo: Image.Image) -> Image.Image:
    """``photo`` with its bottom right corner (a quarter of each side) showing its middle."""
    width, height = photo.size
    side = min(width, height) // 4
    other = photo.copy()
    middle = photo.crop((width // 2, height // 2, width // 2 + side, height // 2 + side))
    other.paste(middle, (width - side, height - side))
    return other


def test_copies_across_splits_that_disagree_on_the_label_conflict_but_do_not_leak(tmp_path):
    # A model that remembers the training copy's label gets the held-out copy wrong: the
    # pair lowers the held-out score instead of flattering it. It is reported, not refused.
    root = tmp_path / "pets"
    for split, label, name in [
        ("train", "cat", "chelsea"),
        ("train", "cat", "astronaut"),
        ("train", "dog", "coffee"),
        ("train", "dog", "rocket"),
        ("val", "cat", "camera"),
        ("val", "dog", "clock"),
    ]:
        save(scene(name), root / split / label / f"{name}.png")
    shutil.copyfile(root / "train/cat/chelsea.png", root / "val/dog/chelsea-again.png")
    report = audit_pixels(root)
    [group] = report.duplicates
    assert group.conflicting_labels and not group.leaks
    assert not report.leaks
    check_leakage(report)  # fit trains on this split
    assert report.counts()["conflicting_labels"] == 1

    # A third copy, held out under the training copy's label, leaks.
    shutil.copyfile(root / "train/cat/chelsea.png", root / "val/cat/chelsea-once-more.png")
    report = audit_pixels(root)
    [group] = report.duplicates
    assert group.conflicting_labels and group.leaks
    with pytest.raises(HeadstartError) as caught:
        check_leakage(report)
    assert "chelsea.png (train) = " in str(caught.value)
    assert "chelsea-once-more.png (val)" in str(caught.value)  # the copy with its label


def test_cli_audit_prints_writes_and_fixes_the_split(planted, capsys, tmp_path):
    code = main(
        [
            "audit",
            str(planted.root),
            "--out",
            str(tmp_path / "out"),
            "--fix-split",
            str(tmp_path / "split.csv"),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "unusable files: 5" in printed and "8 leak across splits" in printed
    assert "label issues" in printed and "imbalance ratio" in printed
    assert (tmp_path / "out" / "audit.json").is_file()
    assert (tmp_path / "split.csv").is_file()
    assert "split.csv" in printed


def test_label_check_needs_independent_images_not_only_many(tmp_path):
    # Copies share a fold: a dataset that is mostly copies of a few images has too few
    # independent groups to cross-validate, and the check says so instead of failing.
    from headstart.auditing.labels import LabelCheck, check_labels
    from headstart.data.sources import Sample

    rng = np.random.default_rng(0)
    samples = [Sample(tmp_path / f"{i}.png", "ab"[i % 2], "train") for i in range(40)]
    features = rng.normal(size=(40, 16)).astype(np.float32)
    assert check_labels(samples, features, [0] * 40) is None
    assert check_labels(samples, features, [i % 2 for i in range(40)]) is None
    assert isinstance(check_labels(samples, features, [i % 4 for i in range(40)]), LabelCheck)


def test_a_folder_of_look_alikes_proposes_a_bounded_number_of_pairs(tmp_path):
    from headstart.auditing.duplicates import CANDIDATES_PER_IMAGE, _hash_pairs
    from headstart.auditing.pixels import ImageStats
    from headstart.data.sources import Sample

    look_alike = ImageStats(64, 64, "RGB", 3, 40.0, 0x0F0F, 0xF0F0)
    samples = [Sample(tmp_path / f"{i}.png", "a", "train") for i in range(300)]
    pairs = _hash_pairs(samples, dict.fromkeys(samples, look_alike))
    assert len(pairs) <= 300 * CANDIDATES_PER_IMAGE  # not all 44,850
    assert len({frozenset((a, b)) for a, b, _ in pairs}) == len(pairs)


def test_a_split_keeps_file_names_that_are_not_utf8(small_faces, tmp_path):
    import os

    data = tmp_path / "faces"
    shutil.copytree(small_faces, data)
    odd = Path(os.fsdecode(bytes(data / "face") + b"/caf\xe9.png"))
    Image.open(next((data / "face").glob("*.png"))).rotate(90).save(odd, format="PNG")
    dataset = discover(data)
    _, preprocessing, _ = create_backbone("efficientnet_lite0")
    images = DecodedImages(preprocessing.resize_size, preprocessing.interpolation)
    report = audit_dataset(dataset, None, images, quiet=True)
    again = discover(report.write_split(tmp_path / "split.csv"))
    assert odd in {s.path for s in again.samples}


def test_cli_audit_without_a_backbone_still_finds_copies(small_faces, tmp_path, capsys):
    data = tmp_path / "faces"
    shutil.copytree(small_faces, data)
    first = sorted((data / "face").glob("*.png"))[0]
    shutil.copy(first, data / "not-face" / "mislabelled-copy.png")
    out = tmp_path / "out"
    assert main(["audit", str(data), "--no-pretrained", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "label issues: not checked" in printed
    written = json.loads((out / "audit.json").read_text())
    assert written["duplicates"]["conflicting_labels"] == 1
    assert written["label_issues"] is None


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 handwritten digits a class (8x8 pixels), labelled right: too few to learn them well."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("few") / "digits"
    for digit in range(10):
        folder = root / str(digit)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(digits.target == digit)[:15]:
            Image.fromarray(np.uint8(digits.images[i] * 15)).save(folder / f"{i:04d}.png")
    return root


@pytest.mark.slow  # the noise pictures below get the same verdict
def test_on_weak_features_the_list_of_wrong_labels_is_called_unreliable(
    few_digits, tmp_path, capsys
):
    # Every label is right, so every image the probe doubts is its own mistake: the audit
    # gives cleanlab's estimate, and says the list is not to be believed, and why.
    out = tmp_path / "audit"
    assert main(["audit", str(few_digits), "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads((out / "audit.json").read_text())["label_issues"]
    assert written["reliable"] is False and written["probe_accuracy"] < 0.9  # 77% measured
    assert written["estimated_count"] == written["count"] == len(written["list"]) > 0
    assert written["why"].startswith("the probe that judges the labels agrees with only")
    assert "labels may be wrong (cleanlab's estimate" in printed
    assert "the list is unreliable: the probe that judges the labels agrees with only" in printed


def test_pictures_of_noise_get_no_wrong_labels_claimed_as_fact(tmp_path):
    # Pictures of noise say nothing about their class: the probe can only guess, and cleanlab,
    # taking its guesses for evidence, estimates that most labels are wrong.
    from headstart.report.folder import ReportedRun
    from headstart.report.summary import audit as audit_section

    rng = np.random.default_rng(0)
    for i in range(100):
        path = tmp_path / "noise" / f"class-{i % 4}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(path)
    report = audit(tmp_path / "noise", quiet=True)
    check = report.label_check
    assert check.estimated > 30 and not check.reliable
    assert "labels may be wrong (cleanlab's estimate" in report.headline()
    assert f"the list is unreliable: {check.why}" in report.headline()
    # The run's report page says so next to the number.
    report.write(tmp_path / "run" / "audit")
    page = audit_section(ReportedRun(tmp_path / "run"))
    assert f"about {check.estimated} (cleanlab" in page
    assert "UNRELIABLE" in page and check.why in page


def test_a_probe_that_answers_the_largest_class_is_not_trusted(tmp_path):
    # 200 images of one class, 10 of another, features that say nothing: always answering
    # the large class is right 95% of the time, and would list the small class as mislabelled.
    from headstart.auditing.labels import check_labels
    from headstart.data.sources import Sample

    samples = [Sample(tmp_path / f"{i}.png", "large", "train") for i in range(200)]
    samples += [Sample(tmp_path / f"small-{i}.png", "small", "train") for i in range(10)]
    features = np.random.default_rng(0).normal(size=(210, 32))
    check = check_labels(samples, features)
    assert check.probe_accuracy >= 0.9 and not check.reliable
    assert "in an average class (balanced accuracy)" in check.why
    assert "no better than always answering the largest class (95%)" in check.why


def test_the_label_check_works_on_the_callers_array_only_when_given_it():
    # The audit gives the label check its own array of features, standardised in place (at
    # 50,000 images a copy is 256 MB); any other caller's array is left as it was.
    from headstart.auditing.labels import check_labels
    from headstart.data.sources import Sample

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    features = (rng.normal(size=(120, 16)) + 2 * labels[:, None] + 5).astype(np.float32)
    samples = [Sample(Path(f"/{i}.png"), "abc"[label], "train") for i, label in enumerate(labels)]
    kept = features.copy()
    checked = check_labels(samples, features)
    assert np.array_equal(features, kept)
    given = check_labels(samples, features, overwrite=True)
    assert abs(features.mean(0)).max() < 1e-4  # standardised where it lay
    assert given.probe_accuracy == checked.probe_accuracy > 0.9
    assert [issue.sample for issue in given.issues] == [issue.sample for issue in checked.issues]
