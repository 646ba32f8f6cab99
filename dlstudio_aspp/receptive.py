"""Receptive fields of a segmentation network: the theoretical one and the effective one.

- **Theoretical** (:func:`theoretical_field`): the input pixels an output pixel can depend on, given the
  architecture alone (kernel sizes, strides, dilations, paddings, skip connections, pooling). It is read
  off a structural copy of the network: every convolution averages its taps with positive weights and no
  bias, BatchNorm is the identity, max pooling is average pooling over the same window and the image-pool
  branch of an ASPP can be switched off. In that copy no path can cancel another, so the gradient of an
  output pixel is nonzero at exactly the input pixels some path reaches.
- **Effective** (:func:`effective_fields`, Luo et al. 2016, *Understanding the Effective Receptive Field
  in Deep CNNs*): the gradient of the output pixel (summed over classes) with respect to the input image,
  in absolute value, summed over the input's channels, of the trained network in eval mode, per image.
  :func:`mass_radius` turns a map into one number: the radius of the smallest disc about the pixel that
  holds a given share (90% by default) of the gradient's mass.

Shapes: images (B, 3, H, W); maps (H, W) or (B, H, W); a pixel is (row, col).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Tuple

import torch
from torch import nn
from torch.nn import functional as F

MASS_SHARE = 0.9  # the share of the gradient's mass inside the stated radius


@contextlib.contextmanager
def _max_pool_as_average() -> Iterator[None]:
    """Inside: ``F.max_pool2d`` (what ``nn.MaxPool2d`` and mUNet's inline pooling call) averages its window,
    so the gradient reaches every pixel of the window, as the output's dependence does."""
    original = F.max_pool2d

    def average(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        if dilation not in (1, (1, 1)) or return_indices:
            raise NotImplementedError("theoretical_field: dilated or index-returning max pooling is not supported")
        return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=True)

    F.max_pool2d = average
    try:
        yield
    finally:
        F.max_pool2d = original


def structural_copy(model: nn.Module, image_pool: bool = True) -> nn.Module:
    """A float32 eval-mode copy of ``model`` whose convolutions average their taps (positive weights, zero
    bias) and whose BatchNorms are the identity; ``image_pool=False`` also zeroes every ASPP image-pool
    branch (which otherwise makes each output depend on the whole image)."""
    from .aspp import ASPPPooling

    net = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                if m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
        if not image_pool:
            for m in net.modules():
                if isinstance(m, ASPPPooling):
                    for p in m.parameters():
                        p.zero_()
    return net


def _input_gradient(net: nn.Module, x: torch.Tensor, pixel: Tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) input -> (B, C, H, W) gradient of the sum over classes of the output at ``pixel``."""
    x = x.detach().requires_grad_(True)
    out = net(x)
    out[:, :, pixel[0], pixel[1]].sum().backward()
    return x.grad


def theoretical_field(model: nn.Module, image_size: Tuple[int, int], pixel: Tuple[int, int],
                      image_pool: bool = True, in_channels: int = 3) -> torch.Tensor:
    """(H, W) bool: the input pixels that the output at ``pixel`` can depend on, in an image of ``image_size``
    (zero padding at its border), given ``model``'s architecture alone (see the module docstring)."""
    net = structural_copy(model, image_pool)
    device = next(net.parameters()).device
    with _max_pool_as_average():
        grad = _input_gradient(net, torch.ones(1, in_channels, *image_size, device=device), pixel)
    return (grad[0].abs().sum(0) > 0).cpu()


def field_side(model: nn.Module, image_size: Tuple[int, int], image_pool: bool = False,
               max_scale: int = 16, in_channels: int = 3) -> Tuple[int, bool]:
    """(side, bounded) of the theoretical field of the centre pixel with no image border in the way.

    The field is a square when every kernel is (mUNet's are), so its height is measured on a canvas as wide as
    the image and ``image_size[0]`` times 1, 2, 4, ... ``max_scale`` tall (the canvas's width clips no row of
    it), until the field does not touch the top or bottom edge. ``bounded`` is False when it still did: the
    side is then a lower bound."""
    h, w = image_size
    scale = 1
    while True:
        size = (h * scale, w)
        rows = theoretical_field(model, size, (size[0] // 2, w // 2), image_pool, in_channels).any(1).nonzero()[:, 0]
        side = int(rows[-1] - rows[0] + 1)
        if (rows[0] > 0 and rows[-1] < size[0] - 1) or scale * 2 > max_scale:
            return side, bool(rows[0] > 0 and rows[-1] < size[0] - 1)
        scale *= 2


def effective_fields(model: nn.Module, images: torch.Tensor, pixel: Tuple[int, int]) -> torch.Tensor:
    """(B, H, W): |d(sum over classes of output[b, :, row, col]) / d input[b]| summed over input channels,
    each image's map scaled to sum 1 (an all-zero map stays zero). ``model`` runs in eval mode (BatchNorm's
    running statistics), so the images of the batch do not mix; its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        grad = _input_gradient(model, images, pixel).abs().sum(1)
    finally:
        model.train(was_training)
    total = grad.flatten(1).sum(1).clamp_min(torch.finfo(grad.dtype).tiny)
    return grad / total[:, None, None]


def mass_radius(maps: torch.Tensor, pixel: Tuple[int, int], share: float = MASS_SHARE) -> torch.Tensor:
    """Radius (pixels, Euclidean from ``pixel``) of the smallest disc holding ``share`` of each map's mass:
    (H, W) -> scalar, (B, H, W) -> (B,). A map with no mass has radius 0."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    single = maps.dim() == 2
    m = maps[None] if single else maps
    h, w = m.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dist = ((rows - pixel[0]) ** 2 + (cols - pixel[1]) ** 2).double().sqrt().flatten()
    order = dist.argsort()
    mass = m.flatten(1).double()[:, order]
    cum = mass.cumsum(1) / mass.sum(1, keepdim=True).clamp_min(1e-300)
    first = (cum >= share - 1e-12).double().argmax(1)  # the first pixel (by distance) reaching the share
    radius = dist[order][first]
    radius = torch.where(mass.sum(1) > 0, radius, torch.zeros_like(radius)).float()
    return radius[0] if single else radius
