"""Vectorised evaluation over a whole test set, and stock-style qualitative grids.

Stock ``run_code_for_testing_semantic_segmentation`` loops over pixels in Python,
looks at every 50th batch, computes no metric and blocks on ``plt.show()``. Here one
pass over the loader scores every image (:mod:`dlstudio_aspp.metrics`) and the first
images are drawn with stock's panels: the input, the max over channels of the output,
and each channel binarised, plus the ground truth, saved as a PNG.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from .atomic import save_image
from .masks import binarize, mask_truth
from .metrics import MultiLabelConfusion
from .plots import CLASS_COLOURS



def colour_masks(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) bool -> (H, W, 3) float image, one colour per class (overlaps blend)."""
    c = masks.shape[0]
    cols = CLASS_COLOURS[np.arange(c) % len(CLASS_COLOURS)]
    weight = masks.astype(np.float32)
    total = weight.sum(0, keepdims=True)
    rgb = np.einsum("chw,cd->hwd", weight, cols) / np.maximum(total[0][..., None], 1)
    return rgb


def class_colours(num_classes: int) -> List[tuple]:
    """One (R, G, B) 0..255 colour per class, the same in every figure."""
    return [tuple(int(round(v * 255)) for v in CLASS_COLOURS[k % len(CLASS_COLOURS)]) for k in range(num_classes)]


def overlay(image: torch.Tensor, masks, alpha: float = 0.55) -> torch.Tensor:
    """(3, H, W) image in 0..255 with (C, H, W) bool masks drawn on it in the class colours
    (``torchvision.utils.draw_segmentation_masks``); returns (3, H, W) uint8."""
    from torchvision.utils import draw_segmentation_masks

    masks = torch.as_tensor(masks, dtype=torch.bool)
    if masks.dim() == 2:
        masks = masks[None]
    img = image.detach().cpu().float()
    img = (img * 255 if img.max() <= 1.0 else img).clamp(0, 255).to(torch.uint8)
    return draw_segmentation_masks(img, masks.cpu(), alpha=alpha, colors=class_colours(masks.shape[0]))


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) image in [0, 255] (or [0, 1]) -> (H, W, 3) float in [0, 1]."""
    im = image.detach().cpu().float()
    im = im / 255.0 if im.max() > 1.0 else im
    return im.clamp(0, 1).permute(1, 2, 0).numpy()


def evaluate(net: torch.nn.Module, loader, card, device=None, keep: int = 0, progress: bool = True,
             compile: bool = False) -> Dict:
    """Score ``net`` on every batch of ``loader``, reading input scaling and thresholds from ``card``.

    Returns the metrics dict of :class:`MultiLabelConfusion` plus ``num_images``,
    ``binarize`` (the rule and thresholds used) and, when ``keep > 0``, ``samples``: the
    first ``keep`` (image, target, output) triples. The caller's ``net`` is left exactly
    as it was (mode, memory format, device, autograd state): a copy runs, in eval mode
    and, on CPU, in channels-last memory format, which oneDNN convolves about a quarter
    faster. ``compile`` runs the copy through ``torch.compile`` (falling back to eager with
    a warning if that fails).
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model = copy.deepcopy(net).eval().to(device=device, memory_format=fmt)
    run_model = model
    if compile:
        from .accel import Compiled

        run_model = Compiled(model, device, "evaluation")
    thresholds = card.thresholds()
    conf = MultiLabelConfusion(thresholds.numel())
    samples: List = []
    n = 0
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc="evaluate", unit="batch", mininterval=1.0, dynamic_ncols=True)
    with (torch.no_grad() if compile else torch.inference_mode()):
        for data in it:
            im, mask = data["image"], data["mask_tensor"]
            out = run_model(card.prepare_input(im.to(device)).contiguous(memory_format=fmt)).float()
            conf.update(binarize(out, thresholds), mask.to(device))
            n += im.shape[0]
            for j in range(min(im.shape[0], keep - len(samples))):
                samples.append((im[j].cpu(), mask[j].cpu(), out[j].cpu()))
    metrics = conf.compute(card.class_names)
    metrics["num_images"] = n
    metrics["image_counts"] = conf.image_counts()
    metrics["binarize"] = {"normalized": card.binary_targets, "output": card.output, "rule": card.threshold_rule(),
                           "thresholds": [float(t) for t in thresholds]}
    if keep:
        metrics["samples"] = samples
    return metrics


def _panel(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, 3) float in [0, 1] -> (size, size, 3) uint8, nearest-neighbour scaled."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h = max(img.shape[:2])
    if h > size:
        step = -(-h // size)
        img = img[::step, ::step]
    else:
        rep = size // h
        img = img.repeat(rep, axis=0).repeat(rep, axis=1)
    out = np.full((size, size, 3), 255, np.uint8)
    out[: img.shape[0], : img.shape[1]] = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out


def save_grid(samples, thresholds: torch.Tensor, class_names: Sequence[str], path, title: str = "",
              panel: int = 128) -> Path:
    """PNG grid, one row per image: input, ground truth, max over channels, each class binarised.

    Drawn with numpy and PIL (no matplotlib figure), so it costs milliseconds.
    """
    from PIL import Image, ImageDraw

    names = list(class_names) or [str(k) for k in range(thresholds.numel())]
    if not samples:
        raise ValueError("no samples to draw; evaluate with keep >= 1")
    labels = ["input", "ground truth", "max over channels"] + names
    pad, head = 4, 30 if title else 16
    cols, rows = len(labels), len(samples)
    canvas = np.full((head + rows * (panel + pad), cols * (panel + pad), 3), 255, np.uint8)
    for r, (im, mask, out) in enumerate(samples):
        pred = binarize(out[None], thresholds)[0].numpy()
        mx = out.max(0).values.numpy()
        mx = (mx - mx.min()) / (mx.max() - mx.min()) if mx.max() > mx.min() else mx * 0
        panels = [to_rgb(im), colour_masks(mask_truth(mask.numpy())), mx] + [pred[k].astype(np.float32) for k in range(len(names))]
        for c, p in enumerate(panels):
            y, x = head + r * (panel + pad), c * (panel + pad)
            canvas[y:y + panel, x:x + panel] = _panel(p, panel)
    image = Image.fromarray(np.concatenate([canvas, legend_strip(names, canvas.shape[1])]))
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((2, 1), title, fill=(0, 0, 0))
    for c, label in enumerate(labels):
        draw.text((c * (panel + pad) + 2, head - 13), label[:20], fill=(0, 0, 0))
    return save_image(image, path)


def legend_strip(class_names: Sequence[str], width: int, row: int = 16) -> np.ndarray:
    """(H, width, 3) uint8: "class colours:" then a swatch and the name of each class, wrapped to ``width``."""
    from PIL import Image, ImageDraw

    x, y, placed = 100, 0, []
    for k, name in enumerate(class_names):
        w = 16 + 6 * len(name) + 12
        if x + w > width and x > 100:
            x, y = 100, y + row
        placed.append((x, y, k, name))
        x += w
    image = Image.new("RGB", (width, y + row + 4), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), "class colours:", fill=(0, 0, 0))
    colours = class_colours(len(class_names))
    for x, y, k, name in placed:
        draw.rectangle([x, y + 3, x + 11, y + 14], fill=colours[k])
        draw.text((x + 15, y + 3), name, fill=(0, 0, 0))
    return np.asarray(image)
