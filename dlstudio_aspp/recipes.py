"""Recipes as records: each one's values, why each value was chosen (naming its evidence), and what it costs.

A recipe is a partial spec layered over :class:`~dlstudio_aspp.spec.RunSpec`'s defaults
(explicit values win). Its ``why`` gives, per value, one line that names the section of
``benchmarks/RESULTS.md`` holding the measurement; the numbers stay there. A measured cost
(:class:`Cost`) is declared once, beside the recipe it belongs to; every help text, run card,
docstring and README line that states the duration reads it from here (a test checks the
README). Adding a recipe is adding one :class:`Recipe` to :data:`RECIPE_LIST`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

RESULTS = "benchmarks/RESULTS.md"


@dataclass(frozen=True)
class Cost:
    """A duration measured once: ``minutes`` for ``what``, on ``machine``, at ``commit`` on ``date``, recorded
    in the RESULTS section ``evidence``."""

    minutes: float
    machine: str
    what: str
    date: str
    commit: str
    evidence: str

    def short(self) -> str:
        """'about 81 minutes on 2 CPU cores' (help texts)."""
        return f"about {self.minutes:.0f} minutes on {self.machine}"

    def words(self) -> str:
        """The duration with where and when it was measured (cards, docs)."""
        return (f"{self.short()} ({self.what}; measured {self.date} at {self.commit}, {RESULTS}, "
                f"“{self.evidence}”)")


@dataclass(frozen=True)
class Recipe:
    """One recipe: its ``values`` (RunSpec fields), the reason for each (``why``), what it is for (``about``)
    and, when measured, its ``cost``."""

    name: str
    about: str
    values: Mapping[str, Any]
    why: Mapping[str, str] = field(default_factory=dict)
    cost: Optional[Cost] = None


_MODERN = dict(head="dense", loss="bce+dice", optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="onecycle",
               grad_clip=1.0, input_scale=1 / 255, normalize_masks=True)
_FRONT = "The recipe from the front: `run --dataset coco`'s defaults"
_CHOICES = "Each choice against the others, paired over 3 seeds"

RECIPE_LIST: List[Recipe] = [
    Recipe("stock", "stock DLStudio: SGD at DLStudio's lr and momentum, MSE on 0/50(k+1), 0..255 input, the "
                    "stock output layer", {}),
    Recipe("modern", "tuned on the real PurdueShapes5MultiObject: the dense output layer, AdamW, one-cycle, "
                     "BCE + batch soft Dice on logits, [0, 1] input, {0, 1} targets "
                     f"({RESULTS}, “Output layer and recipe: learning curves”)", _MODERN),
    Recipe("coco", "the modern recipe tuned on real COCO photographs of people: standard augmentation, inputs "
                   "normalised by the training images, every training image trained on and the last weights kept, "
                   "depth 4 (run builds at 96x96), a budget in iterations so that a larger set does not lengthen "
                   "the run",
           dict(_MODERN, dataset="coco", depth=4, val_split=None, val_every=500, max_iters=11000, log_every=50),
           why={
               "head": "the dense output layer writes every pixel (stock's writes only even rows and columns)",
               "loss": "BCE + soft Dice on logits: the modern recipe's, tuned on PurdueShapes5MultiObject",
               "optimizer": "AdamW: the modern recipe's, tuned on PurdueShapes5MultiObject",
               "lr": f"1e-3 and 3e-3 were indistinguishable on COCO person, paired over 3 seeds ({_CHOICES})",
               "weight_decay": f"AdamW's usual 0.05 lost to 1e-4, paired ({_CHOICES})",
               "schedule": "one-cycle: warm-up, then annealing that ends at the last iteration of the budget",
               "grad_clip": "the modern recipe's: keeps the first AdamW steps at lr 1e-3 stable",
               "input_scale": "[0, 1] input, then normalised by the training images' mean and std (COCO's auto)",
               "normalize_masks": "{0, 1} targets, as the logit losses need",
               "dataset": "the recipe is for a build-coco set",
               "val_split": "off: train on every image and keep the last weights. A small validation split chose "
                            f"early weights and lost to it over 3 seeds, paired ({_FRONT})",
               "depth": "depth 4 at 96x96 steps several times as fast as stock's depth 16 at 128x128; at equal "
                        "minutes its many more passes scored higher (the time-to-accuracy front, "
                        "“COCO person: the time-to-accuracy front”)",
               "val_every": "with --val-split on: about 20 checks in the budget; a small split costs seconds",
               "max_iters": "a budget in iterations, so a larger set does not lengthen the run (its time: the "
                            "recipe's cost)",
               "log_every": "a printed line about every 20 seconds on 2 CPU cores; stock counts it within an epoch, "
                            "so it stays below an epoch of coco_person's training images",
           },
           cost=Cost(81, "2 CPU cores", "11000 iterations at 2.25 it/s, alone, 2 threads, at 96x96", "2026-12-02",
                     "6bcfd5c", _FRONT)),
]

class ByName(Mapping):
    """A read-only name -> ``part(record)`` view of a module's list of records, read at each access, so that a
    record added to the list (or the list replaced) is seen everywhere at once."""

    def __init__(self, records: Callable[[], List[Any]], part: Callable[[Any], Any] = lambda r: r) -> None:
        self._records, self._part = records, part

    def __getitem__(self, name: str):
        for record in self._records():
            if record.name == name:
                return self._part(record)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([r.name for r in self._records()])

    def __len__(self) -> int:
        return len(self._records())


#: name -> record.
RECIPES_BY_NAME: Mapping[str, Recipe] = ByName(lambda: RECIPE_LIST)
#: name -> values (what :meth:`RunSpec.build` layers over the defaults).
RECIPES: Mapping[str, Dict[str, Any]] = ByName(lambda: RECIPE_LIST, lambda r: dict(r.values))
#: name -> option -> why (written into the run card).
RECIPE_WHY: Mapping[str, Dict[str, str]] = ByName(lambda: RECIPE_LIST, lambda r: dict(r.why))
#: The coco recipe's measured duration, which every help text and docstring that states it reads.
COCO_COST: Cost = RECIPES_BY_NAME["coco"].cost


def note_deeper_budget(recipe: str, explicit: Dict[str, Any]) -> None:
    """Warn when a deeper network than the recipe's keeps the recipe's iteration budget, which was
    sized in minutes for the recipe's depth: each iteration then costs more (depth 16: about 3 times
    depth 4's, benchmarks/RESULTS.md, "The step rate of each point")."""
    values = RECIPES[recipe]
    depth, budget = explicit.get("depth"), values.get("max_iters")
    own_budget = {"max_iters", "epochs"} & set(explicit)
    if budget is None or depth is None or own_budget or depth <= values.get("depth", depth):
        return
    warnings.warn(f"--depth {depth} with the {recipe} recipe's {budget} iterations, sized for depth "
                  f"{values['depth']}: each iteration costs more (depth 16: about 3 times depth 4's), so the run "
                  f"takes that much longer; --max-iters N (or --epochs N) sets a budget of your own", UserWarning,
                  stacklevel=3)


__all__ = ["ByName", "COCO_COST", "Cost", "RECIPES", "RECIPES_BY_NAME", "RECIPE_LIST", "RECIPE_WHY", "Recipe", "note_deeper_budget"]
