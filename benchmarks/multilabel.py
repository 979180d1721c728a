"""How well does ``fit --task multi-label`` say which labels a real photo holds?

Labels combined from a real photo set of ``../shared/data`` (see its ``SOURCE.md``): each
image is a 2 x 2 grid of tiles, each tile a real photo from the set (present with
probability 0.6, else left grey), and its labels are the classes of the photos it shows (none
to four tiles; a class may show twice). A photo is used in one image only, so no photo is in
two images; the set's ``train/`` photos make the table's rows without a split (split here,
80/20 for validation), its ``test/`` photos the rows with split ``test``.

The fit runs with defaults (``--strategy auto``) through the public API; printed for
validation and test: mAP, micro- and macro-F1 and every-label-right, beside knowing only the
labels' frequencies, for the probe and the fine-tuning, the one kept and why, and the time.
Numbers only; nothing is asserted.

Usage: python benchmarks/multilabel.py [--only trashnet,sign_language_digits]
       [--strategy auto] [--data ../shared/data] [--work DIR]
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
SETS = ("trashnet", "sign_language_digits")
TILE, PRESENT = 112, 0.6


def grid_table(data: Path, work: Path, name: str, seed: int = 0) -> Path:
    """Grids of the set's photos, each photo used once; ``work/<name>.csv``."""
    rng = np.random.default_rng(seed)
    folder = work / f"{name}-grids"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,labels,split"]
    for split, given in (("train", ""), ("test", "test")):
        photos = sorted((data / name / split).rglob("*.*"))
        photos = [photos[i] for i in rng.permutation(len(photos))]
        made = 0
        while photos:
            canvas = Image.new("RGB", (2 * TILE, 2 * TILE), (128, 128, 128))
            labels = []
            for slot in range(4):
                if photos and rng.random() < PRESENT:
                    photo = photos.pop()
                    with Image.open(photo) as image:
                        tile = image.convert("RGB").resize((TILE, TILE), Image.BICUBIC)
                    canvas.paste(tile, ((slot % 2) * TILE, (slot // 2) * TILE))
                    labels.append(photo.parent.name)
            target = folder / f"{split}-{made:05d}.jpg"
            if not target.exists():
                canvas.save(target, quality=92)
            rows.append(f"{target},{'|'.join(sorted(set(labels)))},{given}")
            made += 1
    table = work / f"{name}-grids.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def scores_line(s: dict) -> str:
    base = s["frequency_baseline"]
    return (
        f"mAP {s['map']:.3f} micro-F1 {s['micro_f1']:.3f} macro-F1 {s['macro_f1']:.3f} all "
        f"right {s['subset_accuracy']:.1%} (n={s['n']}; the frequencies: mAP "
        f"{base['map']:.3f}, macro-F1 {base['macro_f1']:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SETS))
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="headstart-multilabel-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        table = grid_table(args.data, work, name)
        fit_and_print(table, "multi-label", name, args.strategy, work, scores_line, f"{name} grids")


if __name__ == "__main__":
    main()
