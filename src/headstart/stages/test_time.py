"""The test-time stage: which crops of an image a prediction averages, decided on validation.

Averaging a model's predictions over several crops of each image (test-time augmentation)
buys a little accuracy for a multiple of the prediction's cost: the wide crop (the central
square, zoomed out to the input size) doubles it, the four corners and the centre quintuple
it. Under
``--tta auto`` the kept model's logits are computed for every crop of :data:`CROPS` on the
validation images (once each, in every view), and a set of crops is kept only where it
lowers the validation negative log-likelihood beyond noise and breaks no more validation
images than it fixes. The likelihood is compared with a temperature fitted to each set, so
that a set is not kept for being less sure of itself (averaging softens the probabilities,
which the calibrate stage does anyway), and image by image: the paired mean difference in
standard errors, as :data:`KEEP_CROPS` says.

Measured before this rule was written (``/work/bench/squeeze0``: headstart's fine-tunings of
the three real photo sets, held-out test photos, temperatures from validation): six crops
against the centre alone lowered the test NLL on all three sets (brain scans 0.152 -> 0.148,
trash 0.339 -> 0.321, hand signs 0.062 -> 0.053) and moved test accuracy by +0.0, +0.2 and
+0.7 points; on the linear probes the accuracy moved by -0.3 to +0.8 points. The rule keeps
six crops on trash (z = 2.0 on 404 validation photos) and none on the other two: small gains,
never a loss, and the prediction cost paid only where validation shows something for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..config import FitConfig
from ..prediction import log_softmax
from ..preprocessing import CROP_SETS, CROPS
from ..report.calibration import fit_temperature
from ..torch_model import Model
from .data import Prepared
from .evaluate import Candidate, Scored, paired, score_pixels

__all__ = ["KEEP_CROPS", "MEASURED_IMAGES", "TestTime", "choose_crops", "compare_crops"]

#: A set of crops is kept when it lowers the validation NLL (each set at its own fitted
#: temperature) by at least this many standard errors of the paired per-image difference,
#: the same bar as keeping a fine-tuning over the probe (about a 7% chance, one-sided, that
#: crops that change nothing look that much better).
KEEP_CROPS = 1.5
#: At most this many validation images are measured (drawn at random by the seed):
#: enough to see a difference in NLL, and a bounded cost on a large validation split.
MEASURED_IMAGES = 1000


@dataclass(frozen=True)
class TestTime:
    """What the stage decided: the crops the bundle averages, why, and what it measured (per
    set of crops: the z of its NLL gain, the images it fixed and broke, its NLL and
    accuracy on the measured validation images)."""

    crops: tuple[str, ...]
    why: str
    measured: dict[str, dict] | None = None
    images: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "crops": list(self.crops)}


def choose_crops(kept: Candidate, ready: Prepared, config: FitConfig, fine_tuned: bool) -> TestTime:
    """The crops ``kept`` predicts from, set on its model, and its scores redone with them
    where they change; ``fine_tuned``: whether the fit fine-tuned (``auto`` measures only
    then: after seconds of a linear probe, measuring every crop would cost more than the fit)."""
    model, asked = kept.model, config.tta
    if asked != "auto":
        crops = CROP_SETS[asked]
        if crops != model.test_time_crops:
            _use(kept, crops, ready)
        return TestTime(crops, f"test-time crops: {_described(crops)} (--tta {asked})")
    val = ready.dataset.split("val")
    if not fine_tuned or not val:
        why = (
            "test-time crops not measured: the fit was a linear probe alone (seconds); "
            "--tta wide, five-crop or six-crop averages more crops"
            if val
            else "test-time crops not measured: no validation images"
        )
        return TestTime(CROPS[:1], why)
    measured = _measured_images(val, config.seed)
    labels = np.array([ready.index[s.label] for s in measured])
    logits = _crop_logits(model, [s.path for s in measured], ready)
    kept_name, found = compare_crops(logits, labels)
    crops = CROP_SETS[kept_name]
    if kept_name != "none":
        _use(kept, crops, ready, logits if len(measured) == len(val) else None)
    return TestTime(crops, _why(kept_name, found, len(measured)), found, len(measured))


def _measured_images(val: list, seed: int) -> list:
    """The validation images measured: all of them, or :data:`MEASURED_IMAGES` of them drawn
    at random by the seed."""
    if len(val) <= MEASURED_IMAGES:
        return val
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(val))[:MEASURED_IMAGES]
    return [val[i] for i in sorted(chosen)]


def _crop_logits(model: Model, paths: list, ready: Prepared) -> dict[str, np.ndarray]:
    """The model's logits (averaged over its views) for each of :data:`CROPS` of the images."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in CROPS}
    all_crops = model.inputs.with_crops(CROPS)
    for start in range(0, len(paths), 32):
        pixels = [ready.images.get(path) for path in paths[start : start + 32]]
        logits = model.logits(all_crops.batch_array(pixels))
        for i, name in enumerate(CROPS):
            out[name].append(logits[i :: len(CROPS)])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def compare_crops(logits: dict[str, np.ndarray], labels: np.ndarray) -> tuple[str, dict[str, dict]]:
    """Every set of :data:`CROP_SETS` measured against the centre crop alone, from each
    crop's logits of the same images; and the name of the set to keep (``"none"``: the
    centre alone)."""
    found = {name: _compare(logits, crops, labels) for name, crops in CROP_SETS.items()}
    return _best(found), found


