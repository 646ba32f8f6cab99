"""The COCO builder's options, each declared once: name, default, type and help.

``build-coco`` offers every one; ``run`` and ``experiments`` (which build the set first when given
``--coco-root``) offer those marked ``run``. :func:`dlstudio_aspp.data.coco_build.build_settings`
takes its defaults from here, so a flag, the builder and the recorded settings cannot disagree.
This module imports neither torch nor pycocotools: ``--help`` answers at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..spec import COCO_MIN_SIZE


@dataclass(frozen=True)
class BuildOption:
    """One builder option. ``nargs``/``metavar``/``type`` are argparse's; ``run``: also a flag of ``run`` and
    ``experiments``; ``default_text``: how --help shows the default, where it is not the value itself."""

    name: str
    default: Any
    help: str
    type: Optional[Callable] = None
    nargs: Optional[str] = None
    metavar: Optional[str] = None
    run: bool = True
    default_text: Optional[str] = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, (list, tuple)):
            return " ".join(map(str, self.default))
        return "none" if self.default is None else f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


BUILD_OPTIONS: List[BuildOption] = [
    BuildOption("classes", ("person",), "COCO category names, one mask channel each", nargs="+", metavar="NAME"),
    BuildOption("min_size", COCO_MIN_SIZE, "smallest bbox side that qualifies an image for the test split, and so "
                "for validation", type=float, default_text=f"{COCO_MIN_SIZE:g}, the homework's"),
    BuildOption("train_min_size", None, "the same for the training split, to admit smaller instances there",
                type=float, default_text="--min-size"),
    BuildOption("max_per_class", None, "cap on images per class and split, to bound a full COCO download's minutes",
                type=int),
    BuildOption("size", 256, "side of the stored images and masks (a multiple of 8)", type=int,
                default_text="256, the homework's"),
    BuildOption("max_per_split", None, "cap on images per split", type=int, run=False),
    BuildOption("seed", 0, "picks the images when a cap applies", type=int, run=False),
    BuildOption("splits", ("train", "test"), "train (COCO train2017) and/or test (val2017), comma-separated",
                type=lambda text: tuple(s.strip() for s in text.split(",") if s.strip()), run=False,
                default_text="train,test"),
]
BY_NAME: Dict[str, BuildOption] = {o.name: o for o in BUILD_OPTIONS}
#: The builder's defaults: what build-coco, run --coco-root and build_settings() all start from.
BUILD_DEFAULTS: Dict[str, Any] = {o.name: o.default for o in BUILD_OPTIONS}


def build_options(given: Dict[str, Any]) -> Dict[str, Any]:
    """The builder's defaults with the options ``given`` (None: not given) on top."""
    unknown = sorted(set(given) - set(BY_NAME))
    if unknown:
        raise TypeError(f"unknown COCO build option(s) {', '.join(unknown)}; valid: {', '.join(BY_NAME)}")
    return dict(BUILD_DEFAULTS, **{k: v for k, v in given.items() if v is not None})
