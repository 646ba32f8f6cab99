"""``RunSpec``: the one declaration of everything that makes a run.

Every option of a run (model, data, recipe, training, device) is a field of
:class:`RunSpec`, declared once with its type, default, valid values and one line of
help. The ``run`` and ``experiments`` flags (:mod:`dlstudio_aspp.cli`), the grid's
presets, the segmenter's keyword arguments, the run card and ``grid.json`` are all
derived from these fields, so an option added here appears everywhere.

A **recipe** is a named partial spec (:data:`RECIPES`). Values are layered, later ones
winning: the field defaults (stock DLStudio's loop), then ``base`` (for example a
DLStudio instance's ``learning_rate``), then the recipe, then the caller's explicit
values. Every on/off option has an explicit off (``--grad-clip off``,
``--no-normalize-masks``), so no recipe setting is stuck on.

This module imports neither torch nor DLStudio: ``dlstudio-aspp --help`` and every
option check answer at once.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .checks import int_at_least, number, one_of, probability
from .errors import UserError
from .recipes import RECIPE_WHY, RECIPES, note_deeper_budget  # noqa: F401 (RECIPE_WHY: re-exported)
from .registry import AUGMENTS, DATASETS, HEADS, LOSSES, loss_help, parse_loss

# ---- the closed sets (one owner each) ---------------------------------------------------
# Losses, output heads, augmentation levels and datasets are registries (dlstudio_aspp.registry).
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
SAM_MODELS = ("vit_b", "vit_l", "vit_h", "vit_t")

#: The homework's COCO rule: an instance's bbox at least this wide and high qualifies its image (--min-size).
COCO_MIN_SIZE = 200
#: ASPP's dilation rates at mUNet's 8x8 bottleneck (64x64 images): the homework's.
DEFAULT_RATES = (2, 4, 6)
#: Mixes a seed with a counter (an epoch, an iteration) into one seed for that draw.
SEED_MIX = 1_000_003

DEFAULT_SHAPES_DATA = "./data/PurdueShapes5MultiObject/"
SHAPES_TRAIN_FILE = "PurdueShapes5MultiObject-10000-train.gz"
SHAPES_TEST_FILE = "PurdueShapes5MultiObject-1000-test.gz"


def normalize_loss(spec: str) -> str:
    """The canonical spelling of a loss name: 'MSE+Dice:20' -> 'dice+mse:20'."""
    family, scale = parse_loss(spec)
    return family + (f":{scale}" if scale else "")


def loss_label(spec) -> str:
    """A short, file-name-safe label for a loss spec ('dice+mse:20' -> 'dice+mse-20')."""
    if callable(spec) and not isinstance(spec, str):
        return _callable_name(spec).lower()
    return str(spec).lower().replace(":", "-")


def check_rates(rates: Sequence[int]) -> tuple:
    """The rates as a tuple; :class:`UserError` for an empty list or a rate that is not an int >= 1."""
    rates = tuple(rates)
    if len(rates) == 0:
        raise UserError("ASPP needs at least one dilation rate, got an empty list; e.g. rates=(2, 4, 6)")
    bad = [r for r in rates if isinstance(r, bool) or not isinstance(r, int) or r < 1]
    if bad:
        raise UserError(f"ASPP dilation rates must be ints >= 1, got {list(rates)} (bad: {bad})")
    return rates


def parse_ints(text: Optional[str], option: str = "--rates") -> Optional[List[int]]:
    """'2,4,6' -> [2, 4, 6]; a one-line error naming ``option`` otherwise (an empty item included)."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",")]
    try:
        if not items or any(t == "" for t in items):
            raise ValueError
        return [int(t) for t in items]
    except ValueError:
        raise UserError(f"{option} must be comma-separated ints such as 2,4,6, got {text!r}") from None


# ---- checks: each returns an error text, or None ------------------------------------------
#: Upper bounds on sizes, so a typo cannot ask for an absurd allocation.
MAX_BATCH = 4096
MAX_DEPTH = 64


def _loss_check(v) -> Optional[str]:
    if callable(v) and not isinstance(v, str):
        return None  # the segmenter API takes a callable loss too
    try:
        parse_loss(v)
    except UserError as exc:
        return str(exc)
    return None


