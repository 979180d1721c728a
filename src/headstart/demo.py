"""``headstart demo``: the whole job, offline, on a real dataset shipped inside a package.

``lfw``: scikit-image's LFW subset, 100 face crops and 100 other patches (25x25 grayscale);
``digits``: scikit-learn's 1,797 handwritten digits (8x8). Written out as image files, then
fitted like any folder, then (by default) fitted again from random initialisation on the same
split, to show what transfer buys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .console import err, out
from .errors import HeadstartError
from .printing import print_comparison, print_fit_summary
from .recipe import FitResult, fit
from .runfolder import new_folder
from .stages.data import default_cache_dir

__all__ = ["demo_dataset", "run_demo"]


def demo_dataset(name: str, root: Path | None = None) -> Path:
    """Write a built-in dataset as class folders of PNG files (once) and return the folder."""
    root = Path(root or default_cache_dir() / "demo") / name
    if (root / ".complete").exists():
        return root
    if name == "lfw":
        try:
            from skimage.data import lfw_subset
        except ImportError:
            raise HeadstartError(
                "the lfw demo needs scikit-image: pip install scikit-image"
            ) from None
        faces = lfw_subset()  # 100 faces, then 100 non-faces; floats in [0, 1]
        arrays = (faces * 255).round().astype(np.uint8)
        labels = ["face"] * 100 + ["not-face"] * 100
    elif name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        arrays = (digits.images * (255 / 16)).round().astype(np.uint8)
        labels = [str(d) for d in digits.target]
    else:
        raise HeadstartError(f"dataset={name!r}; built-in datasets: lfw, digits")
    for i, (array, label) in enumerate(zip(arrays, labels, strict=True)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, mode="L").save(folder / f"{label}-{i:04d}.png")
    (root / ".complete").touch()
    return root


def run_demo(
    name: str = "lfw", *, runs_dir: str = "runs", compare_scratch: bool = True
) -> FitResult:
    data = demo_dataset(name)
    err.print(f"[bold]demo[/]: {name} written to {data}; fitting with defaults")
    if compare_scratch:
        err.print("[bold]demo[/]: then the same network from random initialisation, same split")
    result = fit(
        data,
        runs_dir=runs_dir,
        name=new_folder(runs_dir, f"demo-{name}").name,
        compare_scratch=compare_scratch,
    )
    print_fit_summary(result)
    if compare_scratch:
        print_comparison(result.run_dir)
    out.print(f"\nreport: {result.run_dir / 'report.html'}")
    return result
