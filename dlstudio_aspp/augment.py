"""Augmentation of training batches for real photographs (torchvision ``transforms.v2``).

Image and masks move together: each sample is wrapped as ``tv_tensors.Image`` and
``tv_tensors.Mask``, so one random draw flips and crops both (the mask with nearest
neighbour) and colour changes touch the image only. The draws are seeded by
(seed, iteration), not by the global RNG, so a resumed run augments its remaining
iterations exactly as the uninterrupted run would have.

Levels (``--augment``):

- ``none``: nothing (PurdueShapes' default: the homework's numbers stay reproducible);
- ``light``: horizontal flip, random resized crop back to the input size (60-100% of the
  area, aspect 3/4-4/3);
- ``standard``: a wider crop range (35-100%) and a small colour jitter (brightness,
  contrast, saturation 0.2; hue 0.02). COCO's default.
- ``strong``: for a small set trained long: crops of 20-100% of the area, a larger colour
  jitter (0.4; hue 0.05) and one image in ten turned grey.

Copy-paste (``--copy-paste P``, after the level's steps): with probability P an image gets
the objects of another image of its batch (every pixel where that image's masks are
set), mirrored half of the time, pasted over it; its masks take the other image's values
there. The network sees people on backgrounds they were not photographed on.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .registry import AUGMENTS
from .spec import SEED_MIX



def transform_for(level: str, size: Tuple[int, int]):
    """The ``transforms.v2`` pipeline of ``level`` for (H, W) ``size``; None for 'none'."""
    from torchvision.transforms import v2

    settings = AUGMENTS[level]
    if settings.crop is None:
        return None
    steps = [v2.RandomHorizontalFlip(0.5),
             v2.RandomResizedCrop(size, scale=settings.crop, ratio=(3 / 4, 4 / 3), antialias=True)]
    if settings.jitter is not None:
        amount, hue = settings.jitter
        steps.append(v2.ColorJitter(brightness=amount, contrast=amount, saturation=amount, hue=hue))
    if settings.grey:
        steps.append(v2.RandomGrayscale(settings.grey))
    return v2.Compose(steps)


def augment_batch(batch: Dict[str, torch.Tensor], transform, seed: int, iteration: int,
                  copy_paste: float = 0.0) -> Dict[str, torch.Tensor]:
    """A batch ``{'image': (B, 3, H, W) float 0..255, 'mask_tensor': (B, C, H, W) uint8}`` augmented
    sample by sample by ``transform`` (None: not), then copy-pasted with probability ``copy_paste``;
    the draws are seeded by (seed, iteration); other keys are passed through."""
    images, masks = batch["image"], batch["mask_tensor"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * SEED_MIX + iteration)
        if transform is not None:
            images, masks = _each_sample(images, masks, transform)
        if copy_paste > 0:
            images, masks = paste_objects(images, masks, copy_paste)
    return dict(batch, image=images, mask_tensor=masks)


def _each_sample(images: torch.Tensor, masks: torch.Tensor, transform) -> Tuple[torch.Tensor, torch.Tensor]:
    from torchvision import tv_tensors

    out_images, out_masks = [], []
    for image, mask in zip(images, masks):
        img = tv_tensors.Image(image.round().clamp(0, 255).to(torch.uint8))
        new_img, new_mask = transform(img, tv_tensors.Mask(mask))
        out_images.append(new_img.as_subclass(torch.Tensor).float())
        out_masks.append(new_mask.as_subclass(torch.Tensor))
    return torch.stack(out_images), torch.stack(out_masks)


def paste_objects(images: torch.Tensor, masks: torch.Tensor, p: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Copy-paste within a batch: images (B, 3, H, W), masks (B, C, H, W). With probability ``p``,
    image i gets the objects of another image j (its pixels where any of j's masks is set),
    mirrored with probability 1/2, and its masks take j's values there. The draws come from
    the global RNG (``augment_batch`` seeds it); a batch of one is returned as it is."""
    n = images.shape[0]
    if n < 2:
        return images, masks
    out_images, out_masks = images.clone(), masks.clone()
    for i in range(n):
        paste, j, mirror = torch.rand(()) < p, (i + 1 + int(torch.randint(n - 1, ()))) % n, torch.rand(()) < 0.5
        if not paste:
            continue
        src_image, src_mask = (images[j].flip(-1), masks[j].flip(-1)) if mirror else (images[j], masks[j])
        region = src_mask.amax(0, keepdim=True) > 0  # (1, H, W)
        out_images[i] = torch.where(region, src_image, out_images[i])
        out_masks[i] = torch.where(region, src_mask, out_masks[i])
    return out_images, out_masks