def _rates_check(v) -> Optional[str]:
    if v is None:
        return None
    try:
        check_rates(v)
    except UserError as exc:
        return str(exc)
    return None


def option(default, help, *, group: str, check: Optional[Callable] = None, choices=None,
           result: bool = True, off: bool = False, axis: bool = False, kind: Optional[str] = None,
           applies: Optional[Callable[["RunSpec"], bool]] = None, metavar: Optional[str] = None,
           none: Optional[str] = None):
    """One option's declaration: its default, help, group and checks, as dataclass field metadata.

    Args:
        help: one line, or a function returning it (for a registry's names, read when the help is shown).
        choices: the valid values, or a function returning them (a registry's names, read at each check).
        group: 'model', 'data', 'train' or 'run' (the help's sections).
        result: the option changes the trained weights (compared on resume and in a grid folder).
        off: the value None is spelled 'off' on the command line (``--grad-clip off``).
        axis: ``experiments`` takes a comma-separated list of it (one run per value; lists of ints, such as
            rates, are separated by '/': ``--rates 2,4,6/3,6,9``).
        kind: 'switch' (``--x/--no-x``), 'onoff' (``--x on|off``) or 'ints' (``--x 2,4,6``); else from the default.
        applies: when the option matters (momentum only under SGD); otherwise it is neither printed nor recorded.
        none: how the command line spells None when it is neither 'off' nor 'none' (``--rates auto``).
    """
    if choices is not None and not callable(choices):
        fixed = tuple(choices)
        choices = lambda: fixed  # noqa: E731
    if choices is not None and check is None:
        check = one_of(choices)
    meta = dict(help=help, group=group, check=check, choices=choices, result=result,
                off=off, axis=axis, kind=kind, applies=applies, metavar=metavar, none=none)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSpec:
    """Everything that makes a run. The defaults are stock DLStudio's loop; see :data:`RECIPES`."""

    # ---- model ----
    depth: int = option(16, "mUNet depth (stock: 16)", group="model", check=int_at_least(4, MAX_DEPTH), axis=True)
    aspp: bool = option(True, "ASPP at the bottleneck (off: stock mUNet's)", group="model", kind="onoff", axis=True)
    rates: Optional[Tuple[int, ...]] = option(None, "ASPP dilation rates; auto: by the bottleneck (H/8): 2,4,6 up to "
                                                    "16x16 (128x128 images), above it DeepLab's 6,12,18 scaled to the "
                                                    "bottleneck (6,12,18 at 256x256)", group="model",
                                              check=_rates_check, kind="ints", applies=lambda s: s.aspp, none="auto", axis=True)
    aspp_dropout: float = option(0.0, "dropout after the ASPP projection (DeepLabv3's: 0.5)", group="model",
                                 check=number(0, strict=False, high=1), applies=lambda s: s.aspp, axis=True)
    head: str = option("stock", lambda: "output layer: " + HEADS.help(), group="model", choices=lambda: tuple(HEADS), axis=True)
    # ---- data ----
    dataset: str = option("shapes", DATASETS.help, group="data", choices=lambda: tuple(DATASETS))
    data: Optional[str] = option(None, f"data folder (default for shapes: {DEFAULT_SHAPES_DATA}, fetched when missing; "
                                       "for coco: the build-coco folder)", group="data", check=lambda v: None,
                                 result=False)
    train_file: str = option(SHAPES_TRAIN_FILE, "shapes: the training file in --data", group="data",
                             check=lambda v: None, applies=lambda s: _reads_files(s))
    test_file: str = option(SHAPES_TEST_FILE, "shapes: the test file in --data", group="data", check=lambda v: None,
                            applies=lambda s: _reads_files(s))
    augment: str = option("auto", lambda: "augmentation of training batches: " + AUGMENTS.help() + "; auto: the "
                                          "dataset's (" + ", ".join(f"{d.auto_augment} for {n}" for n, d in
                                                                    DATASETS.items()) + ")",
                          group="data", choices=lambda: ("auto",) + tuple(AUGMENTS), axis=True)
    copy_paste: float = option(0.0, "probability that a training image gets the objects of another image of its "
                                    "batch pasted onto it (copy-paste augmentation; 0: off)", group="data",
                               check=probability, axis=True)
    normalize: str = option("auto", lambda: "input normalisation: none (the recipe's --input-scale) | dataset (mean "
                                            "and std of the training images) | imagenet; auto: the dataset's ("
                                    + ", ".join(f"{d.auto_normalize} for {n}" for n, d in DATASETS.items()) + ")",
                            group="data", choices=("auto", "none", "dataset", "imagenet"), axis=True)
    val_split: Optional[float] = option(None, "hold out this fraction of the training images, score them every "
                                              "--val-every iterations and keep the best weights (off: train on all)",
                                        group="data", off=True, check=number(0, strict=True, high=0.5))
    val_every: Optional[int] = option(None, "iterations between validations (none: at the end of each epoch)",
                                      group="data", check=int_at_least(1), applies=lambda s: s.val_split is not None)
    train_subset: Optional[int] = option(None, "train on the first N images only (none: all)", group="data",
                                         check=int_at_least(1), metavar="N")
    test_subset: Optional[int] = option(None, "score the first N test images only (none: all)", group="data",
                                        check=int_at_least(1), metavar="N")
    # ---- recipe and training ----
    recipe: str = option("stock", lambda: "a named set of the options below (explicit options win): "
                         + " | ".join(RECIPES),
                         group="train", choices=lambda: tuple(RECIPES))
    loss: str = option("mse", loss_help, group="train", check=_loss_check, axis=True)
    optimizer: str = option("sgd", "sgd | adam | adamw", group="train", choices=OPTIMIZERS, axis=True)
    lr: float = option(1e-4, "learning rate (the peak for onecycle)", group="train", check=number(0, strict=True), axis=True)
    momentum: float = option(0.9, "SGD momentum", group="train", check=number(0, strict=False, high=1),
                             applies=lambda s: s.optimizer == "sgd")
    weight_decay: float = option(0.0, "L2 (sgd, adam) or decoupled (adamw) weight decay", group="train",
                                 check=number(0, strict=False), axis=True)
    schedule: str = option("constant", "learning-rate schedule: constant | cosine | onecycle", group="train",
                           choices=SCHEDULES, axis=True)
    warmup: int = option(0, "iterations of linear warm-up (onecycle: 0 means 10% of the run)", group="train",
                         check=int_at_least(0))
    grad_clip: Optional[float] = option(None, "clip the gradients' global norm to this (off: no clipping)", group="train", off=True,
                                        check=number(0, strict=True), axis=True)
    input_scale: float = option(1.0, "factor on the 0..255 images (1/255 gives [0, 1])", group="train",
                                check=number(0, strict=True))
    normalize_masks: bool = option(False, "train a raw-output loss against {0,1} masks instead of 0/50(k+1)",
                                   group="train", kind="switch")
    epochs: Optional[int] = option(None, "epochs (none: 1, or as many as --max-iters needs)", group="train",
                                   check=int_at_least(1), axis=True)
    max_iters: Optional[int] = option(None, "iterations in all (wins over --epochs)", group="train",
                                      check=int_at_least(1), axis=True)
    batch_size: int = option(4, "images per iteration", group="train", check=int_at_least(1, MAX_BATCH), axis=True)
    seed: Optional[int] = option(None, "seeds the initial weights and the data order (off: stock's order)",
                                 group="train", check=int_at_least(0), off=True, axis=True)
    amp: bool = option(False, "mixed precision (CUDA only)", group="train", kind="switch")
    compile: bool = option(False, "compile the training step and evaluation (CUDA graphs on CUDA, inductor on CPU; "
                                  "the last partial batch of an epoch is dropped)", group="train", kind="switch")
    # ---- how it runs (does not change the result) ----
    cpu: bool = option(False, "do not use a GPU even when there is one", group="run", kind="switch", result=False)
    workers: Optional[int] = option(None, "DataLoader workers (none: cores - 2, at most 4)", group="run",
                                    check=int_at_least(0), result=False)
    log_every: int = option(500, "iterations per printed line and performance_numbers entry", group="run",
                            check=int_at_least(1), result=False)
    checkpoint_every: int = option(500, "iterations between checkpoints (0: only at the end); each carries its "
                                        "sha256, and the one before it is kept as <stem>.ckpt.prev (disk: at most one "
                                        "checkpoint more) for --resume to fall back on", group="run",
                                   check=int_at_least(0), result=False)
    checkpoint_seconds: float = option(60.0, "at least this many seconds between two checkpoints (0: no limit; "
                                             "the last iteration and Ctrl-C/SIGTERM always save)", group="run",
                                       check=number(0, strict=False), result=False)
    progress: bool = option(True, "show progress bars", group="run", kind="switch", result=False)
    tensorboard: bool = option(False, "also log the loss, its components, the learning rate and the test metrics for "
                                      "TensorBoard, in RUN/tensorboard/ (pip install tensorboard)", group="run",
                               kind="switch", result=False)

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, recipe: Optional[str] = None, *, base: Optional[Dict[str, Any]] = None, **explicit) -> "RunSpec":
        """Defaults, then ``base``, then the recipe's values, then ``explicit``; not validated yet."""
        unknown = sorted((set(explicit) | set(base or {})) - set(field_names()))
        if unknown:
            raise UserError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(field_names())}")
        name = explicit.pop("recipe", None) or recipe or "stock"
        if name not in RECIPES:
            raise UserError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
        values = dict(base or {})
        values.update(RECIPES[name])
        if "epochs" in explicit and "max_iters" not in explicit:
            values["max_iters"] = None  # an explicit --epochs replaces a recipe's iteration budget
        note_deeper_budget(name, explicit)
        values.update(explicit)
        values["recipe"] = name
        if "rates" in values and values["rates"] is not None:
            values["rates"] = tuple(values["rates"])
        return cls(**values)

    def replace(self, **changes) -> "RunSpec":
        """A copy with ``changes``; a validated spec's copy is checked on the changed options only."""
        new = dataclasses.replace(self, **changes)
        if self.__dict__.get("_checked"):
            new._check(changes)
        return new

    def validate(self) -> "RunSpec":
        """Check every option, once per spec (it is frozen); the error names the flag and the valid values.
        Returns self."""
        if not self.__dict__.get("_checked"):
            self._check([f.name for f in dataclasses.fields(self)])
        return self

    def _check(self, names) -> None:
        for name in names:
            check = SPEC_FIELDS[name].metadata.get("check")
            problem = check(getattr(self, name)) if check else None
            if problem:
                raise UserError(f"{flag(name)} {problem}")
        object.__setattr__(self, "_checked", True)

    # ---- reading ----------------------------------------------------------------------------
    def applies(self, name: str) -> bool:
        rule = SPEC_FIELDS[name].metadata.get("applies")
        return rule is None or bool(rule(self))

    def to_json(self) -> Dict[str, Any]:
        """Every option that matters for this spec (momentum is left out under Adam/AdamW)."""
        out = {}
        for f in dataclasses.fields(self):
            if self.applies(f.name):
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else (v if not callable(v) else _callable_name(v))
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "RunSpec":
        """A spec from :meth:`to_json` (unknown keys, from newer versions, are dropped)."""
        known = {k: v for k, v in data.items() if k in SPEC_FIELDS}
        if known.get("rates") is not None:
            known["rates"] = tuple(known["rates"])
        return cls(**known)

    def result_values(self) -> Dict[str, Any]:
        """The options that change the trained weights: compared on resume and in a grid folder."""
        return {k: v for k, v in self.to_json().items() if SPEC_FIELDS[k].metadata["result"]}

    def summary_line(self) -> str:
        """The training options that matter, for the printed header."""
        keep = ("recipe", "loss", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup", "grad_clip",
                "input_scale", "normalize_masks", "batch_size", "seed", "amp")
        return ", ".join(f"{k}={v}" for k, v in self.to_json().items() if k in keep)

    def per_epoch(self, num_train: int) -> int:
        """Iterations in one epoch of ``num_train`` images (a partial last batch counts, except under --compile)."""
        if self.compile:
            if num_train < self.batch_size:
                raise UserError(f"--compile needs at least one full batch: {num_train} images, --batch-size "
                                f"{self.batch_size}")
            return num_train // self.batch_size
        return max(1, math.ceil(num_train / self.batch_size))

    def for_images(self, image_size: Sequence[int]) -> "RunSpec":
        """This spec with ``--rates auto`` made concrete for images of ``image_size`` (H, W)."""
        return self if self.rates is not None else self.replace(rates=rates_for(image_size))

    def iterations(self, num_train: int) -> Tuple[int, int]:
        """(epochs, total iterations) over ``num_train`` images: --max-iters wins, else --epochs, else 1 epoch."""
        per_epoch = self.per_epoch(num_train)
        if self.max_iters is not None:
            return math.ceil(self.max_iters / per_epoch), self.max_iters
        epochs = self.epochs or 1
        return epochs, epochs * per_epoch

    def augment_level(self) -> str:
        """The augmentation in effect: 'auto' is standard for COCO, none for PurdueShapes."""
        return DATASETS[self.dataset].auto_augment if self.augment == "auto" else self.augment

    def normalization(self) -> str:
        """The input normalisation in effect: 'auto' is dataset for COCO, none for PurdueShapes."""
        return DATASETS[self.dataset].auto_normalize if self.normalize == "auto" else self.normalize

    @property
    def loss_title(self) -> str:
        return loss_title(self.loss)


