"""The benchmark datasets, written as folders that ``headstart.fit`` reads.

``lfw`` and ``digits`` are headstart's built-in demo datasets (:func:`headstart.demo.demo_dataset`);
``digits_subset`` keeps the first ``per_class`` digits of each class, so a benchmark that
fine-tunes stays within minutes. ``low_resolution_photos`` is the low-resolution bar: crops of
the photographs that ship inside scikit-image and scikit-learn, shrunk to about 20 px of real
detail and stored at 128 px, the way thumbnails blown up for a web page look.

The low-resolution set holds out image *regions*, not just images: each photo is cut into a
chequerboard of tiles, training crops come from the white tiles and validation crops from the
black ones, so no validation crop shares a pixel with a training crop (nothing for the audit to
flag as a leak) while both splits see the same kind of content.

Usage: ``python benchmarks/datasets.py FOLDER`` writes the low-resolution set to FOLDER.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from headstart.demo import demo_dataset

__all__ = ["PHOTOS", "digits_subset", "lfw", "low_resolution_photos"]


def _sklearn_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view

    return load


#: Class name -> the colour photograph its crops come from (all ship inside the packages,
#: nothing is downloaded). Colour photos only: a grayscale class would be told apart by its
#: lack of colour alone.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage_photo("astronaut"),
    "cat": _skimage_photo("chelsea"),
    "coffee": _skimage_photo("coffee"),
    "rocket": _skimage_photo("rocket"),
    "motorcycle": _skimage_photo("stereo_motorcycle"),
    "palace": _sklearn_photo("china.jpg"),
    "flower": _sklearn_photo("flower.jpg"),
    "galaxies": _skimage_photo("hubble_deep_field"),
}


def lfw(root: Path) -> Path:
    """scikit-image's 100 faces and 100 other patches, 25x25 grayscale, in class folders."""
    return demo_dataset("lfw", root)


def digits_subset(root: Path, per_class: int = 60) -> Path:
    """The first ``per_class`` scikit-learn digits of each class (8x8 grayscale), in class
    folders under ``root/digits-<per_class>``; every digit (about 180 a class) when larger."""
    everything = demo_dataset("digits", root)
    folder = root / f"digits-{per_class}"
    if (folder / ".complete").exists():
        return folder
    for class_folder in sorted(p for p in everything.iterdir() if p.is_dir()):
        target = folder / class_folder.name
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(class_folder.glob("*.png"))[:per_class]:
            shutil.copyfile(path, target / path.name)
    (folder / ".complete").touch()
    return folder


def low_resolution_photos(
    root: Path,
    *,
    detail: int = 20,
    stored: int = 128,
    train_per_class: int = 20,
    val_per_class: int = 30,
    grid: int = 6,
    classes: int = len(PHOTOS),
    jitter: float = 0.9,
    seed: int = 0,
) -> Path:
    """Crops of :data:`PHOTOS` with ``detail`` px of real detail, stored at ``stored`` px.

    Each crop is a square of 50-100% of a tile (the photo's short side over ``grid``), mirrored
    at random, its brightness, contrast and saturation scaled by random factors within
    ``1 +- jitter`` (so that colour alone does not name the photo), shrunk to ``detail`` px
    with an antialiasing filter and blown back up to ``stored`` px (bicubic): ``stored`` px of
    file, ``detail`` px of information. The class is the photo the crop came from. Written
    once, as ``train/<class>/`` and ``val/<class>/`` PNG files under a folder named after the
    settings, which is returned.

    The defaults are calibrated so that the frozen features only partly fit: 8 classes, 160
    training and 240 validation crops; a linear probe reaches 70.8% on validation (75.4% with
    ``jitter=0.8``, 91% without jitter and with 40 crops a class on a 4x4 grid).
    """
    if not 4 <= detail <= stored:
        raise ValueError(f"detail={detail} must be between 4 and stored={stored}")
    if not 1 <= classes <= len(PHOTOS):
        raise ValueError(f"classes={classes} must be between 1 and {len(PHOTOS)}")
    name = (
        f"lowres-{detail}px-{stored}-{classes}x{train_per_class}+{val_per_class}"
        f"-g{grid}-j{jitter:g}-s{seed}"
    )
    folder = Path(root) / name
    if (folder / ".complete").exists():
        return folder
    rng = np.random.default_rng(seed)
    for label, load in list(PHOTOS.items())[:classes]:
        photo = Image.fromarray(load()).convert("RGB")
        tile = min(photo.size) // grid
        tiles = [
            (row, col) for row in range(photo.height // tile) for col in range(photo.width // tile)
        ]
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            parity = 0 if split == "train" else 1
            mine = [(r, c) for r, c in tiles if (r + c) % 2 == parity]
            out = folder / split / label
            out.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                row, col = mine[rng.integers(len(mine))]
                side = int(tile * rng.uniform(0.5, 1.0))
                left = col * tile + rng.integers(tile - side + 1)
                top = row * tile + rng.integers(tile - side + 1)
                crop = photo.crop((left, top, left + side, top + side))
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                    crop = enhance(crop).enhance(1 + jitter * rng.uniform(-1, 1))
                small = crop.resize((detail, detail), Image.Resampling.BOX, reducing_gap=None)
                small.resize((stored, stored), Image.Resampling.BICUBIC).save(
                    out / f"{label}-{split}-{i:03d}.png"
                )
    (folder / ".complete").touch()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the low-resolution photo benchmark set.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--detail", type=int, default=20)
    args = parser.parse_args()
    print(low_resolution_photos(args.folder, detail=args.detail))


if __name__ == "__main__":
    main()
