"""A validation split of the training set, and the best weights by validation mIoU.

``--val-split F`` holds out a fraction F of the training images (the same images for
every seed and setting, so runs stay paired); training never sees them. Every
``--val-every`` iterations (default: at the end of each epoch) the network is scored on
them; the weights of the best validation mIoU are kept, and they are the run's final
weights: the test split is scored once, at the end, with them. The test split is
never used to choose anything.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import torch

from .data.wrappers import validation_pool
from .spec import validation_size

#: Fewer held-out images than this draw a warning: a best checkpoint chosen on them is mostly chance.
MIN_VALIDATION = 10
#: The held-out images depend on this seed only, not on the run's: every run holds out the same ones.
SPLIT_SEED = 20_251_130


def split_for_validation(dataset, fraction: float) -> Tuple[object, object]:
    """(training part, validation part) of ``dataset``: a fixed random ``fraction`` of its images held out.

    They are drawn from the images the dataset allows (:func:`~dlstudio_aspp.data.wrappers.validation_pool`):
    a COCO set built with a looser training rule validates only on images that meet the test's."""
    n, pool = len(dataset), validation_pool(dataset)  # pool: all images, or those that meet the test split's rule
    n_val = min(validation_size(n, fraction), len(pool))
    if n - n_val < 1:
        from .errors import UserError

        raise UserError(f"--val-split {fraction} leaves no training image out of {n}; use a smaller fraction")
    if n_val < MIN_VALIDATION:
        import warnings

        warnings.warn(f"--val-split {fraction} holds out {n_val} of {n} training images: the best weights would be "
                      f"chosen on {n_val} image{'s' * (n_val > 1)}, which says little; use at least {MIN_VALIDATION} "
                      "(a larger --val-split or more images), or --val-split off", UserWarning, stacklevel=2)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    held = sorted(pool[j] for j in order[:n_val])
    rest = sorted(set(range(n)) - set(held))
    return torch.utils.data.Subset(dataset, rest), torch.utils.data.Subset(dataset, held)


def cpu_weights(net: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A copy of ``net``'s weights on the CPU, untouched by later steps (kept beside the training network)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


class Validator:
    """Scores the network on the held-out images when due and keeps the best weights (on the CPU)."""

    def __init__(self, dataset, card, device, every: Optional[int], batch_size: int = 32) -> None:
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        self.card, self.device, self.every = card, device, every
        self.history = []          # [iteration, val mIoU]
        self.best: Optional[Dict] = None   # {'iteration', 'miou', 'state'}

    def due(self, iteration: int, end_of_epoch: bool) -> bool:
        """Every ``every`` iterations, else at the end of each epoch; never twice at one iteration."""
        if self.history and self.history[-1][0] == iteration:
            return False
        return bool(self.every) and iteration % self.every == 0 or (not self.every and end_of_epoch)

    def run(self, net, iteration: int) -> float:
        """Score ``net`` on the validation images; keep its weights if they are the best so far."""
        from .evaluation import evaluate

        miou = float(evaluate(net, self.loader, self.card, self.device, progress=False)["miou"])
        self.history.append([iteration, miou])
        if self.best is None or miou > self.best["miou"]:
            self.best = {"iteration": iteration, "miou": miou, "state": cpu_weights(net)}
        return miou

    def summary(self) -> Dict:
        """What the card and the history record: the split's size and the best iteration."""
        best = self.best or {}
        return {"images": len(self.loader.dataset), "every": self.every or "epoch", "history": self.history,
                "best_iteration": best.get("iteration"), "best_val_miou": best.get("miou")}

    def state_dict(self) -> Dict:
        return {"history": self.history, "best": copy.copy(self.best)}

    def load_state_dict(self, state: Dict) -> None:
        self.history, self.best = list(state.get("history", [])), state.get("best")