def _reads_files(spec: "RunSpec") -> bool:
    """--train-file/--test-file apply: the dataset kind reads files by name (an unknown kind: not)."""
    return spec.dataset in DATASETS and DATASETS[spec.dataset].files


def rates_for(image_size: Sequence[int]) -> Tuple[int, ...]:
    """ASPP rates for ``image_size`` (H, W): mUNet's bottleneck is H/8 x W/8. Up to 16x16 (128x128
    images) the homework's 2,4,6: at 16x16, DeepLab's rates scaled (3,6,9) did not beat them over 3
    seeds (benchmarks/RESULTS.md). Above it DeepLab's 6,12,18 (made for a 33x33 map) scaled to the
    bottleneck's side, so that the widest branch still sees about half of the map."""
    side = min(image_size) // 8
    if side <= 16:
        return DEFAULT_RATES
    return tuple(max(1, round(r * side / 32)) for r in (6, 12, 18))


def validation_size(n: int, fraction: float) -> int:
    """How many of ``n`` training images --val-split ``fraction`` holds out (at least one)."""
    return max(1, int(round(n * fraction)))


def loss_title(loss) -> str:
    """'bce+dice' -> 'BCE+Dice'; a callable's name otherwise."""
    if callable(loss) and not isinstance(loss, str):
        return _callable_name(loss)
    return LOSSES[parse_loss(loss)[0]].title