def _compare(logits: dict[str, np.ndarray], crops: tuple[str, ...], labels: np.ndarray) -> dict:
    """One set of crops against the centre alone, each at its own fitted temperature."""
    mean = np.mean([logits[name] for name in crops], axis=0)
    centre = logits[CROPS[0]]
    losses = _losses(mean, labels)
    gain = _losses(centre, labels) - losses
    spread = gain.std(ddof=1) if len(gain) > 1 else 0.0
    z = float(gain.mean() / (spread / np.sqrt(len(gain)))) if spread > 0 else 0.0
    right = mean.argmax(1) == labels
    changed = paired(right, centre.argmax(1) == labels)
    return {
        "z": z,
        "fixed": changed["fixed"],
        "broken": changed["broken"],
        "nll": float(losses.mean()),
        "accuracy": float(right.mean()),
        "cost": len(crops),
    }


def _losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-image negative log-likelihood at the temperature fitted to these logits."""
    log_p = log_softmax(logits / fit_temperature(logits, labels))
    return -log_p[np.arange(len(labels)), labels]


def _best(found: dict[str, dict]) -> str:
    """The set kept: of those beyond noise and breaking no more than they fix, the one with
    the largest z (the cheaper on a tie); else the centre alone."""
    good = [
        name
        for name, m in found.items()
        if name != "none" and m["z"] >= KEEP_CROPS and m["fixed"] >= m["broken"]
    ]
    return max(good, key=lambda name: (found[name]["z"], -found[name]["cost"]), default="none")


def _why(kept: str, found: dict[str, dict], images: int) -> str:
    def measured(name: str) -> str:
        m = found[name]
        return f"{name} z = {m['z']:.1f} (+{m['fixed']}/-{m['broken']})"

    others = ", ".join(measured(name) for name in found if name not in ("none", kept))
    if kept == "none":
        return (
            f"test-time crops: the centre crop alone; on {images} validation images no set of "
            f"crops lowered the loss by {KEEP_CROPS} standard errors without breaking more "
            f"images than it fixed ({others})"
        )
    return (
        f"test-time crops: {_described(CROP_SETS[kept])} averaged ({measured(kept)} on "
        f"{images} validation images: its loss lower by that many standard errors, images "
        f"fixed/broken; {others}); predictions cost {found[kept]['cost']}x; --tta none "
        "predicts from the centre crop"
    )


def _described(crops: tuple[str, ...]) -> str:
    return "the centre crop alone" if crops == CROPS[:1] else ", ".join(crops)


def _use(
    kept: Candidate,
    crops: tuple[str, ...],
    ready: Prepared,
    val_logits: dict[str, np.ndarray] | None = None,
) -> None:
    """Set ``crops`` on the kept model and score it again with them (on validation from
    ``val_logits``, every validation image's logits by crop, when measured already)."""
    kept.model.inputs = kept.model.inputs.with_crops(crops)
    again = [split for split in kept.scored if val_logits is None or split != "val"]
    kept.scored.update(score_pixels(kept.model, ready, again))
    if val_logits is not None:
        logits = np.mean([val_logits[name] for name in crops], axis=0)
        log_probabilities = kept.model.log_softmax(logits)
        kept.scored["val"] = Scored.of(log_probabilities, ready.dataset.split("val"), ready)
