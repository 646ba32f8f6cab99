"""The run card: the one record of a run folder.

A run is the file ``path_saved_model`` (the weights, as stock DLStudio saves them) and
its siblings, named by :class:`~dlstudio_aspp.run_files.RunFiles` (``card.files``).
:class:`RunCard` is the run's record, the only reader and writer of ``<stem>.json``;
training, evaluation, experiments, the report and ``sam-compare`` all take a card instead
of deciding these facts again::

    <stem>                  weights (state_dict), written atomically with the card
    <stem>.json             the card: model config, classes, mask convention, recipe, options
    <stem>.ckpt             resumable checkpoint (weights, optimizer, options, history, its sha256)
    <stem>.ckpt.prev        the checkpoint before it, kept until the newest is durable
    <stem>.history.json/.csv  per-iteration loss and its components
    <stem>.metrics.json     test metrics
    <stem>.test_grid.png    qualitative test grid
    performance_numbers.txt stock's running averages (runs made by ``train_and_score``)
    samples.npz             the first test images, masks and outputs (for reports)
    summary.json            written last: the run is finished

**Mask convention.** Datasets hand out DLStudio's masks (:mod:`dlstudio_aspp.masks`: channel
k holds 0 or ``mask_values[k]``, and a pixel is positive where it is above 0). A run's card
records which values, and turns them into the training target and back into decisions:

============================  =====================  ============================
card                          training target        a pixel is class k where
============================  =====================  ============================
``output='raw'`` (stock)      0 / ``mask_values[k]``  output > ``mask_values[k] / 2``
``output='raw'``, normalised  0 / 1                  output > 0.5
``output='logits'``           0 / 1                  output > 0 (probability > 0.5)
============================  =====================  ============================

``input_scale`` is the factor applied to DLStudio's 0..255 images before the network
(1.0 in stock; 1/255 in the modern recipes), applied by :meth:`RunCard.prepare_input`
wherever the network runs, so a saved run scores the same from any caller.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .atomic import sha256_of, write_json
from .data.wrappers import dataset_labels, split_summary
from .errors import MissingFileError, UserError
from .masks import binarize, mask_truth, mask_values_for
from .run_files import RunFiles
from .spec import RECIPE_WHY, RECIPES

CARD_VERSION = 3
OUTPUT_KINDS = ("raw", "logits")
@dataclass
class RunCard:
    """Everything known about one run; see the module docstring for the layout.

    Attributes:
        weights: path of the weights file (DLStudio's ``path_saved_model``).
        model: the model's config (``mUNetASPP.config``), enough to rebuild it.
        class_names: one name per output channel.
        mask_values: channel k's value in the dataset's masks.
        normalize_masks: train a raw-output loss against {0, 1} instead of the values.
        output: 'raw' (MSE, Dice, Dice+MSE on the output itself) or 'logits'
            (BCE / soft Dice on ``sigmoid(output)``).
        input_scale: factor applied to the 0..255 images before the network.
        image_size: [H, W] of the data.
        spec: the run's options (:meth:`RunSpec.to_json`), recipe included.
        iterations, epochs: what training actually ran (the spec holds what was asked).
        weights_sha256, weights_size: the weights file this card describes; :meth:`load`
            refuses weights that are not those.
        mean, std: per-channel input normalisation in 0..255 units (``(image - mean) / std``
            replaces ``input_scale``), or None.
        augment: the augmentation the training batches had (one of ``spec.AUGMENTS``).
        validation: the held-out split and the best iteration, when the run had one.
        provenance: how the run was made (:func:`dlstudio_aspp.provenance.provenance`).
        seconds: wall time of each phase ('load', 'train', 'test').
        data: per split of the data, how many images it holds, the rule that took them and the
            folders they came from (a built COCO set's summary; empty for the Shapes files).
    """

    weights: Path
    model: Dict = field(default_factory=dict)
    class_names: List[str] = field(default_factory=list)
    mask_values: List[int] = field(default_factory=lambda: mask_values_for(5))
    normalize_masks: bool = False
    output: str = "raw"
    input_scale: float = 1.0
    image_size: List[int] = field(default_factory=lambda: [64, 64])
    spec: Dict = field(default_factory=dict)
    iterations: Optional[int] = None
    epochs: Optional[int] = None
    weights_sha256: Optional[str] = None
    weights_size: Optional[int] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    augment: str = "none"
    validation: Dict = field(default_factory=dict)
    provenance: Dict = field(default_factory=dict)
    seconds: Dict = field(default_factory=dict)
    data: Dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = Path(self.weights)
        if self.output not in OUTPUT_KINDS:
            raise UserError(f"card output must be one of {', '.join(OUTPUT_KINDS)}, got {self.output!r}")
        if not self.class_names:
            self.class_names = [str(k) for k in range(len(self.mask_values))]
        if len(self.class_names) != len(self.mask_values):
            raise UserError(f"{len(self.class_names)} class names for {len(self.mask_values)} mask values in {self.files.file}")

    # ---- where its files are ----------------------------------------------------------
    @property
    def files(self) -> RunFiles:
        """The run folder's file layout (:class:`~dlstudio_aspp.run_files.RunFiles`) around these weights."""
        return RunFiles(self.weights)

    @property
    def folder(self) -> Path:
        return self.weights.parent

    @property
    def recipe(self) -> str:
        return self.spec.get("recipe", "stock")

    def data_spec(self) -> Dict:
        """The run's spec, its ``--data`` a path that works from here (:func:`data_spec`)."""
        return data_spec(self.spec, self.provenance)

    def why(self) -> Dict[str, str]:
        """Option -> why its recipe chose its value (:data:`spec.RECIPE_WHY`), for the options that kept it."""
        recipe = RECIPES.get(self.recipe, {})
        return {name: reason for name, reason in RECIPE_WHY.get(self.recipe, {}).items()
                if name in self.spec and self.spec[name] == recipe.get(name)}

    # ---- the mask convention -----------------------------------------------------
    @property
    def binary_targets(self) -> bool:
        return self.output == "logits" or self.normalize_masks

    def thresholds(self):
        """Per-class decision thresholds (C,) on the network's output (see the module docstring)."""
        import torch

        c = len(self.mask_values)
        if self.output == "logits":
            return torch.zeros(c)
        if self.normalize_masks:
            return torch.full((c,), 0.5)
        return torch.tensor([v / 2.0 for v in self.mask_values])

    def threshold_rule(self) -> str:
        if self.output == "logits":
            return "a class is predicted where its logit is above 0 (probability above 0.5)"
        if self.normalize_masks:
            return "a class is predicted where its output is above 0.5 (targets {0, 1})"
        return "a class is predicted where its output is above half of its mask value"

    def target(self, mask):
        """(B, C, H, W) uint8 masks -> float targets: the mask values, or {0, 1}."""
        return mask_truth(mask).float() if self.binary_targets else mask.float()

    def prepare_input(self, image):
        """(B, 3, H, W) images in 0..255 -> what the network was trained on: normalised by the card's
        mean and std when it has them, else scaled by ``input_scale``."""
        if self.mean is not None:
            mean = _channels(tuple(self.mean), image.device, image.dtype)
            return (image - mean) / _channels(tuple(self.std), image.device, image.dtype)
        return image if self.input_scale == 1.0 else image * self.input_scale

    def binarize(self, output):
        """(B, C, H, W) network output -> (B, C, H, W) bool predictions."""
        return binarize(output, self.thresholds())

    # ---- model -----------------------------------------------------------------------
    def build_model(self):
        """A fresh ``mUNetASPP`` with this card's config (weights not loaded)."""
        from .model import mUNetASPP

        if self.model.get("class") not in (None, "mUNetASPP", "mUNet", "mUnet"):
            raise UserError(f"{self.files.file} describes a {self.model['class']}, which dlstudio-aspp cannot rebuild")
        return mUNetASPP(**mUNetASPP.config_kwargs(self.model))

    def load_weights(self, net):
        """Load the weights file into ``net`` (read onto the CPU; ``load_state_dict`` copies them onto
        ``net``'s device); a mismatch names the setting that differs."""
        from . import checkpoint

        if not self.weights.is_file():
            raise MissingFileError(f"no trained weights at {self.weights}; train first or point at a run folder that has them")
        state = checkpoint.load(self.weights, "weights file")
        if not isinstance(state, dict):
            raise UserError(f"{self.weights} holds a {type(state).__name__}, not a state_dict; retrain or restore it")
        own = net.state_dict()
        problems = [f"{k!r} is missing" for k in own if k not in state]
        problems += [f"{k!r} is unexpected" for k in state if k not in own]
        problems += [f"{k!r} has shape {tuple(state[k].shape)}, the model {tuple(v.shape)}"
                     for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if problems:
            key = problems[0].split("'")[1]
            raise UserError(f"the weights at {self.weights} do not fit the model in {self.files.file.name}: "
                            f"{problems[0]} ({_likely_setting(key)})")
        net.load_state_dict(state)
        return net

    def load_model(self, device="cpu"):
        """The trained model of this run, in eval mode on ``device``."""
        return self.load_weights(self.build_model()).to(device).eval()

    def last_weights(self):
        """The last iteration's weights when validation kept others (the finished checkpoint's ``last_model``);
        None when the run's weights are its last ones or it has no checkpoint."""
        from . import checkpoint

        if not self.files.checkpoint.is_file():
            return None
        return checkpoint.last_model(self.files.checkpoint)

    def save_weights(self, net) -> None:
        """Weights, then the card naming them (sha256, size), both atomically.

        Files that described earlier weights (metrics, image counts, test grid, samples, summary) are
        removed first; if the card's write fails, the old card no longer matches the new
        weights and :meth:`load` refuses the pair."""
        for stale in (self.files.metrics_file, self.files.image_counts_file, self.files.test_grid, self.files.samples_file, self.files.summary_file):
            stale.unlink(missing_ok=True)
        from . import checkpoint

        checkpoint.save(net.state_dict(), self.weights)  # CPU tensors: stock's torch.load reads them anywhere
        self.weights_size, self.weights_sha256 = self.weights.stat().st_size, sha256_of(self.weights)
        self.save()

    def check_weights(self) -> None:
        """Refuse a weights file that is not the one this card was written with."""
        if self.weights_sha256 is None or not self.weights.is_file():
            return
        if self.weights.stat().st_size != self.weights_size or sha256_of(self.weights) != self.weights_sha256:
            raise UserError(f"{self.weights} is not the weights file {self.files.file.name} describes (its sha256 or size "
                            "differs: replaced, or a save was cut short); retrain, or restore the run folder as a whole")

    # ---- reading and writing -------------------------------------------------------------
    def to_json(self) -> Dict:
        d = asdict(self)
        d.pop("weights")
        d["thresholds"] = [float(t) for t in self.thresholds()]
        d["why"] = self.why()
        d["version"] = CARD_VERSION
        return d

    def save(self) -> Path:
        return write_json(self.files.file, self.to_json())

    @classmethod
    def from_json(cls, weights, data: Dict) -> "RunCard":
        known = {f.name: data[f.name] for f in fields(cls) if f.name != "weights" and f.name in data}
        if "spec" not in known and "train" in data:  # cards before version 3
            known["spec"] = dict(data["train"], recipe=data.get("recipe", "stock"))
        return cls(weights=Path(weights), **known)

    @classmethod
    def load(cls, weights) -> "RunCard":
        """The card beside ``weights`` (a ``path_saved_model``, or a run folder holding ``saved_model``)."""
        weights = Path(weights)
        if weights.is_dir():
            weights = RunFiles.at(weights).weights
        file = weights.with_name(weights.name + ".json")
        if not file.is_file():
            raise MissingFileError(f"{file} is missing: pass a run folder written by `dlstudio-aspp run` or `experiments`")
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{file} is not valid JSON ({exc}); delete the run folder and train again") from None
        if not isinstance(data, dict) or "model" not in data or "mask_values" not in data:
            raise UserError(f"{file} is not a run card (it lacks 'model' or 'mask_values'); delete the run folder and train again")
        card = cls.from_json(weights, data)
        card.check_weights()
        return card

    @classmethod
    def load_if_present(cls, weights) -> Optional["RunCard"]:
        w = Path(weights)
        return cls.load(w) if w.with_name(w.name + ".json").is_file() else None

    @classmethod
    def for_training(cls, weights, net, dataset, image_size: Sequence[int], spec, loss_fn,
                     class_names: Sequence[str] = ()) -> "RunCard":
        """A new run's card, from the network, the training dataset (its ``label_map``), the spec and the loss."""
        names, values = dataset_labels(dataset)
        return cls(weights=Path(weights), model=model_config(net), class_names=names or list(class_names)[:len(values)],
                   mask_values=values, normalize_masks=spec.normalize_masks, output=output_kind(loss_fn),
                   input_scale=spec.input_scale, image_size=list(image_size), spec=spec.to_json(),
                   augment=spec.augment_level(), data=split_summary(dataset))

    @classmethod
    def stock(cls, weights, net, dataset, image_size: Sequence[int], class_names: Sequence[str] = ()) -> "RunCard":
        """The card of weights trained elsewhere: stock's convention (raw output, 0..255 input)."""
        names, values = dataset_labels(dataset)
        return cls(weights=Path(weights), model=model_config(net), class_names=names or list(class_names)[:len(values)],
                   mask_values=values, image_size=list(image_size))


def data_spec(spec: Dict, provenance: Dict) -> Dict:
    """``spec`` with a relative ``data`` read against the folder the run was started in (``provenance``'s
    cwd), as the command that trained it read it; unchanged when that folder no longer holds it."""
    data = spec.get("data")
    started = (provenance or {}).get("cwd")
    if not data or Path(data).is_absolute() or not started or not (Path(started) / data).exists():
        return dict(spec)
    return dict(spec, data=str(Path(started) / data) + ("/" if str(data).endswith("/") else ""))


def output_kind(loss_fn) -> str:
    """'logits' for a loss on logits, else 'raw': how the card reads the output."""
    return "logits" if getattr(loss_fn, "on_logits", False) else "raw"


def model_config(net) -> Dict:
    """What it takes to rebuild ``net``: mUNetASPP's own config, or that of a stock mUNet."""
    cfg = getattr(net, "config", None)
    if cfg:
        return dict(cfg, **{"class": type(net).__name__})
    if hasattr(net, "skip128dsDN") and hasattr(net, "conv_out"):  # DLStudio's own mUNet
        return {"class": type(net).__name__, "skip_connections": net.skip128dsDN.skip_connections,
                "depth": 2 * net.depth, "num_classes": net.conv_out.out_channels, "aspp": False}
    return {"class": type(net).__name__}


@functools.lru_cache(maxsize=32)
def _channels(values: tuple, device, dtype):
    """(1, C, 1, 1) ``values`` on ``device``: made once per device, not once per batch (a host copy each)."""
    import torch

    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


def _likely_setting(key: str) -> str:
    if key.startswith("aspp."):
        return "ASPP on/off or its rates and width differ"
    if key.startswith("conv_out"):
        return "the output layer (head) or num_classes differs"
    return "depth or skip_connections differ"