def _callable_name(obj) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


SPEC_FIELDS: Dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunSpec)}


def field_names() -> List[str]:
    return list(SPEC_FIELDS)


def field_help(name: str) -> str:
    """An option's one line of help, as it reads now (a registry's names included)."""
    text = SPEC_FIELDS[name].metadata["help"]
    return text() if callable(text) else text


def field_choices(name: str) -> Optional[tuple]:
    """An option's valid values now, or None when it has no closed set."""
    choices = SPEC_FIELDS[name].metadata["choices"]
    return tuple(choices()) if choices is not None else None


def flag(name: str) -> str:
    """'grad_clip' -> '--grad-clip'."""
    return "--" + name.replace("_", "-")


def show_value(name: str, value) -> str:
    """An option's value as the command line spells it: on/off, 2,4,6, 0.001; None is 'off' or 'none'."""
    if value is None:
        meta = SPEC_FIELDS[name].metadata
        return meta["none"] or ("off" if meta["off"] else "none")
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def options_markdown(defaults: "RunSpec") -> str:
    """The README's option table: one row per field (flag, default under ``defaults``, what it does)."""
    rows = ["| option | default of `run` | what it does |", "|---|---|---|"]
    for name, f in SPEC_FIELDS.items():
        rows.append(f"| `{flag(name)}` | {show_value(name, getattr(defaults, name))} | "
                    f"{field_help(name).replace('|', '/')} |")
    return "\n".join(rows)


def given_values(namespace) -> Dict[str, Any]:
    """The RunSpec fields set in an argparse namespace (flags not given are absent from it)."""
    return {k: v for k, v in vars(namespace).items() if k in SPEC_FIELDS}


for _recipe in RECIPES.values():  # a recipe may only name spec fields
    assert set(_recipe) <= set(SPEC_FIELDS), sorted(set(_recipe) - set(SPEC_FIELDS))
