"""How well does ``fit --task regression`` predict a number measured on real photos?

Two quantities, built from the real photo sets in ``../shared/data`` (see each ``SOURCE.md``):

- ``fingers``: the number of raised fingers in the hand-sign photos of the digits 0 to 5 (in
  American Sign Language those digits are shown by that many extended fingers, the thumb
  counted for 3 and 5). A count, from real photos with real labels; 6 to 9 are left out (their
  signs are not counts).
- ``rotation``: the angle, in degrees, by which a trash photo was turned (drawn uniformly in
  [-40, 40] from a seeded generator; the rotated photo's centre square is kept, so no blank
  corner shows it). Its mirror image has the opposite angle, which the plan must notice.

Each set's ``train/`` photos are the table's rows without a split (split here, 80/20 for
validation), its ``test/`` photos the rows with split ``test``. The fit runs with defaults
(``--strategy auto``) through the public API; printed for validation and test: MAE, RMSE and
R², beside predicting the training mean, for the probe and the fine-tuning, the one kept and
why, and the time. Numbers only; nothing is asserted.

Usage: python benchmarks/regression.py [--only fingers,rotation] [--strategy auto]
       [--data ../shared/data] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from task_fit import fit_and_print

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUANTITIES = ("fingers", "rotation")
LARGEST_ANGLE = 40.0


def fingers_table(data: Path, work: Path) -> Path:
    """Hand signs 0-5: the digit is the number of raised fingers."""
    rows = ["path,fingers,split"]
    for split, given in (("train", ""), ("test", "test")):
        for digit in range(6):
            for photo in sorted((data / "sign_language_digits" / split / str(digit)).iterdir()):
                rows.append(f"{photo},{digit},{given}")
    table = work / "fingers.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def rotation_table(data: Path, work: Path, seed: int = 0) -> Path:
    """Trash photos turned by a random angle; the centre square that stays filled kept."""
    rng = np.random.default_rng(seed)
    folder = work / "rotated"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,angle,split"]
    for split, given in (("train", ""), ("test", "test")):
        photos = sorted((data / "trashnet" / split).rglob("*.jpg"))
        for i, photo in enumerate(photos):
            angle = float(rng.uniform(-LARGEST_ANGLE, LARGEST_ANGLE))
            target = folder / f"{split}-{i:05d}.jpg"
            if not target.exists():
                with Image.open(photo) as image:
                    turned = image.convert("RGB").rotate(angle, resample=Image.BICUBIC)
                    side = _filled_square(*image.size, angle)
                    left, top = (image.width - side) // 2, (image.height - side) // 2
                    turned.crop((left, top, left + side, top + side)).save(target, quality=92)
            rows.append(f"{target},{angle:.3f},{given}")
    table = work / "rotation.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def _filled_square(width: int, height: int, angle: float) -> int:
    """The side of the largest centred square inside a ``width`` x ``height`` photo turned
    by ``angle`` degrees."""
    theta = np.radians(abs(angle))
    # A centred square of side s, turned, fits when s * (cos + sin) <= each side of the photo.
    return int(min(width, height) / (np.cos(theta) + np.sin(theta)))


def scores_line(s: dict) -> str:
    base = s["mean_baseline"]
    return (
        f"MAE {s['mae']:.3f} RMSE {s['rmse']:.3f} R² {s['r2']:.3f} (n={s['n']}; the mean: "
        f"MAE {base['mae']:.3f}, RMSE {base['rmse']:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(QUANTITIES))
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="headstart-regression-"))
    work.mkdir(parents=True, exist_ok=True)
    makers = {"fingers": fingers_table, "rotation": rotation_table}
    for quantity in args.only.split(","):
        table = makers[quantity](args.data, work)
        fit_and_print(table, "regression", quantity, args.strategy, work, scores_line)


if __name__ == "__main__":
    main()
