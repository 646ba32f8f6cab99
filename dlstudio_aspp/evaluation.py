"""Vectorised evaluation over a whole test set, and stock-style qualitative grids.

Stock ``run_code_for_testing_semantic_segmentation`` loops over pixels in Python,
looks at every 50th batch, computes no metric and blocks on ``plt.show()``. Here one
pass over the loader scores every image (:mod:`dlstudio_aspp.metrics`) and the first
images are drawn with stock's panels: the input, the max over channels of the output,
and each channel binarised, plus the ground truth, saved as a PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .metrics import MultiLabelConfusion, binarize

CLASS_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                          [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]], np.float32) / 255


def colour_masks(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) bool -> (H, W, 3) float image, one colour per class (overlaps blend)."""
    c = masks.shape[0]
    cols = CLASS_COLOURS[np.arange(c) % len(CLASS_COLOURS)]
    weight = masks.astype(np.float32)
    total = weight.sum(0, keepdims=True)
    rgb = np.einsum("chw,cd->hwd", weight, cols) / np.maximum(total[0][..., None], 1)
    return rgb


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) image in [0, 255] (or [0, 1]) -> (H, W, 3) float in [0, 1]."""
    im = image.detach().cpu().float()
    im = im / 255.0 if im.max() > 1.0 else im
    return im.clamp(0, 1).permute(1, 2, 0).numpy()


@torch.no_grad()
def evaluate(net: torch.nn.Module, loader, thresholds: torch.Tensor, device=None, class_names: Sequence[str] = (),
             normalized: bool = False, keep: int = 0, progress: bool = True) -> Dict:
    """Score ``net`` on every batch of ``loader``.

    Returns the metrics dict of :class:`MultiLabelConfusion` plus ``num_images`` and,
    when ``keep > 0``, ``samples``: the first ``keep`` (image, target, output) triples.
    """
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    conf = MultiLabelConfusion(thresholds.numel())
    samples: List = []
    n = 0
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc="evaluate", unit="batch", mininterval=1.0, dynamic_ncols=True)
    for data in it:
        im, mask = data["image"], data["mask_tensor"]
        out = net(im.to(device)).float()
        conf.update(binarize(out, thresholds), mask.to(device))
        n += im.shape[0]
        for j in range(im.shape[0]):
            if len(samples) < keep:
                samples.append((im[j].cpu(), mask[j].cpu(), out[j].cpu()))
    net.train(was_training)
    metrics = conf.compute(class_names)
    metrics["num_images"] = n
    metrics["binarize"] = {"normalized": normalized, "thresholds": [float(t) for t in thresholds]}
    if keep:
        metrics["samples"] = samples
    return metrics


def save_grid(samples, thresholds: torch.Tensor, class_names: Sequence[str], path, title: str = "") -> Path:
    """PNG grid, one row per image: input, ground truth, max over channels, each class binarised."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(class_names) or [str(k) for k in range(thresholds.numel())]
    cols = 3 + len(names)
    rows = len(samples)
    if rows == 0:
        raise ValueError("no samples to draw; evaluate with keep >= 1")
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.7 * rows + 0.4), squeeze=False)
    for r, (im, mask, out) in enumerate(samples):
        pred = binarize(out[None], thresholds)[0].numpy()
        panels = [(to_rgb(im), "input", None), (colour_masks(mask.numpy() > 0), "ground truth", None),
                  (out.max(0).values.numpy(), "max over channels", "gray")]
        panels += [(pred[k], names[k], "gray") for k in range(len(names))]
        for c, (img, label, cmap) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
