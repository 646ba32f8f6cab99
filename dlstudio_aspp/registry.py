"""The package's closed sets, each one registry: losses, output heads, augmentation levels and
datasets. A name is spelled here once; the command line's choices and help, the option
checks (:mod:`dlstudio_aspp.spec`) and the code that builds the thing all read these
registries, so adding an entry adds it everywhere (``docs/extending.md``).

An entry names what builds it as ``'module:attribute'`` inside this package, imported when
it is built: this module imports neither torch nor anything of the package but its errors,
so ``dlstudio-aspp --help`` and every option check answer at once.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Iterator, Mapping, Optional, Tuple, TypeVar, Union

from .errors import UserError

E = TypeVar("E")


def resolve(ref):
    """``'losses:MSELoss'`` -> that attribute of ``dlstudio_aspp.losses`` (imported now); a callable is itself."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"dlstudio_aspp.{module}"), name)


class UnknownName(UserError, KeyError):
    """A name a registry does not hold: a one-line :class:`UserError` (and a ``KeyError``, for ``in`` and ``get``)."""

    __str__ = BaseException.__str__


class Registry(Mapping[str, E], Generic[E]):
    """Name -> entry, in the order registered. ``registry[name]`` of an unknown name is a
    :class:`~dlstudio_aspp.errors.UserError` that names the flag and lists the valid names."""

    def __init__(self, flag: str, entries: Dict[str, E]) -> None:
        self.flag, self._entries = flag, dict(entries)

    def __getitem__(self, name: str) -> E:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UnknownName(f"{self.flag} must be one of {', '.join(self._entries)}, got {name!r}{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, name: str, entry: E) -> None:
        """Add an entry (``docs/extending.md``; a test registers a toy loss this way)."""
        if name in self._entries:
            raise UserError(f"{self.flag} {name!r} is registered already")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        del self._entries[name]

    def help(self) -> str:
        """'a (its help) | b (its help) | ...' for an option's help."""
        return " | ".join(f"{name} ({getattr(entry, 'help', '')})" if getattr(entry, "help", "") else name
                          for name, entry in self.items())


# ---- losses --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loss:
    """A loss family: its title, what builds it (``build(**kwargs)``, plus ``dice_scale`` for a scaled
    family spelled ``name:<scale>``) and whether it takes that scale."""

    title: str
    build: Union[str, Callable]
    kwargs: Dict[str, Any] = field(default_factory=dict)
    scaled: bool = False


LOSSES: Registry[Loss] = Registry("--loss", {
    "mse": Loss("MSE", "losses:MSELoss"),
    "dice": Loss("Dice", "losses:DiceLoss"),
    "dice+mse": Loss("Dice+MSE", "losses:DiceMSELoss", scaled=True),
    "bce": Loss("BCE", "losses:LogitLoss", {"bce_weight": 1.0, "dice_weight": 0.0}),
    "sigmoid-dice": Loss("sigmoid Dice", "losses:LogitLoss", {"bce_weight": 0.0, "dice_weight": 1.0}),
    "bce+dice": Loss("BCE+Dice", "losses:LogitLoss", {"bce_weight": 1.0, "dice_weight": 1.0}),
})
#: Other spellings of a loss family.
LOSS_ALIASES = {"mse+dice": "dice+mse", "dice+bce": "bce+dice"}


def loss_names() -> list:
    """['mse', 'dice', 'dice+mse:<scale>', 'dice+mse:auto', ...]: every spelling of the registered losses."""
    names = []
    for name, entry in LOSSES.items():
        names += [f"{name}:<scale>", f"{name}:auto"] if entry.scaled else [name]
    return names


def loss_help() -> str:
    """'mse | dice | dice+mse:<scale> | dice+mse:auto | ...', for the --loss help."""
    return " | ".join(loss_names())


def parse_loss(spec: str) -> Tuple[str, Optional[str]]:
    """'Dice+MSE:20' -> ('dice+mse', '20'); 'bce+dice' -> ('bce+dice', None). UserError lists the valid names."""
    name = str(spec).strip().lower().replace(" ", "")
    family, _, scale = name.partition(":")
    family = LOSS_ALIASES.get(family, family)
    if family not in LOSSES or (scale and not LOSSES[family].scaled):
        raise UserError(f"unknown loss {spec!r}; valid: {', '.join(loss_names())}")
    if scale and scale != "auto":
        try:
            if not float(scale) >= 0:
                raise ValueError
        except ValueError:
            raise UserError(f"bad Dice scale in loss {spec!r}: expected a number >= 0 or 'auto', e.g. 'dice+mse:20'") from None
    return family, scale or None


def build_loss(spec: str):
    """The loss module a name stands for (``'dice+mse:20'``: the family built with ``dice_scale=20.0``)."""
    family, scale = parse_loss(spec)
    entry = LOSSES[family]
    kwargs = dict(entry.kwargs)
    if entry.scaled:
        kwargs["dice_scale"] = 1.0 if scale is None else scale if scale == "auto" else float(scale)
    return resolve(entry.build)(**kwargs)


# ---- output heads ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Head:
    """An output layer: one line of help and what builds it, ``build(in_channels, num_classes)``."""

    help: str
    build: Union[str, Callable]


HEADS: Registry[Head] = Registry("--head", {
    "stock": Head("bit-exact, predicts 1 pixel in 4", "model:stock_head"),
    "dense": Head("every pixel from 2x2 taps", "model:dense_head"),
    "bilinear": Head("bilinear 2x upsampling, then a 3x3 conv", "model:bilinear_head"),
})


# ---- augmentation levels -----------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """A level of training-batch augmentation (:mod:`dlstudio_aspp.augment`): the random resized crop's area
    range (None: no flip, no crop: the level does nothing), the colour jitter and its hue (None: none), and the
    probability of a grey image."""

    help: str = ""
    crop: Optional[Tuple[float, float]] = None
    jitter: Optional[Tuple[float, float]] = None
    grey: float = 0.0


AUGMENTS: Registry[Augment] = Registry("--augment", {
    "none": Augment("none"),
    "light": Augment("flip, crop", (0.6, 1.0)),
    "standard": Augment("flip, wider crop, colour jitter", (0.35, 1.0), (0.2, 0.02)),
    "strong": Augment("widest crop, more jitter, some grey", (0.2, 1.0), (0.4, 0.05), 0.1),
})


# ---- datasets --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """A kind of dataset, and every decision that depends on it.

    Attributes:
        help: one line for --dataset's help.
        cls: its dataset class (``'module:Class'``), to tell what kind an open dataset is.
        open: ``open(spec, split, root, image_size)`` -> the 'train' or 'test' split.
        root: ``root(spec, fetch)`` -> the data folder, checked (and fetched where the kind can).
        auto_augment, auto_normalize: what ``--augment auto`` and ``--normalize auto`` mean for it.
        run_recipe: the recipe of ``run --dataset NAME``.
        files: the --train-file/--test-file options apply.
        floors: test scores are set against the floors (:mod:`dlstudio_aspp.floors`): a fixed mask means
            something when the objects sit in about the same place (people in photographs), not for
            shapes strewn over the image.
        from_coco: ``run --coco-root`` builds its folder from a COCO download.
        after_run: a line ``run`` prints at the end (``{iterations}`` is filled in).
        synthetic: what its pictures are, when they are drawn rather than photographed: ``predict``
            warns that pictures of another size (photographs) are outside what such a model saw.
        demo_note: what ``sam-compare --export-demo`` adds after saying the images are enlarged.
    """

    help: str
    cls: Union[str, type]
    open: Union[str, Callable]
    root: Union[str, Callable]
    auto_augment: str
    auto_normalize: str
    run_recipe: str
    files: bool = False
    floors: bool = False
    from_coco: bool = False
    after_run: str = ""
    synthetic: str = ""
    demo_note: str = ""


DATASETS: Registry[Dataset] = Registry("--dataset", {
    "shapes": Dataset("PurdueShapes5MultiObject", "data.shapes:PurdueShapes5MultiObjectDataset", "data.open:open_shapes",
                      "data.open:shapes_root", auto_augment="none", auto_normalize="none", run_recipe="modern",
                      files=True, synthetic="synthetic shapes (rectangle, triangle, disk, oval, star) on a noisy "
                                            "background"),
    "coco": Dataset("a build-coco folder", "data.coco:COCOSegmentationDataset", "data.open:open_coco",
                    "data.open:built_root", auto_augment="standard", auto_normalize="dataset", run_recipe="coco",
                    floors=True, from_coco=True,
                    demo_note=" For COCO, each row also names the original photograph (source_file); upload the "
                              "exported image all the same: the files saved from the demo are found in it.",
                    after_run="to train longer, raise --max-iters (this run: {iterations} iterations); on a GPU, build the "
                              "set at the homework's size (build-coco --size 256) and try --epochs 150 (the coco preset)"),
})


def dataset_kind(dataset) -> str:
    """The registered name of an open dataset's kind (wrappers looked through); 'shapes' for any other
    dataset with PurdueShapes' items (stock's own class, a user's)."""
    from .data.wrappers import innermost_dataset

    inner = innermost_dataset(dataset)
    matches = [(len(resolve(entry.cls).__mro__), name) for name, entry in DATASETS.items()
               if isinstance(inner, resolve(entry.cls))]
    return max(matches)[1] if matches else "shapes"  # the most derived class wins
