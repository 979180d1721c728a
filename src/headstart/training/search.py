"""The fine-tuning settings a hyperparameter search draws, as data.

Random or Bayesian search over ranges beats a grid (Bergstra & Bengio 2012): each trial tries
a new value of every setting, so the few settings that matter are sampled densely. A
:class:`SearchSpace` names the settings that matter for a fine-tuning (the learning rate
first), each with its range, under the names :class:`headstart.config.FitConfig` gives them:
a trial's draw is a set of fit settings, and the best one is a normal fit.

The course's procedure narrows the space in rounds: a coarse round of short trials over wide
ranges, then a finer round around the best of them (:meth:`SearchSpace.around`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

__all__ = ["HIGHEST_LR", "SearchSpace", "Suggester"]

#: The learning rates searched stay below this: a guess three times above a range test's
#: suggestion, narrowed three times again, must not reach rates no fine-tuning survives.
HIGHEST_LR = 0.5
#: What the search calls each setting it draws (the fit setting, for all but one).
_DRAWN = (
    "lr",
    "layer_decay",
    "weight_decay",
    "label_smoothing",
    "trained_stages",
    "augment",
    "mixup",
    "cutmix",
)


class Suggester(Protocol):
    """What draws the values: an Optuna trial."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: tuple) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the fine-tuning settings, and the epochs each trial trains."""

    lr: tuple[float, float]  # the top stage's learning rate, drawn on a log scale
    layer_decay: tuple[float, float]
    weight_decay: tuple[float, float]  # log scale
    label_smoothing: tuple[float, float]
    trained_stages: tuple[int, int]  # the top stages that train (the rest are frozen)
    augment: tuple[str, ...]
    mixup: tuple[float, ...]  # Mixup's alpha; 0: off
    cutmix: tuple[float, ...]
    epochs: int
    stages: int  # the network's stages: trained_stages of them leave the rest frozen
    #: The settings the user gave: not drawn, the same in every trial ("freeze" fixes
    #: trained_stages).
    fixed: tuple[str, ...] = ()

    @classmethod
    def wide(cls, lr: float, stages: int, epochs: int, fixed: tuple[str, ...] = ()) -> SearchSpace:
        """The coarse round's space: a learning rate from a tenth to three times ``lr`` (the
        range test's suggestion, or the plan's), every other setting over what is usual;
        the ``fixed`` settings left as given."""
        return cls(
            lr=(lr / 10, min(lr * 3, HIGHEST_LR)),
            layer_decay=(0.3, 1.0),
            weight_decay=(1e-4, 0.3),
            label_smoothing=(0.0, 0.2),
            trained_stages=(1, stages),
            augment=("light", "standard", "strong"),
            mixup=(0.0, 0.2),
            cutmix=(0.0, 1.0),
            epochs=epochs,
            stages=stages,
            fixed=cls.not_drawn(fixed),
        )

    @staticmethod
    def not_drawn(given: tuple[str, ...]) -> tuple[str, ...]:
        """The settings of ``given`` that a search would draw: it leaves them as given."""
        return tuple(name for name in given if name in (*_DRAWN, "freeze"))

    def suggest(self, trial: Suggester) -> dict[str, Any]:
        """One draw, as fit settings (``FitConfig`` names); the fixed ones are not drawn."""
        draws = {
            "lr": lambda: trial.suggest_float("lr", *self.lr, log=True),
            "layer_decay": lambda: trial.suggest_float("layer_decay", *self.layer_decay),
            "weight_decay": lambda: trial.suggest_float(
                "weight_decay", *self.weight_decay, log=True
            ),
            "label_smoothing": lambda: trial.suggest_float(
                "label_smoothing", *self.label_smoothing
            ),
            "trained_stages": lambda: trial.suggest_int("trained_stages", *self.trained_stages),
            "augment": lambda: trial.suggest_categorical("augment", self.augment),
            "mixup": lambda: trial.suggest_categorical("mixup", self.mixup),
            "cutmix": lambda: trial.suggest_categorical("cutmix", self.cutmix),
        }
        free = [name for name in _DRAWN if not self._is_fixed(name)]
        return self.settings({name: draws[name]() for name in free})

    def settings(self, drawn: dict[str, Any]) -> dict[str, Any]:
        """A draw (by the names the search gives its parameters) as fit settings."""
        settings = {k: v for k, v in drawn.items() if k != "trained_stages"}
        if "trained_stages" in drawn:
            trained = drawn["trained_stages"]
            settings["freeze"] = "none" if trained >= self.stages else self.stages - trained
        return {**settings, "epochs": self.epochs}

    def _is_fixed(self, name: str) -> bool:
        return name in self.fixed or (name == "trained_stages" and "freeze" in self.fixed)

    def around(self, best: dict[str, Any], epochs: int) -> SearchSpace:
        """The finer round's space: each range narrowed around the ``best`` draw (a factor of
        three either way on a log scale, a fifth of the range on a linear one), choices kept
        to the best's, and ``epochs`` a trial."""

        def near(value: float, bounds: tuple[float, float], log: bool) -> tuple[float, float]:
            low, high = bounds
            if log:
                return max(low, value / 3), min(high, value * 3)
            reach = (high - low) / 5
            return max(low, value - reach), min(high, value + reach)

        narrowed: dict[str, Any] = {"epochs": epochs}
        if "lr" in best:  # may leave the coarse range: that was a guess
            narrowed["lr"] = (best["lr"] / 3, min(best["lr"] * 3, HIGHEST_LR))
        for name, log in (
            ("layer_decay", False),
            ("weight_decay", True),
            ("label_smoothing", False),
        ):
            if name in best:
                narrowed[name] = near(best[name], getattr(self, name), log)
        if "trained_stages" in best:
            trained = best["trained_stages"]
            narrowed["trained_stages"] = (max(1, trained - 1), min(self.stages, trained + 1))
        for name in ("augment", "mixup", "cutmix"):
            if name in best:
                narrowed[name] = (best[name],)
        return replace(self, **narrowed)

    def drawn_count(self) -> int:
        """How many settings vary from trial to trial."""
        spans = {
            "lr": self.lr[0] < self.lr[1],
            "layer_decay": self.layer_decay[0] < self.layer_decay[1],
            "weight_decay": self.weight_decay[0] < self.weight_decay[1],
            "label_smoothing": self.label_smoothing[0] < self.label_smoothing[1],
            "trained_stages": self.trained_stages[0] < self.trained_stages[1],
            "augment": len(self.augment) > 1,
            "mixup": len(self.mixup) > 1,
            "cutmix": len(self.cutmix) > 1,
        }
        return sum(varies and not self._is_fixed(name) for name, varies in spans.items())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        """The space :meth:`to_dict` wrote (JSON lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def describe(self) -> str:
        def span(bounds: tuple[float, float]) -> str:
            return f"{bounds[0]:.3g} to {bounds[1]:.3g}"

        given = f"; given, not searched: {', '.join(self.fixed)}" if self.fixed else ""
        return (
            f"learning rate {span(self.lr)} (log), layer decay {span(self.layer_decay)}, weight "
            f"decay {span(self.weight_decay)} (log), label smoothing "
            f"{span(self.label_smoothing)}, the top {self.trained_stages[0]} to "
            f"{self.trained_stages[1]} of {self.stages} stages trained, augmentation "
            f"{'/'.join(self.augment)}, Mixup {'/'.join(map(str, self.mixup))}, CutMix "
            f"{'/'.join(map(str, self.cutmix))}; {self.epochs} epoch"
            + ("s" if self.epochs != 1 else "")
            + " a trial"
            + given
        )
